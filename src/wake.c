/*-------------------------------------------------------------------------
 *
 * wake.c
 *	  Waking the delivery worker when a transaction that wrote outbox rows
 *	  commits (placeholder: the real implementation follows).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "delivery.h"
#include "fmgr.h"

PG_FUNCTION_INFO_V1(metronome_wake);

/*
 * Wake the worker at commit (not wired to the worker yet).
 */
void
DeliveryWakeAtCommit(void)
{
}

/*
 * Statement-level trigger on metronome_outbox: wake the worker at commit.
 */
Datum
metronome_wake(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("metronome_wake() must be called as a trigger")));
	DeliveryWakeAtCommit();
	return PointerGetDatum(NULL);
}
