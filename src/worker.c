/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The delivery worker, which ships one database's outbox (the launcher
 *	  that starts one per served database is in launcher.c).
 *
 * Glossary:
 *	  delivery worker ("metronome delivery") connected to the database the
 *				launcher's slot bgw_main_arg names.  It waits (one log line)
 *				while the extension is not installed there (with
 *				metronome.database = '*' it exits instead, and the launcher
 *				looks again later), and otherwise runs shipping cycles
 *				(ship.c: a short claim transaction, the requests with no
 *				transaction open, a short acknowledgement transaction),
 *				sleeping on
 *				its latch between them: a commit that wrote outbox rows sets
 *				the latch (wake.c), poll_interval paces due retries, and the
 *				gate (status.c) paces backoff.  It also deletes sent rows
 *				older than metronome.retain_sent, and events of
 *				segment_events older than metronome.retain_events (retain.c).
 *
 * Signals: SIGHUP reloads the configuration (every metronome.* setting but
 * metronome.database applies at the next cycle); SIGTERM ends the worker
 * at the next CHECK_FOR_INTERRUPTS, which the HTTP wait loop reaches every
 * 50 ms even mid-request; SIGUSR1 is PostgreSQL's procsignal handler (it
 * sets the latch, so DROP DATABASE barriers and bgworker notifications are
 * seen).  WaitLatch uses WL_EXIT_ON_PM_DEATH.
 *
 * An ERROR inside a cycle is caught: logged once, the transaction aborted,
 * the error shown by metronome_status(), and the worker backs off before
 * the next cycle instead of dying and restarting in a loop.  A crash (or
 * kill -9) restarts the server's processes, this worker included; the
 * rows it was sending were never marked sent and are sent again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <malloc.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "delivery.h"
#include "launcher.h"
#include "metronome.h"
#include "metrics.h"
#include "ratelimit.h"
#include "retain.h"
#include "miscadmin.h"
#include "pg_compat.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procsignal.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
#include "common/pg_prng.h"

PGDLLEXPORT void MetronomeDeliveryMain(Datum main_arg);

/* sent rows deleted per transaction, and transactions per clean-up round */
#define RETAIN_CHUNK 10000
#define RETAIN_CHUNKS_PER_ROUND 10
/* how often the clean-up runs (ms) */
#define RETAIN_EVERY_MS 60000

static bool am_delivery_worker = false;
static char *served_database = "";	/* the name of this worker's database */

/*
 * Is this process the delivery worker?
 */
bool
AmDeliveryWorker(void)
{
	return am_delivery_worker;
}

/*
 * Called from _PG_init while shared_preload_libraries is processed: the
 * shared state (the launcher registers itself: LauncherInit).
 */
void
DeliveryInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	StatusShmemInit();
	MetricsShmemInit();
	RateLimitShmemInit();
}

/*
 * Sleep on the latch for at most ms milliseconds (wait event MetronomeIdle
 * from PostgreSQL 17, Extension before).
 */
static void
wait_latch(long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 Max(ms, 1), PgCompatWaitEvent("MetronomeIdle"));
}

/* apply a pending SIGHUP; true if there was one */
static bool
reload_if_asked(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		return true;
	}
	return false;
}

/* milliseconds from now to t (0 when past) */
static long
ms_until(TimestampTz t)
{
	TimestampTz now = GetCurrentTimestamp();

	if (t <= now)
		return 0;
	if (t - now > (TimestampTz) INT_MAX * 1000)
		return INT_MAX;
	return (long) ((t - now + 999) / 1000);
}

/* ----------------------------------------------------------------------
 * The delivery worker
 * ---------------------------------------------------------------------- */

/* on exit: free the worker's slot in shared memory */
static void
delivery_exit(int code, Datum arg)
{
	(void) code;
	(void) arg;
	ShipAbort();
	StatusReleaseWorker();
}

/*
 * The delivery worker's state, shown in pg_stat_activity and
 * metronome_status().  No-op in other processes.
 */
void
WorkerSetState(DeliveryState state)
{
	static DeliveryState shown = (DeliveryState) -1;

	if (!am_delivery_worker)
		return;
	StatusSetState(state);
	if (state != shown)
	{
		pgstat_report_activity(state == DELIVERY_SHIPPING ? STATE_RUNNING : STATE_IDLE,
							   DeliveryStateName(state));
		shown = state;
	}
}

/*
 * An ERROR escaped a cycle: log it, abort the transaction, remember it for
 * metronome_status().  Called in PG_CATCH.
 */
static void
recover_from_error(MemoryContext cxt)
{
	ErrorData  *edata;

	HOLD_INTERRUPTS();
	ShipAbort();
	MemoryContextSwitchTo(cxt);
	EmitErrorReport();
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	StatusSetError(edata->message);
	FreeErrorData(edata);
	MemoryContextSwitchTo(cxt);
	RESUME_INTERRUPTS();
}

/*
 * One shipping cycle: its claim and its acknowledgement are transactions
 * of their own (ship.c), the requests run with no transaction open.
 * Returns how long to sleep before the next one (0: go again at once).
 */
static long
delivery_cycle(MemoryContext cxt, int *errors, bool *said_no_extension)
{
	ShipResult	r;
	long		wait_ms;

	memset(&r, 0, sizeof(r));
	PG_TRY();
	{
		ShipCycle(SHIP_OWN_XACTS, false, 0, &r);
	}
	PG_CATCH();
	{
		recover_from_error(cxt);
		*errors = Min(*errors + 1, 30);
		WorkerSetState(DELIVERY_BACKOFF);
		pgstat_report_stat(true);
		return (long) ShipBackoffDelay(*errors, pg_prng_double(&pg_global_prng_state));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_stat(false);
	*errors = 0;

	if (r.no_extension)
	{
		/* metronome.database = '*': the launcher looks again later */
		if (LauncherNoExtension())
			proc_exit(0);
		if (!*said_no_extension)
			ereport(LOG,
					(errmsg("extension \"metronome\" is not installed in database \"%s\"; waiting for it",
							served_database),
					 errhint("Run CREATE EXTENSION metronome in that database.")));
		*said_no_extension = true;
		WorkerSetState(DELIVERY_WAITING_EXTENSION);
		/* CREATE EXTENSION wakes nobody: look again within a second */
		return Min(metronome_poll_interval, 1000);
	}
	if (*said_no_extension)
		ereport(LOG,
				(errmsg("extension \"metronome\" found in database \"%s\"; shipping",
						served_database)));
	*said_no_extension = false;

	if (r.locked || r.busy)
		return Min(metronome_poll_interval, 200);

	if (r.rate_limited)
	{
		/* metronome.max_events_per_second: the latch wait is the pacing */
		WorkerSetState(DELIVERY_SHIPPING);
		return Max(ms_until(r.rate_until), 1);
	}

	if (r.gated)
	{
		DeliveryState st = StatusGetState();

		if (st != DELIVERY_AUTH_ERROR && st != DELIVERY_CONFIG_ERROR)
			WorkerSetState(DELIVERY_BACKOFF);
		else
			WorkerSetState(st);
		return ms_until(r.gate_until);
	}

	if (r.claimed > 0 || r.full)
	{
		WorkerSetState(DELIVERY_SHIPPING);
		return 0;
	}

	WorkerSetState(DELIVERY_IDLE);
	wait_ms = metronome_poll_interval;
	if (r.next_due != DT_NOEND && r.next_due > GetCurrentTimestamp())
		wait_ms = Min(wait_ms, ms_until(r.next_due));
	return wait_ms;
}

/*
 * Delete sent rows older than metronome.retain_sent, a chunk per
 * transaction, a bounded number of chunks per call.  Returns true when
 * more may be left.
 */
static bool
retain_cleanup(MemoryContext cxt)
{
	int			i;

	for (i = 0; i < RETAIN_CHUNKS_PER_ROUND; i++)
	{
		int64		n = -1;

		CHECK_FOR_INTERRUPTS();
		PG_TRY();
		{
			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
			n = Max(ShipDeleteSent(RETAIN_CHUNK), RetainDeleteEvents(RETAIN_CHUNK));
			CommitTransactionCommand();
		}
		PG_CATCH();
		{
			recover_from_error(cxt);
			return false;
		}
		PG_END_TRY();
		pgstat_report_stat(false);
		if (n < RETAIN_CHUNK)
			return false;
	}
	return true;
}

/*
 * Keep freed memory for the next cycle.  Every cycle builds and frees the
 * same few megabytes (the claim's SPI result, the rows' texts, the request
 * bodies); with glibc's adaptive defaults those blocks go back to the kernel
 * (brk shrunk, mmap'd blocks unmapped) and the next cycle faults them in
 * again, a fifth of the worker's CPU on a fast Metronome.  Fixed
 * thresholds keep up to 64 MB of freed memory in the process (its peak is
 * one cycle's, bounded by batch_size * max_inflight rows).  Called once by
 * the worker; exported for the benchmark's floor (the same process setup).
 */
void
WorkerTuneMemory(void)
{
	(void) mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
	(void) mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
}

/*
 * Main of the delivery worker.
 */
void
MetronomeDeliveryMain(Datum main_arg)
{
	MemoryContext cxt;
	int			errors = 0;
	bool		said_no_extension = false;
	TimestampTz next_cleanup = 0;
	TimestampTz error_until = 0;
	Oid			dboid;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	pqsignal(SIGUSR1, procsignal_sigusr1_handler);
	BackgroundWorkerUnblockSignals();

	am_delivery_worker = true;
	DeliveryWakeSuppressed = true;
	dboid = LauncherSlotDatabase(main_arg, &served_database);
	if (!OidIsValid(dboid))
		proc_exit(0);			/* the launcher no longer serves it */
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/* one delivery worker at a time */
	if (!StatusClaimWorker())
		proc_exit(0);
	before_shmem_exit(delivery_exit, (Datum) 0);

	/*
	 * The worker's commits only record what Metronome already has: if a
	 * crash loses the last of them, those rows are pending again and are
	 * resent, which Metronome's transaction_id dedup makes harmless.  So it
	 * need not wait for its WAL to reach the disk.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	pgstat_report_appname("metronome delivery");
	WorkerTuneMemory();
	cxt = AllocSetContextCreate(TopMemoryContext, "metronome delivery",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	/* with '*', workers also start to look for the extension: quietly */
	ereport(LauncherServesAll() ? DEBUG1 : LOG,
			(errmsg("delivery worker started for database \"%s\"",
					served_database)));

	for (;;)
	{
		long		wait_ms;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (reload_if_asked())
		{
			next_cleanup = 0;	/* retain_sent may have changed */
			error_until = 0;	/* and the settings may fix an error */
		}
		MemoryContextReset(cxt);

		if (!metronome_enabled)
		{
			WorkerSetState(DELIVERY_PAUSED);
			wait_ms = metronome_poll_interval;
		}
		else if (GetCurrentTimestamp() < error_until)
		{
			/* woken (by a commit) during an error backoff: keep waiting */
			wait_ms = ms_until(error_until);
		}
		else
		{
			wait_ms = delivery_cycle(cxt, &errors, &said_no_extension);
			if (errors > 0)
				error_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														  wait_ms);
		}

		/* the clean-up of old sent rows, when idle or once a minute */
		if ((metronome_retain_sent >= 0 || metronome_event_retention >= 0) && !said_no_extension &&
			GetCurrentTimestamp() >= next_cleanup)
		{
			bool		more = retain_cleanup(cxt);

			/* once a minute, or as often as the retentions ask */
			int64		every = RETAIN_EVERY_MS;

			if (metronome_retain_sent >= 0)
				every = Min(every, Max(1000, (int64) metronome_retain_sent * 1000));
			if (metronome_event_retention >= 0)
				every = Min(every, Max(1000, (int64) metronome_event_retention * 1000));
			next_cleanup = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   more ? 1000 : every);
		}

		if (wait_ms > 0 && (metronome_retain_sent >= 0 || metronome_event_retention >= 0) && !said_no_extension)
			wait_ms = Min(wait_ms, Max(ms_until(next_cleanup), 1));
		if (wait_ms > 0)
		{
			pgstat_report_stat(true);
			wait_latch(wait_ms);
		}
	}
}
