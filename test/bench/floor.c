/*-------------------------------------------------------------------------
 *
 * floor.c
 *	  bench_floor: the database-only floor of the delivery design, for the
 *	  benchmarks of test/bench/ only (never installed by `make install`).
 *
 * The floor is what shipping costs the database when HTTP costs nothing:
 * the same claim and acknowledgement as the delivery worker, every row
 * "accepted", no request.  The extension exports that cycle as a C entry
 * point (ShipCycle with dry_run, delivery.h) and keeps it out of its SQL
 * surface; this module gives it a SQL name in the benchmark's throwaway
 * server.  Two builds, chosen by the benchmark script from delivery.h:
 *
 *	0.2.0's queue (-DBENCH_FLOOR_PROCEDURE): a procedure
 *		CREATE PROCEDURE bench_floor() AS '$libdir/bench_floor' LANGUAGE C;
 *	  that runs cycles with SHIP_PROCEDURE, as CALL metronome_ship() does:
 *	  each cycle's claim and acknowledgement are short transactions that
 *	  commit, like the worker's, until a cycle claims nothing.
 *	0.1.0's outbox: a function, one cycle in the caller's transaction
 *		CREATE FUNCTION bench_floor_cycle(integer) RETURNS bigint
 *			AS '$libdir/bench_floor' LANGUAGE C;
 *	  returning the rows it marked sent; the script loops over it with a
 *	  COMMIT after each call, as 0.1.0's worker commits each cycle.
 *
 * It is linked against nothing: metronome.so is preloaded in the server
 * (shared_preload_libraries), and PostgreSQL loads libraries with
 * RTLD_GLOBAL, so the extension's exported symbols resolve when this
 * module is loaded.  Built by the benchmark script with cc against the
 * installed server's headers and the extension's src/ headers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "delivery.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"

PG_MODULE_MAGIC;

static void floor_check_superuser(void);

/*
 * Only superusers: the floor acknowledges rows without sending them.
 */
static void
floor_check_superuser(void)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to run the benchmark floor")));
}

#ifdef BENCH_FLOOR_PROCEDURE

PG_FUNCTION_INFO_V1(bench_floor);

/*
 * CALL bench_floor()
 *
 * Dry-run cycles, each with its own claim and acknowledgement
 * transactions, until three in a row claim nothing (a cycle may claim
 * nothing while it only moves the cursor to a new batch, or re-stamps the
 * queue on its first run in a cluster).  Refused inside a transaction
 * block (the cycles commit).
 */
Datum
bench_floor(PG_FUNCTION_ARGS)
{
	ShipResult	r;
	int			empty = 0;

	floor_check_superuser();
	if (fcinfo->context == NULL || !IsA(fcinfo->context, CallContext) ||
		((CallContext *) fcinfo->context)->atomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("bench_floor() cannot run inside a transaction block"),
				 errhint("Run CALL bench_floor() on its own.")));
	/* the worker's process setup (worker.c) */
	WorkerTuneMemory();
	if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (;;)
	{
		ShipCycle(SHIP_PROCEDURE, true, 0, &r);
		if (r.no_extension || r.locked || r.busy || r.gated)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the benchmark floor cannot claim"),
					 errdetail("The cycle reported %s.",
							   r.no_extension ? "no extension" :
							   r.locked ? "the outbox locked" :
							   r.busy ? "another shipper at work" :
							   "the gate closed")));
		empty = r.claimed == 0 ? empty + 1 : 0;
		if (empty == 3)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	SPI_finish();
	/* the claim memory was kept between cycles, as the worker keeps it */
	ShipReleaseMemory();
	PG_RETURN_VOID();
}

#else

PG_FUNCTION_INFO_V1(bench_floor_cycle);

/*
 * bench_floor_cycle(max_events integer) -> bigint
 *
 * One dry-run cycle in the caller's transaction: claims due rows and marks
 * them sent as a 2xx would.  NULL or 0: as many as one cycle takes.
 */
Datum
bench_floor_cycle(PG_FUNCTION_ARGS)
{
	ShipResult	r;

	floor_check_superuser();
	ShipCycle(true, PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0), &r);
	PG_RETURN_INT64(r.accepted);
}

#endif
