/*-------------------------------------------------------------------------
 *
 * mapkit.c
 *	  metronome_evaluate(mapping, event): resolve a Segment mapping value
 *	  against an event from SQL.  The engine itself is in mapkit_compile.c,
 *	  mapkit_eval.c and mapkit_js.c.
 *
 * The compiled mapping is kept in fn_extra, keyed by the mapping's bytes, so
 * a query evaluating one mapping over many rows compiles it once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "jsonbval.h"
#include "mapkit.h"
#include "path.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(metronome_evaluate);

/* fn_extra of metronome_evaluate: the last mapping compiled */
typedef struct EvaluateCache
{
	MemoryContext cxt;			/* holds key and node */
	Jsonb	   *key;			/* the mapping, as compiled */
	MapNode    *node;
} EvaluateCache;

/*
 * The compiled form of a mapping, from the cache or compiled now.  An
 * invalid mapping is an error.
 */
static MapNode *
cached_mapping(FunctionCallInfo fcinfo, Jsonb *mapping)
{
	EvaluateCache *cache = (EvaluateCache *) fcinfo->flinfo->fn_extra;
	MemoryContext old;
	char	   *msg;

	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(EvaluateCache));
		cache->cxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt,
										   "metronome_evaluate mapping",
										   ALLOCSET_SMALL_SIZES);
		fcinfo->flinfo->fn_extra = cache;
	}
	else if (cache->node != NULL &&
			 VARSIZE(cache->key) == VARSIZE(mapping) &&
			 memcmp(cache->key, mapping, VARSIZE(mapping)) == 0)
		return cache->node;

	MemoryContextReset(cache->cxt);
	cache->node = NULL;
	old = MemoryContextSwitchTo(cache->cxt);
	cache->key = palloc(VARSIZE(mapping));
	memcpy(cache->key, mapping, VARSIZE(mapping));
	cache->node = MapkitCompile(mapping, &msg);
	MemoryContextSwitchTo(old);

	if (cache->node == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mapping: %s", msg),
				 errhint("A mapping value is plain JSON, taken literally, with directives such as {\"@path\": \"$.properties.plan\"} anywhere inside.")));
	return cache->node;
}

/*
 * metronome_evaluate(mapping jsonb, event jsonb) RETURNS jsonb: the mapping
 * resolved against the event; NULL when the result is undefined.
 */
Datum
metronome_evaluate(PG_FUNCTION_ARGS)
{
	Jsonb	   *mapping = PG_GETARG_JSONB_P(0);
	Jsonb	   *event = PG_GETARG_JSONB_P(1);
	MapNode    *node = cached_mapping(fcinfo, mapping);
	char	   *err;
	JsonbValue *res;

	/* a Segment event is an object; Segment refuses anything else */
	if (!JB_ROOT_IS_OBJECT(event))
	{
		JsonbValue	root;

		JsonbDocToValue(event, &root);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event must be a JSON object"),
				 errdetail("The event is %s.", JsonbValueTypeName(&root, true))));
	}
	res = MapkitEval(node, event, &err);

	if (err != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("could not evaluate mapping: %s", err)));
	if (res == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(MapkitResultToJsonb(res));
}
