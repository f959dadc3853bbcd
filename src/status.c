/*-------------------------------------------------------------------------
 *
 * status.c
 *	  Shared-memory state of the delivery worker and metronome_status()
 *	  (placeholder: the real implementation follows).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "delivery.h"
#include "fmgr.h"

PG_FUNCTION_INFO_V1(metronome_status);

/*
 * metronome_status() -> record
 */
Datum
metronome_status(PG_FUNCTION_ARGS)
{
	(void) fcinfo;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("metronome_status() is not implemented yet")));
	PG_RETURN_NULL();
}
