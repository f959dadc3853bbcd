/*-------------------------------------------------------------------------
 *
 * jsnum.c
 *	  String(n) as JavaScript writes it, for JSON numbers held as jsonb
 *	  numerics.
 *
 * Segment's code runs on JavaScript: an event's numbers are doubles from
 * the moment JSON.parse reads them, and any text made from one is
 * Number::toString of that double (ECMA-262 6.1.6.1.20): the shortest
 * digits that read back as the same double, in plain notation from 1e-7
 * up to 1e21, in exponent notation outside.  We get the double with
 * strtod (correctly rounded), the shortest digits by trying precisions 1
 * to 17 with "%.*e" (the C library rounds correctly, and 17 digits always
 * read back), and lay them out by the standard's rules.
 *
 * Numbers that stay numbers (inside properties) never come here: they are
 * sent with the digits the event had.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "jsnum.h"

#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

static int	jsnum_shortest(double d, char *digits, int *exp10);
static void jsnum_layout(StringInfo out, bool neg, const char *digits, int k, int n);

/*
 * The shortest decimal digits of the finite, positive double d that read
 * back as d: writes them (no point, no trailing zeros) into digits (at
 * least 18 bytes) and d's decimal exponent into *exp10 (d = 0.digits *
 * 10^(*exp10)); returns the number of digits.
 */
static int
jsnum_shortest(double d, char *digits, int *exp10)
{
	char		buf[64];
	int			prec;
	int			k = 0;
	const char *p;

	for (prec = 1; prec <= 17; prec++)
	{
		snprintf(buf, sizeof(buf), "%.*e", prec - 1, d);
		if (strtod(buf, NULL) == d)
			break;
	}
	/* buf is "d.ddde[+-]xx" */
	for (p = buf; *p && *p != 'e'; p++)
	{
		if (*p >= '0' && *p <= '9')
			digits[k++] = *p;
	}
	*exp10 = atoi(p + 1) + 1;
	while (k > 1 && digits[k - 1] == '0')
		k--;
	digits[k] = '\0';
	return k;
}

/*
 * Lay out 0.d1...dk * 10^n as Number::toString does.
 */
static void
jsnum_layout(StringInfo out, bool neg, const char *digits, int k, int n)
{
	if (neg)
		appendStringInfoChar(out, '-');
	if (k <= n && n <= 21)
	{
		appendBinaryStringInfo(out, digits, k);
		for (; n > k; n--)
			appendStringInfoChar(out, '0');
	}
	else if (0 < n && n <= 21)
	{
		appendBinaryStringInfo(out, digits, n);
		appendStringInfoChar(out, '.');
		appendBinaryStringInfo(out, digits + n, k - n);
	}
	else if (-6 < n && n <= 0)
	{
		appendStringInfoString(out, "0.");
		for (; n < 0; n++)
			appendStringInfoChar(out, '0');
		appendBinaryStringInfo(out, digits, k);
	}
	else
	{
		appendStringInfoChar(out, digits[0]);
		if (k > 1)
		{
			appendStringInfoChar(out, '.');
			appendBinaryStringInfo(out, digits + 1, k - 1);
		}
		appendStringInfo(out, "e%c%d", n - 1 >= 0 ? '+' : '-', abs(n - 1));
	}
}

/*
 * Append String(n) (or, with json, JSON.stringify(n)).
 */
void
JsAppendNumberText(StringInfo out, Numeric num, bool json)
{
	char	   *txt = DatumGetCString(DirectFunctionCall1(numeric_out,
														  NumericGetDatum(num)));
	double		d = strtod(txt, NULL);	/* ERANGE: +-HUGE_VAL or 0 */
	char		digits[32];
	int			k;
	int			n;

	pfree(txt);
	if (isnan(d))
		appendStringInfoString(out, json ? "null" : "NaN");
	else if (isinf(d))
		appendStringInfoString(out, json ? "null" : (d < 0 ? "-Infinity" : "Infinity"));
	else if (d == 0)
		appendStringInfoChar(out, '0');	/* -0 too */
	else
	{
		k = jsnum_shortest(fabs(d), digits, &n);
		jsnum_layout(out, d < 0, digits, k, n);
	}
}

/*
 * String(n) as a palloc'd string.
 */
char *
JsNumberText(Numeric num)
{
	StringInfoData buf;

	initStringInfo(&buf);
	JsAppendNumberText(&buf, num, false);
	return buf.data;
}
