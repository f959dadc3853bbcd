/*-------------------------------------------------------------------------
 *
 * fields.h
 *	  The five fields of a Metronome usage event: their names, and the
 *	  coercion and validation that Segment's destination (and Metronome's
 *	  own limits) apply to the values a mapping resolves to.
 *
 * Every function returns NULL on success, or an error message (palloc'd,
 * naming the field) that the caller turns into a metronome_rejected row.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_FIELDS_H
#define METRONOME_FIELDS_H

#include "postgres.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"

typedef enum MetField
{
	FIELD_TRANSACTION_ID,
	FIELD_CUSTOMER_ID,
	FIELD_TIMESTAMP,
	FIELD_EVENT_TYPE,
	FIELD_PROPERTIES,
	NUM_FIELDS
} MetField;

/* Metronome's limit on transaction_id, in characters */
#define MAX_TRANSACTION_ID_CHARS 128
/* how far in the future Metronome accepts a timestamp */
#define MAX_FUTURE_USECS ((int64) 24 * USECS_PER_HOUR)

extern const char *const MetFieldNames[NUM_FIELDS];

/* At the top level, undefined (NULL), null and "" count as absent. */
extern bool FieldIsAbsent(const JsonbValue *v);

/* transaction_id, customer_id, event_type: a string; numbers and booleans
 * become their text. */
extern char *FieldCoerceText(MetField field, const JsonbValue *v, text **out);

/* timestamp: a date string, or a number of epoch milliseconds; at most 24
 * hours after now. */
extern char *FieldCoerceTimestamp(const JsonbValue *v, TimestampTz now,
								  TimestampTz *out);

/* properties: an object; absent becomes {}. */
extern char *FieldCoerceProperties(const JsonbValue *v, Jsonb **out);

/* Parse a date as Segment reads it where the instant is unambiguous: ISO
 * 8601 / RFC 3339 (no zone = UTC; "2024", "2024-03" too), "2024/03/01
 * [time]", RFC 2822 / RFC 1123; truncated to milliseconds.  False when the
 * text is not one of those. */
extern bool ParseIsoTimestamp(const char *s, int len, TimestampTz *out);

/* "2021-07-10T05:37:11.000Z" into buf (at least 32 bytes). */
extern void FormatTimestampMs(TimestampTz ts, char *buf);

#endif							/* METRONOME_FIELDS_H */
