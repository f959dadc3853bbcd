/*-------------------------------------------------------------------------
 *
 * path.h
 *	  Lodash-style paths into JSON values ("$.a.b", "a[0].b", "a['k k']"),
 *	  as Segment's mapping-kit and FQL read them.  Parsed once, walked on
 *	  jsonb without re-parsing the document.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_PATH_H
#define METRONOME_PATH_H

#include "postgres.h"
#include "utils/jsonb.h"

/* One step of a path: an object key, which is also an array index when it
 * is a canonical non-negative integer ("0", "17", not "01"). */
typedef struct MetPathSeg
{
	char	   *key;			/* not NUL-terminated necessarily; see keylen */
	int			keylen;
	int			index;			/* array index, or -1 when not an index */
} MetPathSeg;

typedef struct MetPath
{
	int			nsegs;			/* 0: the whole document */
	MetPathSeg	segs[FLEXIBLE_ARRAY_MEMBER];
} MetPath;

/*
 * Parse a path.  A leading "$." (or a lone "$") is optional; "" and "$." name
 * the whole document.  Returns NULL on a malformed path and sets *errmsg
 * (palloc'd, lowercase, no period) and *errpos (0-based byte offset).
 */
extern MetPath *PathParse(const char *text, int len, char **errmsg, int *errpos);

/* Build a path from already separated keys (used by the FQL lexer). */
extern MetPath *PathFromKeys(int nkeys, char **keys, int *keylens);

/*
 * Look a path up in a value: root may be a jbvBinary container (the usual
 * case: a document or a part of it), an in-memory jbvObject / jbvArray built
 * by the mapping evaluator, or a scalar.  Returns false when the path is
 * undefined (a missing key, an index out of range, a step into a scalar).
 * On success *result holds a scalar, or a jbvBinary / in-memory container;
 * it may point into root's memory.
 */
extern bool PathGet(const MetPath *path, const JsonbValue *root, JsonbValue *result);

/* Same, on a whole jsonb document. */
extern bool PathGetJsonb(const MetPath *path, Jsonb *doc, JsonbValue *result);

/* Make a JsonbValue that stands for a whole jsonb document (jbvBinary, or
 * the scalar itself for a raw-scalar document). */
extern void JsonbDocToValue(Jsonb *doc, JsonbValue *out);

/* Render a path for messages: "$.a.b[0]" (palloc'd). */
extern char *PathToString(const MetPath *path);

#endif							/* METRONOME_PATH_H */
