/*-------------------------------------------------------------------------
 *
 * wake.c
 *	  Waking the delivery worker when a transaction that wrote outbox rows
 *	  commits.
 *
 * A statement that writes outbox rows (the mapping trigger, or the
 * statement-level trigger metronome_wake on metronome_outbox for direct
 * INSERTs and metronome_retry()) calls DeliveryWakeAtCommit().  That only
 * sets a flag; a transaction callback sets the worker's latch at COMMIT, so
 * the rows are visible when the worker looks, and a rolled-back
 * transaction wakes nobody.  The worker itself, and a session while it
 * runs metronome_ship(), update the outbox without waking anyone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "delivery.h"
#include "fmgr.h"

PG_FUNCTION_INFO_V1(metronome_wake);

static bool wake_pending = false;
static bool callback_registered = false;

/*
 * Transaction callback: set the worker's latch once the transaction that
 * wrote rows has committed; forget it on abort.
 */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	(void) arg;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
			{
				wake_pending = false;
				StatusWakeWorker();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* a prepared transaction is found by the next poll */
			wake_pending = false;
			break;
		default:
			break;
	}
}

/*
 * Wake the worker when the current transaction commits.  No-op in the
 * worker itself, while this session ships, and without a worker.
 */
void
DeliveryWakeAtCommit(void)
{
	if (!StatusIsShared() || AmDeliveryWorker() || ShipInProgress())
		return;
	if (!callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		callback_registered = true;
	}
	wake_pending = true;
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
