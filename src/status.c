/*-------------------------------------------------------------------------
 *
 * status.c
 *	  Shared-memory state of the delivery worker (a leaf: it calls nothing
 *	  of the delivery above it; metronome_status() is in delivery_sql.c).
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
 * assignments, never a function call or a loop.
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

#define STATUS_ERROR_LEN DELIVERY_ERROR_LEN

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

	TimestampTz now = sent > 0 ? GetCurrentTimestamp() : 0;

	SpinLockAcquire(&s->mutex);
	s->sent_total += sent;
	s->failed_total += failed;
	if (sent > 0)
		s->last_success_at = now;
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
 * How many consecutive failures the gate has seen (the caller computes the
 * next backoff from it: this file calls nothing above it).
 */
int
StatusGateFailures(void)
{
	DeliveryShared *s = state_struct();
	int			n;

	SpinLockAcquire(&s->mutex);
	n = s->gate_failures;
	SpinLockRelease(&s->mutex);
	return n;
}

/*
 * Close the gate after a failure of the given kind for delay_ms (the
 * caller's backoff or the server's Retry-After; capped by
 * metronome.max_backoff).  Returns the time the gate opens again.
 */
TimestampTz
StatusGateClose(DeliveryGate kind, int64 delay_ms)
{
	DeliveryShared *s = state_struct();
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz until;
	uint64		config = StatusConfigHash();

	if (delay_ms < 0)
		delay_ms = 0;
	if (delay_ms > metronome_max_backoff)
		delay_ms = metronome_max_backoff;
	until = now + delay_ms * 1000;

	SpinLockAcquire(&s->mutex);
	if (s->gate_failures < 1000)
		s->gate_failures++;
	/* a later Retry-After already in force stays */
	if (s->gate_kind == DELIVERY_GATE_NONE || s->gate_until < until ||
		kind != s->gate_kind)
		s->gate_until = until;
	else
		until = s->gate_until;
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
 * A copy of the state, for metronome_status() (delivery_sql.c).
 */
void
StatusRead(DeliveryStatusView *out)
{
	DeliveryShared *s = state_struct();

	SpinLockAcquire(&s->mutex);
	out->worker_pid = s->worker_pid;
	out->state = s->state;
	out->last_success_at = s->last_success_at;
	out->last_error_at = s->last_error_at;
	memcpy(out->last_error, s->last_error, sizeof(out->last_error));
	out->sent_total = s->sent_total;
	out->requests_total = s->requests_total;
	out->gate_kind = s->gate_kind;
	out->gate_until = s->gate_until;
	SpinLockRelease(&s->mutex);
	out->last_error[sizeof(out->last_error) - 1] = '\0';
}
