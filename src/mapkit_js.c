/*-------------------------------------------------------------------------
 *
 * mapkit_js.c
 *	  The JavaScript behaviours Segment's mapping-kit inherits from its
 *	  runtime, reproduced on JsonbValues: how a value becomes text (template
 *	  placeholders, String(number)), JSON.stringify and JSON.parse (@json),
 *	  String.prototype.replace with an escaped pattern (@replace), loose
 *	  equality with "" (@if blank), String.prototype.trim, and
 *	  toUpperCase / toLowerCase (@case; Unicode's full case mappings from
 *	  the generated unicode_case.h, final sigma included, the same on every
 *	  system and in every locale).
 *
 * The helpers on JsonbValues it shares with the evaluator are below both,
 * in jsonbval.c; the evaluator calls this file, never the other way.
 *
 * Numbers become text as String(n) writes the double JavaScript would hold
 * (jsnum.c: 1.50 -> "1.5", 1e21 -> "1e+21", 12345678901234567890 ->
 * "12345678901234567000").
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "jsnum.h"
#include "mapkit_int.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pg_compat.h"
#include "unicode_case.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

static int	js_case_lookup(pg_wchar c, bool upper, const uint32 **to);
static bool js_in_ranges(pg_wchar c, const JsCodeRange *r, int n);
static bool js_final_sigma(const pg_wchar *cps, int n, int i);

/* JSON.parse input whose numbers we refuse to convert (see js_parse_number) */
#define JS_MAX_NUMBER_LEXEME 1000
#define JS_MAX_EXPONENT 1000

/*
 * Append the elements of an array joined with "," (Array.prototype.join):
 * null elements are empty, objects are "[object Object]".  False when the
 * value is nested too deeply for the stack.
 */
static bool
js_append_array(StringInfo out, const JsonbValue *arr)
{
	JsonbValue	exp;
	int			i;

	JsonbValueExpand(arr, &exp);
	for (i = 0; i < exp.val.array.nElems; i++)
	{
		if (i > 0)
			appendStringInfoChar(out, ',');
		if (!JsAppendString(out, &exp.val.array.elems[i]))
			return false;
	}
	return true;
}

/*
 * Append String(v) the way a template placeholder shows it: null is empty
 * (Segment renders `value ?? ""`), a number as JavaScript writes it, an
 * object "[object Object]", an array its elements joined with ",".  False
 * when the value is nested too deeply for the stack.
 */
bool
JsAppendString(StringInfo out, const JsonbValue *v)
{
	if (stack_is_too_deep())
		return false;
	switch (v->type)
	{
		case jbvNull:
			break;
		case jbvString:
			appendBinaryStringInfo(out, v->val.string.val, v->val.string.len);
			break;
		case jbvNumeric:
			JsAppendNumberText(out, v->val.numeric, false);
			break;
		case jbvBool:
			appendStringInfoString(out, v->val.boolean ? "true" : "false");
			break;
		default:
			if (JsonbValueIsArray(v))
				return js_append_array(out, v);
			appendStringInfoString(out, "[object Object]");
			break;
	}
	return true;
}

/*
 * Is a numeric zero?
 */
static bool
numeric_is_zero(Numeric num)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(num),
											 NumericGetDatum(int64_to_numeric(0)))) == 0;
}

/*
 * Does String(array) give ""?  Only for [], and for a single element that
 * is null, "" or such an array ([[]], [[null]]).  Walks down iteratively.
 */
static bool
js_array_string_is_empty(const JsonbValue *arr)
{
	JsonbValue	cur = *arr;

	for (;;)
	{
		JsonbValue	exp;
		const JsonbValue *e;

		CHECK_FOR_INTERRUPTS();
		JsonbValueExpand(&cur, &exp);
		if (exp.val.array.nElems == 0)
			return true;
		if (exp.val.array.nElems > 1)
			return false;		/* at least a "," */
		e = &exp.val.array.elems[0];
		if (e->type == jbvNull)
			return true;
		if (e->type == jbvString)
			return e->val.string.len == 0;
		if (!JsonbValueIsArray(e))
			return false;		/* numbers, booleans, "[object Object]" */
		cur = *e;
	}
}

/*
 * JavaScript's `v == ""` for a value that is not null or undefined: true
 * for "", 0, false and arrays whose text is empty.  Segment's @if "blank"
 * counts these as blank.
 */
bool
JsLooseEqualsEmpty(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return v->val.string.len == 0;
		case jbvNumeric:
			return numeric_is_zero(v->val.numeric);
		case jbvBool:
			return !v->val.boolean;
		case jbvNull:
			return false;
		default:
			return JsonbValueIsArray(v) ? js_array_string_is_empty(v) : false;
	}
}

/*
 * Append a string as a JSON string literal, escaped as JSON.stringify does
 * (and as PostgreSQL does): \" \\ \b \f \n \r \t, other control characters
 * as \u00xx.
 */
static void
js_append_quoted(StringInfo out, const char *s, int len)
{
	const char *end = s + len;
	const char *run = s;

	appendStringInfoChar(out, '"');
	for (; s < end; s++)
	{
		unsigned char c = (unsigned char) *s;
		const char *esc = NULL;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		appendBinaryStringInfo(out, run, s - run);
		run = s + 1;
		switch (c)
		{
			case '"':
				esc = "\\\"";
				break;
			case '\\':
				esc = "\\\\";
				break;
			case '\b':
				esc = "\\b";
				break;
			case '\f':
				esc = "\\f";
				break;
			case '\n':
				esc = "\\n";
				break;
			case '\r':
				esc = "\\r";
				break;
			case '\t':
				esc = "\\t";
				break;
		}
		if (esc)
			appendStringInfoString(out, esc);
		else
			appendStringInfo(out, "\\u%04x", c);
	}
	appendBinaryStringInfo(out, run, end - run);
	appendStringInfoChar(out, '"');
}

/*
 * Append JSON.stringify(v): compact, no spaces.  Object keys come in
 * jsonb's order (the event's original order is not kept by jsonb).  False
 * when the value is nested too deeply for the stack.
 */
bool
JsAppendJson(StringInfo out, const JsonbValue *v)
{
	JsonbValue	exp;
	int			i;

	if (stack_is_too_deep())
		return false;
	CHECK_FOR_INTERRUPTS();
	switch (v->type)
	{
		case jbvNull:
			appendStringInfoString(out, "null");
			return true;
		case jbvString:
			js_append_quoted(out, v->val.string.val, v->val.string.len);
			return true;
		case jbvNumeric:
			JsAppendNumberText(out, v->val.numeric, true);
			return true;
		case jbvBool:
			appendStringInfoString(out, v->val.boolean ? "true" : "false");
			return true;
		default:
			break;
	}
	JsonbValueExpand(v, &exp);
	if (exp.type == jbvArray)
	{
		appendStringInfoChar(out, '[');
		for (i = 0; i < exp.val.array.nElems; i++)
		{
			if (i > 0)
				appendStringInfoChar(out, ',');
			if (!JsAppendJson(out, &exp.val.array.elems[i]))
				return false;
		}
		appendStringInfoChar(out, ']');
	}
	else
	{
		appendStringInfoChar(out, '{');
		for (i = 0; i < exp.val.object.nPairs; i++)
		{
			JsonbPair  *p = &exp.val.object.pairs[i];

			if (i > 0)
				appendStringInfoChar(out, ',');
			js_append_quoted(out, p->key.val.string.val, p->key.val.string.len);
			appendStringInfoChar(out, ':');
			if (!JsAppendJson(out, &p->value))
				return false;
		}
		appendStringInfoChar(out, '}');
	}
	return true;
}

/* State of JsJsonParse's semantic actions */
typedef struct JsParse
{
	PgCompatJsonbBuilder jb;
	JsonbValue *result;
	bool		bad;			/* a number we will not convert */
} JsParse;

static JsonActionResult
jp_object_start(void *state)
{
	JsParse    *jp = (JsParse *) state;

	if (!jp->bad)
		PgCompatJsonbPush(&jp->jb, WJB_BEGIN_OBJECT, NULL);
	return JSON_ACTION_OK;
}

static JsonActionResult
jp_array_start(void *state)
{
	JsParse    *jp = (JsParse *) state;

	if (!jp->bad)
		PgCompatJsonbPush(&jp->jb, WJB_BEGIN_ARRAY, NULL);
	return JSON_ACTION_OK;
}

static void
jp_end(JsParse *jp, JsonbIteratorToken tok)
{
	JsonbValue *res;

	if (jp->bad)
		return;
	res = PgCompatJsonbPush(&jp->jb, tok, NULL);
	if (res != NULL)
		jp->result = res;
}

static JsonActionResult
jp_object_end(void *state)
{
	jp_end((JsParse *) state, WJB_END_OBJECT);
	return JSON_ACTION_OK;
}

static JsonActionResult
jp_array_end(void *state)
{
	jp_end((JsParse *) state, WJB_END_ARRAY);
	return JSON_ACTION_OK;
}

static JsonActionResult
jp_field_start(void *state, char *fname, bool isnull)
{
	JsParse    *jp = (JsParse *) state;
	JsonbValue	key;

	(void) isnull;
	if (jp->bad)
		return JSON_ACTION_OK;
	key.type = jbvString;
	key.val.string.val = fname;
	key.val.string.len = strlen(fname);
	PgCompatJsonbPush(&jp->jb, WJB_KEY, &key);
	return JSON_ACTION_OK;
}

/*
 * Is a JSON number lexeme one numeric_in takes without an error?  We refuse
 * absurd ones (over 1000 characters, or exponents past +-1000) and return
 * the text undecoded instead.
 */
static bool
js_number_ok(const char *tok)
{
	const char *e;
	int			exp = 0;

	if (strlen(tok) > JS_MAX_NUMBER_LEXEME)
		return false;
	e = strpbrk(tok, "eE");
	if (e == NULL)
		return true;
	e++;
	if (*e == '+' || *e == '-')
		e++;
	for (; *e; e++)
	{
		exp = exp * 10 + (*e - '0');
		if (exp > JS_MAX_EXPONENT)
			return false;
	}
	return true;
}

static JsonActionResult
jp_scalar(void *state, char *token, JsonTokenType tokentype)
{
	JsParse    *jp = (JsParse *) state;
	JsonbValue	v;

	if (jp->bad)
		return JSON_ACTION_OK;
	switch (tokentype)
	{
		case JSON_TOKEN_STRING:
			v.type = jbvString;
			v.val.string.val = token;
			v.val.string.len = strlen(token);
			break;
		case JSON_TOKEN_NUMBER:
			if (!js_number_ok(token))
			{
				jp->bad = true;
				return JSON_ACTION_STOP;
			}
			v.type = jbvNumeric;
			v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																CStringGetDatum(token),
																ObjectIdGetDatum(InvalidOid),
																Int32GetDatum(-1)));
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			v.type = jbvBool;
			v.val.boolean = (tokentype == JSON_TOKEN_TRUE);
			break;
		default:
			v.type = jbvNull;
			break;
	}
	if (PgCompatJsonbOpen(&jp->jb) == NULL)
	{
		jp->result = palloc(sizeof(JsonbValue));
		*jp->result = v;
	}
	else
		PgCompatJsonbPush(&jp->jb, PgCompatJsonbOpen(&jp->jb)->contVal.type == jbvArray ?
						  WJB_ELEM : WJB_VALUE, &v);
	return JSON_ACTION_OK;
}

/*
 * How deeply the brackets of JSON text nest (brackets inside strings do not
 * count).  JSON.parse gives up on text nested deeper than its stack allows,
 * and so do we, before parsing, at MAPKIT_MAX_DEPTH.
 */
static int
js_json_depth(const char *s, int len)
{
	int			depth = 0;
	int			max = 0;
	bool		instr = false;
	int			i;

	for (i = 0; i < len; i++)
	{
		char		c = s[i];

		if (instr)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				instr = false;
		}
		else if (c == '"')
			instr = true;
		else if (c == '[' || c == '{')
		{
			if (++depth > max)
				max = depth;
		}
		else if (c == ']' || c == '}')
			depth--;
	}
	return max;
}

/*
 * JSON.parse(s): true and the parsed value in *out, or false when s is not
 * JSON (Segment's @json decode then returns the text unchanged).  Text that
 * jsonb cannot hold (\u0000, numbers out of numeric's range) counts as not
 * JSON.
 */
bool
JsJsonParse(const char *s, int len, JsonbValue *out)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	JsParse		jp;

	if (js_json_depth(s, len) > MAPKIT_MAX_DEPTH)
		return false;

	memset(&jp, 0, sizeof(jp));
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &jp;
	sem.object_start = jp_object_start;
	sem.object_end = jp_object_end;
	sem.array_start = jp_array_start;
	sem.array_end = jp_array_end;
	sem.object_field_start = jp_field_start;
	sem.scalar = jp_scalar;

	lex = PgCompatJsonLexer(pnstrdup(s, len), len, GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &sem) != JSON_SUCCESS || jp.bad || jp.result == NULL)
		return false;
	*out = *jp.result;
	return true;
}

/*
 * Code point at s (UTF-8), or the byte for other encodings; *len gets the
 * character's length in bytes.
 */
static pg_wchar
js_char(const char *s, int avail, int *len)
{
	int			l = pg_mblen(s);

	if (l > avail)
		l = avail;
	*len = l;
	if (GetDatabaseEncoding() == PG_UTF8 && l > 1)
		return utf8_to_unicode((const unsigned char *) s);
	if (l > 1)
		return (pg_wchar) -1;	/* compared bytewise by the caller */
	return (unsigned char) *s;
}

/*
 * The full case mapping of a code point from the generated table: the
 * number of code points it maps to (1 to 3, into to[]), 0 when it maps to
 * itself.
 */
static int
js_case_lookup(pg_wchar c, bool upper, const uint32 **to)
{
	const JsCaseMapping *tab = upper ? js_upper_mappings : js_lower_mappings;
	int			lo = 0;
	int			hi = (upper ? lengthof(js_upper_mappings) : lengthof(js_lower_mappings)) - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (tab[mid].code == c)
		{
			*to = tab[mid].to;
			return tab[mid].n;
		}
		if (tab[mid].code < c)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return 0;
}

/*
 * Is c in one of the ranges?
 */
static bool
js_in_ranges(pg_wchar c, const JsCodeRange *r, int n)
{
	int			lo = 0;
	int			hi = n - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (c < r[mid].first)
			hi = mid - 1;
		else if (c > r[mid].last)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

/*
 * Case-fold a code point the way a JavaScript /i regular expression does
 * (ECMA-262 Canonicalize without the u flag): its upper case when that is
 * one code point, except that a non-ASCII letter never folds to ASCII.
 */
static pg_wchar
js_fold(pg_wchar c)
{
	const uint32 *to;
	pg_wchar	u;

	if (c < 128)
		return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
	if (GetDatabaseEncoding() != PG_UTF8 || js_case_lookup(c, true, &to) != 1)
		return c;
	u = to[0];
	return u < 128 ? c : u;
}

/*
 * Does pat match s at this position?  Sets *mlen to the bytes of s matched.
 */
static bool
js_match_at(const char *s, int avail, const char *pat, int patlen,
			bool ignorecase, int *mlen)
{
	int			i = 0;
	int			j = 0;

	if (!ignorecase)
	{
		if (avail < patlen || memcmp(s, pat, patlen) != 0)
			return false;
		*mlen = patlen;
		return true;
	}
	while (j < patlen)
	{
		int			li,
					lj;
		pg_wchar	ci,
					cj;

		if (i >= avail)
			return false;
		ci = js_char(s + i, avail - i, &li);
		cj = js_char(pat + j, patlen - j, &lj);
		if (ci == (pg_wchar) -1 || cj == (pg_wchar) -1)
		{
			if (li != lj || memcmp(s + i, pat + j, li) != 0)
				return false;
		}
		else if (js_fold(ci) != js_fold(cj))
			return false;
		i += li;
		j += lj;
	}
	*mlen = i;
	return true;
}

/*
 * Append a replacement with String.prototype.replace's substitutions
 * ($$, $&, $`, $'); the pattern has no capture groups, so "$1" and "$<n>"
 * stay as written.
 */
static void
js_append_substitution(StringInfo out, const char *rep, int replen,
					   const char *s, int slen, int mstart, int mlen)
{
	int			i;

	for (i = 0; i < replen; i++)
	{
		if (rep[i] == '$' && i + 1 < replen)
		{
			char		c = rep[i + 1];

			if (c == '$')
			{
				appendStringInfoChar(out, '$');
				i++;
				continue;
			}
			if (c == '&')
			{
				appendBinaryStringInfo(out, s + mstart, mlen);
				i++;
				continue;
			}
			if (c == '`')
			{
				appendBinaryStringInfo(out, s, mstart);
				i++;
				continue;
			}
			if (c == '\'')
			{
				appendBinaryStringInfo(out, s + mstart + mlen, slen - mstart - mlen);
				i++;
				continue;
			}
		}
		appendStringInfoChar(out, rep[i]);
	}
}

/*
 * s.replace(new RegExp(escape(pat), flags), rep): replace the first (or,
 * when global, every non-overlapping) occurrence of pat, taken literally.
 */
void
JsReplace(StringInfo out, const char *s, int slen, const char *pat, int patlen,
		  const char *rep, int replen, bool global, bool ignorecase)
{
	int			i = 0;
	int			copied = 0;

	if (patlen == 0)
	{
		appendBinaryStringInfo(out, s, slen);
		return;
	}
	while (i < slen)
	{
		int			mlen;

		if (js_match_at(s + i, slen - i, pat, patlen, ignorecase, &mlen))
		{
			appendBinaryStringInfo(out, s + copied, i - copied);
			js_append_substitution(out, rep, replen, s, slen, i, mlen);
			i += mlen;
			copied = i;
			if (!global)
				break;
			continue;
		}
		i += Min(pg_mblen(s + i), slen - i);
	}
	appendBinaryStringInfo(out, s + copied, slen - copied);
}

/*
 * Is the character at s (l bytes) whitespace for String.prototype.trim?
 */
static bool
js_is_space(const char *s, int l)
{
	pg_wchar	c;

	if (l == 1)
		return *s == ' ' || (*s >= '\t' && *s <= '\r');
	if (GetDatabaseEncoding() != PG_UTF8)
		return false;
	c = utf8_to_unicode((const unsigned char *) s);
	return c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
		c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
		c == 0x3000 || c == 0xFEFF;
}

/*
 * String.prototype.trim on (*s, *len), in place.
 */
void
JsTrim(const char **s, int *len)
{
	const char *p = *s;
	int			n = *len;

	while (n > 0)
	{
		int			l = Min(pg_mblen(p), n);

		if (!js_is_space(p, l))
			break;
		p += l;
		n -= l;
	}
	/* from the end: find the last non-space character */
	{
		int			i = 0;
		int			keep = 0;

		while (i < n)
		{
			int			l = Min(pg_mblen(p + i), n - i);

			if (!js_is_space(p + i, l))
				keep = i + l;
			i += l;
		}
		n = keep;
	}
	*s = p;
	*len = n;
}

/*
 * Final_Sigma (Unicode's one context rule that toLowerCase applies): is
 * the capital sigma at cps[i] preceded by a cased letter and not followed
 * by one, case-ignorable characters between them skipped?
 */
static bool
js_final_sigma(const pg_wchar *cps, int n, int i)
{
	int			j;
	bool		before = false;

	for (j = i - 1; j >= 0; j--)
	{
		if (js_in_ranges(cps[j], js_case_ignorable_ranges, lengthof(js_case_ignorable_ranges)))
			continue;
		before = js_in_ranges(cps[j], js_cased_ranges, lengthof(js_cased_ranges));
		break;
	}
	if (!before)
		return false;
	for (j = i + 1; j < n; j++)
	{
		if (js_in_ranges(cps[j], js_case_ignorable_ranges, lengthof(js_case_ignorable_ranges)))
			continue;
		return !js_in_ranges(cps[j], js_cased_ranges, lengthof(js_cased_ranges));
	}
	return true;
}

/*
 * toUpperCase / toLowerCase: Unicode's full case mappings as JavaScript
 * applies them ("straße" -> "STRASSE", final sigma), from the generated
 * table (unicode_case.h), the same on every system and in every locale.
 * In a database that is not UTF-8, ASCII letters only.
 */
char *
JsChangeCase(const char *s, int len, bool upper)
{
	StringInfoData buf;
	pg_wchar   *cps;
	int			n = 0;
	int			i = 0;
	int			k;

	initStringInfo(&buf);
	if (GetDatabaseEncoding() != PG_UTF8)
	{
		for (i = 0; i < len; i++)
		{
			char		c = s[i];

			if (upper && c >= 'a' && c <= 'z')
				c = c - 'a' + 'A';
			else if (!upper && c >= 'A' && c <= 'Z')
				c = c - 'A' + 'a';
			appendStringInfoChar(&buf, c);
		}
		return buf.data;
	}

	/* code points first: the sigma rule looks at both sides */
	cps = palloc(sizeof(pg_wchar) * Max(len, 1));
	while (i < len)
	{
		int			l = Min(pg_mblen(s + i), len - i);

		cps[n++] = l == 1 ? (unsigned char) s[i] : utf8_to_unicode((const unsigned char *) s + i);
		i += l;
	}
	for (i = 0; i < n; i++)
	{
		const uint32 *to;
		int			m;
		pg_wchar	one;

		if (!upper && cps[i] == 0x03A3 && js_final_sigma(cps, n, i))
		{
			one = 0x03C2;		/* final small sigma */
			to = &one;
			m = 1;
		}
		else if ((m = js_case_lookup(cps[i], upper, &to)) == 0)
		{
			one = cps[i];
			to = &one;
			m = 1;
		}
		for (k = 0; k < m; k++)
		{
			unsigned char out[8];

			unicode_to_utf8(to[k], out);
			appendBinaryStringInfo(&buf, (char *) out, pg_utf_mblen(out));
		}
	}
	pfree(cps);
	return buf.data;
}

/*
 * Find the next match of Segment's placeholder expressions at or after
 * byte offset from: /\{\{([^}]+)\}\}/ when braces is 2, /\{\{\{([^}]+)\}\}\}/
 * when 3.  Sets the match's [mstart, mend) and its inner text (cstart,
 * clen).  The inner text runs to the first "}", so the expression never
 * backtracks: a failed attempt moves on one character.
 */
bool
JsNextPlaceholder(const char *s, int len, int from, int braces,
				  int *mstart, int *mend, int *cstart, int *clen)
{
	int			i = from;
	int			close = -1;		/* first '}' after an earlier opening */

	while (i < len)
	{
		int			j;
		int			k;

		for (k = 0; k < braces && i + k < len && s[i + k] == '{'; k++)
			;
		if (k == braces)
		{
			/*
			 * The first '}' after the opening braces: the one found for an
			 * earlier opening while it is still ahead, so that a long run
			 * of '{' is scanned once, not once per position (quadratic).
			 */
			j = i + braces;
			if (close >= j)
				j = close;
			else
			{
				while (j < len && s[j] != '}')
					j += Min(pg_mblen(s + j), len - j);
				close = j;
			}
			if (j >= len)
				return false;	/* no '}' left: no placeholder either */
			if (j > i + braces)
			{
				for (k = 0; k < braces && j + k < len && s[j + k] == '}'; k++)
					;
				if (k == braces)
				{
					*mstart = i;
					*mend = j + braces;
					*cstart = i + braces;
					*clen = j - (i + braces);
					return true;
				}
			}
		}
		i += Min(pg_mblen(s + i), len - i);
	}
	return false;
}

/*
 * Is a value falsy in JavaScript (null, false, 0, "")?  Containers never
 * are.
 */
bool
JsIsFalsy(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return true;
		case jbvBool:
			return !v->val.boolean;
		case jbvString:
			return v->val.string.len == 0;
		case jbvNumeric:
			return numeric_is_zero(v->val.numeric);
		default:
			return false;
	}
}
