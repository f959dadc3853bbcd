/*-------------------------------------------------------------------------
 *
 * encoding.h
 *	  Text crossing the boundary between the database and Metronome: the
 *	  database may use any server encoding, Metronome speaks UTF-8.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_ENCODING_H
#define METRONOME_ENCODING_H

#include "postgres.h"

/*
 * Text of the database (server encoding) as UTF-8, for a request to
 * Metronome: s itself when no conversion is needed, else a palloc'd copy.
 * NULL when a character has no UTF-8 form (the event cannot be sent).
 */
extern char *EncodingToUtf8(const char *s);

/*
 * Text from Metronome (UTF-8, perhaps invalid) in the server encoding,
 * never an error: invalid bytes, and characters the server encoding
 * cannot represent, become '?'.  Returns a palloc'd string.
 */
extern char *EncodingFromUtf8(const char *s, size_t len);

/*
 * The same, in place in a NUL-terminated buffer of size bytes (cut at a
 * character boundary if the converted text is longer).
 */
extern void EncodingFromUtf8Buf(char *buf, size_t size);

#endif							/* METRONOME_ENCODING_H */
