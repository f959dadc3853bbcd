/*-------------------------------------------------------------------------
 *
 * floor.c
 *	  bench_floor: the database-only floor of the delivery design, for the
 *	  benchmarks of test/bench/ only (never installed by `make install`).
 *
 * The floor is what shipping costs the database when HTTP costs nothing:
 * the same claim and acknowledgement as the delivery worker, with no
 * request.  The extension exports that cycle as a C entry point and keeps
 * it out of its SQL surface; this module gives it a SQL name in the
 * benchmark's throwaway server:
 *
 *	CREATE FUNCTION bench_floor_cycle(integer) RETURNS bigint
 *		AS '$libdir/bench_floor' LANGUAGE C;
 *
 * One call is one cycle in the caller's transaction; it returns how many
 * rows it acknowledged (0: nothing was due).  The benchmark loops over it
 * with a COMMIT after each call, as the worker does.
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
#include "fmgr.h"
#include "miscadmin.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bench_floor_cycle);

/*
 * bench_floor_cycle(max_events integer) -> bigint
 *
 * One delivery cycle without HTTP (ShipCycle in dry-run mode): claims due
 * rows and acknowledges them as a 2xx would.  NULL or 0: as many as one
 * cycle takes.
 */
Datum
bench_floor_cycle(PG_FUNCTION_ARGS)
{
	ShipResult	r;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to run bench_floor_cycle()")));
	ShipCycle(true, PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0), &r);
	PG_RETURN_INT64(r.accepted);
}
