/*-------------------------------------------------------------------------
 *
 * jsonbval.h
 *	  Helpers on JsonbValues shared by the layers above them (path.c,
 *	  fields.c, mapkit_eval.c, mapkit_js.c), so that none of those has to
 *	  call a sibling: what kind of value it is, one level of a container in
 *	  memory, a one-element array's element, the name of a value's type for
 *	  messages, a string's length as JavaScript counts it, and an excerpt of
 *	  a long text for messages.
 *
 * A value is a scalar, a jbvBinary container (into a jsonb document) or an
 * in-memory jbvObject / jbvArray whose members are scalars, jbvBinary or
 * in-memory containers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_JSONBVAL_H
#define METRONOME_JSONBVAL_H

#include "postgres.h"

#include "utils/jsonb.h"

/* Is v an object (binary or in memory)? */
extern bool JsonbValueIsObject(const JsonbValue *v);

/* Is v an array (binary or in memory, not a raw scalar)? */
extern bool JsonbValueIsArray(const JsonbValue *v);

/*
 * One level of a container in memory: a jbvBinary object or array becomes
 * a jbvObject / jbvArray whose members are scalars or jbvBinary; any other
 * value is copied as it is.
 */
extern void JsonbValueExpand(const JsonbValue *v, JsonbValue *out);

/* When v is an array of exactly one element, that element into *elem. */
extern bool JsonbValueSingleElement(const JsonbValue *v, JsonbValue *elem);

/*
 * The JSON type of a value for messages: "string", "number", "boolean",
 * "null", "object", "array" ("undefined" for NULL); with article, "a
 * string", "an object", ...
 */
extern const char *JsonbValueTypeName(const JsonbValue *v, bool article);

/* Length of a string in UTF-16 code units, as JavaScript's .length. */
extern int	Utf16Length(const char *s, int len);

/*
 * At most maxbytes bytes of s (len bytes), cut at a character boundary,
 * with "..." when cut; for quoting values in messages (palloc'd).
 */
extern char *TextExcerpt(const char *s, int len, int maxbytes);

#endif							/* METRONOME_JSONBVAL_H */
