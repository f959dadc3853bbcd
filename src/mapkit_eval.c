/*-------------------------------------------------------------------------
 *
 * mapkit_eval.c
 *	  Evaluation of compiled mapping values against an event, as Segment's
 *	  mapping-kit resolves them.
 *
 * eval() fills a caller-provided JsonbValue and returns false for
 * "undefined".  An evaluation error (a directive giving @path a number, for
 * instance) is recorded in the EvalCtx; every caller checks it after a false
 * return and stops.  Results point into the event, into the compiled
 * mapping, or into memory allocated in CurrentMemoryContext; the compiled
 * tree is never modified.
 *
 * Undefined members are dropped from objects; undefined array elements
 * become null (JSON.stringify writes them so).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mapkit_int.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pg_compat.h"

typedef struct EvalCtx
{
	char	   *err;
} EvalCtx;

static bool eval(const MapNode *n, const JsonbValue *root, JsonbValue *out, EvalCtx *ec);

/*
 * Parse a path as Segment's get() reads it: PathParse, plus "." (and
 * "$..", which Segment's "$." stripping turns into ".") for the whole value.
 */
MetPath *
MapkitPathParse(const char *text, int len, char **errmsg, int *errpos)
{
	if ((len == 1 && text[0] == '.') || (len == 3 && memcmp(text, "$..", 3) == 0))
		return PathParse("", 0, errmsg, errpos);
	return PathParse(text, len, errmsg, errpos);
}

/* qsort comparator for finish_object: by key, then by position */
static int
pair_cmp(const void *a, const void *b)
{
	const JsonbPair *pa = (const JsonbPair *) a;
	const JsonbPair *pb = (const JsonbPair *) b;
	int			la = pa->key.val.string.len;
	int			lb = pb->key.val.string.len;
	int			c;

	if (la != lb)
		return la < lb ? -1 : 1;
	c = memcmp(pa->key.val.string.val, pb->key.val.string.val, la);
	if (c != 0)
		return c;
	return pa->order < pb->order ? -1 : (pa->order > pb->order ? 1 : 0);
}

/*
 * Make an object from assignments in order (pairs[i].order must be i): the
 * last assignment of a key wins, and a key whose last assignment was
 * undefined (drop[i], when drop is given) is left out.
 */
static void
finish_object(JsonbPair *pairs, int n, bool *drop, JsonbValue *out)
{
	JsonbPair  *res = palloc(sizeof(JsonbPair) * Max(n, 1));
	int			nres = 0;
	int			i;

	if (n > 1)
		qsort(pairs, n, sizeof(JsonbPair), pair_cmp);
	for (i = 0; i < n; i++)
	{
		/* skip all but the last of a run of equal keys */
		if (i + 1 < n &&
			pairs[i].key.val.string.len == pairs[i + 1].key.val.string.len &&
			memcmp(pairs[i].key.val.string.val, pairs[i + 1].key.val.string.val,
				   pairs[i].key.val.string.len) == 0)
			continue;
		if (drop && drop[pairs[i].order])
			continue;
		res[nres] = pairs[i];
		res[nres].order = nres;
		nres++;
	}
	out->type = jbvObject;
	out->val.object.pairs = res;
	out->val.object.nPairs = nres;
}

/*
 * Make a string result, refusing what jsonb cannot store.
 */
static bool
set_string(JsonbValue *out, char *s, int len, const char *dname, EvalCtx *ec)
{
	if (len > JENTRY_OFFLENMASK)
	{
		ec->err = psprintf("%s: the result is too long (%d bytes)", dname, len);
		return false;
	}
	out->type = jbvString;
	out->val.string.val = s;
	out->val.string.len = len;
	return true;
}

/*
 * Append the value of a placeholder's path (undefined and null are empty).
 * False when the value is nested too deeply to render.
 */
static bool
append_placeholder(StringInfo buf, const MetPath *path, const JsonbValue *root)
{
	JsonbValue	v;

	if (root && PathGet(path, root, &v))
		return JsAppendString(buf, &v);
	return true;
}

/*
 * The error for a value nested deeper than the stack (or MAPKIT_MAX_DEPTH)
 * allows; an error of this event, not of the statement.
 */
static bool
too_deep(EvalCtx *ec, const char *dname)
{
	ec->err = psprintf("%s: the value is nested too deeply", dname);
	return false;
}

/*
 * One pass of Segment's template rendering over s, parsing placeholders
 * now: braces 3 for {{{path}}}, 2 for {{path}}.  A placeholder whose path
 * does not parse renders as empty, like a missing value.
 */
static bool
render_pass(const char *s, int len, int braces, const JsonbValue *root,
			StringInfo out)
{
	int			from = 0;
	int			ms,
				me,
				cs,
				cl;

	while (JsNextPlaceholder(s, len, from, braces, &ms, &me, &cs, &cl))
	{
		const char *p = s + cs;
		int			plen = cl;
		char	   *msg;
		int			pos;
		MetPath    *path;

		CHECK_FOR_INTERRUPTS();
		appendBinaryStringInfo(out, s + from, ms - from);
		JsTrim(&p, &plen);
		path = MapkitPathParse(p, plen, &msg, &pos);
		if (path && !append_placeholder(out, path, root))
			return false;
		from = me;
	}
	appendBinaryStringInfo(out, s + from, len - from);
	return true;
}

/*
 * Render a compiled template.
 */
static bool
eval_template(const MapTemplate *t, const JsonbValue *root, JsonbValue *out,
			  EvalCtx *ec)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; i < t->nparts; i++)
	{
		const TemplatePart *p = &t->parts[i];

		if (p->path)
		{
			if (!append_placeholder(&buf, p->path, root))
				return too_deep(ec, "@template");
		}
		else
			appendBinaryStringInfo(&buf, p->text, p->len);
	}
	if (t->twopass)
	{
		StringInfoData second;

		initStringInfo(&second);
		if (!render_pass(buf.data, buf.len, 2, root, &second))
			return too_deep(ec, "@template");
		pfree(buf.data);
		buf = second;
	}
	return set_string(out, buf.data, buf.len, "@template", ec);
}

/*
 * Render a template known only now (given by a directive).
 */
static bool
eval_template_dyn(const char *s, int len, const JsonbValue *root,
				  JsonbValue *out, EvalCtx *ec)
{
	StringInfoData first;
	StringInfoData second;

	initStringInfo(&first);
	initStringInfo(&second);
	if (!render_pass(s, len, 3, root, &first) ||
		!render_pass(first.data, first.len, 2, root, &second))
		return too_deep(ec, "@template");
	pfree(first.data);
	return set_string(out, second.data, second.len, "@template", ec);
}

/*
 * @path or @template given by a directive: it must give a string.
 */
static bool
eval_dynamic(const MapNode *n, const JsonbValue *root, JsonbValue *out,
			 EvalCtx *ec)
{
	const char *dname = n->kind == MN_PATH_DYN ? "@path" : "@template";
	JsonbValue	s;
	bool		defined = eval(n->u.arg, root, &s, ec);
	char	   *msg;
	int			pos;
	MetPath    *path;

	if (ec->err)
		return false;
	if (!defined || s.type != jbvString)
	{
		ec->err = psprintf("%s: expected string, got %s", dname,
						   JsonbValueTypeName(defined ? &s : NULL, false));
		return false;
	}
	if (n->kind == MN_TEMPLATE_DYN)
		return eval_template_dyn(s.val.string.val, s.val.string.len, root, out, ec);

	path = MapkitPathParse(s.val.string.val, s.val.string.len, &msg, &pos);
	if (path == NULL)
	{
		ec->err = psprintf("@path: %s (at character %d)", msg,
						   pg_mbstrlen_with_len(s.val.string.val, pos) + 1);
		return false;
	}
	return root && PathGet(path, root, out);
}

/*
 * A plain object with directives inside; undefined members are dropped.
 */
static bool
eval_object(const MapNode *n, const JsonbValue *root, JsonbValue *out,
			EvalCtx *ec)
{
	JsonbPair  *pairs = palloc(sizeof(JsonbPair) * Max(n->u.object.n, 1));
	int			k = 0;
	int			i;

	for (i = 0; i < n->u.object.n; i++)
	{
		if (eval(n->u.object.children[i], root, &pairs[k].value, ec))
		{
			pairs[k].key = n->u.object.keys[i];
			pairs[k].order = k;
			k++;
		}
		else if (ec->err)
			return false;
	}
	out->type = jbvObject;
	out->val.object.pairs = pairs;
	out->val.object.nPairs = k;
	return true;
}

/*
 * A plain array with directives inside; undefined elements become null.
 */
static bool
eval_array(const MapNode *n, const JsonbValue *root, JsonbValue *out,
		   EvalCtx *ec)
{
	JsonbValue *elems = palloc(sizeof(JsonbValue) * Max(n->u.array.n, 1));
	int			i;

	for (i = 0; i < n->u.array.n; i++)
	{
		if (!eval(n->u.array.children[i], root, &elems[i], ec))
		{
			if (ec->err)
				return false;
			elems[i].type = jbvNull;
		}
	}
	out->type = jbvArray;
	out->val.array.rawScalar = false;
	out->val.array.elems = elems;
	out->val.array.nElems = n->u.array.n;
	return true;
}

/*
 * @if: "then" when the condition holds (exists: not null or undefined;
 * blank: also not loosely equal to ""), else "else".
 */
static bool
eval_if(const MapNode *n, const JsonbValue *root, JsonbValue *out, EvalCtx *ec)
{
	JsonbValue	c;
	bool		defined = eval(n->u.ifn.cond, root, &c, ec);
	bool		cond;

	if (ec->err)
		return false;
	cond = defined && c.type != jbvNull;
	if (cond && n->u.ifn.blank)
		cond = !JsLooseEqualsEmpty(&c);
	if (cond && n->u.ifn.then_node)
		return eval(n->u.ifn.then_node, root, out, ec);
	if (!cond && n->u.ifn.else_node)
		return eval(n->u.ifn.else_node, root, out, ec);
	return false;
}

/*
 * @case: strings change case; other values pass unchanged.
 */
static bool
eval_case(const MapNode *n, const JsonbValue *root, JsonbValue *out, EvalCtx *ec)
{
	char	   *s;

	if (n->u.casen.value == NULL || !eval(n->u.casen.value, root, out, ec))
		return false;
	if (out->type != jbvString)
		return true;
	s = JsChangeCase(out->val.string.val, out->val.string.len, n->u.casen.upper);
	return set_string(out, s, strlen(s), "@case", ec);
}

/*
 * @replace: literal replacement in the value's text (numbers and booleans
 * are turned into text; other values give "").
 */
static bool
eval_replace(const MapNode *n, const JsonbValue *root, JsonbValue *out,
			 EvalCtx *ec)
{
	JsonbValue	v;
	bool		defined;
	StringInfoData src;
	StringInfoData res;

	if (n->u.replace.value == NULL)
		return false;
	defined = eval(n->u.replace.value, root, &v, ec);
	if (ec->err)
		return false;
	initStringInfo(&src);
	if (defined && (v.type == jbvString || v.type == jbvNumeric || v.type == jbvBool))
		(void) JsAppendString(&src, &v);	/* a scalar: cannot fail */
	else
		return set_string(out, pstrdup(""), 0, "@replace", ec);

	initStringInfo(&res);
	JsReplace(&res, src.data, src.len, n->u.replace.pattern, n->u.replace.patlen,
			  n->u.replace.replacement, n->u.replace.replen,
			  n->u.replace.global, n->u.replace.ignorecase);
	if (n->u.replace.pattern2)
	{
		resetStringInfo(&src);
		appendBinaryStringInfo(&src, res.data, res.len);
		resetStringInfo(&res);
		JsReplace(&res, src.data, src.len, n->u.replace.pattern2, n->u.replace.pat2len,
				  n->u.replace.replacement2, n->u.replace.rep2len,
				  n->u.replace.global, n->u.replace.ignorecase);
	}
	pfree(src.data);
	return set_string(out, res.data, res.len, "@replace", ec);
}

/*
 * @arrayPath: the value at the path (or given by a directive); with an item
 * shape, each item (an object counts as a one-item array) mapped through
 * the shape, paths relative to the item.
 */
static bool
eval_arraypath(const MapNode *n, const JsonbValue *root, JsonbValue *out,
			   EvalCtx *ec)
{
	JsonbValue	src;
	JsonbValue	items;
	JsonbValue *elems;
	int			i;

	if (n->u.arraypath.path)
	{
		if (root == NULL || !PathGet(n->u.arraypath.path, root, &src))
			return false;
	}
	else if (!eval(n->u.arraypath.source, root, &src, ec))
		return false;

	if (n->u.arraypath.shape == NULL || !(JsonbValueIsObject(&src) || JsonbValueIsArray(&src)))
	{
		*out = src;
		return true;
	}
	if (JsonbValueIsArray(&src))
		JsonbValueExpand(&src, &items);
	else
	{
		items.type = jbvArray;
		items.val.array.rawScalar = false;
		items.val.array.nElems = 1;
		items.val.array.elems = &src;
	}
	elems = palloc(sizeof(JsonbValue) * Max(items.val.array.nElems, 1));
	for (i = 0; i < items.val.array.nElems; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (!eval(n->u.arraypath.shape, &items.val.array.elems[i], &elems[i], ec))
		{
			if (ec->err)
				return false;
			elems[i].type = jbvNull;
		}
	}
	out->type = jbvArray;
	out->val.array.rawScalar = false;
	out->val.array.elems = elems;
	out->val.array.nElems = items.val.array.nElems;
	return true;
}

/*
 * @json: encode (JSON.stringify) or decode (JSON.parse; text that is not
 * JSON, and values that are not text, pass unchanged).
 */
static bool
eval_json(const MapNode *n, const JsonbValue *root, JsonbValue *out, EvalCtx *ec)
{
	JsonbValue	v;
	StringInfoData buf;

	if (!eval(n->u.json.value, root, &v, ec))
		return false;
	if (n->u.json.decode)
	{
		if (v.type != jbvString || !JsJsonParse(v.val.string.val, v.val.string.len, out))
			*out = v;
		return true;
	}
	initStringInfo(&buf);
	if (!JsAppendJson(&buf, &v))
		return too_deep(ec, "@json");
	return set_string(out, buf.data, buf.len, "@json", ec);
}

/* Growing list of assignments for @flatten and @merge */
typedef struct PairList
{
	JsonbPair  *pairs;
	bool	   *drop;
	int			n;
	int			cap;
} PairList;

static void
pairlist_add(PairList *pl, const char *key, int keylen, const JsonbValue *v)
{
	if (pl->n == pl->cap)
	{
		pl->cap = pl->cap ? pl->cap * 2 : 16;
		if (pl->pairs)
		{
			pl->pairs = repalloc(pl->pairs, sizeof(JsonbPair) * pl->cap);
			pl->drop = repalloc(pl->drop, sizeof(bool) * pl->cap);
		}
		else
		{
			pl->pairs = palloc(sizeof(JsonbPair) * pl->cap);
			pl->drop = palloc(sizeof(bool) * pl->cap);
		}
	}
	pl->pairs[pl->n].key.type = jbvString;
	pl->pairs[pl->n].key.val.string.val = (char *) key;
	pl->pairs[pl->n].key.val.string.len = keylen;
	pl->pairs[pl->n].order = pl->n;
	if (v)
		pl->pairs[pl->n].value = *v;
	else
		pl->pairs[pl->n].value.type = jbvNull;
	pl->drop[pl->n] = (v == NULL);
	pl->n++;
}

/*
 * Segment's flattenObject: objects (and arrays unless omitted) are walked,
 * their leaves gathered under "prefix<sep>key" ("key" while the prefix is
 * empty); empty containers leave nothing; anything else is a leaf.
 */
static bool
flatten_into(PairList *pl, const JsonbValue *v, const char *prefix, int plen,
			 const MapNode *n)
{
	JsonbValue	exp;
	int			i;

	if (stack_is_too_deep())
		return false;
	CHECK_FOR_INTERRUPTS();
	if (!(JsonbValueIsObject(v) || (!n->u.flatten.omit_arrays && JsonbValueIsArray(v))))
	{
		pairlist_add(pl, prefix, plen, v);
		return true;
	}
	JsonbValueExpand(v, &exp);
	if (exp.type == jbvArray)
	{
		for (i = 0; i < exp.val.array.nElems; i++)
		{
			char	   *key = plen ? psprintf("%.*s%.*s%d", plen, prefix,
											  n->u.flatten.seplen, n->u.flatten.sep, i)
				: psprintf("%d", i);

			if (!flatten_into(pl, &exp.val.array.elems[i], key, strlen(key), n))
				return false;
		}
		return true;
	}
	for (i = 0; i < exp.val.object.nPairs; i++)
	{
		JsonbPair  *p = &exp.val.object.pairs[i];
		char	   *key;
		int			klen;

		if (plen)
		{
			klen = plen + n->u.flatten.seplen + p->key.val.string.len;
			key = palloc(klen + 1);
			memcpy(key, prefix, plen);
			memcpy(key + plen, n->u.flatten.sep, n->u.flatten.seplen);
			memcpy(key + plen + n->u.flatten.seplen, p->key.val.string.val,
				   p->key.val.string.len);
			key[klen] = '\0';
		}
		else
		{
			key = p->key.val.string.val;
			klen = p->key.val.string.len;
		}
		if (!flatten_into(pl, &p->value, key, klen, n))
			return false;
	}
	return true;
}

/*
 * @flatten: the value flattened into one object (a scalar becomes {"":
 * value}; undefined gives {}).
 */
static bool
eval_flatten(const MapNode *n, const JsonbValue *root, JsonbValue *out,
			 EvalCtx *ec)
{
	JsonbValue	v;
	PairList	pl = {0};

	if (eval(n->u.flatten.value, root, &v, ec))
	{
		if (!flatten_into(&pl, &v, "", 0, n))
			return too_deep(ec, "@flatten");
	}
	else if (ec->err)
		return false;
	finish_object(pl.pairs, pl.n, NULL, out);
	return true;
}

/*
 * @merge: Object.assign({}, ...objects), reversed for "left" so the first
 * object wins.  Values that are not objects are skipped.  A member of a
 * literal object that resolves to undefined overrides like in JavaScript
 * (the key ends up absent).
 */
static bool
eval_merge(const MapNode *n, const JsonbValue *root, JsonbValue *out,
		   EvalCtx *ec)
{
	PairList	pl = {0};
	int			i;

	for (i = 0; i < n->u.merge.n; i++)
	{
		const MapNode *o = n->u.merge.objects[n->u.merge.left ? n->u.merge.n - 1 - i : i];
		JsonbValue	v;

		if (o->kind == MN_OBJECT)
		{
			int			j;

			for (j = 0; j < o->u.object.n; j++)
			{
				bool		defined = eval(o->u.object.children[j], root, &v, ec);

				if (ec->err)
					return false;
				pairlist_add(&pl, o->u.object.keys[j].val.string.val,
							 o->u.object.keys[j].val.string.len, defined ? &v : NULL);
			}
			continue;
		}
		if (!eval(o, root, &v, ec))
		{
			if (ec->err)
				return false;
			continue;
		}
		if (JsonbValueIsObject(&v))
		{
			JsonbValue	exp;
			int			j;

			JsonbValueExpand(&v, &exp);
			for (j = 0; j < exp.val.object.nPairs; j++)
				pairlist_add(&pl, exp.val.object.pairs[j].key.val.string.val,
							 exp.val.object.pairs[j].key.val.string.len,
							 &exp.val.object.pairs[j].value);
		}
	}
	finish_object(pl.pairs, pl.n, pl.drop, out);
	return true;
}

/*
 * @transform: resolve "apply" against the current value, then "mapping"
 * against that result.
 */
static bool
eval_transform(const MapNode *n, const JsonbValue *root, JsonbValue *out,
			   EvalCtx *ec)
{
	JsonbValue	empty;
	JsonbValue	applied;
	bool		defined;

	if (root == NULL)
	{
		/* Segment's transform() defaults a missing payload to {} */
		empty.type = jbvObject;
		empty.val.object.nPairs = 0;
		empty.val.object.pairs = NULL;
		root = &empty;
	}
	else if (!JsonbValueIsObject(root))
	{
		ec->err = psprintf("@transform: data must be an object, got %s", JsonbValueTypeName(root, false));
		return false;
	}
	defined = eval(n->u.transform.apply, root, &applied, ec);
	if (ec->err)
		return false;
	return eval(n->u.transform.mapping, defined ? &applied : NULL, out, ec);
}

/*
 * Drop the null members of an object, and of the objects inside it
 * (arrays are left as they are).
 */
static bool
clean_nulls(const JsonbValue *v, JsonbValue *out, int depth)
{
	JsonbValue	exp;
	JsonbPair  *pairs;
	int			k = 0;
	int			i;

	if (depth > MAPKIT_MAX_DEPTH || stack_is_too_deep())
		return false;
	CHECK_FOR_INTERRUPTS();
	JsonbValueExpand(v, &exp);
	pairs = palloc(sizeof(JsonbPair) * Max(exp.val.object.nPairs, 1));
	for (i = 0; i < exp.val.object.nPairs; i++)
	{
		JsonbPair  *p = &exp.val.object.pairs[i];

		if (p->value.type == jbvNull)
			continue;
		pairs[k].key = p->key;
		pairs[k].order = k;
		if (JsonbValueIsObject(&p->value))
		{
			if (!clean_nulls(&p->value, &pairs[k].value, depth + 1))
				return false;
		}
		else
			pairs[k].value = p->value;
		k++;
	}
	out->type = jbvObject;
	out->val.object.pairs = pairs;
	out->val.object.nPairs = k;
	return true;
}

/*
 * @excludeWhenNull: null becomes undefined; objects lose their null keys.
 */
static bool
eval_exclude_null(const MapNode *n, const JsonbValue *root, JsonbValue *out,
				  EvalCtx *ec)
{
	JsonbValue	v;

	if (!eval(n->u.arg, root, &v, ec) || v.type == jbvNull)
		return false;
	if (JsonbValueIsObject(&v))
	{
		if (!clean_nulls(&v, out, 1))
			return too_deep(ec, "@excludeWhenNull");
	}
	else
		*out = v;
	return true;
}

/*
 * Evaluate a node against root (NULL: undefined).  False when the result
 * is undefined or ec->err was set.
 */
static bool
eval(const MapNode *n, const JsonbValue *root, JsonbValue *out, EvalCtx *ec)
{
	if (stack_is_too_deep())
	{
		ec->err = pstrdup("the mapping is nested too deeply");
		return false;
	}

	switch (n->kind)
	{
		case MN_CONST:
			*out = n->u.constval;
			return true;
		case MN_PATH:
			return root && PathGet(n->u.path, root, out);
		case MN_OBJECT:
			return eval_object(n, root, out, ec);
		case MN_ARRAY:
			return eval_array(n, root, out, ec);
		case MN_PATH_DYN:
		case MN_TEMPLATE_DYN:
			return eval_dynamic(n, root, out, ec);
		case MN_TEMPLATE:
			return eval_template(&n->u.tmpl, root, out, ec);
		case MN_IF:
			return eval_if(n, root, out, ec);
		case MN_CASE:
			return eval_case(n, root, out, ec);
		case MN_REPLACE:
			return eval_replace(n, root, out, ec);
		case MN_ARRAYPATH:
			return eval_arraypath(n, root, out, ec);
		case MN_JSON:
			return eval_json(n, root, out, ec);
		case MN_FLATTEN:
			return eval_flatten(n, root, out, ec);
		case MN_MERGE:
			return eval_merge(n, root, out, ec);
		case MN_TRANSFORM:
			return eval_transform(n, root, out, ec);
		case MN_EXCLUDE_NULL:
			return eval_exclude_null(n, root, out, ec);
	}
	elog(ERROR, "unrecognized mapping node kind %d", (int) n->kind);
	return false;
}

/*
 * Resolve a compiled mapping value against an event (see mapkit.h).
 */
JsonbValue *
MapkitEval(const MapNode *node, Jsonb *event, char **errmsg)
{
	JsonbValue	root;
	JsonbValue *res = palloc(sizeof(JsonbValue));
	EvalCtx		ec = {NULL};

	*errmsg = NULL;
	JsonbDocToValue(event, &root);
	if (node->kind == MN_PATH)
	{
		/* the hot path: a plain {"@path": "..."} */
		if (PathGet(node->u.path, &root, res))
			return res;
		pfree(res);
		return NULL;
	}
	if (eval(node, &root, res, &ec))
	{
		if (res->type == jbvObject || res->type == jbvArray)
		{
			/* built in memory: hand it out as a jsonb container */
			Jsonb	   *j = MapkitResultToJsonb(res);

			res->type = jbvBinary;
			res->val.binary.data = &j->root;
			res->val.binary.len = VARSIZE(j) - VARHDRSZ;
		}
		return res;
	}
	pfree(res);
	*errmsg = ec.err;
	return NULL;
}

/*
 * Push a value (scalar, jbvBinary or in-memory container) into a jsonb
 * under construction.
 */
static JsonbValue *
push_value(PgCompatJsonbBuilder *b, JsonbIteratorToken tok, JsonbValue *v)
{
	JsonbValue *res;
	int			i;

	check_stack_depth();
	if (v->type == jbvObject)
	{
		PgCompatJsonbPush(b, WJB_BEGIN_OBJECT, NULL);
		for (i = 0; i < v->val.object.nPairs; i++)
		{
			PgCompatJsonbPush(b, WJB_KEY, &v->val.object.pairs[i].key);
			push_value(b, WJB_VALUE, &v->val.object.pairs[i].value);
		}
		res = PgCompatJsonbPush(b, WJB_END_OBJECT, NULL);
	}
	else if (v->type == jbvArray)
	{
		PgCompatJsonbPush(b, WJB_BEGIN_ARRAY, NULL);
		for (i = 0; i < v->val.array.nElems; i++)
			push_value(b, WJB_ELEM, &v->val.array.elems[i]);
		res = PgCompatJsonbPush(b, WJB_END_ARRAY, NULL);
	}
	else
		res = PgCompatJsonbPush(b, tok, v);
	return res;
}

/*
 * A result as a jsonb datum (see mapkit.h).
 */
Jsonb *
MapkitResultToJsonb(JsonbValue *result)
{
	PgCompatJsonbBuilder b;

	if (result->type != jbvObject && result->type != jbvArray)
		return JsonbValueToJsonb(result);
	memset(&b, 0, sizeof(b));
	return JsonbValueToJsonb(push_value(&b, WJB_ELEM, result));
}
