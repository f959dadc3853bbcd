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
 *	  timestamp: a date string (ISO 8601 / RFC 3339, reduced precision
 *		"2024" and "2024-03" too, "2024/03/01", RFC 2822 / RFC 1123; 24:00 is
 *		the next day; date-only and zone-less forms are UTC; offsets
 *		converted; truncated to milliseconds) or a number of epoch
 *		milliseconds; at most 24 hours in the future.
 *	  properties: an object; absent becomes {}.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fields.h"
#include "jsnum.h"
#include "jsonbval.h"
#include "rfc3339.h"

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

static bool ts_read_time(const char *s, int len, int *i, int *hour, int *min, int *sec, int *msec);
static bool ts_read_offset(const char *s, int len, int *i, int *offset_sec);
static bool ts_make_instant(int year, int mon, int mday, int hour, int min, int sec, int msec,
							int offset_sec, TimestampTz *out);
static bool ts_parse_rfc2822(const char *s, int len, TimestampTz *out);
static const char *ts_refusal(const char *s, int len);

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
	JsonbValue	elem;

	*out = NULL;
	if (FieldIsAbsent(v))
		return psprintf("missing required field '%s'", name);

	/*
	 * A one-element array stands for its element, as Segment's validator
	 * coerces it (["acme"] -> "acme", [7] -> "7"); [null] and [""] would be
	 * sent as "", which Metronome refuses: absent.
	 */
	if (JsonbValueSingleElement(v, &elem))
	{
		if (FieldIsAbsent(&elem))
			return psprintf("missing required field '%s' (an array whose only element is empty)", name);
		if (elem.type == jbvString || elem.type == jbvNumeric || elem.type == jbvBool)
			v = &elem;
	}

	switch (v->type)
	{
		case jbvString:
			*out = cstring_to_text_with_len(v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			/* JavaScript's String(n) */
			*out = cstring_to_text(JsNumberText(v->val.numeric));
			break;
		case jbvBool:
			*out = cstring_to_text(v->val.boolean ? "true" : "false");
			break;
		default:
			return psprintf("%s must be a string, not %s", name, JsonbValueTypeName(v, true));
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
 * Read HH:MM[:SS[.fraction]] at s[*i] (hour 24 only as 24:00:00.000).
 * Digits past milliseconds are truncated.
 */
static bool
ts_read_time(const char *s, int len, int *i, int *hour, int *min, int *sec, int *msec)
{
	*sec = *msec = 0;
	if (!read_digits(s, len, i, 2, hour) || *i >= len || s[(*i)++] != ':' ||
		!read_digits(s, len, i, 2, min))
		return false;
	if (*i < len && s[*i] == ':')
	{
		(*i)++;
		if (!read_digits(s, len, i, 2, sec))
			return false;
		if (*i < len && (s[*i] == '.' || s[*i] == ','))
		{
			int			ndigits = 0;

			(*i)++;
			while (*i < len && s[*i] >= '0' && s[*i] <= '9')
			{
				if (ndigits < 3)
					*msec = *msec * 10 + (s[*i] - '0');
				ndigits++;
				(*i)++;
			}
			if (ndigits == 0)
				return false;
			for (; ndigits < 3; ndigits++)
				*msec *= 10;
		}
	}
	if (*hour == 24)
		return *min == 0 && *sec == 0 && *msec == 0;
	return *hour <= 23 && *min <= 59 && *sec <= 59;
}

/*
 * Read a numeric zone offset at s[*i]: +HH:MM, +HHMM or +HH (or -).
 */
static bool
ts_read_offset(const char *s, int len, int *i, int *offset_sec)
{
	int			sign = s[(*i)++] == '-' ? -1 : 1;
	int			oh,
				om = 0;

	if (!read_digits(s, len, i, 2, &oh))
		return false;
	if (*i < len && s[*i] == ':')
		(*i)++;
	if (*i < len && !read_digits(s, len, i, 2, &om))
		return false;
	if (oh > 23 || om > 59)
		return false;
	*offset_sec = sign * (oh * 3600 + om * 60);
	return true;
}

/*
 * The instant of a civil date and time at a UTC offset; false when the
 * date does not exist or the instant is out of range.  Hour 24 is the
 * next day's 00:00.
 */
static bool
ts_make_instant(int year, int mon, int mday, int hour, int min, int sec, int msec,
			 int offset_sec, TimestampTz *out)
{
	int64		days;
	int64		usecs;

	if (year < 1 || mon < 1 || mon > 12 || mday < 1 ||
		mday > day_tab[isleap(year)][mon - 1])
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
 * RFC 2822 / RFC 1123 (the form of HTTP dates and of JavaScript's
 * toUTCString): [Day,] D Mon YYYY HH:MM[:SS] [zone], the zone GMT, UT, UTC,
 * Z, a North American name (EST, EDT, CST, CDT, MST, MDT, PST, PDT) or a
 * numeric offset (+0200, GMT+0200); no zone is UTC.  The day's name, when
 * given, is not checked (JavaScript ignores it).
 */
static bool
ts_parse_rfc2822(const char *s, int len, TimestampTz *out)
{
	static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
	"jul", "aug", "sep", "oct", "nov", "dec"};
	static const char *const days[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
	static const struct
	{
		const char *name;
		int			hours;
	}			zones[] = {{"gmt", 0}, {"utc", 0}, {"ut", 0}, {"z", 0},
	{"est", -5}, {"edt", -4}, {"cst", -6}, {"cdt", -5},
	{"mst", -7}, {"mdt", -6}, {"pst", -8}, {"pdt", -7}};
	int			i = 0;
	int			k;
	int			mday = 0,
				mon = 0,
				year,
				hour,
				min,
				sec,
				msec;
	int			offset_sec = 0;
	int			nd = 0;

	/* an optional day name (three letters or the whole name) and a comma */
	if (i < len && isalpha((unsigned char) s[i]))
	{
		int			start = i;

		while (i < len && isalpha((unsigned char) s[i]))
			i++;
		for (k = 0; k < 7; k++)
			if (i - start >= 3 && pg_strncasecmp(s + start, days[k], 3) == 0)
				break;
		if (k == 7)
			return false;
		if (i < len && s[i] == ',')
			i++;
		while (i < len && s[i] == ' ')
			i++;
	}
	while (i < len && isdigit((unsigned char) s[i]) && nd < 2)
	{
		mday = mday * 10 + (s[i++] - '0');
		nd++;
	}
	if (nd == 0 || i >= len || s[i++] != ' ')
		return false;
	if (len - i < 4)
		return false;
	for (k = 0; k < 12; k++)
		if (pg_strncasecmp(s + i, months[k], 3) == 0)
			break;
	if (k == 12)
		return false;
	mon = k + 1;
	i += 3;
	if (i >= len || s[i++] != ' ' || !read_digits(s, len, &i, 4, &year) ||
		i >= len || s[i++] != ' ' ||
		!ts_read_time(s, len, &i, &hour, &min, &sec, &msec))
		return false;
	if (i < len)
	{
		if (s[i++] != ' ')
			return false;
		for (k = 0; k < (int) lengthof(zones); k++)
		{
			int			zl = strlen(zones[k].name);

			if (len - i >= zl && pg_strncasecmp(s + i, zones[k].name, zl) == 0 &&
				(i + zl == len || s[i + zl] == '+' || s[i + zl] == '-'))
			{
				offset_sec = zones[k].hours * 3600;
				i += zl;
				break;
			}
		}
		if (i < len && (s[i] == '+' || s[i] == '-'))
		{
			int			extra;

			if (!ts_read_offset(s, len, &i, &extra))
				return false;
			offset_sec += extra;
		}
		if (i != len)
			return false;
	}
	return ts_make_instant(year, mon, mday, hour, min, sec, msec, offset_sec, out);
}

/*
 * Parse a date the way Segment reads it, where the instant is unambiguous:
 *	  ISO 8601 / RFC 3339: YYYY, YYYY-MM, YYYY-MM-DD, optionally followed by
 *		T (or t, or a space) and HH:MM[:SS[.fraction]], optionally followed
 *		by Z or an offset (+HH:MM, +HHMM, +HH); no zone means UTC;
 *	  YYYY/MM/DD, optionally followed by a space and HH:MM[:SS[.fraction]]
 *		(UTC);
 *	  RFC 2822 / RFC 1123 (see ts_parse_rfc2822).
 * 24:00 (with zero seconds) is the next day's 00:00.  Digits past
 * milliseconds are truncated.  Impossible dates (Feb 30), numeric strings
 * and years past 9999 are refused: Segment's parsers roll them over or
 * read them as other dates.
 */
bool
ParseIsoTimestamp(const char *s, int len, TimestampTz *out)
{
	int			i = 0;
	int			year,
				mon = 1,
				mday = 1,
				hour = 0,
				min = 0,
				sec = 0,
				msec = 0;
	int			offset_sec = 0;
	char		sep;

	/* trim surrounding white space */
	while (len > 0 && isspace((unsigned char) s[len - 1]))
		len--;
	while (i < len && isspace((unsigned char) s[i]))
		i++;
	s += i;
	len -= i;
	i = 0;

	if (len > 0 && (isalpha((unsigned char) s[0]) ||
					(len > 2 && (s[1] == ' ' || s[2] == ' '))))
		return ts_parse_rfc2822(s, len, out);

	if (!read_digits(s, len, &i, 4, &year))
		return false;
	if (i == len)
		return ts_make_instant(year, 1, 1, 0, 0, 0, 0, 0, out);
	sep = s[i++];
	if ((sep != '-' && sep != '/') || !read_digits(s, len, &i, 2, &mon))
		return false;
	if (i == len)
		return sep == '-' && ts_make_instant(year, mon, 1, 0, 0, 0, 0, 0, out);
	if (s[i++] != sep || !read_digits(s, len, &i, 2, &mday))
		return false;

	if (i < len && (s[i] == ' ' || (sep == '-' && (s[i] == 'T' || s[i] == 't'))))
	{
		i++;
		if (!ts_read_time(s, len, &i, &hour, &min, &sec, &msec))
			return false;

		/* the zone */
		if (sep == '-' && i < len && (s[i] == 'Z' || s[i] == 'z'))
			i++;
		else if (sep == '-' && i < len && (s[i] == '+' || s[i] == '-'))
		{
			if (!ts_read_offset(s, len, &i, &offset_sec))
				return false;
		}
	}
	if (i != len)
		return false;
	return ts_make_instant(year, mon, mday, hour, min, sec, msec, offset_sec, out);
}

/*
 * Why a date string that Segment would read is refused (it would bill the
 * event at a wrong instant), or NULL when there is nothing more to say.
 */
static const char *
ts_refusal(const char *s, int len)
{
	int			i = 0;
	int			ndig = 0;
	int			year,
				mon,
				mday;

	while (len > 0 && isspace((unsigned char) s[len - 1]))
		len--;
	while (i < len && isspace((unsigned char) s[i]))
		i++;
	if (i < len && (s[i] == '-' || s[i] == '+'))
		i++;
	while (i + ndig < len && isdigit((unsigned char) s[i + ndig]))
		ndig++;
	if (ndig > 0 && i + ndig == len)
		return "a string of digits is not read as a date (epoch milliseconds must be a JSON number)";
	if (ndig > 4 && s[i + ndig] == '-')
		return "years after 9999 are not read";
	if (ndig == 4 && len - i >= 10 && (s[i + 4] == '-' || s[i + 4] == '/') &&
		s[i + 7] == s[i + 4])
	{
		int			j = i;

		if (read_digits(s, len, &j, 4, &year) && j++ &&
			read_digits(s, len, &j, 2, &mon) && j++ &&
			read_digits(s, len, &j, 2, &mday) &&
			(mon < 1 || mon > 12 || mday < 1 || year < 1 ||
			 mday > day_tab[isleap(year)][mon - 1]))
			return "there is no such day (it is not rolled over to another date)";
	}
	return NULL;
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
		{
			const char *why = ts_refusal(v->val.string.val, v->val.string.len);

			return psprintf("timestamp \"%.*s\" is not a valid date%s%s",
							pg_mbcliplen(v->val.string.val, v->val.string.len, 64),
							v->val.string.val, why ? ": " : "", why ? why : "");
		}
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
			return psprintf("timestamp %s is out of range (a number is epoch milliseconds)",
							TextExcerpt(txt, strlen(txt), 32));
		ts = (TimestampTz) usecs;
	}
	else
		return psprintf("timestamp must be a string or a number, not %s",
						JsonbValueTypeName(v, true));

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
	return psprintf("properties must be an object, not %s", JsonbValueTypeName(v, true));
}

/*
 * Format as UTC with milliseconds: 2021-07-10T05:37:11.000Z (rfc3339.h);
 * years past 9999 as "a date after 9999-12-31".
 */
void
FormatTimestampMs(TimestampTz ts, char *buf)
{
	/* PostgreSQL's epoch (2000-01-01) to the Unix epoch, in microseconds */
	if (!Rfc3339FormatMs((int64_t) ts + UNIX_TO_PG_EPOCH_MS * 1000, buf))
		strlcpy(buf, ts < 0 ? "a date before 0000-01-01" : "a date after 9999-12-31", 32);
}
