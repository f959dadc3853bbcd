/*-------------------------------------------------------------------------
 *
 * ship.c
 *	  One shipping cycle (claim, send, classify, mark), shared by the
 *	  delivery worker and metronome_ship(); metronome_check_connection().
 *
 * A cycle runs inside the caller's transaction (the worker starts one per
 * cycle; metronome_ship() runs in the session's):
 *
 *	1. The gate (status.c) must be open: no request goes out during a
 *	   backoff, a Retry-After, or an auth/configuration error.
 *	2. The outbox is locked with ConditionalLockRelationOid, so a DROP or
 *	   ALTER EXTENSION in progress makes the cycle step aside instead of
 *	   queueing behind (or deadlocking with) it.
 *	3. Claim, a chunk at a time: up to batch_size * max_inflight *
 *	   CLAIM_ROUNDS due rows (fewer while Metronome is too slow to take them
 *	   within CYCLE_BUDGET_MS),
 *
 *		SELECT ... FROM metronome_outbox
 *		 WHERE status = 'pending' AND next_attempt_at <= $1
 *		   AND (next_attempt_at, id) > ($2, $3)
 *		 ORDER BY next_attempt_at, id LIMIT n
 *		   FOR UPDATE SKIP LOCKED
 *
 *	   served by the partial index metronome_outbox_pending_idx on
 *	   (next_attempt_at, id) WHERE status = 'pending': the cost does not
 *	   depend on how many sent or failed rows the table holds, and
 *	   concurrent claimers (the worker and sessions) never get the same row.
 *	   ($2, $3) is the key of the last row this cycle claimed: when the
 *	   batches run short, the next chunk is claimed while the last requests
 *	   are still in flight, so the pipeline never drains between chunks.
 *	4. Send: batches of batch_size, at most max_inflight requests at once
 *	   (http.c).  Each answer is classified as it arrives, and the rows are
 *	   marked while the other requests are still in flight:
 *		2xx			   rows -> sent (by ctid, a few batches per UPDATE,
 *					   after the pipeline has been refilled)
 *		400/413/422	   split the batch in halves and send each; a single
 *					   event still refused -> failed, last_error = message
 *		401/403		   no row changes; auth error state; gate closed
 *		404/405/501... no row changes; config error state; gate closed
 *		transient	   attempts + 1, next_attempt_at = now + backoff (or
 *					   Retry-After), failed after max_attempts; gate closed
 *	   After a transient or auth/config answer no new request starts; rows
 *	   claimed but not sent are simply released when the transaction ends.
 *	5. The transaction is held across the requests, which request_timeout
 *	   bounds (and a cycle claims nothing and starts no request after
 *	   CYCLE_BUDGET_MS), never across a backoff wait: waiting is the
 *	   worker's job, between cycles.
 *
 * A row is marked sent only after a 2xx that covered it.  If anything dies
 * mid-cycle the transaction aborts and the rows are pending again: they
 * are resent, and Metronome's transaction_id dedup makes that harmless.
 *
 * Backoff: after n consecutive transient failures, min(max_backoff,
 * 500 ms * 2^(n-1)) * (1 - 0.25 * random), as Metronome's SDKs do; a
 * Retry-After or retry-after-ms answer replaces it (capped by
 * max_backoff).  The rows of the batch get it as next_attempt_at, and the
 * shared gate holds every request (new rows too) until it has passed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "delivery.h"
#include "encoding.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "http.h"
#include "mb/pg_wchar.h"
#include "metronome.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(metronome_ship);
PG_FUNCTION_INFO_V1(metronome_check_connection);
PG_FUNCTION_INFO_V1(metronome_ship_floor);

/* A cycle claims enough rows for this many rounds of max_inflight batches. */
#define CLAIM_ROUNDS 8

/* A cycle claims nothing and starts no new request after this long. */
#define CYCLE_BUDGET_MS 1000

/* ... nor claims more chunks than this (bounds the memory it holds). */
#define CYCLE_MAX_CHUNKS 8

/* HttpWait's longest sleep: how fast SIGTERM and cancels are noticed. */
#define WAIT_SLICE_MS 50

/* The instants RFC 3339 can express: years 0000 to 9999 (Unix time, us). */
#define MIN_RFC3339_US INT64CONST(-62167219200000000)
#define MAX_RFC3339_US INT64CONST(253402300800000000)

/* One claimed row. */
typedef struct ShipRow
{
	ItemPointerData ctid;		/* locked by us: it cannot move */
	int64		id;
	int32		attempts;
	HttpEvent	ev;
} ShipRow;

/* A batch: rows[first .. first + n - 1] of one claimed chunk. */
typedef struct ShipBatch
{
	ShipRow    *rows;
	int			first;
	int			n;
} ShipBatch;

/* Rows accepted by Metronome, not yet marked sent (see flush_sent). */
typedef struct SentBuffer
{
	Datum	   *ctids;			/* ItemPointer datums */
	int			n;
	int			cap;
} SentBuffer;

/*
 * One cycle's state.  Batches wait in a deque: claimed chunks are appended
 * at the tail, the halves of a refused batch pushed at the head.  The
 * requests are kept for freeing whatever happens.
 */
typedef struct Cycle
{
	ShipBatch **q;
	int			head;
	int			tail;
	int			qcap;
	HttpRequest **reqs;
	int			nreqs;
	int			reqcap;
	SentBuffer	sent;
	int			limit;			/* rows per claim */
	int64		max_events;		/* 0, or the most rows to claim */
	bool		more;			/* the last claim was full */
	int			chunks;			/* claims made */
	TimestampTz last_nat;		/* key of the last row claimed */
	int64		last_id;
	TimestampTz started;
} Cycle;

/* Marking sent waits until this many rows are accepted (or the end). */
#define SENT_FLUSH_ROWS 400

/* SPI plans, kept across transactions for one outbox relation. */
static struct
{
	Oid			relid;
	int			claim_limit;
	SPIPlanPtr	claim;
	SPIPlanPtr	sent;
	SPIPlanPtr	failed;
	SPIPlanPtr	retry;
	SPIPlanPtr	next_due;
	SPIPlanPtr	delete_sent;
} plans;

static HttpClient *client = NULL;
static bool in_ship = false;
static int	claim_rounds = CLAIM_ROUNDS;	/* adapts to Metronome's speed */

/*
 * The cycle (or connection check) whose requests are out.  Its PG_TRY
 * block frees them; a FATAL (SIGTERM mid-request) skips that and ends the
 * process, so ship_exit frees them then.
 */
static Cycle *pending = NULL;

/*
 * Is this backend running a shipping cycle (its own outbox updates must
 * not wake the worker)?
 */
bool
ShipInProgress(void)
{
	return in_ship;
}

/*
 * Backoff delay (ms) after `failures` consecutive transient failures.
 */
int64
ShipBackoffDelay(int failures, double random01)
{
	return HttpBackoffDelay(failures, SHIP_BACKOFF_BASE_MS,
							metronome_max_backoff, random01);
}

/* a random number in [0, 1) for jitter */
static double
jitter(void)
{
	return pg_prng_double(&pg_global_prng_state);
}

/* prepare one statement and keep it */
static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

/* forget every plan (the outbox changed) */
static void
free_plans(void)
{
	SPIPlanPtr *all[] = {&plans.claim, &plans.sent, &plans.failed,
	&plans.retry, &plans.next_due, &plans.delete_sent};
	int			i;

	for (i = 0; i < (int) lengthof(all); i++)
	{
		if (*all[i] != NULL)
			SPI_freeplan(*all[i]);
		*all[i] = NULL;
	}
	plans.relid = InvalidOid;
	plans.claim_limit = 0;
}

/*
 * Make sure the plans are for this outbox (and this claim size).  Must run
 * inside SPI.
 */
static void
ensure_plans(Oid relid, int claim_limit)
{
	const char *tbl;
	Oid			claim_args[] = {TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID};
	Oid			sent_args[] = {TIDARRAYOID, TIMESTAMPTZOID};
	Oid			failed_args[] = {INT8ARRAYOID, TEXTOID};
	Oid			retry_args[] = {INT8ARRAYOID, TIMESTAMPTZOID, TEXTOID, INT4OID};

	if (plans.relid != relid)
		free_plans();
	if (plans.relid == relid && plans.claim_limit == claim_limit)
		return;

	tbl = psprintf("%s.metronome_outbox", MetronomeSchemaName());
	PushActiveSnapshot(GetTransactionSnapshot());

	if (plans.claim != NULL)
	{
		SPI_freeplan(plans.claim);
		plans.claim = NULL;
	}
	plans.claim_limit = 0;
	plans.claim =
		prepare(psprintf("SELECT ctid, id, transaction_id, customer_id, event_type,"
						 " \"timestamp\", properties::text, attempts, next_attempt_at"
						 " FROM %s"
						 " WHERE status = 'pending' AND next_attempt_at <= $1"
						 " AND (next_attempt_at, id) > ($2, $3)"
						 " ORDER BY next_attempt_at, id"
						 " LIMIT %d"
						 " FOR UPDATE SKIP LOCKED", tbl, claim_limit),
				3, claim_args);
	plans.claim_limit = claim_limit;

	if (plans.relid != relid)
	{
		plans.sent =
			prepare(psprintf("UPDATE %s SET status = 'sent', sent_at = $2,"
							 " attempts = attempts + 1, last_error = NULL"
							 " WHERE ctid = ANY ($1)", tbl),
					2, sent_args);
		plans.failed =
			prepare(psprintf("UPDATE %s SET status = 'failed',"
							 " attempts = attempts + 1, last_error = $2"
							 " WHERE id = ANY ($1)", tbl),
					2, failed_args);
		plans.retry =
			prepare(psprintf("UPDATE %s SET attempts = attempts + 1,"
							 " last_error = $3, next_attempt_at = $2,"
							 " status = CASE WHEN $4 > 0 AND attempts + 1 >= $4"
							 " THEN 'failed' ELSE 'pending' END"
							 " WHERE id = ANY ($1)"
							 " RETURNING status = 'failed'", tbl),
					4, retry_args);
		plans.next_due =
			prepare(psprintf("SELECT next_attempt_at FROM %s"
							 " WHERE status = 'pending'"
							 " ORDER BY next_attempt_at, id LIMIT 1", tbl),
					0, NULL);
		plans.delete_sent =
			prepare(psprintf("DELETE FROM %1$s WHERE id = ANY (ARRAY("
							 "SELECT id FROM %1$s"
							 " WHERE status = 'sent' AND sent_at < $1"
							 " ORDER BY sent_at LIMIT $2))", tbl),
					2, (Oid[]) {TIMESTAMPTZOID, INT8OID});
		plans.relid = relid;
	}
	PopActiveSnapshot();
}

/*
 * SPI_execute_plan under a snapshot of its own.  The worker holds no
 * snapshot between statements (and so none across the HTTP round trips,
 * which would hold back vacuum's horizon); SPI wants an outer one.
 */
static int
spi_run(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only,
		long count)
{
	int			ret;

	PushActiveSnapshot(GetTransactionSnapshot());
	ret = SPI_execute_plan(plan, values, nulls, read_only, count);
	PopActiveSnapshot();
	return ret;
}

/* run a prepared data-modifying statement; returns the rows processed */
static uint64
execute(SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	int			ret;

	in_ship = true;
	ret = spi_run(plan, values, nulls, false, 0);
	if (ret != expected)
		elog(ERROR, "outbox statement failed: %s", SPI_result_code_string(ret));
	return SPI_processed;
}

/* the ids of a batch as an int8[] datum */
static Datum
batch_ids(ShipRow *rows, ShipBatch *b)
{
	Datum	   *d = palloc(sizeof(Datum) * b->n);
	int			i;

	for (i = 0; i < b->n; i++)
		d[i] = Int64GetDatum(rows[b->first + i].id);
	return PointerGetDatum(construct_array(d, b->n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Mark the buffered rows sent, in one statement: the rows are addressed by
 * ctid (a TID scan, no index descent), which cannot change while we hold
 * their row locks.  Returns how many rows were marked.
 */
static int64
flush_sent(SentBuffer *buf)
{
	Datum		values[2];
	int64		n = buf->n;

	if (n == 0)
		return 0;
	values[0] = PointerGetDatum(construct_array(buf->ctids, buf->n, TIDOID,
												sizeof(ItemPointerData), false,
												TYPALIGN_SHORT));
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	execute(plans.sent, values, NULL, SPI_OK_UPDATE);
	pfree(DatumGetPointer(values[0]));
	buf->n = 0;
	StatusCountRows(n, 0);
	return n;
}

/*
 * Rows of a batch were accepted: buffer them for flush_sent.  Marking them
 * a few batches at a time costs less than a statement per batch, and
 * run_cycle does it while the next requests are in flight.
 */
static void
mark_sent(ShipRow *rows, ShipBatch *b, SentBuffer *buf)
{
	int			i;

	if (buf->n + b->n > buf->cap)
	{
		buf->cap = buf->n + b->n + SENT_FLUSH_ROWS;
		buf->ctids = repalloc(buf->ctids, sizeof(Datum) * buf->cap);
	}
	for (i = 0; i < b->n; i++)
		buf->ctids[buf->n++] = PointerGetDatum(&rows[b->first + i].ctid);
}

/* rows of a batch -> failed with this error */
static void
mark_failed(ShipRow *rows, ShipBatch *b, const char *error)
{
	Datum		values[2];

	values[0] = batch_ids(rows, b);
	values[1] = CStringGetTextDatum(error);
	execute(plans.failed, values, NULL, SPI_OK_UPDATE);
}

/*
 * rows of a batch: one more attempt, retried after delay_ms; failed when
 * max_attempts is reached.  The rows of a batch share their next attempt,
 * so they go out together again.  Returns how many rows failed.
 */
static int64
mark_retry(ShipRow *rows, ShipBatch *b, const char *error, int64 delay_ms)
{
	Datum		values[4];
	int64		failed = 0;
	uint64		i;

	values[0] = batch_ids(rows, b);
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp() + delay_ms * 1000);
	values[2] = CStringGetTextDatum(error);
	values[3] = Int32GetDatum(metronome_max_attempts);
	execute(plans.retry, values, NULL, SPI_OK_UPDATE_RETURNING);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i],
									   SPI_tuptable->tupdesc, 1, &isnull)))
			failed++;
	}
	SPI_freetuptable(SPI_tuptable);
	return failed;
}

/*
 * How long the rows of a batch wait after a transient failure: the
 * server's Retry-After (capped by max_backoff), else the exponential
 * backoff of the batch's attempts, jittered.
 */
static int64
retry_delay(ShipRow *rows, ShipBatch *b, int64 retry_after_ms, double random01)
{
	int			attempts = 0;
	int			i;

	if (retry_after_ms >= 0)
		return Min(retry_after_ms, (int64) metronome_max_backoff);
	for (i = 0; i < b->n; i++)
		attempts = Max(attempts, rows[b->first + i].attempts);
	return ShipBackoffDelay(attempts + 1, random01);
}

/* abort the requests of a cycle, free them, and forget the cycle */
static void
release_requests(Cycle *c)
{
	int			i;

	HttpCancelAll(client);
	for (i = 0; i < c->nreqs; i++)
		HttpRequestFree(c->reqs[i]);
	c->nreqs = 0;
	pending = NULL;
}

/* at process exit: free what a FATAL left in flight, and the client */
static void
ship_exit(int code, Datum arg)
{
	(void) code;
	(void) arg;
	in_ship = false;
	if (pending != NULL)
		release_requests(pending);
	HttpClientDestroy(client);
	client = NULL;
}

/* the process's HTTP client, configured from the current settings */
static HttpClient *
get_client(void)
{
	if (client == NULL)
	{
		client = HttpClientCreate();
		if (client == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not initialize libcurl")));
		before_shmem_exit(ship_exit, (Datum) 0);
	}
	if (!HttpClientConfigure(client, metronome_ingest_url, metronome_api_token,
							 "pg_metronome/" METRONOME_VERSION,
							 (long) metronome_request_timeout) ||
		!HttpClientSetCAFile(client, metronome_ca_file))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	return client;
}

/*
 * Abort every request in flight (error paths).
 */
void
ShipAbort(void)
{
	in_ship = false;
	HttpCancelAll(client);
}

/* convert a PostgreSQL timestamptz to microseconds since the Unix epoch */
static bool
to_unix_us(TimestampTz ts, int64 *us)
{
	const int64 shift = (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) *
		SECS_PER_DAY * USECS_PER_SEC;

	if (TIMESTAMP_NOT_FINITE(ts))
		return false;
	*us = ts + shift;
	return true;
}

/* append a batch at the tail of the cycle's deque */
static void
queue_append(Cycle *c, ShipBatch *b)
{
	if (c->tail == c->qcap)
	{
		/* slide to the front, or grow */
		if (c->head > 0)
		{
			memmove(c->q, c->q + c->head, sizeof(ShipBatch *) * (c->tail - c->head));
			c->tail -= c->head;
			c->head = 0;
		}
		if (c->tail == c->qcap)
		{
			c->qcap *= 2;
			c->q = repalloc(c->q, sizeof(ShipBatch *) * c->qcap);
		}
	}
	c->q[c->tail++] = b;
}

/* push a batch at the head of the deque (it goes next) */
static void
queue_push(Cycle *c, ShipBatch *b)
{
	if (c->head == 0)
	{
		int			n = c->tail;
		int			room = Max(c->qcap, 16);

		c->q = repalloc(c->q, sizeof(ShipBatch *) * (c->qcap + room));
		memmove(c->q + room, c->q, sizeof(ShipBatch *) * n);
		c->head = room;
		c->tail = room + n;
		c->qcap += room;
	}
	c->q[--c->head] = b;
}

/* number of batches waiting */
#define queue_len(c) ((c)->tail - (c)->head)

/* start one batch; false (with the request's error set) if it could not */
static HttpRequest *
start_batch(HttpClient *http, ShipBatch *b, Cycle *c, bool *started)
{
	HttpEvent  *events = palloc(sizeof(HttpEvent) * b->n);
	HttpRequest *req;
	int			i;

	for (i = 0; i < b->n; i++)
		events[i] = b->rows[b->first + i].ev;
	if (c->nreqs == c->reqcap)
	{
		c->reqcap *= 2;
		c->reqs = repalloc(c->reqs, sizeof(HttpRequest *) * c->reqcap);
	}
	req = HttpRequestNew();
	if (req == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	c->reqs[c->nreqs++] = req;
	req->user = b;
	req->body = HttpBuildBody(events, b->n, &req->body_len);
	pfree(events);
	if (req->body == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while building a request body")));
	*started = HttpStart(http, req);
	return req;
}

/*
 * trust: the text fields of an event as UTF-8 (encoding.c); false when one
 * has no UTF-8 form.
 */
static bool
ship_fields_to_utf8(HttpEvent *ev)
{
	char	   *tid = EncodingToUtf8(ev->transaction_id);
	char	   *cid = EncodingToUtf8(ev->customer_id);
	char	   *etype = EncodingToUtf8(ev->event_type);
	char	   *props = EncodingToUtf8(ev->properties);

	if (tid == NULL || cid == NULL || etype == NULL || props == NULL)
		return false;
	ev->transaction_id = tid;
	ev->customer_id = cid;
	ev->event_type = etype;
	ev->properties = props;
	return true;
}

/*
 * Claim the next chunk of due rows (after the last one claimed in this
 * cycle, so that the rows this transaction already holds are not taken
 * twice) and append its batches to the deque.  Rows whose timestamp
 * Metronome cannot take are failed at once.  Returns the rows claimed.
 */
static int64
claim_chunk(Cycle *c, ShipResult *result)
{
	Datum		args[3];
	ShipRow    *rows;
	Datum	   *bad = NULL;
	int			nbad = 0;
	Datum	   *badenc = NULL;	/* trust: text without a UTF-8 form */
	int			nbadenc = 0;
	int			n = 0;
	uint64		i;
	uint64		claimed;
	int			ret;

	args[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	args[1] = TimestampTzGetDatum(c->last_nat);
	args[2] = Int64GetDatum(c->last_id);
	ret = spi_run(plans.claim, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "claiming outbox rows failed: %s", SPI_result_code_string(ret));
	claimed = SPI_processed;
	rows = palloc(sizeof(ShipRow) * (claimed + 1));

	for (i = 0; i < claimed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		ShipRow    *r = &rows[n];
		bool		isnull;
		TimestampTz ts;

		r->ctid = *((ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 1, &isnull)));
		r->id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		r->ev.transaction_id = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
		r->ev.customer_id = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));
		r->ev.event_type = TextDatumGetCString(SPI_getbinval(tup, desc, 5, &isnull));
		ts = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
		r->ev.properties = TextDatumGetCString(SPI_getbinval(tup, desc, 7, &isnull));
		r->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
		c->last_nat = DatumGetTimestampTz(SPI_getbinval(tup, desc, 9, &isnull));
		c->last_id = r->id;

		/* trust: UTF-8 on the way out (encoding.c) */
		if (!ship_fields_to_utf8(&r->ev))
		{
			if (badenc == NULL)
				badenc = palloc(sizeof(Datum) * claimed);
			badenc[nbadenc++] = Int64GetDatum(r->id);
			continue;
		}
		/* end trust */

		if (!to_unix_us(ts, &r->ev.timestamp_us) ||
			r->ev.timestamp_us < MIN_RFC3339_US ||
			r->ev.timestamp_us >= MAX_RFC3339_US)
		{
			if (bad == NULL)
				bad = palloc(sizeof(Datum) * claimed);
			bad[nbad++] = Int64GetDatum(r->id);
			continue;
		}
		n++;
	}
	SPI_freetuptable(SPI_tuptable);

	if (nbad > 0)
	{
		Datum		values[2];

		values[0] = PointerGetDatum(construct_array(bad, nbad, INT8OID,
													sizeof(int64), FLOAT8PASSBYVAL,
													TYPALIGN_DOUBLE));
		values[1] = CStringGetTextDatum("timestamp is outside the range Metronome accepts (years 0000 to 9999)");
		execute(plans.failed, values, NULL, SPI_OK_UPDATE);
		result->failed += nbad;
		StatusCountRows(0, nbad);
	}

	/* trust: rows whose text has no UTF-8 form */
	if (nbadenc > 0)
	{
		Datum		values[2];

		values[0] = PointerGetDatum(construct_array(badenc, nbadenc, INT8OID,
													sizeof(int64), FLOAT8PASSBYVAL,
													TYPALIGN_DOUBLE));
		values[1] = CStringGetTextDatum(psprintf("the event has text that cannot be converted from %s to UTF-8",
												 GetDatabaseEncodingName()));
		execute(plans.failed, values, NULL, SPI_OK_UPDATE);
		result->failed += nbadenc;
		StatusCountRows(0, nbadenc);
	}
	/* end trust */

	/* batches in claim order */
	for (i = 0; i < (uint64) n; i += metronome_batch_size)
	{
		ShipBatch  *b = palloc(sizeof(ShipBatch));

		b->rows = rows;
		b->first = (int) i;
		b->n = Min(metronome_batch_size, n - (int) i);
		queue_append(c, b);
	}
	if (claimed > 0)
		WorkerSetState(DELIVERY_SHIPPING);
	c->chunks++;
	result->claimed += claimed;
	c->more = (claimed >= (uint64) c->limit);
	return (int64) claimed;
}

/* may the cycle claim another chunk now? */
static bool
may_claim(Cycle *c, ShipResult *result)
{
	if (!c->more || c->chunks >= CYCLE_MAX_CHUNKS)
		return false;
	/* with max_events, claim no more than it allows (the next cycle may) */
	if (c->max_events > 0 && result->claimed + c->limit > c->max_events)
		return false;
	return !TimestampDifferenceExceeds(c->started, GetCurrentTimestamp(),
									   CYCLE_BUDGET_MS);
}

/*
 * Classify one finished request and mark its rows.  Returns false when no
 * further request should start in this cycle.
 */
static bool
handle_done(HttpRequest *req, Cycle *c, ShipResult *result)
{
	ShipBatch  *b = (ShipBatch *) req->user;
	ShipRow    *rows = b->rows;
	char	   *msg;

	result->requests++;
	StatusCountRequest();
	/* trust: Metronome's text in the server encoding (encoding.c) */
	EncodingFromUtf8Buf(req->error, sizeof(req->error));
	switch (req->klass)
	{
		case HTTP_CLASS_OK:
			mark_sent(rows, b, &c->sent);
			StatusGateReset();
			return true;

		case HTTP_CLASS_BAD_BATCH:
			if (b->n > 1)
			{
				ShipBatch  *lo = palloc(sizeof(ShipBatch));
				ShipBatch  *hi = palloc(sizeof(ShipBatch));

				lo->rows = hi->rows = rows;
				lo->first = b->first;
				lo->n = b->n / 2;
				hi->first = b->first + lo->n;
				hi->n = b->n - lo->n;
				/* the halves go next, the first half first */
				queue_push(c, hi);
				queue_push(c, lo);
				return true;
			}
			mark_failed(rows, b, req->error);
			result->failed++;
			StatusCountRows(0, 1);
			msg = psprintf("Metronome refused the event with transaction_id \"%s\": %s",
						   rows[b->first].ev.transaction_id, req->error);
			StatusSetError(msg);
			ereport(WARNING,
					(errmsg("metronome refused outbox row %lld",
							(long long) rows[b->first].id),
					 errdetail("%s", msg),
					 errhint("The row is marked failed; fix it and call metronome_retry().")));
			return true;

		case HTTP_CLASS_AUTH:
		case HTTP_CLASS_CONFIG:
			StatusSetError(req->error);
			StatusSetState(req->klass == HTTP_CLASS_AUTH ?
						   DELIVERY_AUTH_ERROR : DELIVERY_CONFIG_ERROR);
			result->gate_until =
				StatusGateClose(req->klass == HTTP_CLASS_AUTH ?
								DELIVERY_GATE_AUTH : DELIVERY_GATE_CONFIG,
								-1, jitter());
			result->gated = true;
			return false;

		case HTTP_CLASS_TRANSIENT:
			{
				double		r = jitter();
				int64		nfailed;

				nfailed = mark_retry(rows, b, req->error,
									 retry_delay(rows, b, req->retry_after_ms, r));
				result->failed += nfailed;
				result->retried += b->n - nfailed;
				if (nfailed > 0)
					StatusCountRows(0, nfailed);
				StatusSetError(req->error);
				result->gate_until =
					StatusGateClose(DELIVERY_GATE_TRANSIENT,
									req->retry_after_ms, r);
			}
			result->gated = true;
			return false;
	}
	return false;
}

/*
 * Dry run (the benchmark floor): the same claims and marking, every batch
 * "accepted" at once, no HTTP.
 */
static void
dry_run(Cycle *c, ShipResult *result)
{
	do
	{
		claim_chunk(c, result);
		while (queue_len(c) > 0)
		{
			ShipBatch  *b = c->q[c->head++];

			mark_sent(b->rows, b, &c->sent);
			if (c->sent.n >= SENT_FLUSH_ROWS)
				result->accepted += flush_sent(&c->sent);
		}
		result->accepted += flush_sent(&c->sent);
	} while (may_claim(c, result));
}

/*
 * The heart of the cycle: claim, send, classify and mark until nothing is
 * due, the gate closes, or the cycle's time is up.  Requests in flight are
 * aborted if anything throws.
 */
static void
run_cycle(Cycle *c, ShipResult *result)
{
	HttpClient *http = get_client();

	pending = c;
	PG_TRY();
	{
		bool		go = true;

		claim_chunk(c, result);
		while ((go && queue_len(c) > 0) || HttpInFlight(http) > 0)
		{
			HttpRequest *req;

			/*
			 * Running short of batches: claim the next chunk now, while the
			 * last requests are in flight.
			 */
			if (go && queue_len(c) < metronome_max_inflight && may_claim(c, result))
				claim_chunk(c, result);

			/* keep max_inflight requests going */
			while (go && queue_len(c) > 0 && HttpInFlight(http) < metronome_max_inflight)
			{
				ShipBatch  *b = c->q[c->head++];
				bool		started;

				req = start_batch(http, b, c, &started);
				if (!started)
					go = handle_done(req, c, result);
			}

			/*
			 * Mark what Metronome accepted while those requests are in
			 * flight: a few batches at a time, or all of it when nothing is
			 * left to start.
			 */
			if (c->sent.n >= SENT_FLUSH_ROWS ||
				(c->sent.n > 0 && (!go || queue_len(c) == 0)))
				result->accepted += flush_sent(&c->sent);

			if (HttpInFlight(http) > 0)
				HttpWait(http, WAIT_SLICE_MS);
			CHECK_FOR_INTERRUPTS();
			while ((req = HttpNextDone(http)) != NULL)
			{
				if (!handle_done(req, c, result))
					go = false;
				/* the body is not needed any more */
				free(req->body);
				req->body = NULL;
			}
			if (go && queue_len(c) > 0 &&
				TimestampDifferenceExceeds(c->started, GetCurrentTimestamp(),
										   CYCLE_BUDGET_MS))
			{
				go = false;
				result->budget_cut = true;
			}
		}
		result->accepted += flush_sent(&c->sent);
	}
	PG_FINALLY();
	{
		release_requests(c);
	}
	PG_END_TRY();
}

/*
 * One shipping cycle in the current transaction (see the file banner).
 * max_events > 0 bounds the rows claimed.  dry_run marks claimed rows sent
 * without any HTTP: the database-only floor of the benchmark.
 */
void
ShipCycle(bool dry_run_only, int64 max_events, ShipResult *result)
{
	TimestampTz now = GetCurrentTimestamp();
	DeliveryGate kind;
	Oid			relid;
	int			limit;
	Cycle	   *c;

	memset(result, 0, sizeof(ShipResult));

	if (!dry_run_only && !StatusGateOpen(now, &result->gate_until, &kind))
	{
		result->gated = true;
		return;
	}

	relid = MetronomeRelid("metronome_outbox", true);
	if (!OidIsValid(relid))
	{
		result->no_extension = true;
		return;
	}
	if (!ConditionalLockRelationOid(relid, RowExclusiveLock))
	{
		result->locked = true;
		return;
	}
	/* the lock brought the latest catalog: is the table still there? */
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)) ||
		MetronomeRelid("metronome_outbox", true) != relid)
	{
		UnlockRelationOid(relid, RowExclusiveLock);
		result->no_extension = true;
		return;
	}

	if (!dry_run_only && (metronome_api_token == NULL || metronome_api_token[0] == '\0'))
	{
		StatusSetError("metronome.api_token is not set");
		StatusSetState(DELIVERY_AUTH_ERROR);
		result->gate_until = StatusGateClose(DELIVERY_GATE_AUTH, -1, jitter());
		result->gated = true;
		return;
	}

	limit = metronome_batch_size * metronome_max_inflight * claim_rounds;
	if (max_events > 0 && max_events < limit)
		limit = (int) max_events;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	in_ship = true;
	PG_TRY();
	{
		ensure_plans(relid, limit);

		c = palloc0(sizeof(Cycle));
		c->qcap = 64;
		c->q = palloc(sizeof(ShipBatch *) * c->qcap);
		c->reqcap = 64;
		c->reqs = palloc(sizeof(HttpRequest *) * c->reqcap);
		c->sent.cap = SENT_FLUSH_ROWS;
		c->sent.ctids = palloc(sizeof(Datum) * c->sent.cap);
		c->limit = limit;
		c->max_events = max_events;
		c->last_nat = DT_NOBEGIN;
		c->last_id = 0;
		c->started = now;

		if (dry_run_only)
			dry_run(c, result);
		else
			run_cycle(c, result);

		/* more may be due: the last claim was full, or time ran out */
		result->full = c->more || result->budget_cut;

		/*
		 * A slow Metronome cut the cycle short: claim less at a time (each
		 * claimed row costs a row lock); a cycle that used every row it
		 * claimed: claim more, up to CLAIM_ROUNDS.
		 */
		if (result->budget_cut)
			claim_rounds = Max(1, claim_rounds / 2);
		else if (c->more)
			claim_rounds = Min(CLAIM_ROUNDS, claim_rounds * 2);
	}
	PG_FINALLY();
	{
		in_ship = false;
	}
	PG_END_TRY();
	SPI_finish();
}

/*
 * When the earliest pending row is due (DT_NOEND when none is pending).
 * Run in a transaction, after a cycle in the same transaction.
 */
TimestampTz
ShipNextDue(void)
{
	TimestampTz due = DT_NOEND;
	Oid			relid = MetronomeRelid("metronome_outbox", true);
	int			ret;

	if (!OidIsValid(relid) || plans.relid != relid)
		return due;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = spi_run(plans.next_due, NULL, NULL, true, 1);
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			due = DatumGetTimestampTz(d);
	}
	SPI_finish();
	return due;
}

/*
 * Delete up to `limit` sent rows older than metronome.retain_sent; returns
 * how many (-1 when the outbox is locked or missing).
 */
int64
ShipDeleteSent(int64 limit)
{
	Oid			relid = MetronomeRelid("metronome_outbox", true);
	Datum		values[2];
	int64		n;

	if (!OidIsValid(relid) || metronome_retain_sent < 0)
		return -1;
	if (!ConditionalLockRelationOid(relid, RowExclusiveLock))
		return -1;
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		return -1;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ensure_plans(relid, plans.claim_limit > 0 ? plans.claim_limit :
				 metronome_batch_size * metronome_max_inflight * CLAIM_ROUNDS);
	values[0] = TimestampTzGetDatum(GetCurrentTimestamp() -
									(int64) metronome_retain_sent * USECS_PER_SEC);
	values[1] = Int64GetDatum(limit);
	PG_TRY();
	{
		n = (int64) execute(plans.delete_sent, values, NULL, SPI_OK_DELETE);
	}
	PG_FINALLY();
	{
		in_ship = false;
	}
	PG_END_TRY();
	SPI_finish();
	return n;
}

/*
 * metronome_ship(max_events integer DEFAULT NULL) -> bigint
 *
 * Ship due pending rows from this session, in its transaction, through the
 * same cycle as the worker; returns how many events Metronome accepted.
 * Stops when no due row is left, max_events rows were handled, or the gate
 * closes (transient failure, Retry-After, auth or configuration error).
 */
Datum
metronome_ship(PG_FUNCTION_ARGS)
{
	int64		max_events = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0);
	int64		accepted = 0;
	int64		handled = 0;
	ShipResult	r;

	if (!PG_ARGISNULL(0) && max_events < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must be positive or NULL")));
	if (!metronome_enabled)
	{
		ereport(NOTICE,
				(errmsg("shipping is paused"),
				 errdetail("metronome.enabled is off."),
				 errhint("Set metronome.enabled to on to ship.")));
		PG_RETURN_INT64(0);
	}

	for (;;)
	{
		ShipCycle(false, max_events > 0 ? max_events - handled : 0, &r);
		accepted += r.accepted;
		handled += r.claimed;

		if (r.no_extension)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("extension \"metronome\" is not installed in this database")));
		if (r.locked)
		{
			ereport(NOTICE,
					(errmsg("metronome_outbox is locked by another session"),
					 errhint("Try again when the DDL in progress has finished.")));
			break;
		}
		if (r.gated)
		{
			DeliveryGate kind;
			TimestampTz until;

			(void) StatusGateOpen(GetCurrentTimestamp(), &until, &kind);
			ereport(kind == DELIVERY_GATE_TRANSIENT ? NOTICE : WARNING,
					(errmsg("shipping to Metronome is paused until %s",
							timestamptz_to_str(until)),
					 errdetail("%s", kind == DELIVERY_GATE_AUTH ?
							   "Metronome refused the API token." :
							   kind == DELIVERY_GATE_CONFIG ?
							   "metronome.ingest_url does not answer as Metronome's ingest endpoint." :
							   "Metronome asked to retry later, or could not be reached."),
					 kind != DELIVERY_GATE_TRANSIENT ?
					 errhint("Fix metronome.api_token or metronome.ingest_url and reload; see metronome_status().") : 0));
			break;
		}
		if (!r.full || (max_events > 0 && handled >= max_events))
			break;
		CHECK_FOR_INTERRUPTS();
	}
	PG_RETURN_INT64(accepted);
}

/*
 * metronome_ship_floor(max_events integer) -> bigint
 *
 * Benchmark helper, not part of the extension's SQL: one cycle that claims
 * and marks rows sent exactly as metronome_ship() does, without any HTTP.
 * test/bench/ship.sh declares it in pg_temp to measure the database-only
 * floor.
 */
Datum
metronome_ship_floor(PG_FUNCTION_ARGS)
{
	ShipResult	r;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to run metronome_ship_floor()")));
	ShipCycle(true, PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0), &r);
	PG_RETURN_INT64(r.accepted);
}

/*
 * metronome_check_connection() -> text
 *
 * POST an empty batch, as Segment's destination does to test a token:
 * Metronome answers 400 when the token is good.  Returns 'ok' or raises an
 * error that says what is wrong.
 */
Datum
metronome_check_connection(PG_FUNCTION_ARGS)
{
	HttpClient *http;
	HttpRequest *req;
	HttpRequest *volatile vreq;
	Cycle		check;
	long		status;
	HttpClass	klass;
	char		error[HTTP_ERROR_LEN];

	(void) fcinfo;
	if (metronome_api_token == NULL || metronome_api_token[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("metronome.api_token is not set"),
				 errhint("Set metronome.api_token with ALTER SYSTEM and reload the configuration.")));

	http = get_client();
	req = HttpRequestNew();
	if (req == NULL || (req->body = strdup("[]")) == NULL)
	{
		HttpRequestFree(req);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	req->body_len = 2;
	vreq = req;
	memset(&check, 0, sizeof(check));
	check.reqs = &req;
	check.nreqs = 1;
	pending = &check;

	PG_TRY();
	{
		if (HttpStart(http, vreq))
		{
			while (HttpNextDone(http) == NULL)
			{
				HttpWait(http, WAIT_SLICE_MS);
				CHECK_FOR_INTERRUPTS();
			}
		}
	}
	PG_CATCH();
	{
		/* a cancel or a timeout: the request is not wanted any more */
		release_requests(&check);
		PG_RE_THROW();
	}
	PG_END_TRY();
	HttpCancelAll(http);
	pending = NULL;

	status = req->status;
	klass = req->klass;
	strlcpy(error, req->error, sizeof(error));
	HttpRequestFree(req);
	/* trust: Metronome's text in the server encoding (encoding.c) */
	EncodingFromUtf8Buf(error, sizeof(error));

	if (status == 400 || (status >= 200 && status < 300))
		PG_RETURN_TEXT_P(cstring_to_text("ok"));

	if (status == 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not connect to Metronome"),
				 errdetail("%s", error),
				 errhint(klass == HTTP_CLASS_CONFIG ?
						 "Check metronome.ingest_url and the server's TLS certificate authorities." :
						 "Check metronome.ingest_url and the network.")));
	if (klass == HTTP_CLASS_AUTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("the API token was refused by Metronome"),
				 errdetail("%s", error),
				 errhint("Set metronome.api_token to a valid token and reload the configuration.")));
	if (klass == HTTP_CLASS_CONFIG)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("metronome.ingest_url does not answer as Metronome's ingest endpoint"),
				 errdetail("%s", error),
				 errhint("Check metronome.ingest_url.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("the Metronome ingest API is not available"),
			 errdetail("%s", error),
			 errhint("Try again later.")));
	PG_RETURN_NULL();
}
