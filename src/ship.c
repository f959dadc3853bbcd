/*-------------------------------------------------------------------------
 *
 * ship.c
 *	  One shipping cycle, shared by the worker and metronome_ship()
 *	  (placeholder: the real implementation follows).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "delivery.h"
#include "fmgr.h"

PG_FUNCTION_INFO_V1(metronome_ship);
PG_FUNCTION_INFO_V1(metronome_check_connection);

/*
 * metronome_ship(max_events integer) -> bigint
 */
Datum
metronome_ship(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("metronome_ship() is not implemented yet")));
	PG_RETURN_INT64(0);
}

/*
 * metronome_check_connection() -> text
 */
Datum
metronome_check_connection(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("metronome_check_connection() is not implemented yet")));
	PG_RETURN_NULL();
}
