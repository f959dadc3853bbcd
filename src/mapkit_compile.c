/*-------------------------------------------------------------------------
 *
 * mapkit_compile.c
 *	  Validation and compilation of Segment mapping values.
 *
 * A mapping value is plain JSON (taken literally, its objects and arrays
 * walked for directives) or a directive: an object with exactly one key
 * starting with "@" and optionally "_metadata" (ignored).  Everything
 * Segment's validator refuses is refused here, and a little more: what
 * Segment would only fail on at evaluation, for every event (an @if without
 * a usable "exists" or "blank", an @case operator other than "lower" or
 * "upper", an @merge without a direction, a malformed path), and unknown
 * argument keys (typos that Segment would silently ignore).
 *
 * Errors name where they are: "properties.plan.@if.then: unknown directive
 * \"@foo\"", or "properties.plan: @if: \"exists\" or \"blank\" is required"
 * for the arguments of the directive at properties.plan.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mapkit_int.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"

typedef struct CompileCtx
{
	char	   *err;			/* first error, "loc: message" */
} CompileCtx;

/*
 * Where a value is in the mapping: a chain of steps up to the root (NULL),
 * rendered only for an error message.
 */
typedef struct Loc
{
	const struct Loc *parent;
	const char *key;			/* member name, or NULL for an index */
	int			keylen;
	int			index;
} Loc;

static MapNode *compile_value(const JsonbValue *v, const Loc *loc, CompileCtx *cc);
static void fail(CompileCtx *cc, const Loc *loc, const char *fmt,...) pg_attribute_printf(3, 4);

/*
 * Append one step of a location: .key, ["odd key"] for keys that are not
 * plain words, or [index].
 */
static void
append_step(StringInfo buf, const Loc *l, bool first)
{
	bool		plain = l->keylen > 0;
	int			i;

	if (l->key == NULL)
	{
		appendStringInfo(buf, "[%d]", l->index);
		return;
	}
	for (i = 0; i < l->keylen && plain; i++)
	{
		char		c = l->key[i];

		if (!(isalnum((unsigned char) c) || c == '_' || c == '$' || c == '-' ||
			  c == '@' || IS_HIGHBIT_SET(c)))
			plain = false;
	}
	if (plain)
	{
		if (!first)
			appendStringInfoChar(buf, '.');
		appendBinaryStringInfo(buf, l->key, l->keylen);
		return;
	}
	appendStringInfoString(buf, "[\"");
	for (i = 0; i < l->keylen; i++)
	{
		if (l->key[i] == '"' || l->key[i] == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, l->key[i]);
	}
	appendStringInfoString(buf, "\"]");
}

/*
 * Record an error at loc (the first one wins): "loc: message", or just the
 * message at the root.
 */
static void
fail(CompileCtx *cc, const Loc *loc, const char *fmt,...)
{
	va_list		args;
	StringInfoData buf;

	if (cc->err)
		return;
	initStringInfo(&buf);
	if (loc)
	{
		const Loc  *l;
		const Loc **steps;
		int			n = 0;
		int			i;

		for (l = loc; l; l = l->parent)
			n++;
		steps = palloc(sizeof(Loc *) * n);
		for (l = loc, i = n; l; l = l->parent)
			steps[--i] = l;
		for (i = 0; i < n; i++)
			append_step(&buf, steps[i], i == 0);
		appendStringInfoString(&buf, ": ");
	}
	for (;;)
	{
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	cc->err = buf.data;
}

/*
 * Location of a member.
 */
static const Loc *
loc_key(const Loc *loc, const char *key, int keylen)
{
	Loc		   *l = palloc(sizeof(Loc));

	l->parent = loc;
	l->key = key;
	l->keylen = keylen;
	l->index = -1;
	return l;
}

static const Loc *
loc_str(const Loc *loc, const char *key)
{
	return loc_key(loc, key, strlen(key));
}

/*
 * Location of an array element.
 */
static const Loc *
loc_index(const Loc *loc, int i)
{
	Loc		   *l = palloc(sizeof(Loc));

	l->parent = loc;
	l->key = NULL;
	l->keylen = 0;
	l->index = i;
	return l;
}

/*
 * What a value is, for messages: "a string", "null", "an array", ...
 */
static const char *
describe(const JsonbValue *v)
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
		case jbvBinary:
			if (JsonContainerIsArray(v->val.binary.data))
				return "an array";
			else
			{
				JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
				JsonbValue	k;
				JsonbIteratorToken tok;

				while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
					if (tok == WJB_KEY && k.val.string.len > 0 &&
						k.val.string.val[0] == '@')
						return "a directive";
				return "an object";
			}
		default:
			return "a value";
	}
}

static bool
is_string(const JsonbValue *v)
{
	return v->type == jbvString;
}

static bool
is_object_container(const JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

/*
 * Does an object have a directive key?  Sets *name to the first one.
 */
static bool
has_directive_key(const JsonbValue *v, JsonbValue *name)
{
	JsonbIterator *it;
	JsonbValue	k;
	JsonbIteratorToken tok;

	if (!is_object_container(v))
		return false;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY && k.val.string.len > 0 && k.val.string.val[0] == '@')
		{
			if (name)
				*name = k;
			return true;
		}
	}
	return false;
}

/*
 * A compile-time constant.
 */
static MapNode *
make_const(const JsonbValue *v, bool plain)
{
	MapNode    *n = palloc0(sizeof(MapNode));

	n->kind = MN_CONST;
	n->plain = plain;
	n->u.constval = *v;
	return n;
}

static MapNode *
make_node(MapNodeKind kind)
{
	MapNode    *n = palloc0(sizeof(MapNode));

	n->kind = kind;
	return n;
}

/*
 * Read a directive's argument object: every key must be one of names[].
 * vals[i] and present[i] receive the members.  what describes the expected
 * object in messages.
 */
static bool
get_args(const JsonbValue *v, const char *dname, const Loc *loc,
		 const char *const *names, int nnames, JsonbValue *vals, bool *present,
		 const char *what, CompileCtx *cc)
{
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	val;
	JsonbIteratorToken tok;
	int			i;

	if (!is_object_container(v) || has_directive_key(v, NULL))
	{
		fail(cc, loc, "%s: expected an object with %s, got %s", dname, what, describe(v));
		return false;
	}
	for (i = 0; i < nnames; i++)
		present[i] = false;

	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &val, true);
		Assert(tok == WJB_VALUE);
		for (i = 0; i < nnames; i++)
		{
			if (strlen(names[i]) == (size_t) k.val.string.len &&
				memcmp(names[i], k.val.string.val, k.val.string.len) == 0)
				break;
		}
		if (i == nnames)
		{
			StringInfoData known;
			int			j;

			initStringInfo(&known);
			for (j = 0; j < nnames; j++)
				appendStringInfo(&known, "%s\"%s\"", j ? ", " : "", names[j]);
			fail(cc, loc, "%s: unknown key \"%.*s\" (expected %s)", dname,
				 k.val.string.len, k.val.string.val, known.data);
			return false;
		}
		vals[i] = val;
		present[i] = true;
	}
	return true;
}

/*
 * A string of at most max UTF-16 units (min at least), for @replace.
 */
static bool
check_length(const JsonbValue *v, const char *dname, const char *key,
			 int min, int max, const Loc *loc, CompileCtx *cc)
{
	int			n;

	if (!is_string(v))
	{
		fail(cc, loc, "%s: \"%s\" must be a string, got %s", dname, key, describe(v));
		return false;
	}
	n = Utf16Length(v->val.string.val, v->val.string.len);
	if (n < min)
	{
		fail(cc, loc, "%s: \"%s\" must not be empty", dname, key);
		return false;
	}
	if (n > max)
	{
		if (n != pg_mbstrlen_with_len(v->val.string.val, v->val.string.len))
			fail(cc, loc, "%s: \"%s\" must be at most %d characters long, got %d (counted in UTF-16 units, as Segment does)",
				 dname, key, max, n);
		else
			fail(cc, loc, "%s: \"%s\" must be at most %d characters long, got %d",
				 dname, key, max, n);
		return false;
	}
	return true;
}

/*
 * Is v one of the allowed literal strings?  Sets *which to its index.
 */
static bool
check_choice(const JsonbValue *v, const char *dname, const char *key,
			 const char *a, const char *b, int *which, const Loc *loc,
			 CompileCtx *cc)
{
	if (is_string(v))
	{
		if ((size_t) v->val.string.len == strlen(a) &&
			memcmp(v->val.string.val, a, v->val.string.len) == 0)
		{
			*which = 0;
			return true;
		}
		if ((size_t) v->val.string.len == strlen(b) &&
			memcmp(v->val.string.val, b, v->val.string.len) == 0)
		{
			*which = 1;
			return true;
		}
		fail(cc, loc, "%s: \"%s\" must be \"%s\" or \"%s\", got \"%.*s\"",
			 dname, key, a, b, v->val.string.len, v->val.string.val);
	}
	else
		fail(cc, loc, "%s: \"%s\" must be \"%s\" or \"%s\", got %s",
			 dname, key, a, b, describe(v));
	return false;
}

/*
 * A value that must be a string or a directive (the @path, @template,
 * @case and @replace value).  A string is compiled by the caller.
 */
static bool
check_string_or_directive(const JsonbValue *v, const char *dname,
						  const char *key, const char *what, const Loc *loc,
						  CompileCtx *cc)
{
	if (is_string(v) || has_directive_key(v, NULL))
		return true;
	if (key)
		fail(cc, loc, "%s: \"%s\" must be %s or a directive, got %s",
			 dname, key, what, describe(v));
	else
		fail(cc, loc, "%s: expected %s or a directive, got %s",
			 dname, what, describe(v));
	return false;
}

/*
 * A value that must be an object, plain or a directive (@transform's
 * arguments, @merge's objects, @arrayPath's item shape).
 */
static bool
check_object_or_directive(const JsonbValue *v, const char *dname,
						  const char *what, const Loc *loc, CompileCtx *cc)
{
	if (is_object_container(v))
		return true;
	fail(cc, loc, "%s: %s must be an object or a directive, got %s",
		 dname, what, describe(v));
	return false;
}

/*
 * Parse a path given literally.
 */
static MetPath *
compile_path(const char *s, int len, const char *dname, const Loc *loc,
			 CompileCtx *cc)
{
	char	   *msg;
	int			pos;
	MetPath    *p = MapkitPathParse(s, len, &msg, &pos);

	if (p == NULL)
		fail(cc, loc, "%s: %s (at character %d)", dname, msg,
			 pg_mbstrlen_with_len(s, pos) + 1);	/* pos counts bytes */
	return p;
}

/*
 * Parse a template placeholder's path (trimmed as Segment trims it).
 */
static MetPath *
compile_placeholder(const char *s, int cstart, int clen, const Loc *loc,
					CompileCtx *cc)
{
	const char *p = s + cstart;
	int			len = clen;
	char	   *msg;
	int			pos;
	MetPath    *path;

	JsTrim(&p, &len);
	path = MapkitPathParse(p, len, &msg, &pos);
	if (path == NULL)
		fail(cc, loc, "@template: placeholder \"%.*s\": %s", clen, s + cstart, msg);
	return path;
}

/*
 * Add a part to a template.
 */
static void
add_part(MapTemplate *t, int *cap, const char *text, int len, MetPath *path)
{
	if (path == NULL && len == 0)
		return;
	if (t->nparts == *cap)
	{
		*cap *= 2;
		t->parts = repalloc(t->parts, sizeof(TemplatePart) * *cap);
	}
	t->parts[t->nparts].text = text;
	t->parts[t->nparts].len = len;
	t->parts[t->nparts].path = path;
	t->nparts++;
}

/*
 * Split a template into text and placeholders.  Triple-brace placeholders
 * are rendered first; when there are any, the double-brace pass runs at
 * evaluation time over the result, and its placeholders are checked here on
 * the template without the triple-brace ones.
 */
static bool
compile_template(const char *s, int len, const Loc *loc, MapTemplate *t,
				 CompileCtx *cc)
{
	int			cap = 8;
	int			from = 0;
	int			ms,
				me,
				cs,
				cl;
	int			braces = 2;

	t->nparts = 0;
	t->parts = palloc(sizeof(TemplatePart) * cap);
	t->twopass = JsNextPlaceholder(s, len, 0, 3, &ms, &me, &cs, &cl);
	if (t->twopass)
	{
		StringInfoData rest;

		braces = 3;
		/* check the double-brace placeholders left once these are gone */
		initStringInfo(&rest);
		while (JsNextPlaceholder(s, len, from, 3, &ms, &me, &cs, &cl))
		{
			appendBinaryStringInfo(&rest, s + from, ms - from);
			from = me;
		}
		appendBinaryStringInfo(&rest, s + from, len - from);
		from = 0;
		while (JsNextPlaceholder(rest.data, rest.len, from, 2, &ms, &me, &cs, &cl))
		{
			if (compile_placeholder(rest.data, cs, cl, loc, cc) == NULL)
				return false;
			from = me;
		}
		from = 0;
	}

	while (JsNextPlaceholder(s, len, from, braces, &ms, &me, &cs, &cl))
	{
		MetPath    *path = compile_placeholder(s, cs, cl, loc, cc);

		if (path == NULL)
			return false;
		add_part(t, &cap, s + from, ms - from, NULL);
		add_part(t, &cap, NULL, 0, path);
		from = me;
	}
	add_part(t, &cap, s + from, len - from, NULL);
	return true;
}

/*
 * @path and @template: a literal string or a directive giving one.
 */
static MapNode *
compile_path_or_template(const JsonbValue *v, bool is_template, const Loc *loc,
						 CompileCtx *cc)
{
	const char *dname = is_template ? "@template" : "@path";
	MapNode    *n;

	if (!check_string_or_directive(v, dname, NULL,
								   is_template ? "a template string" : "a path string",
								   loc, cc))
		return NULL;
	if (!is_string(v))
	{
		n = make_node(is_template ? MN_TEMPLATE_DYN : MN_PATH_DYN);
		n->u.arg = compile_value(v, loc_str(loc, dname), cc);
		return n->u.arg ? n : NULL;
	}
	if (is_template)
	{
		n = make_node(MN_TEMPLATE);
		if (!compile_template(v->val.string.val, v->val.string.len, loc, &n->u.tmpl, cc))
			return NULL;
		return n;
	}
	n = make_node(MN_PATH);
	n->u.path = compile_path(v->val.string.val, v->val.string.len, dname, loc, cc);
	return n->u.path ? n : NULL;
}

/*
 * @if: {exists | blank, then, else}.
 */
static MapNode *
compile_if(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	static const char *const names[] = {"exists", "blank", "then", "else"};
	JsonbValue	vals[4];
	bool		present[4];
	const Loc  *dloc = loc_str(loc, "@if");
	MapNode    *n;

	if (!get_args(v, "@if", loc, names, 4, vals, present,
				  "\"exists\" or \"blank\", \"then\" and \"else\"", cc))
		return NULL;
	if ((!present[0] || JsIsFalsy(&vals[0])) && (!present[1] || JsIsFalsy(&vals[1])))
	{
		if (present[0] || present[1])
			fail(cc, loc, "@if: \"%s\" must be a directive or a value that is not null, false, 0 or \"\"",
				 present[0] ? "exists" : "blank");
		else
			fail(cc, loc, "@if: \"exists\" or \"blank\" is required");
		return NULL;
	}
	n = make_node(MN_IF);
	/* as Segment does: "exists" when given, else "blank" */
	n->u.ifn.blank = !present[0];
	n->u.ifn.cond = compile_value(&vals[present[0] ? 0 : 1],
								  loc_str(dloc, present[0] ? "exists" : "blank"), cc);
	if (n->u.ifn.cond == NULL)
		return NULL;
	if (present[2])
	{
		n->u.ifn.then_node = compile_value(&vals[2], loc_str(dloc, "then"), cc);
		if (n->u.ifn.then_node == NULL)
			return NULL;
	}
	/* Segment takes "else" only when it is truthy */
	if (present[3] && !JsIsFalsy(&vals[3]))
	{
		n->u.ifn.else_node = compile_value(&vals[3], loc_str(dloc, "else"), cc);
		if (n->u.ifn.else_node == NULL)
			return NULL;
	}
	return n;
}

/*
 * @case: {operator: "lower" | "upper", value}.
 */
static MapNode *
compile_case(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	static const char *const names[] = {"operator", "value"};
	JsonbValue	vals[2];
	bool		present[2];
	int			which;
	MapNode    *n;

	if (!get_args(v, "@case", loc, names, 2, vals, present,
				  "\"operator\" and \"value\"", cc))
		return NULL;
	if (!present[0])
	{
		fail(cc, loc, "@case: \"operator\" is required");
		return NULL;
	}
	if (!check_choice(&vals[0], "@case", "operator", "lower", "upper", &which, loc, cc))
		return NULL;
	n = make_node(MN_CASE);
	n->u.casen.upper = (which == 1);
	if (present[1])
	{
		if (!check_string_or_directive(&vals[1], "@case", "value", "a string", loc, cc))
			return NULL;
		/* Segment skips a falsy value: the result is undefined */
		if (!JsIsFalsy(&vals[1]))
		{
			n->u.casen.value = compile_value(&vals[1], loc_str(loc_str(loc, "@case"), "value"), cc);
			if (n->u.casen.value == NULL)
				return NULL;
		}
	}
	return n;
}

/*
 * @replace: {value, pattern, replacement, ignorecase, global, pattern2,
 * replacement2}.
 */
static MapNode *
compile_replace(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	static const char *const names[] = {"value", "pattern", "replacement",
	"ignorecase", "global", "pattern2", "replacement2"};
	JsonbValue	vals[7];
	bool		present[7];
	MapNode    *n;
	int			i;

	if (!get_args(v, "@replace", loc, names, 7, vals, present,
				  "\"pattern\" and \"value\"", cc))
		return NULL;
	if (!present[1])
	{
		fail(cc, loc, "@replace: \"pattern\" is required");
		return NULL;
	}
	if (!check_length(&vals[1], "@replace", "pattern", 1, MAPKIT_MAX_PATTERN_LENGTH, loc, cc))
		return NULL;
	if (present[2] &&
		!check_length(&vals[2], "@replace", "replacement", 0, MAPKIT_MAX_PATTERN_LENGTH, loc, cc))
		return NULL;
	for (i = 3; i <= 4; i++)
	{
		if (present[i] && vals[i].type != jbvBool)
		{
			fail(cc, loc, "@replace: \"%s\" must be a boolean, got %s", names[i], describe(&vals[i]));
			return NULL;
		}
	}
	/* Segment skips a null or empty second pattern; null replacement2 is "" */
	for (i = 5; i <= 6; i++)
	{
		if (present[i] && vals[i].type == jbvNull)
			present[i] = false;
		if (present[i] &&
			!check_length(&vals[i], "@replace", names[i], 0, MAPKIT_MAX_PATTERN_LENGTH, loc, cc))
			return NULL;
	}
	if (!present[0])
	{
		fail(cc, loc, "@replace: \"value\" is required");
		return NULL;
	}
	if (!check_string_or_directive(&vals[0], "@replace", "value", "a string", loc, cc))
		return NULL;

	n = make_node(MN_REPLACE);
	if (!JsIsFalsy(&vals[0]))
	{
		n->u.replace.value = compile_value(&vals[0], loc_str(loc_str(loc, "@replace"), "value"), cc);
		if (n->u.replace.value == NULL)
			return NULL;
	}
	n->u.replace.pattern = vals[1].val.string.val;
	n->u.replace.patlen = vals[1].val.string.len;
	n->u.replace.replacement = present[2] ? vals[2].val.string.val : "";
	n->u.replace.replen = present[2] ? vals[2].val.string.len : 0;
	n->u.replace.ignorecase = present[3] ? vals[3].val.boolean : false;
	n->u.replace.global = present[4] ? vals[4].val.boolean : true;
	if (present[5] && vals[5].val.string.len > 0)
	{
		n->u.replace.pattern2 = vals[5].val.string.val;
		n->u.replace.pat2len = vals[5].val.string.len;
		n->u.replace.replacement2 = present[6] ? vals[6].val.string.val : "";
		n->u.replace.rep2len = present[6] ? vals[6].val.string.len : 0;
	}
	return n;
}

/*
 * @arrayPath: [path or directive, item shape].
 */
static MapNode *
compile_arraypath(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	const Loc  *dloc = loc_str(loc, "@arrayPath");
	JsonbValue *src;
	JsonbValue *shape = NULL;
	int			size;
	MapNode    *n;

	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
	{
		fail(cc, loc, "@arrayPath: expected an array [path, item shape], got %s", describe(v));
		return NULL;
	}
	size = JsonContainerSize(v->val.binary.data);
	if (size < 1 || size > 2)
	{
		fail(cc, loc, "@arrayPath: expected an array [path, item shape] of 1 or 2 elements, got %d", size);
		return NULL;
	}
	src = getIthJsonbValueFromContainer(v->val.binary.data, 0);
	if (size == 2)
		shape = getIthJsonbValueFromContainer(v->val.binary.data, 1);

	n = make_node(MN_ARRAYPATH);
	if (!is_string(src) && !has_directive_key(src, NULL))
	{
		fail(cc, loc, "@arrayPath: the path (first element) must be a string or a directive, got %s",
			 describe(src));
		return NULL;
	}
	if (is_string(src))
	{
		n->u.arraypath.path = compile_path(src->val.string.val, src->val.string.len,
										   "@arrayPath", loc, cc);
		if (n->u.arraypath.path == NULL)
			return NULL;
	}
	else
	{
		n->u.arraypath.source = compile_value(src, loc_index(dloc, 0), cc);
		if (n->u.arraypath.source == NULL)
			return NULL;
	}
	if (shape)
	{
		if (!check_object_or_directive(shape, "@arrayPath", "the item shape",
									   loc, cc))
			return NULL;
		/* an empty shape maps nothing: Segment returns the items as they are */
		if (JsonContainerSize(shape->val.binary.data) > 0)
		{
			n->u.arraypath.shape = compile_value(shape, loc_index(dloc, 1), cc);
			if (n->u.arraypath.shape == NULL)
				return NULL;
		}
	}
	return n;
}

/*
 * @json: {mode: "encode" | "decode", value}.
 */
static MapNode *
compile_json(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	static const char *const names[] = {"mode", "value"};
	JsonbValue	vals[2];
	bool		present[2];
	int			which;
	MapNode    *n;

	if (!get_args(v, "@json", loc, names, 2, vals, present,
				  "\"mode\" and \"value\"", cc))
		return NULL;
	if (!present[0])
	{
		fail(cc, loc, "@json: \"mode\" is required");
		return NULL;
	}
	if (!check_choice(&vals[0], "@json", "mode", "encode", "decode", &which, loc, cc))
		return NULL;
	if (!present[1])
	{
		fail(cc, loc, "@json: \"value\" is required");
		return NULL;
	}
	if (JsIsFalsy(&vals[1]))
	{
		/* Segment fails on these at evaluation ("@json requires a value") */
		fail(cc, loc, "@json: \"value\" must be a directive or a value that is not null, false, 0 or \"\"");
		return NULL;
	}
	n = make_node(MN_JSON);
	n->u.json.decode = (which == 1);
	n->u.json.value = compile_value(&vals[1], loc_str(loc_str(loc, "@json"), "value"), cc);
	return n->u.json.value ? n : NULL;
}

/*
 * @flatten: {value, separator (default "."), omitArrays}.
 */
static MapNode *
compile_flatten(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	static const char *const names[] = {"value", "separator", "omitArrays"};
	JsonbValue	vals[3];
	bool		present[3];
	MapNode    *n;

	if (!get_args(v, "@flatten", loc, names, 3, vals, present,
				  "\"value\" and \"separator\"", cc))
		return NULL;
	if (!present[0])
	{
		fail(cc, loc, "@flatten: \"value\" is required");
		return NULL;
	}
	if (present[1] && (!is_string(&vals[1]) || vals[1].val.string.len == 0))
	{
		fail(cc, loc, "@flatten: \"separator\" must be a non-empty string, got %s",
			 is_string(&vals[1]) ? "\"\"" : describe(&vals[1]));
		return NULL;
	}
	if (present[2] && vals[2].type != jbvBool)
	{
		fail(cc, loc, "@flatten: \"omitArrays\" must be a boolean, got %s", describe(&vals[2]));
		return NULL;
	}
	n = make_node(MN_FLATTEN);
	n->u.flatten.sep = present[1] ? vals[1].val.string.val : ".";
	n->u.flatten.seplen = present[1] ? vals[1].val.string.len : 1;
	n->u.flatten.omit_arrays = present[2] && vals[2].val.boolean;
	n->u.flatten.value = compile_value(&vals[0], loc_str(loc_str(loc, "@flatten"), "value"), cc);
	return n->u.flatten.value ? n : NULL;
}

/*
 * @merge: {objects: [object or directive, ...], direction: "left" | "right"}.
 */
static MapNode *
compile_merge(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	static const char *const names[] = {"objects", "direction"};
	JsonbValue	vals[2];
	bool		present[2];
	int			which;
	const Loc  *oloc;
	MapNode    *n;
	int			i;

	if (!get_args(v, "@merge", loc, names, 2, vals, present,
				  "\"objects\" and \"direction\"", cc))
		return NULL;
	if (!present[0])
	{
		fail(cc, loc, "@merge: \"objects\" is required");
		return NULL;
	}
	if (vals[0].type != jbvBinary || !JsonContainerIsArray(vals[0].val.binary.data))
	{
		fail(cc, loc, "@merge: \"objects\" must be an array, got %s", describe(&vals[0]));
		return NULL;
	}
	if (!present[1])
	{
		fail(cc, loc, "@merge: \"direction\" is required");
		return NULL;
	}
	if (!check_choice(&vals[1], "@merge", "direction", "left", "right", &which, loc, cc))
		return NULL;

	n = make_node(MN_MERGE);
	n->u.merge.left = (which == 0);
	n->u.merge.n = JsonContainerSize(vals[0].val.binary.data);
	n->u.merge.objects = palloc(sizeof(MapNode *) * Max(n->u.merge.n, 1));
	oloc = loc_str(loc_str(loc, "@merge"), "objects");
	for (i = 0; i < n->u.merge.n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(vals[0].val.binary.data, i);
		const Loc  *eloc = loc_index(oloc, i);

		if (!is_object_container(e))
		{
			fail(cc, loc, "@merge: \"objects\"[%d] must be an object or a directive, got %s",
				 i, describe(e));
			return NULL;
		}
		n->u.merge.objects[i] = compile_value(e, eloc, cc);
		if (n->u.merge.objects[i] == NULL)
			return NULL;
	}
	return n;
}

/*
 * @transform: {apply: mapping, mapping: mapping}.
 */
static MapNode *
compile_transform(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	static const char *const names[] = {"apply", "mapping"};
	JsonbValue	vals[2];
	bool		present[2];
	const Loc  *dloc = loc_str(loc, "@transform");
	MapNode    *n;
	int			i;

	if (!get_args(v, "@transform", loc, names, 2, vals, present,
				  "\"apply\" and \"mapping\"", cc))
		return NULL;
	for (i = 0; i < 2; i++)
	{
		if (!present[i])
		{
			fail(cc, loc, "@transform: \"%s\" is required", names[i]);
			return NULL;
		}
		if (!is_object_container(&vals[i]))
		{
			fail(cc, loc, "@transform: \"%s\" must be an object or a directive, got %s",
				 names[i], describe(&vals[i]));
			return NULL;
		}
	}
	n = make_node(MN_TRANSFORM);
	n->u.transform.apply = compile_value(&vals[0], loc_str(dloc, "apply"), cc);
	if (n->u.transform.apply == NULL)
		return NULL;
	n->u.transform.mapping = compile_value(&vals[1], loc_str(dloc, "mapping"), cc);
	return n->u.transform.mapping ? n : NULL;
}

/*
 * A directive: name is its "@" key, v its value.
 */
static MapNode *
compile_directive(const char *name, int namelen, const JsonbValue *v,
				  const Loc *loc, CompileCtx *cc)
{
#define IS(s) ((size_t) namelen == strlen(s) && memcmp(name, s, namelen) == 0)
	if (IS("@path"))
		return compile_path_or_template(v, false, loc, cc);
	if (IS("@template"))
		return compile_path_or_template(v, true, loc, cc);
	if (IS("@literal"))
	{
		MapNode    *child = compile_value(v, loc_str(loc, "@literal"), cc);

		/* a constant, but not one a parent may copy from the mapping text */
		if (child && child->kind == MN_CONST && child->plain)
			return make_const(&child->u.constval, false);
		return child;
	}
	if (IS("@if"))
		return compile_if(v, loc, cc);
	if (IS("@case"))
		return compile_case(v, loc, cc);
	if (IS("@replace"))
		return compile_replace(v, loc, cc);
	if (IS("@arrayPath"))
		return compile_arraypath(v, loc, cc);
	if (IS("@json"))
		return compile_json(v, loc, cc);
	if (IS("@flatten"))
		return compile_flatten(v, loc, cc);
	if (IS("@merge"))
		return compile_merge(v, loc, cc);
	if (IS("@transform"))
		return compile_transform(v, loc, cc);
	if (IS("@excludeWhenNull"))
	{
		MapNode    *n = make_node(MN_EXCLUDE_NULL);

		n->u.arg = compile_value(v, loc_str(loc, "@excludeWhenNull"), cc);
		return n->u.arg ? n : NULL;
	}
	if (IS("@liquid"))
	{
		fail(cc, loc, "@liquid is not supported (use @template, @if, @case or @replace)");
		return NULL;
	}
#undef IS
	fail(cc, loc, "unknown directive \"%.*s\"", namelen, name);
	return NULL;
}

/*
 * A plain object, or a directive object.
 */
static MapNode *
compile_object(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	JsonbContainer *jc = v->val.binary.data;
	int			size = JsonContainerSize(jc);
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	val;
	JsonbIteratorToken tok;
	JsonbValue	dkey = {0};
	JsonbValue	dval = {0};
	JsonbValue	other = {0};
	int			ndirectives = 0;
	int			nother = 0;
	MapNode    *n;
	bool		allconst = true;
	int			i = 0;

	/* classify the keys */
	it = JsonbIteratorInit(jc);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		JsonbIteratorNext(&it, &val, true);
		if (k.val.string.len > 0 && k.val.string.val[0] == '@')
		{
			if (ndirectives == 1)
			{
				fail(cc, loc, "an object has two directives, \"%.*s\" and \"%.*s\"; a directive object has exactly one \"@\" key",
					 dkey.val.string.len, dkey.val.string.val,
					 k.val.string.len, k.val.string.val);
				return NULL;
			}
			ndirectives++;
			dkey = k;
			dval = val;
		}
		else if (!(k.val.string.len == 9 && memcmp(k.val.string.val, "_metadata", 9) == 0))
		{
			if (nother++ == 0)
				other = k;
		}
	}
	if (ndirectives == 1)
	{
		if (nother > 0)
		{
			fail(cc, loc, "directive \"%.*s\" has a plain key beside it (\"%.*s\"); only \"_metadata\" may accompany a directive",
				 dkey.val.string.len, dkey.val.string.val,
				 other.val.string.len, other.val.string.val);
			return NULL;
		}
		return compile_directive(dkey.val.string.val, dkey.val.string.len, &dval, loc, cc);
	}

	/* a plain object: its members are mapping values */
	n = make_node(MN_OBJECT);
	n->u.object.n = size;
	n->u.object.keys = palloc(sizeof(JsonbValue) * Max(size, 1));
	n->u.object.children = palloc(sizeof(MapNode *) * Max(size, 1));
	it = JsonbIteratorInit(jc);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		MapNode    *child;

		if (tok != WJB_KEY)
			continue;
		JsonbIteratorNext(&it, &val, true);
		child = compile_value(&val, loc_key(loc, k.val.string.val, k.val.string.len), cc);
		if (child == NULL)
			return NULL;
		n->u.object.keys[i] = k;
		n->u.object.children[i] = child;
		if (!(child->kind == MN_CONST && child->plain))
			allconst = false;
		i++;
	}
	n->u.object.n = i;
	if (allconst)
		return make_const(v, true);
	return n;
}

/*
 * A plain array: its elements are mapping values.
 */
static MapNode *
compile_array(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	JsonbContainer *jc = v->val.binary.data;
	int			size = JsonContainerSize(jc);
	JsonbIterator *it;
	JsonbValue	val;
	JsonbIteratorToken tok;
	MapNode    *n;
	bool		allconst = true;
	int			i = 0;

	n = make_node(MN_ARRAY);
	n->u.array.children = palloc(sizeof(MapNode *) * Max(size, 1));
	it = JsonbIteratorInit(jc);
	while ((tok = JsonbIteratorNext(&it, &val, true)) != WJB_DONE)
	{
		MapNode    *child;

		if (tok != WJB_ELEM)
			continue;
		child = compile_value(&val, loc_index(loc, i), cc);
		if (child == NULL)
			return NULL;
		n->u.array.children[i++] = child;
		if (!(child->kind == MN_CONST && child->plain))
			allconst = false;
	}
	n->u.array.n = i;
	if (allconst)
		return make_const(v, true);
	return n;
}

/*
 * Compile any mapping value.
 */
static MapNode *
compile_value(const JsonbValue *v, const Loc *loc, CompileCtx *cc)
{
	if (stack_is_too_deep())
	{
		fail(cc, NULL, "the mapping is nested too deeply");
		return NULL;
	}

	if (v->type != jbvBinary)
		return make_const(v, true);
	if (JsonContainerIsObject(v->val.binary.data))
		return compile_object(v, loc, cc);
	return compile_array(v, loc, cc);
}

/*
 * Validate and compile a mapping value (see mapkit.h).
 */
MapNode *
MapkitCompile(Jsonb *mapping, char **errmsg)
{
	Jsonb	   *copy = palloc(VARSIZE(mapping));
	JsonbValue	root;
	CompileCtx	cc = {NULL};
	MapNode    *n;

	*errmsg = NULL;
	memcpy(copy, mapping, VARSIZE(mapping));
	JsonbDocToValue(copy, &root);
	n = compile_value(&root, NULL, &cc);
	if (n == NULL)
	{
		*errmsg = cc.err ? cc.err : pstrdup("invalid mapping value");
		return NULL;
	}
	return n;
}
