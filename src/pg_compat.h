/*-------------------------------------------------------------------------
 *
 * pg_compat.h
 *	  Every difference between the PostgreSQL majors the extension supports
 *	  (15 to 19), in one place.  No other file tests PG_VERSION_NUM.
 *
 * The code is written against the newest API; for older servers this file
 * either backports the missing function under PostgreSQL's own name (so
 * the call sites read as they will once 15 is dropped), or, where an API
 * changed shape, gives one small wrapper named for what it papers over:
 *
 *	  shared memory request		shmem_request_hook: 15 and later (no shim)
 *	  random numbers			common/pg_prng.h: 15 and later (no shim)
 *	  SRF set-up				InitMaterializedSRF: 15.1; SetSingleFuncCall
 *								in 15.0
 *	  extension's schema		get_extension_schema: exported from 16;
 *								a copy of it for 15
 *	  setting memory			guc_malloc/guc_free: 16; malloc/free before
 *	  JSON parser callbacks		return JsonParseErrorType from 16, void
 *								before: JsonActionResult, JSON_ACTION_OK
 *	  JSON lexer				makeJsonLexContextCstringLen takes a lexer
 *								to fill from 17: PgCompatJsonLexer
 *	  building a JsonbValue		pushJsonbValue keeps its stack in a
 *								JsonbInState from 19: PgCompatJsonbBuilder
 *	  wait events				custom names (WaitEventExtensionNew) from
 *								17; "Extension" before: PgCompatWaitEvent
 *	  post_parse_analyze_hook	its JumbleState is const from 19:
 *								PG_COMPAT_JUMBLE_CONST
 *	  no-return functions		pg_noreturn (before the declaration) from
 *								18; pg_attribute_noreturn() before
 *	  default signal action		PG_SIG_DFL from 19 (handlers take a second
 *								argument); SIG_DFL before
 *	  memory chunk headers		a chunk points at its context before 16
 *								(only the fuzz harness cares)
 *
 * Each shim is a macro or a static inline function: nothing here has
 * state, and a file includes this header only when it uses one of them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_COMPAT_H
#define PG_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000
#error "pg_metronome needs PostgreSQL 15 or later (shmem_request_hook, pg_prng)"
#endif

#include "commands/extension.h"
#include "common/jsonapi.h"
#include "funcapi.h"
#include "utils/jsonb.h"
#include "utils/wait_event.h"

#if PG_VERSION_NUM < 160000
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#endif

/*
 * SRF set-up: PostgreSQL 15.0 called InitMaterializedSRF SetSingleFuncCall
 * (renamed in 15.1, the old name kept as an alias).
 */
#if PG_VERSION_NUM < 150001
#define InitMaterializedSRF(fcinfo, flags) SetSingleFuncCall(fcinfo, flags)
#endif

/*
 * The schema an extension is installed in: PostgreSQL 16 exports
 * get_extension_schema; for 15, the same lookup in pg_extension.
 */
#if PG_VERSION_NUM < 160000
static inline Oid
get_extension_schema(Oid ext_oid)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	Oid			nsp = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext_oid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		nsp = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}
#endif

/*
 * Memory of string settings a check or assign hook hands to the GUC
 * machinery: guc_malloc/guc_free from 16, plain malloc/free before (the
 * GUC code of 15 frees with free()).  guc_malloc reports at elevel and
 * returns NULL when out of memory, as 16's does.
 */
#if PG_VERSION_NUM < 160000
static inline void *
guc_malloc(int elevel, size_t size)
{
	void	   *p = malloc(Max(size, 1));

	if (p == NULL)
		ereport(elevel,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return p;
}

static inline void
guc_free(void *ptr)
{
	free(ptr);
}
#endif

/*
 * JSON parser callbacks (JsonSemAction): from 16 each returns
 * JSON_SUCCESS to go on or an error code to stop the parse; before 16 they
 * return nothing.  Declare a callback as returning JsonActionResult and end
 * it (and every early exit) with "return JSON_ACTION_OK;".  JSON_ACTION_STOP
 * stops the parse where the server can (16 and later) and is
 * JSON_ACTION_OK before: a callback that uses it must remember why it
 * stopped and ignore the tokens that still come on 15.
 */
#if PG_VERSION_NUM >= 160000
typedef JsonParseErrorType JsonActionResult;
#define JSON_ACTION_OK		JSON_SUCCESS
#define JSON_ACTION_STOP	JSON_SEM_ACTION_FAILED
#else
typedef void JsonActionResult;
#define JSON_ACTION_OK
#define JSON_ACTION_STOP
#endif

/*
 * A JSON lexer over len bytes of json (not necessarily terminated), in
 * CurrentMemoryContext: 17 fills a given (or new) JsonLexContext and takes
 * the text as const.
 */
static inline JsonLexContext *
PgCompatJsonLexer(const char *json, size_t len, int encoding, bool need_escapes)
{
#if PG_VERSION_NUM >= 170000
	return makeJsonLexContextCstringLen(NULL, json, len, encoding, need_escapes);
#else
	return makeJsonLexContextCstringLen(unconstify(char *, json), (int) len,
										encoding, need_escapes);
#endif
}

/*
 * Building a JsonbValue token by token with pushJsonbValue.  Up to 18 the
 * state is a JsonbParseState stack (NULL at the top level) and each push
 * returns the value built so far; 19 keeps the stack in a JsonbInState and
 * sets its result once the outermost container is closed.
 *
 * Zero a PgCompatJsonbBuilder (memset or "= {0}") before the first push.
 * PgCompatJsonbPush returns the finished value after the push that closes
 * the outermost container (or pushes a top-level scalar), NULL before;
 * PgCompatJsonbOpen is the innermost open container (NULL when none is).
 */
#if PG_VERSION_NUM >= 190000
typedef JsonbInState PgCompatJsonbBuilder;

static inline JsonbValue *
PgCompatJsonbPush(PgCompatJsonbBuilder *b, JsonbIteratorToken seq, JsonbValue *v)
{
	pushJsonbValue(b, seq, v);
	return b->parseState == NULL ? b->result : NULL;
}

static inline JsonbParseState *
PgCompatJsonbOpen(PgCompatJsonbBuilder *b)
{
	return b->parseState;
}
#else
typedef struct PgCompatJsonbBuilder
{
	JsonbParseState *parseState;
} PgCompatJsonbBuilder;

static inline JsonbValue *
PgCompatJsonbPush(PgCompatJsonbBuilder *b, JsonbIteratorToken seq, JsonbValue *v)
{
	JsonbValue *res = pushJsonbValue(&b->parseState, seq, v);

	return b->parseState == NULL ? res : NULL;
}

static inline JsonbParseState *
PgCompatJsonbOpen(PgCompatJsonbBuilder *b)
{
	return b->parseState;
}
#endif

/*
 * The wait event to report while waiting (pg_stat_activity.wait_event):
 * from 17 an extension registers its own names (in shared memory, so call
 * this in a backend, not in _PG_init); before, every extension wait is
 * "Extension".  name is CamelCase, e.g. "MetronomeIdle".
 */
static inline uint32
PgCompatWaitEvent(const char *name)
{
#if PG_VERSION_NUM >= 170000
	return WaitEventExtensionNew(name);
#else
	(void) name;
	return PG_WAIT_EXTENSION;
#endif
}

/*
 * post_parse_analyze_hook: 19 passes the JumbleState as const.  Declare a
 * hook's parameter as "PG_COMPAT_JUMBLE_CONST JumbleState *jstate".
 */
#if PG_VERSION_NUM >= 190000
#define PG_COMPAT_JUMBLE_CONST const
#else
#define PG_COMPAT_JUMBLE_CONST
#endif

/*
 * A function that does not return: declare it "pg_noreturn static void
 * f(...)".  18 has pg_noreturn (C11 _Noreturn, or C23 [[noreturn]] in 19,
 * which must begin the declaration); before, the GCC attribute.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/*
 * The default action of a signal, for pqsignal(): 19 gives signal handlers
 * a second argument and casts SIG_DFL to that type as PG_SIG_DFL.
 */
#ifndef PG_SIG_DFL
#define PG_SIG_DFL SIG_DFL
#endif

/*
 * Memory chunk headers: before 16 the word just before a palloc'd chunk
 * points at its MemoryContext, and any context type can be plugged in; 16
 * encodes a fixed set of context kinds there instead.
 */
#define PG_COMPAT_CHUNK_POINTS_AT_CONTEXT (PG_VERSION_NUM < 160000)

#endif							/* PG_COMPAT_H */
