/*-------------------------------------------------------------------------
 *
 * delivery.h
 *	  The shipping half: the delivery worker, its shared state, the wake-up
 *	  at commit, and one shipping cycle shared by the worker and
 *	  metronome_ship().
 *
 *	  worker.c	the delivery worker (background worker; launcher.c starts it)
 *	  ship.c	one shipping cycle: claim, send, classify, acknowledge
 *	  status.c	shared state (pid, latch, state, counters, the gate): a leaf
 *	  delivery_sql.c	metronome_status()
 *	  wake.c	waking the worker at commit
 *	  http.c	the HTTP layer, free of backend state (http.h)
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_DELIVERY_H
#define METRONOME_DELIVERY_H

#include "postgres.h"

#include "datatype/timestamp.h"

/*
 * Called from _PG_init while shared_preload_libraries is being processed:
 * requests shared memory and registers the delivery worker.
 */
extern void DeliveryInit(void);

/*
 * The current transaction wrote outbox rows: wake the worker when (and only
 * if) it commits.  Cheap; call it once per statement that wrote rows.
 */
extern void DeliveryWakeAtCommit(void);

/* From _PG_init when preloaded: statements writing the outbox wake the
 * worker at commit (wake.c). */
extern void DeliveryInstallWakeHook(void);

/*
 * Set while this process's writes to the outbox's tables must wake nobody
 * (the worker itself, a shipping cycle): wake.c reads it.
 */
extern bool DeliveryWakeSuppressed;

/* What the delivery worker is doing (metronome_status().state). */
typedef enum DeliveryState
{
	DELIVERY_NOT_PRELOADED,		/* no shared memory: library not preloaded */
	DELIVERY_STOPPED,			/* no worker runs */
	DELIVERY_STARTING,
	DELIVERY_WAITING_DATABASE,	/* metronome.database does not exist */
	DELIVERY_WAITING_EXTENSION, /* the extension is not installed there */
	DELIVERY_IDLE,
	DELIVERY_SHIPPING,
	DELIVERY_PAUSED,			/* metronome.enabled = off */
	DELIVERY_BACKOFF,			/* transient failures: waiting to retry */
	DELIVERY_AUTH_ERROR,		/* 401/403: waiting for a new token */
	DELIVERY_CONFIG_ERROR		/* 404/405/501, TLS, URL: waiting for settings */
} DeliveryState;

/* Why no request may be sent before a given time. */
typedef enum DeliveryGate
{
	DELIVERY_GATE_NONE,
	DELIVERY_GATE_TRANSIENT,	/* backoff or Retry-After */
	DELIVERY_GATE_AUTH,
	DELIVERY_GATE_CONFIG
} DeliveryGate;

/* Longest error text kept in the shared state. */
#define DELIVERY_ERROR_LEN 512

/* A copy of the shared state (StatusRead). */
typedef struct DeliveryStatusView
{
	pid_t		worker_pid;
	DeliveryState state;
	TimestampTz last_success_at;
	TimestampTz last_error_at;
	char		last_error[DELIVERY_ERROR_LEN];
	uint64		sent_total;
	uint64		requests_total;
	DeliveryGate gate_kind;
	TimestampTz gate_until;
} DeliveryStatusView;

/* status.c */
extern void StatusRead(DeliveryStatusView *out);
extern void StatusShmemInit(void);
extern bool StatusIsShared(void);
extern bool StatusClaimWorker(void);
extern void StatusReleaseWorker(void);
extern pid_t StatusWorkerPid(void);
extern pid_t StatusWorkerPidOf(Oid dboid);
extern void StatusWakeWorker(void);
extern void StatusSetState(DeliveryState state);
extern DeliveryState StatusGetState(void);
extern void StatusCountRequest(void);
extern void StatusCountRows(int64 sent, int64 failed);
extern void StatusSetError(const char *message);
extern uint64 StatusConfigHash(void);
extern bool StatusGateOpen(TimestampTz now, TimestampTz *until,
						   DeliveryGate *kind);
extern int	StatusGateFailures(void);
extern TimestampTz StatusGateClose(DeliveryGate kind, int64 delay_ms);
extern void StatusGateReset(void);
extern const char *DeliveryStateName(DeliveryState state);

/* ship.c */

/* What one shipping cycle did. */
typedef struct ShipResult
{
	int64		claimed;		/* rows claimed */
	int64		accepted;		/* rows acknowledged as sent */
	int64		failed;			/* rows marked failed */
	int64		retried;		/* rows given another attempt later */
	int			requests;		/* requests sent */
	bool		full;			/* claimed as many rows as it could: more due */
	bool		gated;			/* no request allowed now (see gate_until) */
	bool		no_extension;	/* the extension is not installed */
	bool		locked;			/* the outbox is locked (DDL): try again soon */
	bool		busy;			/* another live process holds the lease */
	bool		budget_cut;		/* stopped starting requests: out of time */
	TimestampTz gate_until;
	TimestampTz next_due;		/* claimed nothing: the next retry (DT_NOEND) */
	bool		rate_limited;	/* metronome.max_events_per_second (or the
								 * adaptive slowdown): nothing claimed, no
								 * request before rate_until */
	TimestampTz rate_until;
} ShipResult;

/* How a cycle runs its two short transactions (claim, acknowledgement). */
typedef enum ShipContext
{
	SHIP_OWN_XACTS,				/* the worker: starts and commits them itself */
	SHIP_PROCEDURE,				/* CALL: SPI connected non-atomic, SPI_commit */
	SHIP_CALLER_XACT			/* in the caller's transaction (dry run only) */
} ShipContext;

/* Base of the exponential backoff, in milliseconds. */
#define SHIP_BACKOFF_BASE_MS 500

/*
 * One cycle.  Also the benchmark's database-only floor with dry_run (see
 * ship.c's banner): exported for a benchmark-only module.
 */
extern PGDLLEXPORT void ShipCycle(ShipContext ctx, bool dry_run,
								  int64 max_events, ShipResult *result);
extern PGDLLEXPORT void ShipReleaseMemory(void);
extern int64 ShipDeleteSent(int64 limit);
extern void ShipAbort(void);
extern int64 ShipBackoffDelay(int failures, double random01);

/* worker.c */
extern bool AmDeliveryWorker(void);
extern void WorkerSetState(DeliveryState state);
extern PGDLLEXPORT void WorkerTuneMemory(void);

#endif							/* METRONOME_DELIVERY_H */
