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
 *	3. Claim: up to batch_size * max_inflight * CLAIM_ROUNDS due rows,
 *
 *		SELECT ... FROM metronome_outbox
 *		 WHERE status = 'pending' AND next_attempt_at <= $1
 *		 ORDER BY next_attempt_at, id LIMIT n
 *		   FOR UPDATE SKIP LOCKED
 *
 *	   served by the partial index metronome_outbox_pending_idx on
 *	   (next_attempt_at, id) WHERE status = 'pending': the cost does not
 *	   depend on how many sent or failed rows the table holds, and
 *	   concurrent claimers (the worker and sessions) never get the same row.
 *	4. Send: batches of batch_size, at most max_inflight requests at once
 *	   (http.c).  As each answer arrives its rows are marked at once, while
 *	   the other requests are still in flight:
 *		2xx			   rows -> sent
 *		400/413/422	   split the batch in halves and send each; a single
 *					   event still refused -> failed, last_error = message
 *		401/403		   no row changes; auth error state; gate closed
 *		404/405/501... no row changes; config error state; gate closed
 *		transient	   attempts + 1, next_attempt_at = now + backoff (or
 *					   Retry-After), failed after max_attempts; gate closed
 *	   After a transient or auth/config answer no new request starts; rows
 *	   claimed but not sent are simply released when the transaction ends.
 *	5. The transaction is held across the requests, which request_timeout
 *	   bounds (and a cycle starts no request after CYCLE_BUDGET_MS), never
 *	   across a backoff wait: waiting is the worker's job, between cycles.
 *
 * A row is marked sent only after a 2xx that covered it.  If anything dies
 * mid-cycle the transaction aborts and the rows are pending again: they
 * are resent, and Metronome's transaction_id dedup makes that harmless.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "delivery.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "http.h"
#include "metronome.h"
#include "miscadmin.h"
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

/* A cycle starts no new request after this long. */
#define CYCLE_BUDGET_MS 1000

/* HttpWait's longest sleep: how fast SIGTERM and cancels are noticed. */
#define WAIT_SLICE_MS 50

/* One claimed row. */
typedef struct ShipRow
{
	ItemPointerData ctid;		/* locked by us: it cannot move */
	int64		id;
	int32		attempts;
	HttpEvent	ev;
} ShipRow;

/* A batch: rows[first .. first + n - 1]. */
typedef struct ShipBatch
{
	int			first;
	int			n;
} ShipBatch;

/* What a cycle must clean up whatever happens. */
typedef struct ShipCleanup
{
	HttpRequest **reqs;
	int			nreqs;
} ShipCleanup;

/* Rows accepted by Metronome, not yet marked sent (see flush_sent). */
typedef struct SentBuffer
{
	Datum	   *ctids;			/* ItemPointer datums */
	int			n;
} SentBuffer;

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
	Oid			ts[] = {TIMESTAMPTZOID};
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
						 " \"timestamp\", properties::text, attempts"
						 " FROM %s"
						 " WHERE status = 'pending' AND next_attempt_at <= $1"
						 " ORDER BY next_attempt_at, id"
						 " LIMIT %d"
						 " FOR UPDATE SKIP LOCKED", tbl, claim_limit),
				1, ts);
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
 * send_rows does it while the next requests are in flight.
 */
static void
mark_sent(ShipRow *rows, ShipBatch *b, SentBuffer *buf)
{
	int			i;

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

/* start one batch; false (with the request's error set) if it could not */
static bool
start_batch(HttpClient *http, ShipRow *rows, ShipBatch *b,
			ShipCleanup *cleanup)
{
	HttpEvent  *events = palloc(sizeof(HttpEvent) * b->n);
	HttpRequest *req;
	int			i;

	for (i = 0; i < b->n; i++)
		events[i] = rows[b->first + i].ev;
	req = HttpRequestNew();
	if (req == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	cleanup->reqs[cleanup->nreqs++] = req;
	req->user = b;
	req->body = HttpBuildBody(events, b->n, &req->body_len);
	pfree(events);
	if (req->body == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory while building a request body")));
	return HttpStart(http, req);
}

/*
 * Claim due rows into *rows (palloc'd); rows whose timestamp Metronome
 * cannot take are failed at once.  Returns the number of rows claimed
 * (including those failed), the sendable ones in *nrows.
 */
static int64
claim(ShipRow **rowsp, int *nrows, ShipResult *result)
{
	Datum		arg = TimestampTzGetDatum(GetCurrentTimestamp());
	ShipRow    *rows;
	Datum	   *bad = NULL;
	int			nbad = 0;
	int			n = 0;
	uint64		i;
	uint64		claimed;
	int			ret;

	ret = spi_run(plans.claim, &arg, NULL, false, 0);
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
		char		probe[HTTP_TIMESTAMP_LEN];

		r->ctid = *((ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 1, &isnull)));
		r->id = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		r->ev.transaction_id = TextDatumGetCString(SPI_getbinval(tup, desc, 3, &isnull));
		r->ev.customer_id = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));
		r->ev.event_type = TextDatumGetCString(SPI_getbinval(tup, desc, 5, &isnull));
		ts = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
		r->ev.properties = TextDatumGetCString(SPI_getbinval(tup, desc, 7, &isnull));
		r->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));

		if (!to_unix_us(ts, &r->ev.timestamp_us) ||
			!HttpFormatTimestamp(r->ev.timestamp_us, probe, sizeof(probe)))
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
	*rowsp = rows;
	*nrows = n;
	return (int64) claimed;
}

/*
 * Classify one finished request and mark its rows.  Returns false when no
 * further request should start in this cycle.
 */
static bool
handle_done(HttpRequest *req, ShipRow *rows, ShipBatch **stack, int *nstack,
			SentBuffer *sent, ShipResult *result)
{
	ShipBatch  *b = (ShipBatch *) req->user;
	char	   *msg;

	result->requests++;
	StatusCountRequest();
	switch (req->klass)
	{
		case HTTP_CLASS_OK:
			mark_sent(rows, b, sent);
			StatusGateReset();
			return true;

		case HTTP_CLASS_BAD_BATCH:
			if (b->n > 1)
			{
				ShipBatch  *lo = palloc(sizeof(ShipBatch));
				ShipBatch  *hi = palloc(sizeof(ShipBatch));

				lo->first = b->first;
				lo->n = b->n / 2;
				hi->first = b->first + lo->n;
				hi->n = b->n - lo->n;
				/* a stack: the halves go next, the first half first */
				stack[(*nstack)++] = hi;
				stack[(*nstack)++] = lo;
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

/* in dry-run mode (the benchmark floor): every batch "accepted" at once */
static void
dry_run_batches(ShipRow *rows, int nrows, ShipResult *result)
{
	SentBuffer	sent;
	int			i;

	sent.ctids = palloc(sizeof(Datum) * nrows);
	sent.n = 0;
	for (i = 0; i < nrows; i += metronome_batch_size)
	{
		ShipBatch	b;

		b.first = i;
		b.n = Min(metronome_batch_size, nrows - i);
		mark_sent(rows, &b, &sent);
		if (sent.n >= SENT_FLUSH_ROWS)
			result->accepted += flush_sent(&sent);
	}
	result->accepted += flush_sent(&sent);
}

/* send the claimed rows: the heart of the cycle */
static void
send_rows(ShipRow *rows, int nrows, ShipResult *result)
{
	HttpClient *http = get_client();
	int			nb = (nrows + metronome_batch_size - 1) / metronome_batch_size;
	int			cap = nb + 2 * nrows + 2;
	ShipBatch **stack = palloc(sizeof(ShipBatch *) * cap);
	int			nstack = 0;
	ShipCleanup *cleanup = palloc0(sizeof(ShipCleanup));
	SentBuffer *sent = palloc0(sizeof(SentBuffer));
	TimestampTz started = GetCurrentTimestamp();
	int			i;

	cleanup->reqs = palloc(sizeof(HttpRequest *) * cap);
	sent->ctids = palloc(sizeof(Datum) * nrows);

	/* batches in claim order: push the last first */
	for (i = nb - 1; i >= 0; i--)
	{
		ShipBatch  *b = palloc(sizeof(ShipBatch));

		b->first = i * metronome_batch_size;
		b->n = Min(metronome_batch_size, nrows - b->first);
		stack[nstack++] = b;
	}

	PG_TRY();
	{
		bool		go = true;

		while ((go && nstack > 0) || HttpInFlight(http) > 0)
		{
			HttpRequest *req;

			/* keep max_inflight requests going */
			while (go && nstack > 0 && HttpInFlight(http) < metronome_max_inflight)
			{
				ShipBatch  *b = stack[--nstack];

				if (!start_batch(http, rows, b, cleanup))
				{
					req = cleanup->reqs[cleanup->nreqs - 1];
					go = handle_done(req, rows, stack, &nstack, sent, result);
				}
			}

			/*
			 * Mark what Metronome accepted while those requests are in
			 * flight: a few batches at a time, or all of it when nothing is
			 * left to start.
			 */
			if (sent->n >= SENT_FLUSH_ROWS ||
				(sent->n > 0 && (!go || nstack == 0)))
				result->accepted += flush_sent(sent);

			if (HttpInFlight(http) > 0)
				HttpWait(http, WAIT_SLICE_MS);
			CHECK_FOR_INTERRUPTS();
			while ((req = HttpNextDone(http)) != NULL)
			{
				if (!handle_done(req, rows, stack, &nstack, sent, result))
					go = false;
				/* the body is not needed any more */
				free(req->body);
				req->body = NULL;
			}
			if (go && TimestampDifferenceExceeds(started, GetCurrentTimestamp(),
												 CYCLE_BUDGET_MS))
				go = false;
		}
		result->accepted += flush_sent(sent);
	}
	PG_FINALLY();
	{
		HttpCancelAll(http);
		for (i = 0; i < cleanup->nreqs; i++)
			HttpRequestFree(cleanup->reqs[i]);
		cleanup->nreqs = 0;
	}
	PG_END_TRY();
}

/*
 * One shipping cycle in the current transaction (see the file banner).
 * max_events > 0 bounds the rows claimed.  dry_run marks claimed rows sent
 * without any HTTP: the database-only floor of the benchmark.
 */
void
ShipCycle(bool dry_run, int64 max_events, ShipResult *result)
{
	TimestampTz now = GetCurrentTimestamp();
	DeliveryGate kind;
	Oid			relid;
	int			limit;
	ShipRow    *rows;
	int			nrows;

	memset(result, 0, sizeof(ShipResult));

	if (!dry_run && !StatusGateOpen(now, &result->gate_until, &kind))
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

	if (!dry_run && (metronome_api_token == NULL || metronome_api_token[0] == '\0'))
	{
		StatusSetError("metronome.api_token is not set");
		StatusSetState(DELIVERY_AUTH_ERROR);
		result->gate_until = StatusGateClose(DELIVERY_GATE_AUTH, -1, jitter());
		result->gated = true;
		return;
	}

	limit = metronome_batch_size * metronome_max_inflight * CLAIM_ROUNDS;
	if (max_events > 0 && max_events < limit)
		limit = (int) max_events;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	in_ship = true;
	PG_TRY();
	{
		ensure_plans(relid, limit);
		result->claimed = claim(&rows, &nrows, result);
		result->full = (result->claimed >= limit);
		if (nrows > 0)
		{
			WorkerSetState(DELIVERY_SHIPPING);
			if (dry_run)
				dry_run_batches(rows, nrows, result);
			else
				send_rows(rows, nrows, result);
		}
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
	PG_FINALLY();
	{
		HttpCancelAll(http);
	}
	PG_END_TRY();

	status = req->status;
	klass = req->klass;
	strlcpy(error, req->error, sizeof(error));
	HttpRequestFree(req);

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
