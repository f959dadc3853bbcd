/*-------------------------------------------------------------------------
 *
 * mapkit.h
 *	  Segment's mapping-kit: mapping values ({"@path": "$.a"}, {"@if": ...},
 *	  literals with nested directives) compiled once and evaluated per event.
 *
 * Values during evaluation are JsonbValues: NULL stands for "undefined",
 * jbvNull for null; containers are jbvBinary (pointing into the event) or
 * in-memory jbvObject / jbvArray trees built by directives.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_MAPKIT_H
#define METRONOME_MAPKIT_H

#include "postgres.h"
#include "utils/jsonb.h"

typedef struct MapNode MapNode; /* opaque compiled mapping value */

/*
 * Validate and compile a mapping value; the tree is allocated in
 * CurrentMemoryContext.  Returns NULL when the mapping is invalid and sets
 * *errmsg (palloc'd, lowercase, no period), naming where in the mapping the
 * problem is (e.g. "@if.then: unknown directive \"@foo\"").
 */
extern MapNode *MapkitCompile(Jsonb *mapping, char **errmsg);

/*
 * Resolve a compiled mapping value against an event.  Returns NULL when the
 * result is undefined; else a scalar or a jbvBinary container (into the
 * event, the compiled mapping, or a jsonb built for the result).  Sets *errmsg (else leaves it NULL) when evaluation
 * fails on this event (e.g. @path given a non-string by a nested directive);
 * the caller turns that into a rejected row.
 */
extern JsonbValue *MapkitEval(const MapNode *node, Jsonb *event, char **errmsg);

/*
 * A result as a jsonb datum (result must not be NULL).  MapkitEval returns
 * containers as jbvBinary only, so JsonbValueToJsonb works on its results
 * too; this also takes in-memory containers with jbvBinary members.
 */
extern Jsonb *MapkitResultToJsonb(JsonbValue *result);

#endif							/* METRONOME_MAPKIT_H */
