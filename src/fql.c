/*-------------------------------------------------------------------------
 *
 * fql.c
 *	  Segment's subscription language (FQL): a subscription is parsed once
 *	  into a tree, and the tree is evaluated on each jsonb event.
 *
 * Grammar ("and" binds tighter than "or"; "not" and "!" tighter than "and";
 * parentheses nest to any depth):
 *
 *	  expr		:= and_expr { "or" and_expr }
 *	  and_expr	:= unary { "and" unary }
 *	  unary		:= "not" unary | "!" unary | primary
 *	  primary	:= "(" expr ")"
 *				 | ["!"] ("contains" | "match") "(" path "," string ")"
 *				 | path op value
 *	  op		:= "=" | "!=" | "<" | "<=" | ">" | ">="
 *	  value		:= string | number | "true" | "false" | "null"
 *				   (after < <= > >=: a number or a string)
 *
 * Paths are dotted keys (properties.plan, context.groupId, items.0).  A key
 * is made of letters, digits, "_", "-" and non-ASCII characters; a backslash
 * escapes any other character (properties.product\ 1.price, a\.b is the one
 * key "a.b"); lodash brackets work too: items[0], properties["odd key"].
 * Keywords are lowercase ("AND" is an error that says so) and reserved
 * where a whole path would be one: and, or, not, true, false, null (write
 * \null = 1 for a top-level key "null"; properties.null needs no escape).
 * "contains" and "match" are function names only when "(" follows.
 *
 * Strings are '...' or "..." with the JSON escapes \" \' \\ \/ \b \f \n \r
 * \t \uXXXX; a backslash before any other character is kept as it is, so
 * glob escapes such as "\*" reach match() untouched.  Numbers: an optional
 * sign, digits with an optional fraction, an optional exponent (5, -2.5,
 * .5, 1e3).
 *
 * Meaning, as Segment evaluates it (see segment-semantics.md):
 *	  = "s"		the value is a string equal to s (the number 123 is not "123")
 *	  = 5		the value is a number equal to 5 (5 = 5.0)
 *	  = true	the value is that boolean
 *	  = null	the field is missing or null
 *	  !=		"not =": true on a missing field, on another type, and
 *				(with null) true when the field exists and is not null;
 *				but with a bare number (!= 5) true only when the value is a
 *				number other than it (Segment's number_not_equals)
 *	  < <= > >=	true only when the value is a number; the literal is a
 *				number, or a quoted one that is read as JavaScript's
 *				Number() reads it (< "10" is < 10; "abc" orders nothing)
 *	  contains(p, s)	the value is a string containing s
 *	  match(p, g)		the value is a string matched whole by the glob g:
 *				* any run, ? one character, [abc] [a-z] [!a-z] [^a-z], \x the
 *				character x itself; case-sensitive
 *	  !contains(p, s), !match(p, g)	the value is a string NOT containing /
 *				matched: like Segment, a missing or non-string value gives
 *				false here ("! contains(" with a space is the same form),
 *				while "not contains(...)" and "!(contains(...))" are plain
 *				logical negations (true on a missing field).
 *
 * Where Segment's own parser (destination-subscriptions) differs we follow
 * segment-semantics.md: any path is allowed and read as written (Segment
 * reads properties.* from traits on identify/group events), precedence and
 * nesting are real, !( ) negates, match() is a full glob.
 *
 * Evaluation does not allocate (paths with an array index excepted, see
 * path.c): strings are compared in place in the jsonb buffer, numeric
 * literals are kept as Numeric, glob patterns are compiled at parse time.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fql.h"
#include "jsonbval.h"
#include "path.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

/* ----------------------------------------------------------------
 * The tree
 * ----------------------------------------------------------------
 */

typedef enum FqlKind
{
	FQL_OR,
	FQL_AND,
	FQL_NOT,
	FQL_COMPARE,
	FQL_CONTAINS,
	FQL_MATCH
} FqlKind;

typedef enum FqlOp
{
	FQL_EQ,
	FQL_NE,
	FQL_LT,
	FQL_LE,
	FQL_GT,
	FQL_GE
} FqlOp;

typedef enum FqlLit
{
	LIT_STRING,
	LIT_NUMBER,
	LIT_TRUE,
	LIT_FALSE,
	LIT_NULL
} FqlLit;

/* one step of a compiled glob pattern */
typedef enum GlobKind
{
	GLOB_LITERAL,				/* these bytes */
	GLOB_ANY,					/* ? : one character */
	GLOB_STAR,					/* * : any run of characters */
	GLOB_CLASS					/* [...] : one character in (or not in) ranges */
} GlobKind;

typedef struct GlobRange
{
	uint32		lo;
	uint32		hi;
} GlobRange;

typedef struct GlobItem
{
	GlobKind	kind;
	bool		negated;		/* GLOB_CLASS: [!...] or [^...] */
	int			len;			/* GLOB_LITERAL: bytes; GLOB_CLASS: ranges */
	const char *lit;			/* GLOB_LITERAL */
	GlobRange  *ranges;			/* GLOB_CLASS */
} GlobItem;

typedef struct FqlGlob
{
	int			nitems;
	GlobItem   *items;
} FqlGlob;

struct FqlExpr
{
	FqlKind		kind;
	/* FQL_OR, FQL_AND (nargs >= 2), FQL_NOT (nargs = 1) */
	int			nargs;
	FqlExpr   **args;
	/* FQL_COMPARE, FQL_CONTAINS, FQL_MATCH */
	MetPath    *path;
	FqlOp		op;				/* FQL_COMPARE */
	FqlLit		lit;			/* FQL_COMPARE */
	bool		negated;		/* FQL_CONTAINS, FQL_MATCH: the "!" form */
	const char *str;			/* LIT_STRING, contains' needle, the glob */
	int			slen;
	Numeric		num;			/* LIT_NUMBER; ordering: Number() of the
								 * literal, NULL when NaN or infinite */
	int			inf;			/* ordering: +1 / -1 when Number() of the
								 * literal is +/-Infinity, else 0 */
	FqlGlob    *glob;			/* FQL_MATCH */
};

static Numeric js_string_to_number(const char *s, int len, int *inf);

/* ----------------------------------------------------------------
 * Characters
 * ----------------------------------------------------------------
 */

static inline bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* may a path key contain c unescaped? (non-ASCII bytes: yes) */
static inline bool
is_key_char(char c)
{
	unsigned char uc = (unsigned char) c;

	return (uc >= 'a' && uc <= 'z') || (uc >= 'A' && uc <= 'Z') ||
		(uc >= '0' && uc <= '9') || uc == '_' || uc == '-' || uc >= 0x80;
}

/* may a path start with c? (not a digit, not "-": those start numbers) */
static inline bool
is_path_start(char c)
{
	return is_key_char(c) && !(c >= '0' && c <= '9') && c != '-';
}

static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/*
 * Byte length of the character at s, never more than remaining (> 0).
 * Server encodings are ASCII-safe, so a byte below 0x80 is a character.
 */
static inline int
char_len(const char *s, int remaining)
{
	int			l;

	if ((unsigned char) *s < 0x80)
		return 1;
	l = pg_encoding_mblen(GetDatabaseEncoding(), s);
	if (l < 1)
		l = 1;
	return Min(l, remaining);
}

/*
 * A number for the character at s (clen bytes) that orders as the
 * character set does: its code point in UTF-8, else its bytes read
 * big-endian.  Used by glob character ranges.
 */
static inline uint32
char_code(const char *s, int clen)
{
	uint32		v = 0;
	int			i;

	if (clen == 1)
		return (unsigned char) s[0];
	if (GetDatabaseEncoding() == PG_UTF8)
		return utf8_to_unicode((const unsigned char *) s);
	for (i = 0; i < clen && i < 4; i++)
		v = (v << 8) | (unsigned char) s[i];
	return v;
}

/* ----------------------------------------------------------------
 * Lexer
 * ----------------------------------------------------------------
 */

typedef enum TokType
{
	T_EOF,
	T_WORD,						/* a path, a keyword or a function name */
	T_STRING,
	T_NUMBER,
	T_EQ,
	T_NE,
	T_LT,
	T_LE,
	T_GT,
	T_GE,
	T_BANG,
	T_LPAREN,
	T_RPAREN,
	T_COMMA,
	T_BAD						/* an unexpected character or a lexing error */
} TokType;

typedef struct Token
{
	TokType		type;
	int			start;			/* byte offsets into the text */
	int			end;
	bool		plain;			/* T_WORD of key characters only */
	const char *err;			/* T_BAD: what is wrong, NULL for a stray char */
	int			errpos;			/* T_BAD with err: where (byte offset) */
} Token;

typedef struct FqlParser
{
	const char *text;
	int			len;
	Token		tok;			/* the current token, not yet consumed */
	char	   *errmsg;			/* the first error */
	int			errpos;			/* its byte offset */
} FqlParser;

/* NUMERIC_MAX_PRECISION: numeric_in refuses larger exponents */
#define FQL_MAX_EXPONENT	1000
#define FQL_MAX_NUMBER_LEN	1000

/*
 * Scan a quoted string whose opening quote is at text[i]; returns the
 * offset of its closing quote, or -1 when there is none.
 */
static int
scan_quoted(const char *text, int len, int i)
{
	char		quote = text[i++];

	while (i < len && text[i] != quote)
	{
		if (text[i] == '\\' && i + 1 < len)
			i++;
		i++;
	}
	return i < len ? i : -1;
}

/* make *tok a T_BAD token with a message */
static void
lex_error(Token *tok, int start, int end, const char *err, int errpos)
{
	tok->type = T_BAD;
	tok->start = start;
	tok->end = end;
	tok->err = err;
	tok->errpos = errpos;
}

/*
 * Scan a word: a path (with its escapes, dots and brackets), a keyword or
 * a function name, starting at text[i].
 */
static void
lex_word(const char *text, int len, int i, Token *tok)
{
	int			start = i;

	tok->type = T_WORD;
	tok->start = start;
	tok->plain = true;
	while (i < len)
	{
		char		c = text[i];

		if (is_key_char(c))
			i++;
		else if (c == '\\')
		{
			if (i + 1 >= len)
			{
				lex_error(tok, start, len,
						  "expected a character after \"\\\" in a field path", i);
				return;
			}
			i += 1 + char_len(text + i + 1, len - i - 1);
			tok->plain = false;
		}
		else if (c == '.')
		{
			i++;
			tok->plain = false;
		}
		else if (c == '[')
		{
			int			j = i + 1;

			tok->plain = false;
			if (j < len && (text[j] == '"' || text[j] == '\''))
			{
				j = scan_quoted(text, len, j);
				if (j < 0)
				{
					lex_error(tok, start, len,
							  "unterminated quoted key in a field path", i + 1);
					return;
				}
				j++;
			}
			else
			{
				while (j < len && is_key_char(text[j]))
					j++;
			}
			if (j >= len || text[j] != ']')
			{
				lex_error(tok, start, j, "expected \"]\" to close \"[\" in a field path", i);
				return;
			}
			i = j + 1;
		}
		else
			break;
	}
	tok->end = i;
}

/*
 * Scan a number starting at text[i] (a sign, a digit or ".digit").
 */
static void
lex_number(const char *text, int len, int i, Token *tok)
{
	int			start = i;
	int			ndigits = 0;

	if (text[i] == '-' || text[i] == '+')
		i++;
	while (i < len && is_digit(text[i]))
		i++, ndigits++;
	if (i < len && text[i] == '.')
	{
		int			nfrac = 0;

		i++;
		while (i < len && is_digit(text[i]))
			i++, nfrac++;
		if (nfrac == 0)
		{
			lex_error(tok, start, i, "expected a digit after the decimal point", i);
			return;
		}
		ndigits += nfrac;
	}
	if (ndigits == 0)
	{
		lex_error(tok, start, Min(i + 1, len), "expected a number after the sign", start);
		return;
	}
	if (i < len && (text[i] == 'e' || text[i] == 'E'))
	{
		int			expstart;
		int			exponent = 0;

		i++;
		if (i < len && (text[i] == '-' || text[i] == '+'))
			i++;
		expstart = i;
		while (i < len && is_digit(text[i]))
		{
			if (exponent <= FQL_MAX_EXPONENT)
				exponent = exponent * 10 + (text[i] - '0');
			i++;
		}
		if (i == expstart)
		{
			lex_error(tok, start, i, "expected digits in the exponent of a number", i);
			return;
		}
		if (exponent > FQL_MAX_EXPONENT)
		{
			lex_error(tok, start, i, "number out of range (exponent beyond 1000)", start);
			return;
		}
	}
	/* "1.2.3"; a letter may follow, as in "n=1and m=2" */
	if (i < len && text[i] == '.')
	{
		int			j = i;

		while (j < len && (is_key_char(text[j]) || text[j] == '.'))
			j++;
		lex_error(tok, start, j,
				  psprintf("invalid number \"%.*s\"", pg_mbcliplen(text + start, j - start, 40), text + start),
				  start);
		return;
	}
	if (i - start > FQL_MAX_NUMBER_LEN)
	{
		lex_error(tok, start, i, "number too long (more than 1000 characters)", start);
		return;
	}
	tok->type = T_NUMBER;
	tok->start = start;
	tok->end = i;
}

/*
 * The token starting at or after byte offset i.
 */
static void
lex(const FqlParser *p, int i, Token *tok)
{
	const char *text = p->text;
	int			len = p->len;
	char		c;

	while (i < len && is_space(text[i]))
		i++;
	tok->start = i;
	tok->plain = false;
	tok->err = NULL;
	tok->errpos = i;
	if (i >= len)
	{
		tok->type = T_EOF;
		tok->end = i;
		return;
	}
	c = text[i];
	tok->end = i + 1;
	switch (c)
	{
		case '(':
			tok->type = T_LPAREN;
			return;
		case ')':
			tok->type = T_RPAREN;
			return;
		case ',':
			tok->type = T_COMMA;
			return;
		case '=':
			tok->type = T_EQ;
			return;
		case '!':
			if (i + 1 < len && text[i + 1] == '=')
			{
				tok->type = T_NE;
				tok->end = i + 2;
			}
			else
				tok->type = T_BANG;
			return;
		case '<':
		case '>':
			if (i + 1 < len && text[i + 1] == '=')
			{
				tok->type = c == '<' ? T_LE : T_GE;
				tok->end = i + 2;
			}
			else
				tok->type = c == '<' ? T_LT : T_GT;
			return;
		case '"':
		case '\'':
			{
				int			close = scan_quoted(text, len, i);

				if (close < 0)
				{
					lex_error(tok, i, len,
							  c == '"' ? "unterminated string: no closing \"" :
							  "unterminated string: no closing '", i);
					return;
				}
				tok->type = T_STRING;
				tok->end = close + 1;
				return;
			}
		default:
			break;
	}
	if (is_digit(c) || c == '-' || c == '+' ||
		(c == '.' && i + 1 < len && is_digit(text[i + 1])))
	{
		lex_number(text, len, i, tok);
		return;
	}
	if (is_path_start(c) || c == '\\' || c == '[')
	{
		lex_word(text, len, i, tok);
		return;
	}
	/* a stray character */
	tok->type = T_BAD;
	tok->end = i + char_len(text + i, len - i);
}

/* is tok the plain word kw? */
static bool
tok_is(const FqlParser *p, const Token *tok, const char *kw)
{
	int			kwlen = strlen(kw);

	return tok->type == T_WORD && tok->plain &&
		tok->end - tok->start == kwlen &&
		memcmp(p->text + tok->start, kw, kwlen) == 0;
}

/* is tok a reserved word (and, or, not, true, false, null)? */
static bool
tok_is_reserved(const FqlParser *p, const Token *tok)
{
	return tok_is(p, tok, "and") || tok_is(p, tok, "or") ||
		tok_is(p, tok, "not") || tok_is(p, tok, "true") ||
		tok_is(p, tok, "false") || tok_is(p, tok, "null");
}

/* is tok a reserved word in the wrong case ("AND", "True")? */
static bool
tok_is_miscased_keyword(const FqlParser *p, const Token *tok)
{
	static const char *const kws[] = {"and", "or", "not", "true", "false", "null"};
	int			nkws = (int) lengthof(kws);
	int			n = tok->end - tok->start;
	int			k;

	if (tok->type != T_WORD || !tok->plain)
		return false;
	for (k = 0; k < nkws; k++)
	{
		if (n == (int) strlen(kws[k]) &&
			pg_strncasecmp(p->text + tok->start, kws[k], n) == 0 &&
			memcmp(p->text + tok->start, kws[k], n) != 0)
			return true;
	}
	return false;
}

/* consume the current token */
static void
advance(FqlParser *p)
{
	lex(p, p->tok.end, &p->tok);
}

/* ----------------------------------------------------------------
 * Errors
 * ----------------------------------------------------------------
 */

/* The source text of bytes [start, end), cut to about 40 bytes. */
static char *
snippet(const FqlParser *p, int start, int end)
{
	return TextExcerpt(p->text + start, end - start, 40);
}

/* What a token is, for "found ..." */
static char *
describe(const FqlParser *p, const Token *tok)
{
	char	   *s;

	switch (tok->type)
	{
		case T_EOF:
			return "end of input";
		case T_STRING:
			return psprintf("string %s", snippet(p, tok->start, tok->end));
		case T_NUMBER:
			return psprintf("number %s", snippet(p, tok->start, tok->end));
		default:
			break;
	}
	if (tok->type == T_BAD && tok->end - tok->start == 1 &&
		tok->start + 1 < p->len &&
		(p->text[tok->start] == '&' || p->text[tok->start] == '|') &&
		p->text[tok->start + 1] == p->text[tok->start])
		return p->text[tok->start] == '&' ?
			"\"&&\" (use \"and\")" : "\"||\" (use \"or\")";
	s = psprintf("\"%s\"", snippet(p, tok->start, tok->end));
	if (tok_is_miscased_keyword(p, tok))
		s = psprintf("%s (keywords are lowercase)", s);
	return s;
}

/* Record an error at byte offset pos (the first one wins); returns NULL. */
static void *fail(FqlParser *p, int pos, const char *fmt,...) pg_attribute_printf(3, 4);

static void *
fail(FqlParser *p, int pos, const char *fmt,...)
{
	if (p->errmsg == NULL)
	{
		StringInfoData buf;

		initStringInfo(&buf);
		for (;;)
		{
			va_list		args;
			int			needed;

			va_start(args, fmt);
			needed = appendStringInfoVA(&buf, fmt, args);
			va_end(args);
			if (needed == 0)
				break;
			enlargeStringInfo(&buf, needed);
		}
		p->errmsg = buf.data;
		p->errpos = pos;
	}
	return NULL;
}

/* "expected <what>, found <tok>", or the lexing error tok carries. */
static void *
fail_tok(FqlParser *p, const Token *tok, const char *what)
{
	if (tok->type == T_BAD && tok->err != NULL)
		return fail(p, tok->errpos, "%s", tok->err);
	return fail(p, tok->start, "expected %s, found %s", what, describe(p, tok));
}

/* ----------------------------------------------------------------
 * Strings, paths, globs
 * ----------------------------------------------------------------
 */

/* value of a hex digit, or -1 */
static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* read 4 hex digits at text[i]; -1 when they are not */
static int
hex4(const FqlParser *p, int i, int end)
{
	int			v = 0;
	int			k;

	if (end - i < 4)
		return -1;
	for (k = 0; k < 4; k++)
	{
		int			h = hexval(p->text[i + k]);

		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

/*
 * Decode the body of a quoted string, bytes [i, end) (without the quotes),
 * into buf.  False (with the error recorded) on a bad \u escape.
 */
static bool
decode_string(FqlParser *p, int i, int end, StringInfo buf)
{
	const char *text = p->text;

	while (i < end)
	{
		char		c = text[i];

		if (c != '\\' || i + 1 >= end)
		{
			appendStringInfoChar(buf, c);
			i++;
			continue;
		}
		c = text[i + 1];
		switch (c)
		{
			case '"':
			case '\'':
			case '\\':
			case '/':
				appendStringInfoChar(buf, c);
				break;
			case 'b':
				appendStringInfoChar(buf, '\b');
				break;
			case 'f':
				appendStringInfoChar(buf, '\f');
				break;
			case 'n':
				appendStringInfoChar(buf, '\n');
				break;
			case 'r':
				appendStringInfoChar(buf, '\r');
				break;
			case 't':
				appendStringInfoChar(buf, '\t');
				break;
			case 'u':
				{
					int			cp = hex4(p, i + 2, end);
					int			esclen = 6;
					unsigned char mb[MAX_UNICODE_EQUIVALENT_STRING + 1];

					if (cp < 0)
					{
						fail(p, i, "invalid escape \"\\u\": expected four hexadecimal digits");
						return false;
					}
					if (is_utf16_surrogate_first(cp))
					{
						int			lo = -1;

						if (end - (i + 6) >= 6 && text[i + 6] == '\\' && text[i + 7] == 'u')
							lo = hex4(p, i + 8, end);
						if (lo < 0 || !is_utf16_surrogate_second(lo))
						{
							fail(p, i, "invalid escape \"%.*s\": a high surrogate must be followed by a low surrogate",
								 6, text + i);
							return false;
						}
						cp = surrogate_pair_to_codepoint(cp, lo);
						esclen = 12;
					}
					else if (is_utf16_surrogate_second(cp))
					{
						fail(p, i, "invalid escape \"%.*s\": a low surrogate must follow a high surrogate",
							 6, text + i);
						return false;
					}
					if (cp == 0)
					{
						fail(p, i, "\"\\u0000\" is not allowed in a string");
						return false;
					}
					memset(mb, 0, sizeof(mb));
					if (GetDatabaseEncoding() == PG_UTF8)
						unicode_to_utf8((pg_wchar) cp, mb);
					else
						pg_unicode_to_server((pg_wchar) cp, mb);
					appendStringInfoString(buf, (char *) mb);
					i += esclen;
					continue;
				}
			default:
				/* not an escape: keep the backslash (glob escapes) */
				appendStringInfoChar(buf, '\\');
				i++;
				continue;
		}
		i += 2;
	}
	return true;
}

/* Decode a T_STRING token; returns the palloc'd bytes, NULL on error. */
static char *
string_value(FqlParser *p, const Token *tok, int *outlen)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (!decode_string(p, tok->start + 1, tok->end - 1, &buf))
		return NULL;
	*outlen = buf.len;
	return buf.data;
}

/*
 * Build the path a T_WORD token spells: dotted keys with backslash
 * escapes, and bracketed indexes or quoted keys.
 */
static MetPath *
parse_path(FqlParser *p, const Token *tok)
{
	const char *text = p->text;
	int			i = tok->start;
	int			end = tok->end;
	int			cap = 8;
	int			nkeys = 0;
	char	  **keys = palloc(sizeof(char *) * cap);
	int		   *keylens = palloc(sizeof(int) * cap);
	MetPath    *path;
	StringInfoData buf;

	initStringInfo(&buf);
	while (i < end)
	{
		resetStringInfo(&buf);
		if (text[i] == '[')
		{
			int			open = i++;

			if (text[i] == '"' || text[i] == '\'')
			{
				int			close = scan_quoted(text, end, i);

				if (!decode_string(p, i + 1, close, &buf))
					return NULL;
				i = close + 1;
			}
			else
			{
				int			kstart = i;

				while (text[i] != ']')
					i++;
				if (i == kstart)
					return fail(p, open, "expected an array index or a quoted key inside \"[]\"");
				appendBinaryStringInfo(&buf, text + kstart, i - kstart);
			}
			i++;				/* ']' */
			if (i < end && text[i] != '.' && text[i] != '[')
				return fail(p, i, "expected \".\" or \"[\" after \"]\" in a field path");
		}
		else if (text[i] == '.')
			return fail(p, i, "expected a field name before \".\"");
		else
		{
			while (i < end && text[i] != '.' && text[i] != '[')
			{
				if (text[i] == '\\')
				{
					int			cl = char_len(text + i + 1, end - i - 1);

					appendBinaryStringInfo(&buf, text + i + 1, cl);
					i += 1 + cl;
				}
				else
					appendStringInfoChar(&buf, text[i++]);
			}
		}
		/* a '.' must be followed by a key */
		if (i < end && text[i] == '.')
		{
			if (i + 1 >= end || text[i + 1] == '.' || text[i + 1] == '[')
				return fail(p, i, "expected a field name after \".\"");
			i++;
		}
		if (nkeys == cap)
		{
			cap *= 2;
			keys = repalloc(keys, sizeof(char *) * cap);
			keylens = repalloc(keylens, sizeof(int) * cap);
		}
		keys[nkeys] = pnstrdup(buf.data, buf.len);
		keylens[nkeys] = buf.len;
		nkeys++;
	}
	path = PathFromKeys(nkeys, keys, keylens);	/* copies the keys */
	while (nkeys > 0)
		pfree(keys[--nkeys]);
	pfree(keys);
	pfree(keylens);
	pfree(buf.data);
	return path;
}

/*
 * Compile a glob pattern (decoded bytes).  False with *err set when it is
 * malformed.
 */
static FqlGlob *
compile_glob(const char *pat, int plen, const char **err)
{
	FqlGlob    *g = palloc(sizeof(FqlGlob));
	char	   *lits = palloc(plen + 1);	/* literal bytes, in order */
	int			nlit = 0;
	int			i = 0;

	g->items = palloc(sizeof(GlobItem) * (plen + 1));
	g->nitems = 0;
	*err = NULL;
	while (i < plen)
	{
		char		c = pat[i];
		GlobItem   *last = g->nitems > 0 ? &g->items[g->nitems - 1] : NULL;
		GlobItem   *it = &g->items[g->nitems];
		int			cl;

		if (c == '*')
		{
			if (last == NULL || last->kind != GLOB_STAR)
			{
				it->kind = GLOB_STAR;
				g->nitems++;
			}
			i++;
			continue;
		}
		if (c == '?')
		{
			it->kind = GLOB_ANY;
			g->nitems++;
			i++;
			continue;
		}
		if (c == '[')
		{
			int			j = i + 1;
			int			rcap = 4;

			it->kind = GLOB_CLASS;
			it->negated = false;
			it->len = 0;
			it->ranges = palloc(sizeof(GlobRange) * rcap);
			if (j < plen && (pat[j] == '!' || pat[j] == '^'))
			{
				it->negated = true;
				j++;
			}
			while (j < plen && pat[j] != ']')
			{
				uint32		lo,
							hi;

				if (pat[j] == '\\')
				{
					if (++j >= plen)
						break;
				}
				cl = char_len(pat + j, plen - j);
				lo = hi = char_code(pat + j, cl);
				j += cl;
				if (j + 1 < plen && pat[j] == '-' && pat[j + 1] != ']')
				{
					j++;
					if (pat[j] == '\\' && j + 1 < plen)
						j++;
					cl = char_len(pat + j, plen - j);
					hi = char_code(pat + j, cl);
					j += cl;
					if (hi < lo)
					{
						*err = "invalid range in a character class (its end is before its start)";
						return NULL;
					}
				}
				if (it->len == rcap)
				{
					rcap *= 2;
					it->ranges = repalloc(it->ranges, sizeof(GlobRange) * rcap);
				}
				it->ranges[it->len].lo = lo;
				it->ranges[it->len].hi = hi;
				it->len++;
			}
			if (j >= plen)
			{
				*err = "unterminated character class: \"[\" without \"]\"";
				return NULL;
			}
			if (it->len == 0)
			{
				*err = "empty character class \"[]\"";
				return NULL;
			}
			g->nitems++;
			i = j + 1;
			continue;
		}
		/* a literal character, escaped or not */
		if (c == '\\')
		{
			if (i + 1 >= plen)
			{
				*err = "the pattern ends with an unfinished escape \"\\\"";
				return NULL;
			}
			i++;
		}
		cl = char_len(pat + i, plen - i);
		if (last != NULL && last->kind == GLOB_LITERAL)
			last->len += cl;
		else
		{
			it->kind = GLOB_LITERAL;
			it->lit = lits + nlit;
			it->len = cl;
			g->nitems++;
		}
		memcpy(lits + nlit, pat + i, cl);
		nlit += cl;
		i += cl;
	}
	return g;
}

/* ----------------------------------------------------------------
 * Parser
 * ----------------------------------------------------------------
 */

static FqlExpr *parse_or(FqlParser *p, const char *after);

static FqlExpr *
new_node(FqlKind kind)
{
	FqlExpr    *e = palloc0(sizeof(FqlExpr));

	e->kind = kind;
	return e;
}

/* "a condition" or "a condition after X", for messages */
static char *
condition_expected(const char *after)
{
	if (after == NULL)
		return "a condition";
	return psprintf("a condition after %s", after);
}

/*
 * contains(path, "s") / match(path, "glob"), the current token being the
 * function name (known to be followed by "(").
 */
static FqlExpr *
parse_function(FqlParser *p, bool negated)
{
	bool		is_match = tok_is(p, &p->tok, "match");
	const char *fname = is_match ? "match()" : "contains()";
	FqlExpr    *e = new_node(is_match ? FQL_MATCH : FQL_CONTAINS);
	Token		strtok;

	e->negated = negated;
	advance(p);					/* the name */
	advance(p);					/* "(" */
	if (p->tok.type != T_WORD || tok_is_reserved(p, &p->tok))
		return fail_tok(p, &p->tok,
						psprintf("a field path as the first argument of %s", fname));
	e->path = parse_path(p, &p->tok);
	if (e->path == NULL)
		return NULL;
	advance(p);
	if (p->tok.type != T_COMMA)
		return fail_tok(p, &p->tok,
						psprintf("\",\" after the first argument of %s", fname));
	advance(p);
	if (p->tok.type != T_STRING)
		return fail_tok(p, &p->tok,
						is_match ?
						"a quoted glob pattern as the second argument of match()" :
						"a quoted string as the second argument of contains()");
	strtok = p->tok;
	e->str = string_value(p, &strtok, &e->slen);
	if (e->str == NULL)
		return NULL;
	if (is_match)
	{
		const char *err;

		e->glob = compile_glob(e->str, e->slen, &err);
		if (e->glob == NULL)
			return fail(p, strtok.start, "invalid glob pattern in match(): %s", err);
	}
	advance(p);
	if (p->tok.type != T_RPAREN)
		return fail_tok(p, &p->tok,
						psprintf("\")\" after the second argument of %s", fname));
	advance(p);
	return e;
}

/* path op value, the current token being the path */
static FqlExpr *
parse_comparison(FqlParser *p)
{
	FqlExpr    *e = new_node(FQL_COMPARE);
	Token		pathtok = p->tok;
	Token		optok;
	Token	   *v;

	e->path = parse_path(p, &pathtok);
	if (e->path == NULL)
		return NULL;
	advance(p);
	optok = p->tok;
	switch (optok.type)
	{
		case T_EQ:
			e->op = FQL_EQ;
			break;
		case T_NE:
			e->op = FQL_NE;
			break;
		case T_LT:
			e->op = FQL_LT;
			break;
		case T_LE:
			e->op = FQL_LE;
			break;
		case T_GT:
			e->op = FQL_GT;
			break;
		case T_GE:
			e->op = FQL_GE;
			break;
		default:
			if (tok_is_miscased_keyword(p, &pathtok))
				return fail(p, pathtok.start, "expected a condition, found %s",
							describe(p, &pathtok));
			return fail_tok(p, &optok,
							psprintf("a comparison operator (=, !=, <, <=, >, >=) after \"%s\"",
									 snippet(p, pathtok.start, pathtok.end)));
	}
	advance(p);
	v = &p->tok;

	/* common slips from other languages */
	if (optok.type == T_EQ && v->type == T_EQ && v->start == optok.end)
		return fail(p, optok.start, "\"==\" is not an operator: use \"=\"");
	if (optok.type == T_LT && v->type == T_GT && v->start == optok.end)
		return fail(p, optok.start, "\"<>\" is not an operator: use \"!=\"");

	if (e->op != FQL_EQ && e->op != FQL_NE)
	{
		if (v->type != T_NUMBER && v->type != T_STRING)
			return fail_tok(p, v, psprintf("a number after \"%s\"",
										   snippet(p, optok.start, optok.end)));
		if (v->type == T_STRING)
		{
			/* a quoted number: Segment orders against Number("...") */
			e->lit = LIT_STRING;
			e->str = string_value(p, v, &e->slen);
			if (e->str == NULL)
				return NULL;
			e->num = js_string_to_number(e->str, e->slen, &e->inf);
			advance(p);
			return e;
		}
	}
	if (v->type == T_STRING)
	{
		e->lit = LIT_STRING;
		e->str = string_value(p, v, &e->slen);
		if (e->str == NULL)
			return NULL;
	}
	else if (v->type == T_NUMBER)
	{
		char	   *num = pnstrdup(p->text + v->start, v->end - v->start);

		e->lit = LIT_NUMBER;
		e->num = DatumGetNumeric(DirectFunctionCall3(numeric_in,
													 CStringGetDatum(num),
													 ObjectIdGetDatum(InvalidOid),
													 Int32GetDatum(-1)));
	}
	else if (tok_is(p, v, "true"))
		e->lit = LIT_TRUE;
	else if (tok_is(p, v, "false"))
		e->lit = LIT_FALSE;
	else if (tok_is(p, v, "null"))
		e->lit = LIT_NULL;
	else
	{
		const char *what = psprintf("a value (a quoted string, a number, true, false or null) after \"%s\"",
									snippet(p, optok.start, optok.end));

		if (v->type == T_WORD && !tok_is_miscased_keyword(p, v))
			return fail(p, v->start, "expected %s, found %s (strings must be quoted)",
						what, describe(p, v));
		return fail_tok(p, v, what);
	}
	advance(p);
	return e;
}

/* a parenthesized group, a function call or a comparison */
static FqlExpr *
parse_primary(FqlParser *p, const char *after)
{
	Token	   *tok = &p->tok;

	if (tok->type == T_LPAREN)
	{
		int			open = tok->start;
		FqlExpr    *e;

		advance(p);
		e = parse_or(p, "\"(\"");
		if (e == NULL)
			return NULL;
		if (p->tok.type != T_RPAREN)
			return fail_tok(p, &p->tok,
							psprintf("\"and\", \"or\" or \")\" to close the \"(\" at position %d",
									 pg_mbstrlen_with_len(p->text, open) + 1));
		advance(p);
		return e;
	}
	if (tok->type == T_WORD && !tok_is_reserved(p, tok))
	{
		if (tok_is(p, tok, "contains") || tok_is(p, tok, "match"))
		{
			Token		next;

			lex(p, tok->end, &next);
			if (next.type == T_LPAREN)
				return parse_function(p, false);
		}
		return parse_comparison(p);
	}
	if (tok->type == T_STRING)
		return fail(p, tok->start, "expected %s, found %s (field paths are not quoted: write properties.plan, or properties[\"odd key\"])",
					condition_expected(after), describe(p, tok));
	return fail_tok(p, tok, condition_expected(after));
}

/* not / ! in front of a unary, or a primary */
static FqlExpr *
parse_unary(FqlParser *p, const char *after)
{
	FqlExpr    *e;

	check_stack_depth();
	if (p->tok.type == T_BANG)
	{
		Token		name;

		/* !contains( and !match( are the string-only negated functions */
		lex(p, p->tok.end, &name);
		if (tok_is(p, &name, "contains") || tok_is(p, &name, "match"))
		{
			Token		paren;

			lex(p, name.end, &paren);
			if (paren.type == T_LPAREN)
			{
				advance(p);		/* "!" */
				return parse_function(p, true);
			}
		}
		advance(p);
		e = new_node(FQL_NOT);
		e->nargs = 1;
		e->args = palloc(sizeof(FqlExpr *));
		e->args[0] = parse_unary(p, "\"!\"");
		return e->args[0] ? e : NULL;
	}
	if (tok_is(p, &p->tok, "not"))
	{
		advance(p);
		e = new_node(FQL_NOT);
		e->nargs = 1;
		e->args = palloc(sizeof(FqlExpr *));
		e->args[0] = parse_unary(p, "\"not\"");
		return e->args[0] ? e : NULL;
	}
	return parse_primary(p, after);
}

/* add a child to an and/or node */
static void
add_arg(FqlExpr *e, FqlExpr *arg, int *cap)
{
	if (e->nargs == *cap)
	{
		*cap *= 2;
		e->args = repalloc(e->args, sizeof(FqlExpr *) * *cap);
	}
	e->args[e->nargs++] = arg;
}

/* unary { "and" unary } */
static FqlExpr *
parse_and(FqlParser *p, const char *after)
{
	FqlExpr    *first = parse_unary(p, after);
	FqlExpr    *e;
	int			cap = 4;

	if (first == NULL || !tok_is(p, &p->tok, "and"))
		return first;
	e = new_node(FQL_AND);
	e->args = palloc(sizeof(FqlExpr *) * cap);
	add_arg(e, first, &cap);
	while (tok_is(p, &p->tok, "and"))
	{
		FqlExpr    *next;

		advance(p);
		next = parse_unary(p, "\"and\"");
		if (next == NULL)
			return NULL;
		add_arg(e, next, &cap);
	}
	return e;
}

/* and_expr { "or" and_expr } */
static FqlExpr *
parse_or(FqlParser *p, const char *after)
{
	FqlExpr    *first;
	FqlExpr    *e;
	int			cap = 4;

	check_stack_depth();
	first = parse_and(p, after);
	if (first == NULL || !tok_is(p, &p->tok, "or"))
		return first;
	e = new_node(FQL_OR);
	e->args = palloc(sizeof(FqlExpr *) * cap);
	add_arg(e, first, &cap);
	while (tok_is(p, &p->tok, "or"))
	{
		FqlExpr    *next;

		advance(p);
		next = parse_and(p, "\"or\"");
		if (next == NULL)
			return NULL;
		add_arg(e, next, &cap);
	}
	return e;
}

/*
 * Parse a subscription (see fql.h).
 */
FqlExpr *
FqlParse(const char *text, char **errmsg, int *errpos)
{
	FqlParser	p;
	FqlExpr    *e = NULL;

	p.text = text;
	p.len = strlen(text);
	p.errmsg = NULL;
	p.errpos = 0;
	*errmsg = NULL;
	*errpos = 0;

	lex(&p, 0, &p.tok);
	if (p.tok.type == T_EOF)
		fail(&p, 0, "expected a condition such as type = \"track\", found an empty subscription");
	else
	{
		e = parse_or(&p, NULL);
		if (e != NULL && p.tok.type != T_EOF)
		{
			if (p.tok.type == T_RPAREN)
				fail(&p, p.tok.start, "unbalanced \")\": there is no \"(\" for it to close");
			else
				fail_tok(&p, &p.tok, "\"and\", \"or\" or end of input");
		}
	}
	if (p.errmsg != NULL)
	{
		*errmsg = p.errmsg;
		*errpos = pg_mbstrlen_with_len(text, Min(p.errpos, p.len)) + 1;
		return NULL;
	}
	return e;
}

/* ----------------------------------------------------------------
 * Evaluation
 * ----------------------------------------------------------------
 */

/* Does haystack contain needle?  Bytes, at character boundaries. */
static bool
bytes_contain(const char *h, int hlen, const char *n, int nlen)
{
	int			i;

	if (nlen == 0)
		return true;
	if (nlen > hlen)
		return false;
	if (pg_database_encoding_max_length() == 1 || GetDatabaseEncoding() == PG_UTF8)
	{
		/* any byte match is a character match */
		const char *end = h + hlen - nlen;
		const char *s = h;

		while (s <= end)
		{
			const char *hit = memchr(s, (unsigned char) n[0], end - s + 1);

			if (hit == NULL)
				return false;
			if (memcmp(hit, n, nlen) == 0)
				return true;
			s = hit + 1;
		}
		return false;
	}
	for (i = 0; i <= hlen - nlen; i += char_len(h + i, hlen - i))
	{
		if (memcmp(h + i, n, nlen) == 0)
			return true;
	}
	return false;
}

/* does character code c fall in the class? */
static bool
class_has(const GlobItem *it, uint32 c)
{
	int			k;

	for (k = 0; k < it->len; k++)
	{
		if (c >= it->ranges[k].lo && c <= it->ranges[k].hi)
			return true;
	}
	return false;
}

/*
 * Does the glob match all of s?  Iterative, backtracking only to the last
 * "*": O(len(s) * len(pattern)) at worst.
 */
static bool
glob_match(const FqlGlob *g, const char *s, int n)
{
	int			pi = 0;
	int			si = 0;
	int			star_pi = -1;
	int			star_si = 0;

	while (si < n)
	{
		if (pi < g->nitems)
		{
			const GlobItem *it = &g->items[pi];
			int			cl;

			switch (it->kind)
			{
				case GLOB_STAR:
					star_pi = pi++;
					star_si = si;
					continue;
				case GLOB_LITERAL:
					if (it->len <= n - si && memcmp(s + si, it->lit, it->len) == 0)
					{
						si += it->len;
						pi++;
						continue;
					}
					break;
				case GLOB_ANY:
					si += char_len(s + si, n - si);
					pi++;
					continue;
				case GLOB_CLASS:
					cl = char_len(s + si, n - si);
					if (class_has(it, char_code(s + si, cl)) != it->negated)
					{
						si += cl;
						pi++;
						continue;
					}
					break;
			}
		}
		/* mismatch: let the last star swallow one more character */
		if (star_pi < 0)
			return false;
		pi = star_pi + 1;
		star_si += char_len(s + star_si, n - star_si);
		si = star_si;
	}
	while (pi < g->nitems && g->items[pi].kind == GLOB_STAR)
		pi++;
	return pi == g->nitems;
}

/*
 * JavaScript's Number(s) for the text of a quoted ordering literal
 * (ECMA-262 StringToNumber): white space around is ignored, "" is 0,
 * decimal literals with an optional sign and exponent ("10", "-2.5", ".5",
 * "1.", "1e3"), "Infinity" with an optional sign, and 0x / 0o / 0b
 * integers.  Returns NULL for NaN (nothing is then ordered against it) and
 * for infinities (*inf is then +1 or -1; else 0).
 */
static Numeric
js_string_to_number(const char *s, int len, int *inf)
{
	int			i = 0;
	int			base = 0;
	bool		neg = false;
	StringInfoData buf;
	int			ndigits = 0;

	*inf = 0;
	while (len > 0 && is_space(s[len - 1]))
		len--;
	while (i < len && is_space(s[i]))
		i++;
	if (i == len)
		return int64_to_numeric(0);
	if (len - i > 2 && s[i] == '0' && strchr("xXoObB", s[i + 1]) != NULL)
	{
		uint64		v = 0;

		base = (s[i + 1] == 'x' || s[i + 1] == 'X') ? 16 :
			(s[i + 1] == 'o' || s[i + 1] == 'O') ? 8 : 2;
		for (i += 2; i < len; i++)
		{
			int			d = hexval(s[i]);

			if (d < 0 || d >= base || v > (PG_UINT64_MAX - d) / base)
				return NULL;	/* NaN, or past what we convert exactly */
			v = v * base + d;
		}
		if (v > (uint64) PG_INT64_MAX)
			return NULL;
		return int64_to_numeric((int64) v);
	}
	if (s[i] == '+' || s[i] == '-')
		neg = s[i++] == '-';
	if (len - i == 8 && strncmp(s + i, "Infinity", 8) == 0)
	{
		*inf = neg ? -1 : 1;
		return NULL;
	}
	initStringInfo(&buf);
	if (neg)
		appendStringInfoChar(&buf, '-');
	appendStringInfoChar(&buf, '0');	/* so that ".5" and "1." both read */
	for (; i < len && is_digit(s[i]); i++, ndigits++)
		appendStringInfoChar(&buf, s[i]);
	if (i < len && s[i] == '.')
	{
		appendStringInfoChar(&buf, '.');
		for (i++; i < len && is_digit(s[i]); i++, ndigits++)
			appendStringInfoChar(&buf, s[i]);
		appendStringInfoChar(&buf, '0');
	}
	if (ndigits == 0)
		return NULL;
	if (i < len && (s[i] == 'e' || s[i] == 'E'))
	{
		int			start;
		int			exp = 0;
		bool		negexp = false;

		appendStringInfoChar(&buf, 'e');
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
		{
			negexp = s[i] == '-';
			appendStringInfoChar(&buf, s[i++]);
		}
		start = i;
		for (; i < len && is_digit(s[i]); i++)
		{
			if (exp < FQL_MAX_EXPONENT)
				exp = exp * 10 + (s[i] - '0');
			appendStringInfoChar(&buf, s[i]);
		}
		if (i == start || i != len)
			return NULL;
		if (exp >= FQL_MAX_EXPONENT)
		{
			/* past any double: 0, or Infinity unless the digits are zeros */
			if (negexp || strspn(buf.data + (neg ? 1 : 0), "0.") >=
				strcspn(buf.data + (neg ? 1 : 0), "e"))
				return int64_to_numeric(0);
			*inf = neg ? -1 : 1;
			return NULL;
		}
	}
	if (i != len || ndigits > FQL_MAX_NUMBER_LEN)
		return NULL;
	return DatumGetNumeric(DirectFunctionCall3(numeric_in,
											   CStringGetDatum(buf.data),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

/* a jsonb numeric against a literal: <0, 0, >0 */
static inline int
num_cmp(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											 NumericGetDatum(a),
											 NumericGetDatum(b)));
}

/* path op value, v being NULL when the path is undefined */
static bool
eval_compare(const FqlExpr *e, const JsonbValue *v)
{
	bool		eq;

	if (e->op != FQL_EQ && e->op != FQL_NE)
	{
		int			c;

		/* ordering: numbers only, against Number() of the literal */
		if (v == NULL || v->type != jbvNumeric)
			return false;
		if (e->inf != 0)
			c = -e->inf;		/* every number is below +Infinity */
		else if (e->num == NULL)
			return false;		/* NaN: no order */
		else
			c = num_cmp(v->val.numeric, e->num);
		switch (e->op)
		{
			case FQL_LT:
				return c < 0;
			case FQL_LE:
				return c <= 0;
			case FQL_GT:
				return c > 0;
			default:
				return c >= 0;
		}
	}
	switch (e->lit)
	{
		case LIT_NULL:
			eq = (v == NULL || v->type == jbvNull);
			break;
		case LIT_STRING:
			eq = (v != NULL && v->type == jbvString &&
				  v->val.string.len == e->slen &&
				  memcmp(v->val.string.val, e->str, e->slen) == 0);
			break;
		case LIT_NUMBER:
			/* Segment's number_not_equals: a number, other than this one */
			if (v == NULL || v->type != jbvNumeric)
				return false;
			eq = num_cmp(v->val.numeric, e->num) == 0;
			break;
		case LIT_TRUE:
			eq = (v != NULL && v->type == jbvBool && v->val.boolean);
			break;
		case LIT_FALSE:
			eq = (v != NULL && v->type == jbvBool && !v->val.boolean);
			break;
		default:
			elog(ERROR, "unexpected FQL literal kind %d", (int) e->lit);
			eq = false;			/* keep compiler quiet */
	}
	return e->op == FQL_EQ ? eq : !eq;
}

/* evaluate a node against the event's root value */
static bool
eval_node(const FqlExpr *e, const JsonbValue *root)
{
	JsonbValue	v;
	bool		found;
	int			i;

	switch (e->kind)
	{
		case FQL_OR:
			check_stack_depth();
			for (i = 0; i < e->nargs; i++)
			{
				if (eval_node(e->args[i], root))
					return true;
			}
			return false;
		case FQL_AND:
			check_stack_depth();
			for (i = 0; i < e->nargs; i++)
			{
				if (!eval_node(e->args[i], root))
					return false;
			}
			return true;
		case FQL_NOT:
			check_stack_depth();
			return !eval_node(e->args[0], root);
		case FQL_COMPARE:
			found = PathGet(e->path, root, &v);
			return eval_compare(e, found ? &v : NULL);
		case FQL_CONTAINS:
		case FQL_MATCH:
			{
				bool		r;

				if (!PathGet(e->path, root, &v) || v.type != jbvString)
					return false;	/* strings only, negated or not */
				if (e->kind == FQL_CONTAINS)
					r = bytes_contain(v.val.string.val, v.val.string.len, e->str, e->slen);
				else
					r = glob_match(e->glob, v.val.string.val, v.val.string.len);
				return e->negated ? !r : r;
			}
	}
	elog(ERROR, "unexpected FQL node kind %d", (int) e->kind);
	return false;				/* keep compiler quiet */
}

/*
 * Does the event match?  A document that is not an object or an array
 * has no fields: every path in it is undefined.
 */
bool
FqlEval(const FqlExpr *expr, Jsonb *event)
{
	JsonbValue	root;

	if (JB_ROOT_IS_SCALAR(event))
		root.type = jbvNull;	/* no path steps into a scalar */
	else
	{
		root.type = jbvBinary;
		root.val.binary.data = &event->root;
		root.val.binary.len = VARSIZE(event) - VARHDRSZ;
	}
	return eval_node(expr, &root);
}

/* ----------------------------------------------------------------
 * SQL: metronome_matches(subscription text, event jsonb)
 * ----------------------------------------------------------------
 */

/*
 * Parsed subscriptions, kept in fn_extra so that a query over many rows
 * parses each subscription once.  A few entries, so that a join of
 * several mappings with many events does not re-parse on every row.
 */
#define FQL_FN_CACHE_SIZE 8

typedef struct FqlCacheEntry
{
	MemoryContext cxt;			/* owns text and expr; NULL when unused */
	char	   *text;
	int			len;
	FqlExpr    *expr;
} FqlCacheEntry;

typedef struct FqlFnCache
{
	int			next;			/* the entry to replace next */
	FqlCacheEntry entries[FQL_FN_CACHE_SIZE];
} FqlFnCache;

/* Raise the error a user sees for invalid FQL. */
static void
report_syntax_error(const char *text, const char *msg, int pos)
{
	ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid subscription: syntax error at position %d: %s", pos, msg),
				 errdetail("Subscription: %s", text)));
}

/* Parse or raise the error. */
static FqlExpr *
parse_or_error(const char *text)
{
	char	   *msg;
	int			pos;
	FqlExpr    *expr = FqlParse(text, &msg, &pos);

	if (expr == NULL)
		report_syntax_error(text, msg, pos);
	return expr;
}

/* The parsed subscription for (text, len), from the cache when there. */
static const FqlExpr *
cached_parse(FmgrInfo *flinfo, const char *text, int len)
{
	FqlFnCache *cache = (FqlFnCache *) flinfo->fn_extra;
	FqlCacheEntry *ent;
	MemoryContext old;
	FqlExpr    *expr;
	char	   *msg;
	int			pos;
	int			i;

	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(FqlFnCache));
		flinfo->fn_extra = cache;
	}
	for (i = 0; i < FQL_FN_CACHE_SIZE; i++)
	{
		ent = &cache->entries[i];
		if (ent->expr != NULL && ent->len == len && memcmp(ent->text, text, len) == 0)
			return ent->expr;
	}

	ent = &cache->entries[cache->next];
	cache->next = (cache->next + 1) % FQL_FN_CACHE_SIZE;
	if (ent->cxt == NULL)
		ent->cxt = AllocSetContextCreate(flinfo->fn_mcxt, "metronome_matches subscription",
										 ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(ent->cxt);
	ent->expr = NULL;

	old = MemoryContextSwitchTo(ent->cxt);
	ent->text = pnstrdup(text, len);
	ent->len = len;
	expr = FqlParse(ent->text, &msg, &pos);
	MemoryContextSwitchTo(old);
	if (expr == NULL)
		report_syntax_error(ent->text, msg, pos);
	ent->expr = expr;
	return expr;
}

PG_FUNCTION_INFO_V1(metronome_matches);

/*
 * metronome_matches(subscription text, event jsonb) -> boolean
 */
Datum
metronome_matches(PG_FUNCTION_ARGS)
{
	text	   *sub = PG_GETARG_TEXT_PP(0);
	Jsonb	   *event = PG_GETARG_JSONB_P(1);
	const FqlExpr *expr;

	if (fcinfo->flinfo != NULL)
		expr = cached_parse(fcinfo->flinfo, VARDATA_ANY(sub), VARSIZE_ANY_EXHDR(sub));
	else
		expr = parse_or_error(text_to_cstring(sub));
	PG_RETURN_BOOL(FqlEval(expr, event));
}
