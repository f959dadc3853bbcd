/*-------------------------------------------------------------------------
 *
 * fql.h
 *	  Segment's subscription language (FQL): `type = "track" and
 *	  event = "API Call"`.  Parsed once into a tree, evaluated per event on
 *	  jsonb.
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_FQL_H
#define METRONOME_FQL_H

#include "postgres.h"
#include "utils/jsonb.h"

typedef struct FqlExpr FqlExpr;	/* opaque compiled subscription */

/*
 * Parse a subscription; the tree is allocated in CurrentMemoryContext.
 * Returns NULL on a syntax error and sets *errmsg (palloc'd, lowercase, no
 * period, says what was expected and what was found, e.g. 'expected a value
 * (...) after "=", found end of input'; it does not repeat the position) and
 * *errpos (1-based character position in text, as PostgreSQL reports
 * positions).  The language is described at the top of fql.c.
 */
extern FqlExpr *FqlParse(const char *text, char **errmsg, int *errpos);

/*
 * Does the event (any jsonb; a non-object simply has no fields) match?
 * Allocates nothing (but for array-index steps, see path.c); the tree may
 * be evaluated any number of times, from any memory context.
 */
extern bool FqlEval(const FqlExpr *expr, Jsonb *event);

#endif							/* METRONOME_FQL_H */
