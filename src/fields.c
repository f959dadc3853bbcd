/*-------------------------------------------------------------------------
 *
 * fields.c
 *	  Coercion and validation of the five Metronome fields, as Segment's
 *	  Metronome (Actions) destination does it, plus Metronome's own limits
 *	  (checked here so that one bad event cannot fail a whole batch later).
 *
 *	  transaction_id, customer_id, event_type: strings; a number or a
 *		boolean becomes its text (123 -> "123"); an object or array is an
 *		error; transaction_id is at most 128 characters.
 *	  timestamp: a date string (ISO 8601 / RFC 3339; date-only and zone-less
 *		forms are UTC; offsets converted; truncated to milliseconds) or a
 *		number of epoch milliseconds; at most 24 hours in the future.
 *	  properties: an object; absent becomes {}.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fields.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

const char *const MetFieldNames[NUM_FIELDS] = {
	"transaction_id",
	"customer_id",
	"timestamp",
	"event_type",
	"properties"
};

/* milliseconds from the Unix epoch to PostgreSQL's (2000-01-01) */
#define UNIX_TO_PG_EPOCH_MS \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000)

/*
 * The name of a JsonbValue's JSON type, for messages.
 */
static const char *
json_type_name(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvArray:
			return "an array";
		case jbvObject:
			return "an object";
		case jbvBinary:
			return JsonContainerIsObject(v->val.binary.data) ? "an object" : "an array";
		default:
			return "an unknown type";
	}
}

/*
 * Undefined, null and "" are absent at the top level of a field.
 */
bool
FieldIsAbsent(const JsonbValue *v)
{
	return v == NULL || v->type == jbvNull ||
		(v->type == jbvString && v->val.string.len == 0);
}

/*
 * A string field.
 */
char *
FieldCoerceText(MetField field, const JsonbValue *v, text **out)
{
	const char *name = MetFieldNames[field];

	*out = NULL;
	if (FieldIsAbsent(v))
		return psprintf("missing required field '%s'", name);

	switch (v->type)
	{
		case jbvString:
			*out = cstring_to_text_with_len(v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			/* like JavaScript's String(n): no trailing zeros */
			*out = cstring_to_text(numeric_normalize(v->val.numeric));
			break;
		case jbvBool:
			*out = cstring_to_text(v->val.boolean ? "true" : "false");
			break;
		default:
			return psprintf("%s must be a string, not %s", name, json_type_name(v));
	}

	/* characters, not bytes; no need to count when the bytes are few */
	if (field == FIELD_TRANSACTION_ID &&
		VARSIZE_ANY_EXHDR(*out) > MAX_TRANSACTION_ID_CHARS)
	{
		int			nchars = pg_mbstrlen_with_len(VARDATA_ANY(*out),
												  VARSIZE_ANY_EXHDR(*out));

		if (nchars > MAX_TRANSACTION_ID_CHARS)
		{
			*out = NULL;
			return psprintf("transaction_id must be at most %d characters, not %d",
							MAX_TRANSACTION_ID_CHARS, nchars);
		}
	}
	return NULL;
}

/*
 * Read exactly n digits at s[*i]; false if they are not all there.
 */
static bool
read_digits(const char *s, int len, int *i, int n, int *out)
{
	int			v = 0;
	int			k;

	if (*i + n > len)
		return false;
	for (k = 0; k < n; k++)
	{
		char		c = s[*i + k];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*i += n;
	*out = v;
	return true;
}

/*
 * Parse YYYY-MM-DD, optionally followed by T (or t, or a space) and
 * HH:MM[:SS[.fraction]], optionally followed by Z or an offset (+HH:MM,
 * +HHMM, +HH).  No zone means UTC.  Digits past milliseconds are truncated.
 */
bool
ParseIsoTimestamp(const char *s, int len, TimestampTz *out)
{
	int			i = 0;
	int			year,
				mon,
				mday,
				hour = 0,
				min = 0,
				sec = 0,
				msec = 0;
	int			offset_sec = 0;
	int64		days;
	int64		usecs;

	/* trim surrounding white space */
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		len--;
	while (i < len && isspace((unsigned char) s[i]))
		i++;

	if (!read_digits(s, len, &i, 4, &year) || i >= len || s[i++] != '-' ||
		!read_digits(s, len, &i, 2, &mon) || i >= len || s[i++] != '-' ||
		!read_digits(s, len, &i, 2, &mday))
		return false;
	if (year < 1 || mon < 1 || mon > 12 || mday < 1 ||
		mday > day_tab[isleap(year)][mon - 1])
		return false;

	if (i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' '))
	{
		i++;
		if (!read_digits(s, len, &i, 2, &hour) || i >= len || s[i++] != ':' ||
			!read_digits(s, len, &i, 2, &min))
			return false;
		if (i < len && s[i] == ':')
		{
			i++;
			if (!read_digits(s, len, &i, 2, &sec))
				return false;
			if (i < len && (s[i] == '.' || s[i] == ','))
			{
				int			ndigits = 0;

				i++;
				while (i < len && s[i] >= '0' && s[i] <= '9')
				{
					if (ndigits < 3)
						msec = msec * 10 + (s[i] - '0');
					ndigits++;
					i++;
				}
				if (ndigits == 0)
					return false;
				while (ndigits < 3)
				{
					msec *= 10;
					ndigits++;
				}
			}
		}
		if (hour > 23 || min > 59 || sec > 59)
			return false;

		/* the zone */
		if (i < len && (s[i] == 'Z' || s[i] == 'z'))
			i++;
		else if (i < len && (s[i] == '+' || s[i] == '-'))
		{
			int			sign = s[i++] == '-' ? -1 : 1;
			int			oh,
						om = 0;

			if (!read_digits(s, len, &i, 2, &oh))
				return false;
			if (i < len && s[i] == ':')
			{
				i++;
				if (!read_digits(s, len, &i, 2, &om))
					return false;
			}
			else if (i < len)
			{
				if (!read_digits(s, len, &i, 2, &om))
					return false;
			}
			if (oh > 23 || om > 59)
				return false;
			offset_sec = sign * (oh * 3600 + om * 60);
		}
	}
	if (i != len)
		return false;

	days = (int64) date2j(year, mon, mday) - POSTGRES_EPOCH_JDATE;
	usecs = days * USECS_PER_DAY +
		((int64) hour * 3600 + min * 60 + sec - offset_sec) * USECS_PER_SEC +
		(int64) msec * 1000;
	if (!IS_VALID_TIMESTAMP(usecs))
		return false;
	*out = usecs;
	return true;
}

/*
 * The timestamp field.
 */
char *
FieldCoerceTimestamp(const JsonbValue *v, TimestampTz now, TimestampTz *out)
{
	TimestampTz ts;

	if (FieldIsAbsent(v))
		return pstrdup("missing required field 'timestamp'");

	if (v->type == jbvString)
	{
		if (!ParseIsoTimestamp(v->val.string.val, v->val.string.len, &ts))
			return psprintf("timestamp \"%.*s\" is not a valid date",
							pg_mbcliplen(v->val.string.val, v->val.string.len, 64),
							v->val.string.val);
	}
	else if (v->type == jbvNumeric)
	{
		char	   *txt = numeric_normalize(v->val.numeric);
		double		ms = strtod(txt, NULL);
		double		usecs;

		/* epoch milliseconds, truncated toward zero like JavaScript's Date */
		usecs = (trunc(ms) - (double) UNIX_TO_PG_EPOCH_MS) * 1000.0;
		if (!isfinite(ms) ||
			usecs < (double) MIN_TIMESTAMP || usecs >= (double) END_TIMESTAMP)
			return psprintf("timestamp %.*s%s is out of range (a number is epoch milliseconds)",
							32, txt, strlen(txt) > 32 ? "..." : "");
		ts = (TimestampTz) usecs;
	}
	else
		return psprintf("timestamp must be a string or a number, not %s",
						json_type_name(v));

	if (ts > now + MAX_FUTURE_USECS)
	{
		char		buf[MAXDATELEN + 1];

		FormatTimestampMs(ts, buf);
		return psprintf("timestamp %s is more than 24 hours in the future", buf);
	}
	*out = ts;
	return NULL;
}

/*
 * The properties field.
 */
char *
FieldCoerceProperties(const JsonbValue *v, Jsonb **out)
{
	if (v == NULL || v->type == jbvNull ||
		(v->type == jbvString && v->val.string.len == 0))
	{
		JsonbValue	empty;

		empty.type = jbvObject;
		empty.val.object.nPairs = 0;
		empty.val.object.pairs = NULL;
		*out = JsonbValueToJsonb(&empty);
		return NULL;
	}
	if (v->type == jbvObject ||
		(v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data)))
	{
		*out = JsonbValueToJsonb((JsonbValue *) v);
		return NULL;
	}
	*out = NULL;
	return psprintf("properties must be an object, not %s", json_type_name(v));
}

/*
 * Format as UTC with milliseconds: 2021-07-10T05:37:11.000Z.
 */
void
FormatTimestampMs(TimestampTz ts, char *buf)
{
	int64		days;
	int64		time;
	int			year,
				mon,
				mday;
	int			hour,
				min,
				sec,
				msec;

	days = ts / USECS_PER_DAY;
	time = ts % USECS_PER_DAY;
	if (time < 0)
	{
		time += USECS_PER_DAY;
		days--;
	}
	j2date((int) (days + POSTGRES_EPOCH_JDATE), &year, &mon, &mday);
	hour = (int) (time / USECS_PER_HOUR);
	time -= (int64) hour * USECS_PER_HOUR;
	min = (int) (time / USECS_PER_MINUTE);
	time -= (int64) min * USECS_PER_MINUTE;
	sec = (int) (time / USECS_PER_SEC);
	time -= (int64) sec * USECS_PER_SEC;
	msec = (int) (time / 1000);
	snprintf(buf, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
			 year, mon, mday, hour, min, sec, msec);
}
