/*-------------------------------------------------------------------------
 *
 * jsonbval.c
 *	  Helpers on JsonbValues shared by paths, fields and mapping-kit (see
 *	  jsonbval.h).  They depend on nothing of the extension.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "jsonbval.h"

#include "mb/pg_wchar.h"

/*
 * Is v an object?
 */
bool
JsonbValueIsObject(const JsonbValue *v)
{
	if (v->type == jbvObject)
		return true;
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

/*
 * Is v an array (not a raw scalar)?
 */
bool
JsonbValueIsArray(const JsonbValue *v)
{
	if (v->type == jbvArray)
		return !v->val.array.rawScalar;
	return v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data) &&
		!JsonContainerIsScalar(v->val.binary.data);
}

/*
 * One level of a container in memory.
 */
void
JsonbValueExpand(const JsonbValue *v, JsonbValue *out)
{
	JsonbContainer *jc;
	JsonbIterator *it;
	JsonbValue	val;
	JsonbIteratorToken tok;
	int			size;
	int			i = 0;

	if (v->type != jbvBinary)
	{
		*out = *v;
		return;
	}
	jc = v->val.binary.data;
	size = JsonContainerSize(jc);
	it = JsonbIteratorInit(jc);
	if (JsonContainerIsArray(jc))
	{
		JsonbValue *elems = palloc(sizeof(JsonbValue) * Max(size, 1));

		while ((tok = JsonbIteratorNext(&it, &val, true)) != WJB_DONE)
			if (tok == WJB_ELEM && i < size)
				elems[i++] = val;
		out->type = jbvArray;
		out->val.array.rawScalar = false;
		out->val.array.elems = elems;
		out->val.array.nElems = i;
	}
	else
	{
		JsonbPair  *pairs = palloc(sizeof(JsonbPair) * Max(size, 1));

		while ((tok = JsonbIteratorNext(&it, &val, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY && i < size)
			{
				pairs[i].key = val;
				pairs[i].order = i;
			}
			else if (tok == WJB_VALUE && i < size)
				pairs[i++].value = val;
		}
		out->type = jbvObject;
		out->val.object.pairs = pairs;
		out->val.object.nPairs = i;
	}
}

/*
 * The element of a one-element array.
 */
bool
JsonbValueSingleElement(const JsonbValue *v, JsonbValue *elem)
{
	if (!JsonbValueIsArray(v))
		return false;
	if (v->type == jbvArray)
	{
		if (v->val.array.nElems != 1)
			return false;
		*elem = v->val.array.elems[0];
		return true;
	}
	if (JsonContainerSize(v->val.binary.data) != 1)
		return false;
	{
		JsonbValue *e = getIthJsonbValueFromContainer(v->val.binary.data, 0);

		if (e == NULL)
			return false;
		*elem = *e;
		pfree(e);
	}
	return true;
}

/*
 * The JSON type of a value, for messages.
 */
const char *
JsonbValueTypeName(const JsonbValue *v, bool article)
{
	if (v == NULL)
		return "undefined";
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return article ? "a string" : "string";
		case jbvNumeric:
			return article ? "a number" : "number";
		case jbvBool:
			return article ? "a boolean" : "boolean";
		default:
			break;
	}
	if (JsonbValueIsObject(v))
		return article ? "an object" : "object";
	if (JsonbValueIsArray(v))
		return article ? "an array" : "array";
	return article ? "a value" : "value";
}

/*
 * UTF-16 code units of a string: characters outside the Basic
 * Multilingual Plane (4 bytes in UTF-8) count two.
 */
int
Utf16Length(const char *s, int len)
{
	int			n = 0;
	int			i = 0;
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

	while (i < len)
	{
		int			l = Min(pg_mblen(s + i), len - i);

		n += (utf8 && l == 4) ? 2 : 1;
		i += l;
	}
	return n;
}

/*
 * An excerpt of a text for a message.
 */
char *
TextExcerpt(const char *s, int len, int maxbytes)
{
	int			clip = pg_mbcliplen(s, len, maxbytes);

	if (clip >= len)
		return pnstrdup(s, len);
	return psprintf("%.*s...", clip, s);
}
