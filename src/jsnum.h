/*-------------------------------------------------------------------------
 *
 * jsnum.h
 *	  Numbers as JavaScript turns them into text: String(n).  The one
 *	  number-to-text of the extension (template placeholders, @json encode,
 *	  @case and @replace inputs, the string fields of a Metronome event).
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_JSNUM_H
#define METRONOME_JSNUM_H

#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/numeric.h"

/*
 * Append String(n) for the JSON number num: num is first the nearest
 * double (as JSON.parse reads it), then written with the fewest digits
 * that read back as that double, laid out as Number::toString does (1e21
 * -> "1e+21", 12345678901234567890 -> "12345678901234567000", 1.50 ->
 * "1.5", 1e-7 -> "1e-7", 1e400 -> "Infinity").  With json, a number that
 * is not finite is written "null", as JSON.stringify writes it.
 */
extern void JsAppendNumberText(StringInfo out, Numeric num, bool json);

/* The same as a palloc'd string. */
extern char *JsNumberText(Numeric num);

#endif							/* METRONOME_JSNUM_H */
