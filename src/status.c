/*-------------------------------------------------------------------------
 *
 * status.c
 *	  Shared-memory state of the delivery worker, and metronome_status().
 *
 * With the library preloaded, one DeliveryShared struct lives in shared
 * memory: the worker's pid and latch (for the wake-up at commit), the state
 * it is in, the last success and error, counters, and the "gate": the
 * earliest time at which anyone (the worker or a session running
 * metronome_ship()) may send the next request.  The gate is set after
 * transient failures (exponential backoff, Retry-After) and after auth or
 * configuration errors; in the latter case it also remembers a hash of the
 * URL and token that failed, so that a reload with new settings reopens it
 * at once.
 *
 * Without preloading there is no worker and no shared memory: each backend
 * then keeps the same struct privately, so metronome_ship() still honours
 * Retry-After and backoff within that session.
 *
 * Everything is protected by one spinlock; critical sections are a few
 * assignments.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "common/hashfn.h"
#include "delivery.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "metronome.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(metronome_status);

#define STATUS_ERROR_LEN 512

typedef struct DeliveryShared
{
	slock_t		mutex;
	pid_t		worker_pid;		/* 0 when no delivery worker runs */
	Latch	   *worker_latch;
	DeliveryState state;
	TimestampTz last_success_at;
	TimestampTz last_error_at;
	char		last_error[STATUS_ERROR_LEN];
	uint64		sent_total;
	uint64		failed_total;
	uint64		requests_total;

	/* the gate: no request before gate_until */
	DeliveryGate gate_kind;
	TimestampTz gate_until;
	int			gate_failures;	/* consecutive failures behind the gate */
	uint64		gate_config;	/* hash of URL and token, auth/config gates */
} DeliveryShared;

static DeliveryShared *shared = NULL;	/* in shared memory when preloaded */
static DeliveryShared local_state;	/* else this backend's own */
static bool local_ready = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static const char *const state_names[] = {
	[DELIVERY_NOT_PRELOADED] = "not preloaded",
	[DELIVERY_STOPPED] = "stopped",
	[DELIVERY_STARTING] = "starting",
	[DELIVERY_WAITING_DATABASE] = "waiting for database",
	[DELIVERY_WAITING_EXTENSION] = "waiting for extension",
	[DELIVERY_IDLE] = "idle",
	[DELIVERY_SHIPPING] = "shipping",
	[DELIVERY_PAUSED] = "paused",
	[DELIVERY_BACKOFF] = "backoff",
	[DELIVERY_AUTH_ERROR] = "auth error",
	[DELIVERY_CONFIG_ERROR] = "config error",
};

/* shmem_request_hook: reserve our struct */
static void
status_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(DeliveryShared)));
}

/* initialise a struct to "nothing happened yet" */
static void
status_init(DeliveryShared *s, DeliveryState state)
{
	memset(s, 0, sizeof(DeliveryShared));
	SpinLockInit(&s->mutex);
	s->state = state;
	s->gate_kind = DELIVERY_GATE_NONE;
}

/* shmem_startup_hook: create or attach to our struct */
static void
status_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("metronome delivery", sizeof(DeliveryShared), &found);
	if (!found)
		status_init(shared, DELIVERY_STOPPED);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Called from DeliveryInit (while preloading): install the shared-memory
 * hooks.
 */
void
StatusShmemInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = status_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = status_shmem_startup;
}

/* the struct this backend uses: shared, or its own */
static DeliveryShared *
state_struct(void)
{
	if (shared != NULL)
		return shared;
	if (!local_ready)
	{
		status_init(&local_state, DELIVERY_NOT_PRELOADED);
		local_ready = true;
	}
	return &local_state;
}

/*
 * Is there shared state (the library was preloaded)?
 */
bool
StatusIsShared(void)
{
	return shared != NULL;
}

/*
 * Register the calling process as the delivery worker.  False when another
 * live delivery worker is registered already.
 */
bool
StatusClaimWorker(void)
{
	DeliveryShared *s = state_struct();
	bool		ok;

	SpinLockAcquire(&s->mutex);
	ok = (s->worker_pid == 0 || s->worker_pid == MyProcPid);
	if (ok)
	{
		s->worker_pid = MyProcPid;
		s->worker_latch = MyLatch;
		s->state = DELIVERY_STARTING;
	}
	SpinLockRelease(&s->mutex);

	/* someone may have died without clearing the slot: check it is alive */
	if (!ok)
	{
		pid_t		other;

		SpinLockAcquire(&s->mutex);
		other = s->worker_pid;
		SpinLockRelease(&s->mutex);
		if (other != 0 && kill(other, 0) != 0 && errno == ESRCH)
		{
			SpinLockAcquire(&s->mutex);
			if (s->worker_pid == other)
			{
				s->worker_pid = MyProcPid;
				s->worker_latch = MyLatch;
				s->state = DELIVERY_STARTING;
				ok = true;
			}
			SpinLockRelease(&s->mutex);
		}
	}
	return ok;
}

/*
 * The delivery worker is exiting: forget its pid and latch.
 */
void
StatusReleaseWorker(void)
{
	DeliveryShared *s = state_struct();

	SpinLockAcquire(&s->mutex);
	if (s->worker_pid == MyProcPid)
	{
		s->worker_pid = 0;
		s->worker_latch = NULL;
		s->state = DELIVERY_STOPPED;
	}
	SpinLockRelease(&s->mutex);
}

/*
 * Pid of the running delivery worker, 0 if none.
 */
pid_t
StatusWorkerPid(void)
{
	DeliveryShared *s = state_struct();
	pid_t		pid;

	SpinLockAcquire(&s->mutex);
	pid = s->worker_pid;
	SpinLockRelease(&s->mutex);
	return pid;
}

/*
 * Set the worker's latch, if a worker runs (the wake-up at commit).
 */
void
StatusWakeWorker(void)
{
	Latch	   *latch = NULL;

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	if (shared->worker_pid != 0 && shared->worker_pid != MyProcPid)
		latch = shared->worker_latch;
	SpinLockRelease(&shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * Set the state shown by metronome_status().
 */
void
StatusSetState(DeliveryState state)
{
	DeliveryShared *s = state_struct();

	SpinLockAcquire(&s->mutex);
	s->state = state;
	SpinLockRelease(&s->mutex);
}

/*
 * The current state.
 */
DeliveryState
StatusGetState(void)
{
	DeliveryShared *s = state_struct();
	DeliveryState state;

	SpinLockAcquire(&s->mutex);
	state = s->state;
	SpinLockRelease(&s->mutex);
	return state;
}

/*
 * Count one finished request.
 */
void
StatusCountRequest(void)
{
	DeliveryShared *s = state_struct();

	SpinLockAcquire(&s->mutex);
	s->requests_total++;
	SpinLockRelease(&s->mutex);
}

/*
 * Count rows marked sent or failed.
 */
void
StatusCountRows(int64 sent, int64 failed)
{
	DeliveryShared *s = state_struct();

	SpinLockAcquire(&s->mutex);
	s->sent_total += sent;
	s->failed_total += failed;
	if (sent > 0)
		s->last_success_at = GetCurrentTimestamp();
	SpinLockRelease(&s->mutex);
}

/*
 * Remember an error for metronome_status() (text is copied, truncated).
 */
void
StatusSetError(const char *message)
{
	DeliveryShared *s = state_struct();
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&s->mutex);
	strlcpy(s->last_error, message ? message : "", sizeof(s->last_error));
	s->last_error_at = now;
	SpinLockRelease(&s->mutex);
}

/*
 * Hash of the settings that an auth or configuration error depends on.
 */
uint64
StatusConfigHash(void)
{
	const char *url = metronome_ingest_url ? metronome_ingest_url : "";
	const char *token = metronome_api_token ? metronome_api_token : "";
	const char *ca_file = metronome_ca_file ? metronome_ca_file : "";
	uint64		h;

	h = hash_bytes_extended((const unsigned char *) url, strlen(url), 0);
	h = hash_bytes_extended((const unsigned char *) token, strlen(token), h);
	h = hash_bytes_extended((const unsigned char *) ca_file, strlen(ca_file), h);
	return h;
}

/*
 * Is sending allowed now?  Returns true, or false with *until (when it
 * opens) and *kind set.  An auth/config gate whose settings have changed
 * since (a reload) opens at once.
 */
bool
StatusGateOpen(TimestampTz now, TimestampTz *until, DeliveryGate *kind)
{
	DeliveryShared *s = state_struct();
	uint64		config = StatusConfigHash();
	bool		open;

	SpinLockAcquire(&s->mutex);
	if ((s->gate_kind == DELIVERY_GATE_AUTH ||
		 s->gate_kind == DELIVERY_GATE_CONFIG) &&
		s->gate_config != config)
	{
		/* new settings: try them at once */
		s->gate_kind = DELIVERY_GATE_NONE;
		s->gate_until = 0;
		s->gate_failures = 0;
		if (s->state == DELIVERY_AUTH_ERROR || s->state == DELIVERY_CONFIG_ERROR)
			s->state = DELIVERY_IDLE;
	}
	open = (s->gate_kind == DELIVERY_GATE_NONE || s->gate_until <= now);
	if (until)
		*until = s->gate_until;
	if (kind)
		*kind = s->gate_kind;
	SpinLockRelease(&s->mutex);
	return open;
}

/*
 * Close the gate after a failure of the given kind.  delay_ms < 0 asks for
 * the exponential backoff of the consecutive failures (jittered, capped by
 * metronome.max_backoff); otherwise it is the server's Retry-After.
 * Returns the time the gate opens again.
 */
TimestampTz
StatusGateClose(DeliveryGate kind, int64 delay_ms, double random01)
{
	DeliveryShared *s = state_struct();
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz until;
	uint64		config = StatusConfigHash();

	SpinLockAcquire(&s->mutex);
	if (s->gate_failures < 1000)
		s->gate_failures++;
	if (delay_ms < 0)
		delay_ms = ShipBackoffDelay(s->gate_failures, random01);
	if (delay_ms > metronome_max_backoff)
		delay_ms = metronome_max_backoff;
	until = now + delay_ms * 1000;
	/* a later Retry-After already in force stays */
	if (s->gate_kind == DELIVERY_GATE_NONE || s->gate_until < until ||
		kind != s->gate_kind)
		s->gate_until = until;
	s->gate_kind = kind;
	s->gate_config = config;
	SpinLockRelease(&s->mutex);
	return until;
}

/*
 * A request was accepted: open the gate and forget past failures.
 */
void
StatusGateReset(void)
{
	DeliveryShared *s = state_struct();

	SpinLockAcquire(&s->mutex);
	s->gate_kind = DELIVERY_GATE_NONE;
	s->gate_until = 0;
	s->gate_failures = 0;
	SpinLockRelease(&s->mutex);
}

/*
 * The state's name.
 */
const char *
DeliveryStateName(DeliveryState state)
{
	if ((int) state < 0 || (int) state >= (int) lengthof(state_names) ||
		state_names[state] == NULL)
		return "unknown";
	return state_names[state];
}

/*
 * metronome_status() -> (worker_pid, state, pending, failed, oldest_pending,
 *		last_success_at, last_error, last_error_at, sent_total, requests_total)
 *
 * The worker's live state from shared memory, and the queue's figures from
 * this database's outbox (each counted through its partial index).
 */
Datum
metronome_status(PG_FUNCTION_ARGS)
{
	DeliveryShared *s = state_struct();
	DeliveryShared snap;
	TupleDesc	tupdesc;
	Datum		values[10];
	bool		nulls[10];
	char	   *sql;
	int			ret;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	SpinLockAcquire(&s->mutex);
	memcpy(&snap, s, sizeof(DeliveryShared));
	SpinLockRelease(&s->mutex);

	memset(nulls, 0, sizeof(nulls));

	if (snap.worker_pid != 0)
		values[0] = Int32GetDatum((int32) snap.worker_pid);
	else
		nulls[0] = true;

	/* a gate in force shows as backoff even between two worker cycles */
	if (snap.gate_kind == DELIVERY_GATE_TRANSIENT &&
		snap.gate_until > GetCurrentTimestamp() &&
		(snap.state == DELIVERY_IDLE || snap.state == DELIVERY_SHIPPING))
		snap.state = DELIVERY_BACKOFF;
	values[1] = CStringGetTextDatum(DeliveryStateName(snap.state));

	/*
	 * Pending queue rows are those after the cursor: an index range on
	 * (txid, id) from last_snap's xmin, not a scan of the history.
	 */
	sql = psprintf("WITH d AS (SELECT * FROM %1$s.metronome_delivery dd"
				   " ORDER BY dd.system_id IS NULL LIMIT 1),"
				   " q AS (SELECT q.created_at FROM %1$s.metronome_queue q, d"
				   " WHERE q.txid >= pg_catalog.pg_snapshot_xmin(d.last_snap)"
				   " AND NOT %1$s.metronome_acked(q.txid, q.id, d.last_snap, d.cur_snap, d.pos_txid, d.pos_id)"
				   " AND NOT EXISTS (SELECT 1 FROM %1$s.metronome_outbox_state s WHERE s.id = q.id))"
				   " SELECT (SELECT count(*) FROM q) +"
				   " (SELECT count(*) FROM %1$s.metronome_outbox_state WHERE status = 'pending'),"
				   " (SELECT count(*) FROM %1$s.metronome_outbox_state WHERE status = 'failed'),"
				   " LEAST((SELECT min(created_at) FROM q),"
				   " (SELECT min(created_at) FROM %1$s.metronome_outbox_state WHERE status = 'pending'))",
				   MetronomeSchemaName());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute(sql, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not count the outbox: %s", SPI_result_code_string(ret));
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		values[2] = SPI_getbinval(tup, desc, 1, &isnull);
		nulls[2] = isnull;
		values[3] = SPI_getbinval(tup, desc, 2, &isnull);
		nulls[3] = isnull;
		values[4] = SPI_getbinval(tup, desc, 3, &isnull);
		nulls[4] = isnull;
	}
	SPI_finish();

	if (snap.last_success_at != 0)
		values[5] = TimestampTzGetDatum(snap.last_success_at);
	else
		nulls[5] = true;
	if (snap.last_error_at != 0)
	{
		values[6] = CStringGetTextDatum(snap.last_error);
		values[7] = TimestampTzGetDatum(snap.last_error_at);
	}
	else
		nulls[6] = nulls[7] = true;
	values[8] = Int64GetDatum((int64) snap.sent_total);
	values[9] = Int64GetDatum((int64) snap.requests_total);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
