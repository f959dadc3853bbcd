/*-------------------------------------------------------------------------
 *
 * fuzz_pg.c
 *	  libFuzzer targets for the mapping engine (FQL, mapping-kit, field
 *	  coercion), run inside a PostgreSQL backend.
 *
 * The engine calls the server's own functions (palloc, jsonb, numeric,
 * ereport), which live in the postgres executable and cannot be linked
 * into a standalone binary.  So this file, compiled with the engine's
 * sources into a fuzz-only shared library (test/fuzz/run.sh builds it with
 * -fsanitize=fuzzer-no-link,address,undefined and links libFuzzer's
 * fuzzer_no_main runtime), defines one SQL-callable function,
 *
 *	  metronome_fuzz(target text, args text[]) RETURNS int
 *
 * which hands args to LLVMFuzzerRunDriver() (the libFuzzer command line:
 * corpus directories, files to replay, -max_total_time=...).  run.sh calls
 * it from `postgres --single` on a throwaway cluster.  libFuzzer then runs
 * in the backend; it exits the process when it is done or has found
 * something (a crash input is written where -artifact_prefix says).
 *
 * Each input runs inside PG_TRY in a memory context that is reset after
 * it.  A clean ereport(ERROR) (a syntax error of the input JSON, "stack
 * depth limit exceeded", a value too large for jsonb) is an accepted
 * answer; an error with the internal-error code (elog's can't-happen, or
 * an invalid memory request) is a finding and aborts, so libFuzzer keeps
 * the input, as do crashes, sanitizer reports, hangs (-timeout) and memory
 * blow-ups (-rss_limit_mb, -malloc_limit_mb).
 *
 * Under AddressSanitizer every palloc of an input is its own malloc block
 * (the "fuzz" memory context below), so reads and writes past a chunk or
 * into a freed one are caught at the byte, which the server's AllocSet,
 * carving chunks out of big blocks, would hide.
 *
 * Every message the engine gives (a refusal, an evaluation error, a field
 * that cannot be coerced, an ereport) must be valid text in the database
 * encoding: it may be stored in metronome_rejected, and a table holding
 * invalid text does not restore from a dump.
 *
 * Each step of a target runs twice, with new memory filled with 0xAA and
 * then with 0x55: answers that differ reveal a read of memory that was
 * never written, which AddressSanitizer does not report.
 *
 * Targets (the input is the bytes libFuzzer hands over):
 *	  fql		a subscription; optionally a NUL byte and an event (JSON).
 *				FqlParse, then FqlEval on the fixed events and the given
 *				one.  Oracles: a refused subscription has a message and a
 *				position inside the text; a valid X also parses as
 *				"not (X)", which evaluates to the opposite.
 *	  mapkit	a mapping value (JSON); optionally a NUL byte and an event.
 *				MapkitCompile, then MapkitEval on every event, each result
 *				through MapkitResultToJsonb and the five field coercions.
 *				Oracles: a refusal has a message; an evaluation gives a
 *				result or an error, not both; a result turned into jsonb
 *				reads back identical from its text form.
 *
 * Inputs that are not valid UTF-8 are skipped: the server verifies the
 * encoding of every text before an input function sees it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <stdlib.h>

#include "catalog/pg_type.h"
#include "fields.h"
#include "fmgr.h"
#include "fql.h"
#include "mapkit.h"
#include "mb/pg_wchar.h"
#include "pg_compat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_MODULE_MAGIC;

extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*cb) (const uint8_t *data, size_t size));

PG_FUNCTION_INFO_V1(metronome_fuzz);

/* ----------------------------------------------------------------
 * A memory context that gives every chunk its own malloc block
 * ----------------------------------------------------------------
 *
 * PostgreSQL 15 finds a chunk's context through the pointer stored just
 * before the chunk; everything else goes through the methods below.
 * (PostgreSQL 16 replaced that with a fixed set of context kinds: there
 * the harness falls back to an ordinary AllocSet.)
 */
#if PG_COMPAT_CHUNK_POINTS_AT_CONTEXT
#define FUZZ_OWN_CONTEXT 1

typedef struct FuzzChunk
{
	struct FuzzChunk *prev;
	struct FuzzChunk *next;
	Size		size;
	MemoryContext context;		/* must come right before the data */
} FuzzChunk;

typedef struct FuzzContext
{
	MemoryContextData header;
	FuzzChunk	head;			/* circular list of live chunks */
} FuzzContext;

#define CHUNK_OF(p) ((FuzzChunk *) ((char *) (p) - sizeof(FuzzChunk)))

/* what new chunks are filled with (-1: left as malloc gives them) */
static int	fill_byte = -1;

/* malloc a chunk and link it in */
static void *
fuzz_alloc(MemoryContext context, Size size)
{
	FuzzContext *fc = (FuzzContext *) context;
	FuzzChunk  *c = malloc(sizeof(FuzzChunk) + size);

	if (c == NULL)
		return NULL;
	c->size = size;
	c->context = context;
	c->next = fc->head.next;
	c->prev = &fc->head;
	fc->head.next->prev = c;
	fc->head.next = c;
	context->mem_allocated += size;
	if (fill_byte >= 0)
		memset((char *) c + sizeof(FuzzChunk), fill_byte, size);
	return (char *) c + sizeof(FuzzChunk);
}

/* unlink and free a chunk */
static void
fuzz_free(MemoryContext context, void *pointer)
{
	FuzzChunk  *c = CHUNK_OF(pointer);

	c->prev->next = c->next;
	c->next->prev = c->prev;
	context->mem_allocated -= c->size;
	free(c);
}

/* always move, so that a stale pointer to the old chunk is caught */
static void *
fuzz_realloc(MemoryContext context, void *pointer, Size size)
{
	FuzzChunk  *c = CHUNK_OF(pointer);
	void	   *n = fuzz_alloc(context, size);

	if (n == NULL)
		return NULL;
	memcpy(n, pointer, Min(size, c->size));
	fuzz_free(context, pointer);
	return n;
}

/* free every chunk */
static void
fuzz_reset(MemoryContext context)
{
	FuzzContext *fc = (FuzzContext *) context;

	while (fc->head.next != &fc->head)
		fuzz_free(context, (char *) fc->head.next + sizeof(FuzzChunk));
}

static void
fuzz_delete(MemoryContext context)
{
	fuzz_reset(context);
	free(context);
}

static Size
fuzz_get_chunk_space(MemoryContext context, void *pointer)
{
	(void) context;
	return CHUNK_OF(pointer)->size + sizeof(FuzzChunk);
}

static bool
fuzz_is_empty(MemoryContext context)
{
	FuzzContext *fc = (FuzzContext *) context;

	return fc->head.next == &fc->head;
}

static void
fuzz_stats(MemoryContext context, MemoryStatsPrintFunc printfunc,
		   void *passthru, MemoryContextCounters *totals,
		   bool print_to_stderr)
{
	if (printfunc)
	{
		char		stats[64];

		snprintf(stats, sizeof(stats), "%zu bytes in separate chunks",
				 (size_t) context->mem_allocated);
		printfunc(context, passthru, stats, print_to_stderr);
	}
	if (totals)
	{
		totals->totalspace += context->mem_allocated;
		totals->freespace += 0;
	}
}

#ifdef MEMORY_CONTEXT_CHECKING
static void
fuzz_check(MemoryContext context)
{
	(void) context;
}
#endif

static const MemoryContextMethods fuzz_methods = {
	fuzz_alloc,
	fuzz_free,
	fuzz_realloc,
	fuzz_reset,
	fuzz_delete,
	fuzz_get_chunk_space,
	fuzz_is_empty,
	fuzz_stats
#ifdef MEMORY_CONTEXT_CHECKING
	,fuzz_check
#endif
};

/* create a "fuzz" context (it passes for an AllocSet in validity checks) */
static MemoryContext
fuzz_context_create(MemoryContext parent, const char *name)
{
	FuzzContext *fc = malloc(sizeof(FuzzContext));

	if (fc == NULL)
		elog(ERROR, "out of memory");
	fc->head.next = fc->head.prev = &fc->head;
	MemoryContextCreate(&fc->header, T_AllocSetContext, &fuzz_methods,
						parent, name);
	return &fc->header;
}
#else
static int	fill_byte = -1;		/* not used: AllocSet does not fill */

static MemoryContext
fuzz_context_create(MemoryContext parent, const char *name)
{
	/* the Internal variant: the name is not a constant string here */
	return AllocSetContextCreateInternal(parent, name, ALLOCSET_DEFAULT_SIZES);
}
#endif

/*
 * Every step of a target runs twice, once with new memory filled with each
 * of these bytes, and the two answers must agree: a difference means that
 * the engine read memory it had not written (which AddressSanitizer does
 * not see).
 */
#define FILL_A 0xAA
#define FILL_B 0x55

/* ----------------------------------------------------------------
 * Shared by the targets
 * ----------------------------------------------------------------
 */

/* events every input is evaluated on (besides the one it may carry) */
static const char *const fixed_event_texts[] = {
	/* a Segment track event, as the preset mapping expects it */
	"{\"type\": \"track\", \"event\": \"API Call\", \"messageId\": \"ajs-next-1a2b3c\","
	" \"userId\": \"u-42\", \"anonymousId\": null,"
	" \"timestamp\": \"2024-05-01T12:34:56.789Z\", \"sentAt\": \"2024-05-01T12:34:57Z\","
	" \"context\": {\"groupId\": \"org_123\", \"ip\": \"203.0.113.9\","
	"  \"library\": {\"name\": \"analytics.js\", \"version\": \"2.11.1\"},"
	"  \"traits\": {\"email\": \"ada@example.com\", \"plan\": \"Pro\"},"
	"  \"userAgent\": \"Mozilla/5.0\"},"
	" \"properties\": {\"plan\": \"pro\", \"tokens\": 1234, \"cost\": 0.0025, \"free\": false,"
	"  \"region\": \"eu-west-1\", \"tags\": [\"a\", \"b\", 3, null, {\"k\": \"v\"}],"
	"  \"items\": [{\"sku\": \"S1\", \"qty\": 2, \"price\": 9.99}, {\"sku\": \"S2\", \"qty\": 1}],"
	"  \"nested\": {\"a\": {\"b\": {\"c\": [1, [2, [3]]]}}}, \"empty\": {}, \"none\": null,"
	"  \"odd key\": \"x\", \"\": \"empty key\", \"n\": -1.5e3, \"big\": 123456789012345678901234567890,"
	"  \"unicode\": \"\\u00e9t\\u00e9 \\ud83d\\ude00 \\u0130\", \"json\": \"{\\\"a\\\": [1, 2]}\","
	"  \"template\": \"{{properties.plan}}\"}}",
	/* an identify event: traits, no properties */
	"{\"type\": \"identify\", \"userId\": \"u-1\", \"messageId\": 42,"
	" \"timestamp\": 1714566896789, \"traits\": {\"name\": \"Ada\", \"age\": 36, \"vip\": true},"
	" \"context\": {\"groupId\": \"\"}}",
	/* not objects */
	"[1, \"two\", {\"three\": 3}]",
	"\"just a string\"",
	"null",
	"{}",
};

#define NUM_FIXED_EVENTS lengthof(fixed_event_texts)

static Jsonb *fixed_events[NUM_FIXED_EVENTS];
static MemoryContext input_cxt;	/* reset after every input */
static TimestampTz fixed_now;

/* parse a text as jsonb (may raise an error) */
static Jsonb *
parse_jsonb(const char *text)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/* the events and contexts every target needs, made once */
static void
setup_once(void)
{
	MemoryContext old;
	int			i;

	if (input_cxt != NULL)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	for (i = 0; i < (int) NUM_FIXED_EVENTS; i++)
		fixed_events[i] = parse_jsonb(fixed_event_texts[i]);
	MemoryContextSwitchTo(old);
	input_cxt = fuzz_context_create(TopMemoryContext, "metronome fuzz input");
	/* 2024-05-01 12:00:00 UTC: results do not depend on the clock */
	fixed_now = (TimestampTz) (1714564800 - 946684800) * USECS_PER_SEC;
}

/* report a finding: print it and abort, so libFuzzer keeps the input */
pg_noreturn static void
finding(const char *fmt,...) pg_attribute_printf(1, 2);

static void
finding(const char *fmt,...)
{
	va_list		args;

	fprintf(stderr, "\n==metronome-fuzz== FINDING: ");
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fprintf(stderr, "\n");
	fflush(stderr);
	abort();
}

/*
 * A message for the user (it may end up in a table: metronome_rejected)
 * must be valid text in the database encoding, or a dump of that table
 * would not restore.
 */
static void
check_message(const char *what, const char *msg)
{
	if (msg != NULL && !pg_verifymbstr(msg, strlen(msg), true))
		finding("%s: the message is not valid in the database encoding: %s",
				what, msg);
}

/*
 * Split an input into its first part (up to a NUL byte) and the rest;
 * both are copied, NUL-terminated, into input_cxt.  False when a part is
 * not valid in the database encoding.
 */
static bool
split_input(const uint8_t *data, size_t size, char **first, char **rest)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t		n1 = nul ? (size_t) (nul - data) : size;

	*first = pnstrdup((const char *) data, n1);
	*rest = NULL;
	if (!pg_verifymbstr(*first, n1, true))
		return false;
	if (nul)
	{
		size_t		n2 = size - n1 - 1;

		*rest = pnstrdup((const char *) nul + 1, n2);
		/* a second NUL: the server's text cannot hold it */
		if (memchr(*rest, 0, n2) != NULL || !pg_verifymbstr(*rest, n2, true))
			return false;
	}
	return true;
}

/*
 * Run body(arg) for one input with errors caught.  A clean error is
 * forgotten; an internal one is a finding.  Returns false when an error
 * was raised.
 */
static bool
run_caught(void (*body) (void *), void *arg, const char *what)
{
	MemoryContext old = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		body(arg);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(input_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		if (edata->sqlerrcode == ERRCODE_INTERNAL_ERROR)
			finding("internal error in %s: %s", what, edata->message);
		if (edata->message == NULL || edata->message[0] == '\0')
			finding("error without a message in %s", what);
		check_message(what, edata->message);
		check_message(what, edata->detail);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	return ok;
}

/* ----------------------------------------------------------------
 * Target "fql"
 * ----------------------------------------------------------------
 */

typedef struct FqlInput
{
	char	   *text;			/* the subscription */
	Jsonb	   *event;			/* the input's own event, or NULL */
	char	   *event_text;
	bool		parse_only;		/* the wrapped form: just parse it */
	FqlExpr    *expr;
	char	   *errmsg;
	int			errpos;
} FqlInput;

/* parse a subscription (may raise: stack depth, numbers) */
static void
fql_parse_body(void *arg)
{
	FqlInput   *in = arg;

	in->expr = FqlParse(in->text, &in->errmsg, &in->errpos);
}

/* parse the event the input carries (may raise: invalid JSON) */
static void
event_parse_body(void *arg)
{
	FqlInput   *in = arg;

	in->event = parse_jsonb(in->event_text);
}

/* one evaluation (may raise: stack depth) */
typedef struct FqlEvalArg
{
	const FqlExpr *expr;
	Jsonb	   *event;
	bool		result;
} FqlEvalArg;

static void
fql_eval_body(void *arg)
{
	FqlEvalArg *ea = arg;

	ea->result = FqlEval(ea->expr, ea->event);
}

/* parse in.text with new memory filled with byte; false on an error */
static bool
fql_parse_filled(FqlInput *in, int byte)
{
	bool		ok;

	fill_byte = byte;
	ok = run_caught(fql_parse_body, in, "FqlParse");
	fill_byte = -1;
	return ok;
}

/* evaluate with new memory filled with byte; false on an error */
static bool
fql_eval_filled(FqlEvalArg *ea, int byte)
{
	bool		ok;

	fill_byte = byte;
	ok = run_caught(fql_eval_body, ea, "FqlEval");
	fill_byte = -1;
	return ok;
}

static int
fql_one(const uint8_t *data, size_t size)
{
	FqlInput	in = {0};
	FqlInput	again = {0};
	FqlInput	wrapped = {0};
	Jsonb	   *events[NUM_FIXED_EVENTS + 1];
	int			nevents = 0;
	int			i;
	int			nchars;

	if (!split_input(data, size, &in.text, &in.event_text))
		return 0;
	if (in.event_text && run_caught(event_parse_body, &in, "jsonb_in"))
		events[nevents++] = in.event;
	for (i = 0; i < (int) NUM_FIXED_EVENTS; i++)
		events[nevents++] = fixed_events[i];

	again.text = in.text;
	if (!fql_parse_filled(&in, FILL_A))
		return 0;
	if (!fql_parse_filled(&again, FILL_B))
		finding("FqlParse raised an error only with new memory filled with 0x55");
	if ((in.expr == NULL) != (again.expr == NULL) || in.errpos != again.errpos ||
		(in.errmsg && strcmp(in.errmsg, again.errmsg) != 0))
		finding("FqlParse answers differently with new memory filled differently: %s / %s",
				in.errmsg ? in.errmsg : "(parsed)",
				again.errmsg ? again.errmsg : "(parsed)");
	nchars = pg_mbstrlen(in.text);
	check_message("FqlParse", in.errmsg);
	if (in.expr == NULL)
	{
		if (in.errmsg == NULL || in.errmsg[0] == '\0')
			finding("FqlParse refused a subscription without a message");
		if (in.errpos < 1 || in.errpos > nchars + 1)
			finding("FqlParse error position %d outside 1..%d: %s",
					in.errpos, nchars + 1, in.errmsg);
		return 0;
	}
	if (in.errmsg != NULL)
		finding("FqlParse gave a tree and a message: %s", in.errmsg);

	/* the oracle: "not (X)" parses, and is the negation of X */
	wrapped.text = psprintf("not (%s\n)", in.text);
	if (!run_caught(fql_parse_body, &wrapped, "FqlParse"))
		return 0;				/* one level deeper than the stack allows */
	if (wrapped.expr == NULL)
		finding("\"not (X)\" refused for a valid X: %s (position %d)",
				wrapped.errmsg, wrapped.errpos);

	for (i = 0; i < nevents; i++)
	{
		FqlEvalArg	a = {in.expr, events[i], false};
		FqlEvalArg	a2 = {again.expr, events[i], false};
		FqlEvalArg	b = {wrapped.expr, events[i], false};

		if (!fql_eval_filled(&a, FILL_A))
			continue;
		if (!fql_eval_filled(&a2, FILL_B))
			finding("FqlEval raised an error only with new memory filled with 0x55");
		if (a.result != a2.result)
			finding("FqlEval gives %s and %s on event %d with new memory filled differently",
					a.result ? "true" : "false", a2.result ? "true" : "false", i);
		if (!run_caught(fql_eval_body, &b, "FqlEval"))
			continue;
		if (a.result == b.result)
			finding("X and \"not (X)\" both evaluate to %s on event %d",
					a.result ? "true" : "false", i);
	}
	return 0;
}

/* ----------------------------------------------------------------
 * Target "mapkit"
 * ----------------------------------------------------------------
 */

typedef struct MapInput
{
	char	   *text;
	Jsonb	   *mapping;
	MapNode    *node;
	char	   *errmsg;
} MapInput;

static void
map_compile_body(void *arg)
{
	MapInput   *in = arg;

	in->mapping = parse_jsonb(in->text);
	in->node = MapkitCompile(in->mapping, &in->errmsg);
}

typedef struct MapEvalArg
{
	const MapNode *node;
	Jsonb	   *event;
	int			eventno;
	JsonbValue *res;			/* the result, or NULL (undefined) */
	char	   *err;			/* the evaluation error, or NULL */
	Jsonb	   *jb;				/* the result as jsonb */
} MapEvalArg;

/* one evaluation, and its result as jsonb (may raise: stack depth) */
static void
map_eval_body(void *arg)
{
	MapEvalArg *ea = arg;

	ea->err = NULL;
	ea->jb = NULL;
	ea->res = MapkitEval(ea->node, ea->event, &ea->err);
	if (ea->res != NULL && ea->err != NULL)
		finding("event %d: MapkitEval gave a result and an error: %s",
				ea->eventno, ea->err);
	if (ea->err != NULL && ea->err[0] == '\0')
		finding("event %d: MapkitEval gave an empty error", ea->eventno);
	check_message("MapkitEval", ea->err);
	if (ea->res != NULL)
		ea->jb = MapkitResultToJsonb(ea->res);
}

/*
 * Check the result of one evaluation: its jsonb reads back identical from
 * its text, and the coercions of the five fields answer (with a value or
 * a message) whatever the value.
 */
static void
map_check_body(void *arg)
{
	MapEvalArg *ea = arg;
	text	   *t;
	TimestampTz ts;
	Jsonb	   *props;

	if (ea->jb != NULL)
	{
		char	   *txt = JsonbToCString(NULL, &ea->jb->root, VARSIZE(ea->jb));
		Jsonb	   *back = parse_jsonb(txt);

		if (VARSIZE(back) != VARSIZE(ea->jb) ||
			memcmp(back, ea->jb, VARSIZE(ea->jb)) != 0)
		{
			char	   *txt2 = JsonbToCString(NULL, &back->root, VARSIZE(back));

			if (strcmp(txt, txt2) != 0 ||
				!DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(ea->jb),
												  JsonbPGetDatum(back))))
				finding("event %d: the result %s reads back from its text as %s",
						ea->eventno, txt, txt2);
		}
	}
	(void) FieldIsAbsent(ea->res);
	check_message("FieldCoerceText", FieldCoerceText(FIELD_TRANSACTION_ID, ea->res, &t));
	check_message("FieldCoerceText", FieldCoerceText(FIELD_EVENT_TYPE, ea->res, &t));
	check_message("FieldCoerceTimestamp", FieldCoerceTimestamp(ea->res, fixed_now, &ts));
	check_message("FieldCoerceProperties", FieldCoerceProperties(ea->res, &props));
}

/* compile with new memory filled with byte; false on an error */
static bool
map_compile_filled(MapInput *in, int byte)
{
	bool		ok;

	fill_byte = byte;
	ok = run_caught(map_compile_body, in, "MapkitCompile");
	fill_byte = -1;
	return ok;
}

/* evaluate with new memory filled with byte; false on an error */
static bool
map_eval_filled(MapEvalArg *ea, int byte)
{
	bool		ok;

	fill_byte = byte;
	ok = run_caught(map_eval_body, ea, "MapkitEval");
	fill_byte = -1;
	return ok;
}

static int
mapkit_one(const uint8_t *data, size_t size)
{
	MapInput	in = {0};
	MapInput	again = {0};
	FqlInput	ev = {0};
	Jsonb	   *events[NUM_FIXED_EVENTS + 1];
	int			nevents = 0;
	int			i;

	if (!split_input(data, size, &in.text, &ev.event_text))
		return 0;
	if (ev.event_text && run_caught(event_parse_body, &ev, "jsonb_in"))
		events[nevents++] = ev.event;
	for (i = 0; i < (int) NUM_FIXED_EVENTS; i++)
		events[nevents++] = fixed_events[i];

	again.text = in.text;
	if (!map_compile_filled(&in, FILL_A))
		return 0;
	if (!map_compile_filled(&again, FILL_B))
		finding("MapkitCompile raised an error only with new memory filled with 0x55");
	if ((in.node == NULL) != (again.node == NULL) ||
		(in.errmsg && strcmp(in.errmsg, again.errmsg) != 0))
		finding("MapkitCompile answers differently with new memory filled differently: %s / %s",
				in.errmsg ? in.errmsg : "(compiled)",
				again.errmsg ? again.errmsg : "(compiled)");
	check_message("MapkitCompile", in.errmsg);
	if (in.node == NULL)
	{
		if (in.errmsg == NULL || in.errmsg[0] == '\0')
			finding("MapkitCompile refused a mapping without a message");
		return 0;
	}
	if (in.errmsg != NULL)
		finding("MapkitCompile gave a tree and a message: %s", in.errmsg);

	for (i = 0; i < nevents; i++)
	{
		MapEvalArg	a = {in.node, events[i], i};
		MapEvalArg	b = {again.node, events[i], i};

		if (!map_eval_filled(&a, FILL_A))
			continue;
		if (!map_eval_filled(&b, FILL_B))
			finding("event %d: MapkitEval raised an error only with new memory filled with 0x55", i);
		if ((a.err == NULL) != (b.err == NULL) ||
			(a.err && strcmp(a.err, b.err) != 0) ||
			(a.jb == NULL) != (b.jb == NULL) ||
			(a.jb && (VARSIZE(a.jb) != VARSIZE(b.jb) ||
					  memcmp(a.jb, b.jb, VARSIZE(a.jb)) != 0)))
			finding("event %d: MapkitEval answers differently with new memory filled differently: %s / %s",
					i,
					a.err ? a.err : a.jb ? JsonbToCString(NULL, &a.jb->root, VARSIZE(a.jb)) : "(undefined)",
					b.err ? b.err : b.jb ? JsonbToCString(NULL, &b.jb->root, VARSIZE(b.jb)) : "(undefined)");
		(void) run_caught(map_check_body, &a, "field coercion");
	}
	return 0;
}

/* ----------------------------------------------------------------
 * The driver
 * ----------------------------------------------------------------
 */

static int	(*current_target) (const uint8_t *data, size_t size);

/* libFuzzer's callback: one input, in a fresh memory context */
static int
one_input(const uint8_t *data, size_t size)
{
	MemoryContext old = MemoryContextSwitchTo(input_cxt);
	int			r = current_target(data, size);

	MemoryContextSwitchTo(old);
	MemoryContextReset(input_cxt);
	return r;
}

/*
 * metronome_fuzz(target text, args text[]) RETURNS int: run libFuzzer on a
 * target with a command line.  libFuzzer normally exits the process itself.
 */
Datum
metronome_fuzz(PG_FUNCTION_ARGS)
{
	char	   *target = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			argc;
	char	  **argv;
	int			i;

	if (strcmp(target, "fql") == 0)
		current_target = fql_one;
	else if (strcmp(target, "mapkit") == 0)
		current_target = mapkit_one;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown fuzz target \"%s\"", target),
				 errhint("The targets are fql and mapkit.")));

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &nelems);
	argv = MemoryContextAlloc(TopMemoryContext, sizeof(char *) * (nelems + 2));
	argc = 0;
	argv[argc++] = MemoryContextStrdup(TopMemoryContext, target);
	for (i = 0; i < nelems; i++)
		if (!nulls[i])
			argv[argc++] = MemoryContextStrdup(TopMemoryContext,
											   TextDatumGetCString(elems[i]));
	argv[argc] = NULL;

	setup_once();

	/*
	 * libFuzzer leaves alone a signal that already has a handler, and the
	 * backend has its own for SIGALRM (timeouts), SIGINT and SIGTERM: give
	 * them back to libFuzzer, whose -timeout (hangs) needs SIGALRM.  No
	 * backend timeout is armed while it runs.
	 */
	pqsignal(SIGALRM, PG_SIG_DFL);
	pqsignal(SIGINT, PG_SIG_DFL);
	pqsignal(SIGTERM, PG_SIG_DFL);
	PG_RETURN_INT32(LLVMFuzzerRunDriver(&argc, &argv, one_input));
}
