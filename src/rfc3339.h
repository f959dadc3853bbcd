/*-------------------------------------------------------------------------
 *
 * rfc3339.h
 *	  The one formatter of instants as RFC 3339 UTC with milliseconds,
 *	  "2021-07-10T05:37:11.000Z": what the wire carries (http.c) and what
 *	  messages and previews show (fields.c).
 *
 * Plain C without PostgreSQL's headers, so that http.c stays free of
 * backend state (its unit tests and fuzz harnesses compile it alone); the
 * functions are static inline so that no object file has to be added to
 * those builds.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_RFC3339_H
#define METRONOME_RFC3339_H

#include <stdbool.h>
#include <stdint.h>

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" and its NUL */
#define RFC3339_MS_LEN 25

/* floor division for negative numerators */
static inline int64_t
rfc3339_floor_div(int64_t a, int64_t b)
{
	int64_t		q = a / b;

	if ((a % b != 0) && ((a < 0) != (b < 0)))
		q--;
	return q;
}

/* write value as exactly n decimal digits (zero-padded) */
static inline void
rfc3339_put_digits(char *out, int value, int n)
{
	while (n-- > 0)
	{
		out[n] = (char) ('0' + value % 10);
		value /= 10;
	}
}

/*
 * Format microseconds since the Unix epoch as RFC 3339 UTC with
 * milliseconds, "2021-07-10T05:37:11.000Z" (sub-millisecond digits are
 * truncated) into buf (at least RFC3339_MS_LEN bytes).  Returns false when
 * the year is outside 0000..9999, which RFC 3339 cannot express (and
 * Metronome would refuse anyway).
 */
static inline bool
Rfc3339FormatMs(int64_t timestamp_us, char *buf)
{
	int64_t		ms = rfc3339_floor_div(timestamp_us, 1000);
	int64_t		secs = rfc3339_floor_div(ms, 1000);
	int64_t		days = rfc3339_floor_div(secs, 86400);
	int64_t		sod = secs - days * 86400;
	int			msec = (int) (ms - secs * 1000);
	int64_t		z,
				era,
				doe,
				yoe,
				y,
				doy,
				mp,
				d,
				m;

	/* civil date from days since 1970-01-01 (proleptic Gregorian) */
	z = days + 719468;
	era = rfc3339_floor_div(z, 146097);
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	y = yoe + era * 400;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	d = doy - (153 * mp + 2) / 5 + 1;
	m = mp < 10 ? mp + 3 : mp - 9;
	if (m <= 2)
		y++;

	if (y < 0 || y > 9999)
		return false;
	/* by hand: this runs for every event, snprintf costs more than the rest */
	rfc3339_put_digits(buf, (int) y, 4);
	buf[4] = '-';
	rfc3339_put_digits(buf + 5, (int) m, 2);
	buf[7] = '-';
	rfc3339_put_digits(buf + 8, (int) d, 2);
	buf[10] = 'T';
	rfc3339_put_digits(buf + 11, (int) (sod / 3600), 2);
	buf[13] = ':';
	rfc3339_put_digits(buf + 14, (int) (sod / 60 % 60), 2);
	buf[16] = ':';
	rfc3339_put_digits(buf + 17, (int) (sod % 60), 2);
	buf[19] = '.';
	rfc3339_put_digits(buf + 20, msec, 3);
	buf[23] = 'Z';
	buf[24] = '\0';
	return true;
}

#endif							/* METRONOME_RFC3339_H */
