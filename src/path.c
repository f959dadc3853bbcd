/*-------------------------------------------------------------------------
 *
 * path.c
 *	  Lodash-style paths into JSON values, as Segment's mapping-kit reads
 *	  them: "$.context.groupId", "properties.items[0].sku",
 *	  "traits['first name']", "a[\"k\"]".
 *
 * A path is parsed once into segments.  Looking it up walks a jsonb
 * container in place (binary search on object keys, direct array access),
 * so an event is never re-parsed or copied.  A segment that is a canonical
 * non-negative integer indexes arrays and names a key of objects, as in
 * JavaScript.  As in lodash, "length" after an array or a string is its
 * length (a string's in UTF-16 units); an object's own key "length" is an
 * ordinary key.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "path.h"
#include "jsonbval.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"

/*
 * The array index a key stands for, or -1 ("0" and "17" do; "01", "-1",
 * "1.5" and numbers past INT_MAX do not).
 */
static int
key_index(const char *key, int len)
{
	int64		v = 0;
	int			i;

	if (len == 0 || len > 10 || (len > 1 && key[0] == '0'))
		return -1;
	for (i = 0; i < len; i++)
	{
		if (key[i] < '0' || key[i] > '9')
			return -1;
		v = v * 10 + (key[i] - '0');
	}
	return v > PG_INT32_MAX ? -1 : (int) v;
}

/*
 * Append one segment to a growing path.
 */
static void
add_seg(MetPathSeg **segs, int *nsegs, int *cap, char *key, int keylen)
{
	if (*nsegs == *cap)
	{
		*cap *= 2;
		*segs = repalloc(*segs, sizeof(MetPathSeg) * *cap);
	}
	(*segs)[*nsegs].key = key;
	(*segs)[*nsegs].keylen = keylen;
	(*segs)[*nsegs].index = key_index(key, keylen);
	(*nsegs)++;
}

/*
 * Make a MetPath from a segment array.
 */
static MetPath *
make_path(MetPathSeg *segs, int nsegs)
{
	MetPath    *path = palloc(offsetof(MetPath, segs) + sizeof(MetPathSeg) * Max(nsegs, 1));

	path->nsegs = nsegs;
	if (nsegs > 0)
		memcpy(path->segs, segs, sizeof(MetPathSeg) * nsegs);
	return path;
}

/*
 * Parse a lodash path: dot-separated keys, and bracketed keys that are
 * unquoted (a[0], a[key]) or quoted with ' or " (a['k k'], backslash
 * escapes the next character).
 */
MetPath *
PathParse(const char *text, int len, char **errmsg, int *errpos)
{
	int			cap = 8;
	int			nsegs = 0;
	MetPathSeg *segs = palloc(sizeof(MetPathSeg) * cap);
	int			i = 0;
	bool		need_key = false;	/* just after a '.' */

	*errmsg = NULL;
	*errpos = 0;

	/* the optional root: "$" alone or "$." / "$[" */
	if (len >= 1 && text[0] == '$' && (len == 1 || text[1] == '.' || text[1] == '['))
	{
		i = 1;
		if (i < len && text[i] == '.')
			i++;
	}

	while (i < len)
	{
		char		c = text[i];

		if (c == '[')
		{
			int			start = ++i;

			if (i < len && (text[i] == '\'' || text[i] == '"'))
			{
				char		quote = text[i++];
				StringInfoData buf;

				initStringInfo(&buf);
				while (i < len && text[i] != quote)
				{
					if (text[i] == '\\' && i + 1 < len)
						i++;
					appendStringInfoChar(&buf, text[i++]);
				}
				if (i >= len)
				{
					*errmsg = psprintf("unterminated quoted key in path \"%.*s\"", len, text);
					*errpos = start - 1;
					return NULL;
				}
				i++;			/* closing quote */
				if (i >= len || text[i] != ']')
				{
					*errmsg = psprintf("expected \"]\" after quoted key in path \"%.*s\"", len, text);
					*errpos = i;
					return NULL;
				}
				add_seg(&segs, &nsegs, &cap, buf.data, buf.len);
			}
			else
			{
				while (i < len && text[i] != ']')
					i++;
				if (i >= len)
				{
					*errmsg = psprintf("unterminated \"[\" in path \"%.*s\"", len, text);
					*errpos = start - 1;
					return NULL;
				}
				if (i == start)
				{
					*errmsg = psprintf("empty \"[]\" in path \"%.*s\"", len, text);
					*errpos = start - 1;
					return NULL;
				}
				add_seg(&segs, &nsegs, &cap, pnstrdup(text + start, i - start), i - start);
			}
			i++;				/* ']' */
			need_key = false;
			/* a bracket may be followed by '.', '[' or the end */
			if (i < len && text[i] == '.')
			{
				i++;
				need_key = true;
			}
			else if (i < len && text[i] != '[')
			{
				*errmsg = psprintf("expected \".\" or \"[\" after \"]\" in path \"%.*s\"", len, text);
				*errpos = i;
				return NULL;
			}
		}
		else if (c == '.')
		{
			*errmsg = psprintf("empty key in path \"%.*s\"", len, text);
			*errpos = i;
			return NULL;
		}
		else
		{
			int			start = i;

			while (i < len && text[i] != '.' && text[i] != '[')
			{
				if (text[i] == ']')
				{
					*errmsg = psprintf("unexpected \"]\" in path \"%.*s\"", len, text);
					*errpos = i;
					return NULL;
				}
				i++;
			}
			add_seg(&segs, &nsegs, &cap, pnstrdup(text + start, i - start), i - start);
			need_key = false;
			if (i < len && text[i] == '.')
			{
				i++;
				need_key = true;
			}
		}
	}

	if (need_key && nsegs > 0)
	{
		*errmsg = psprintf("path \"%.*s\" ends with \".\"", len, text);
		*errpos = len - 1;
		return NULL;
	}
	return make_path(segs, nsegs);
}

/*
 * Build a path from separate keys (copied).
 */
MetPath *
PathFromKeys(int nkeys, char **keys, int *keylens)
{
	MetPath    *path = palloc(offsetof(MetPath, segs) + sizeof(MetPathSeg) * Max(nkeys, 1));
	int			i;

	path->nsegs = nkeys;
	for (i = 0; i < nkeys; i++)
	{
		path->segs[i].key = pnstrdup(keys[i], keylens[i]);
		path->segs[i].keylen = keylens[i];
		path->segs[i].index = key_index(keys[i], keylens[i]);
	}
	return path;
}

/*
 * One step: the member of cur named by seg, into *next.  cur is a scalar,
 * a jbvBinary container or an in-memory jbvObject / jbvArray.
 */
static bool
step(const JsonbValue *cur, const MetPathSeg *seg, JsonbValue *next)
{
	/* lodash reads JavaScript properties: an array's or a string's length */
	if (seg->keylen == 6 && memcmp(seg->key, "length", 6) == 0 &&
		(cur->type == jbvString || JsonbValueIsArray(cur)))
	{
		int64		n;

		if (cur->type == jbvString)
			n = Utf16Length(cur->val.string.val, cur->val.string.len);
		else if (cur->type == jbvArray)
			n = cur->val.array.nElems;
		else
			n = JsonContainerSize(cur->val.binary.data);
		next->type = jbvNumeric;
		next->val.numeric = int64_to_numeric(n);
		return true;
	}
	if (cur->type == jbvBinary)
	{
		JsonbContainer *jc = cur->val.binary.data;

		if (JsonContainerIsObject(jc))
			return getKeyJsonValueFromContainer(jc, seg->key, seg->keylen, next) != NULL;
		if (JsonContainerIsArray(jc) && !JsonContainerIsScalar(jc) && seg->index >= 0)
		{
			JsonbValue *elem = getIthJsonbValueFromContainer(jc, (uint32) seg->index);

			if (elem == NULL)
				return false;
			*next = *elem;
			pfree(elem);
			return true;
		}
		return false;
	}
	if (cur->type == jbvObject)
	{
		int			i;

		for (i = 0; i < cur->val.object.nPairs; i++)
		{
			JsonbPair  *p = &cur->val.object.pairs[i];

			if (p->key.val.string.len == seg->keylen &&
				memcmp(p->key.val.string.val, seg->key, seg->keylen) == 0)
			{
				*next = p->value;
				return true;
			}
		}
		return false;
	}
	if (cur->type == jbvArray && seg->index >= 0 &&
		seg->index < cur->val.array.nElems)
	{
		*next = cur->val.array.elems[seg->index];
		return true;
	}
	return false;
}

/*
 * Look a path up in a value; false when undefined.
 */
bool
PathGet(const MetPath *path, const JsonbValue *root, JsonbValue *result)
{
	JsonbValue	cur = *root;
	int			i;

	for (i = 0; i < path->nsegs; i++)
	{
		JsonbValue	next;

		if (!step(&cur, &path->segs[i], &next))
			return false;
		cur = next;
	}
	*result = cur;
	return true;
}

/*
 * A JsonbValue standing for a whole document.
 */
void
JsonbDocToValue(Jsonb *doc, JsonbValue *out)
{
	if (JB_ROOT_IS_SCALAR(doc))
	{
		JsonbValue *v = getIthJsonbValueFromContainer(&doc->root, 0);

		*out = *v;
		pfree(v);
		return;
	}
	out->type = jbvBinary;
	out->val.binary.data = &doc->root;
	out->val.binary.len = VARSIZE(doc) - VARHDRSZ;
}

/*
 * Look a path up in a whole jsonb document.
 */
bool
PathGetJsonb(const MetPath *path, Jsonb *doc, JsonbValue *result)
{
	JsonbValue	root;

	JsonbDocToValue(doc, &root);
	return PathGet(path, &root, result);
}

/*
 * "$.a.b[0]['c d']" for messages.
 */
char *
PathToString(const MetPath *path)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '$');
	for (i = 0; i < path->nsegs; i++)
	{
		const MetPathSeg *s = &path->segs[i];
		bool		plain = s->keylen > 0;
		int			j;

		for (j = 0; j < s->keylen && plain; j++)
		{
			char		c = s->key[j];

			if (!(isalnum((unsigned char) c) || c == '_' || c == '$' || c == '-'))
				plain = false;
		}
		if (s->index >= 0)
			appendStringInfo(&buf, "[%d]", s->index);
		else if (plain)
			appendStringInfo(&buf, ".%.*s", s->keylen, s->key);
		else
		{
			appendStringInfoString(&buf, "['");
			for (j = 0; j < s->keylen; j++)
			{
				if (s->key[j] == '\'' || s->key[j] == '\\')
					appendStringInfoChar(&buf, '\\');
				appendStringInfoChar(&buf, s->key[j]);
			}
			appendStringInfoString(&buf, "']");
		}
	}
	return buf.data;
}
