/*-------------------------------------------------------------------------
 *
 * encoding.c
 *	  Conversions between the server encoding and Metronome's UTF-8.
 *
 * Metronome takes and gives UTF-8; a database may be LATIN1, EUC_JP, SJIS
 * (as a client encoding only), and so on.  Two directions:
 *
 *	out		the text fields of an event (transaction_id, customer_id,
 *			event_type, the properties' JSON text) are converted to UTF-8
 *			before they go into a request body.  Text of a database in
 *			UTF8 or SQL_ASCII goes out as it is.  A character without a
 *			UTF-8 form cannot be sent: the caller fails that row, with the
 *			reason, instead of failing the whole batch.
 *	in		Metronome's error texts (stored as last_error, shown by
 *			metronome_status()) are converted to the server encoding.  This
 *			never raises an error, which would lose the answer and keep the
 *			row in a loop: bytes that are not UTF-8, and characters the
 *			server encoding cannot represent, become '?'.  Text stored this
 *			way is valid in the server encoding, so a dump restores.
 *
 * Both directions use pg_do_encoding_conversion_buf() with noError, which
 * converts as far as it can and reports where it stopped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "common/string.h"
#include "encoding.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

static void from_utf8_valid(StringInfo out, const unsigned char *s, int len,
							int enc, Oid proc);

/*
 * Text of the database as UTF-8 (see encoding.h).
 */
char *
EncodingToUtf8(const char *s)
{
	int			enc = GetDatabaseEncoding();
	int			len;
	Oid			proc;
	unsigned char *dest;
	int			done;

	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
		return (char *) s;
	if (pg_is_ascii(s))
		return (char *) s;
	len = strlen(s);
	proc = FindDefaultConversionProc(enc, PG_UTF8);
	if (!OidIsValid(proc))
		return NULL;
	dest = palloc((Size) len * MAX_CONVERSION_GROWTH + 1);
	done = pg_do_encoding_conversion_buf(proc, enc, PG_UTF8,
										 (unsigned char *) s, len,
										 dest, len * MAX_CONVERSION_GROWTH + 1,
										 true);
	if (done < len)
	{
		pfree(dest);
		return NULL;
	}
	return (char *) dest;
}

/*
 * Append valid UTF-8 text in the server encoding; characters without a
 * form there become '?'.
 */
static void
from_utf8_valid(StringInfo out, const unsigned char *s, int len, int enc, Oid proc)
{
	unsigned char *dest;

	if (enc == PG_UTF8 || enc == PG_SQL_ASCII)
	{
		appendBinaryStringInfo(out, (const char *) s, len);
		return;
	}
	dest = palloc((Size) len * MAX_CONVERSION_GROWTH + 1);
	while (len > 0)
	{
		int			done = 0;

		if (OidIsValid(proc))
			done = pg_do_encoding_conversion_buf(proc, PG_UTF8, enc,
												 (unsigned char *) s, len,
												 dest, len * MAX_CONVERSION_GROWTH + 1,
												 true);
		else
		{
			/* no conversion to this encoding: keep the ASCII only */
			while (done < len && !IS_HIGHBIT_SET(s[done]))
				dest[done] = s[done], done++;
			dest[done] = '\0';
		}
		appendStringInfoString(out, (const char *) dest);
		s += done;
		len -= done;
		if (len > 0)
		{
			/* a character the server encoding lacks */
			int			skip = Min(pg_utf_mblen(s), len);

			appendStringInfoChar(out, '?');
			s += skip;
			len -= skip;
		}
	}
	pfree(dest);
}

/*
 * Text from Metronome in the server encoding (see encoding.h).
 */
char *
EncodingFromUtf8(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;
	int			enc = GetDatabaseEncoding();
	Oid			proc = InvalidOid;
	StringInfoData out;

	initStringInfo(&out);
	if (enc != PG_UTF8 && enc != PG_SQL_ASCII)
		proc = FindDefaultConversionProc(PG_UTF8, enc);
	while (p < end)
	{
		/* the longest valid UTF-8 run (it stops at a NUL too) */
		int			run = pg_encoding_verifymbstr(PG_UTF8, (const char *) p, end - p);

		if (run > 0)
		{
			from_utf8_valid(&out, p, run, enc, proc);
			p += run;
		}
		if (p < end)
		{
			appendStringInfoChar(&out, '?');
			p++;
		}
	}
	return out.data;
}

/*
 * Text from Metronome converted in place (see encoding.h).
 */
void
EncodingFromUtf8Buf(char *buf, size_t size)
{
	char	   *conv;
	int			len;

	if (size == 0)
		return;
	conv = EncodingFromUtf8(buf, strnlen(buf, size - 1));
	len = strlen(conv);
	if ((size_t) len > size - 1)
		len = pg_mbcliplen(conv, len, (int) size - 1);
	memcpy(buf, conv, len);
	buf[len] = '\0';
	pfree(conv);
}
