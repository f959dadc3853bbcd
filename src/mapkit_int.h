/*-------------------------------------------------------------------------
 *
 * mapkit_int.h
 *	  Internals of the mapping-kit engine shared by mapkit_compile.c (the
 *	  validator / compiler), mapkit_eval.c (the evaluator) and mapkit_js.c
 *	  (the JavaScript behaviours Segment's engine inherits: how values turn
 *	  into text, JSON.stringify / JSON.parse, String.replace, == "").
 *
 * A mapping value is compiled once into a tree of MapNodes.  Literal
 * subtrees without directives are folded into one MN_CONST node whose value
 * points into the compiler's private copy of the mapping, so evaluating them
 * costs nothing.  Paths and template placeholders are parsed at compile time.
 *
 * Values during evaluation are JsonbValues: "undefined" is the absence of a
 * value (the evaluator returns false), null is jbvNull, containers are
 * jbvBinary (pointing into the event or the mapping) or in-memory jbvObject /
 * jbvArray trees whose members are scalars, jbvBinary or in-memory
 * containers.  In-memory objects built here never hold duplicate keys.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_MAPKIT_INT_H
#define METRONOME_MAPKIT_INT_H

#include "postgres.h"

#include "jsonbval.h"
#include "lib/stringinfo.h"
#include "mapkit.h"
#include "path.h"
#include "utils/jsonb.h"

/* Segment's limit on @replace patterns and replacements (UTF-16 units) */
#define MAPKIT_MAX_PATTERN_LENGTH 10

/*
 * Deepest nesting of the in-memory values built from data (@json decode,
 * @excludeWhenNull): deeper values are refused, so turning a result into
 * jsonb never runs out of stack.
 */
#define MAPKIT_MAX_DEPTH 1000

typedef enum MapNodeKind
{
	MN_CONST,					/* a value known at compile time */
	MN_OBJECT,					/* plain object with directives inside */
	MN_ARRAY,					/* plain array with directives inside */
	MN_PATH,					/* @path with a literal path */
	MN_PATH_DYN,				/* @path whose path comes from a directive */
	MN_TEMPLATE,				/* @template with a literal template */
	MN_TEMPLATE_DYN,			/* @template from a directive */
	MN_IF,
	MN_CASE,
	MN_REPLACE,
	MN_ARRAYPATH,
	MN_JSON,
	MN_FLATTEN,
	MN_MERGE,
	MN_TRANSFORM,
	MN_EXCLUDE_NULL
} MapNodeKind;

/* One piece of a template: literal text, or a placeholder's path. */
typedef struct TemplatePart
{
	const char *text;			/* literal text (path == NULL) */
	int			len;
	MetPath    *path;			/* placeholder, or NULL */
} TemplatePart;

/*
 * A literal template.  Segment renders {{{path}}} first, then {{path}} on
 * the result of that; when the template has triple-brace placeholders the
 * second pass runs at evaluation time (values may bring new placeholders).
 */
typedef struct MapTemplate
{
	int			nparts;
	TemplatePart *parts;
	bool		twopass;
} MapTemplate;

struct MapNode
{
	MapNodeKind kind;
	bool		plain;			/* MN_CONST that came from plain JSON */
	union
	{
		JsonbValue	constval;	/* MN_CONST */
		struct
		{
			int			n;
			JsonbValue *keys;	/* jbvString, unique */
			MapNode   **children;
		}			object;		/* MN_OBJECT */
		struct
		{
			int			n;
			MapNode   **children;
		}			array;		/* MN_ARRAY */
		MetPath    *path;		/* MN_PATH */
		MapNode    *arg;		/* MN_PATH_DYN, MN_TEMPLATE_DYN,
								 * MN_EXCLUDE_NULL */
		MapTemplate tmpl;		/* MN_TEMPLATE */
		struct
		{
			MapNode    *cond;
			bool		blank;	/* test "blank" rather than "exists" */
			MapNode    *then_node;	/* NULL: absent */
			MapNode    *else_node;	/* NULL: absent or a falsy literal */
		}			ifn;		/* MN_IF */
		struct
		{
			MapNode    *value;	/* NULL: absent or "" (result undefined) */
			bool		upper;
		}			casen;		/* MN_CASE */
		struct
		{
			MapNode    *value;	/* NULL: "" (result undefined) */
			const char *pattern;
			int			patlen;
			const char *replacement;
			int			replen;
			const char *pattern2;	/* NULL: no second replacement */
			int			pat2len;
			const char *replacement2;
			int			rep2len;
			bool		ignorecase;
			bool		global;
		}			replace;	/* MN_REPLACE */
		struct
		{
			MetPath    *path;	/* the array's path, or NULL when... */
			MapNode    *source; /* ...a directive gives the array itself */
			MapNode    *shape;	/* NULL: items as they are */
		}			arraypath;	/* MN_ARRAYPATH */
		struct
		{
			MapNode    *value;
			bool		decode;
		}			json;		/* MN_JSON */
		struct
		{
			MapNode    *value;
			const char *sep;
			int			seplen;
			bool		omit_arrays;
		}			flatten;	/* MN_FLATTEN */
		struct
		{
			int			n;
			MapNode   **objects;
			bool		left;
		}			merge;		/* MN_MERGE */
		struct
		{
			MapNode    *apply;
			MapNode    *mapping;
		}			transform;	/* MN_TRANSFORM */
	}			u;
};

/* mapkit_eval.c */
extern MetPath *MapkitPathParse(const char *text, int len, char **errmsg, int *errpos);

/* mapkit_js.c */
extern bool JsAppendString(StringInfo out, const JsonbValue *v);
extern bool JsLooseEqualsEmpty(const JsonbValue *v);
extern bool JsAppendJson(StringInfo out, const JsonbValue *v);
extern bool JsJsonParse(const char *s, int len, JsonbValue *out);
extern void JsReplace(StringInfo out, const char *s, int slen,
					  const char *pat, int patlen,
					  const char *rep, int replen,
					  bool global, bool ignorecase);
extern void JsTrim(const char **s, int *len);
extern char *JsChangeCase(const char *s, int len, bool upper);
extern bool JsNextPlaceholder(const char *s, int len, int from, int braces,
							  int *mstart, int *mend, int *cstart, int *clen);
extern bool JsIsFalsy(const JsonbValue *v);

#endif							/* METRONOME_MAPKIT_INT_H */
