/*-------------------------------------------------------------------------
 *
 * wake.c
 *	  Waking the delivery worker when a transaction that wrote outbox rows
 *	  commits.
 *
 * A statement that writes outbox rows (the mapping trigger, a direct INSERT,
 * metronome_retry(): an ExecutorEnd hook sees them all) calls
 * DeliveryWakeAtCommit().  That only
 * sets a flag; a transaction callback sets the worker's latch at COMMIT, so
 * the rows are visible when the worker looks, and a rolled-back
 * transaction wakes nobody.  The worker itself, and a session while it
 * runs metronome_ship(), update the outbox without waking anyone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "delivery.h"
#include "executor/executor.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/rel.h"

static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;
#if PG_VERSION_NUM >= 140000
static ProcessUtility_hook_type prev_ProcessUtility = NULL;
#endif
static bool wake_pending = false;

/* set by the worker (for its life) and by a shipping cycle */
bool		DeliveryWakeSuppressed = false;
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
	if (!StatusIsShared() || DeliveryWakeSuppressed)
		return;
	if (!callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		callback_registered = true;
	}
	wake_pending = true;
}

/* is this the name of a table (or the view) that holds outbox rows? */
static bool
is_outbox_name(const char *name)
{
	return strcmp(name, "metronome_outbox") == 0 ||
		strcmp(name, "metronome_queue") == 0 ||
		strncmp(name, "metronome_queue_", 16) == 0 ||
		strcmp(name, "metronome_outbox_state") == 0;
}

/*
 * Does this query write to a relation that holds outbox rows (the view
 * metronome_outbox, the queue or its segments, the exception rows)?  (Any
 * schema: a spurious wake only makes the worker look.)
 */
static bool
writes_outbox(EState *estate)
{
#if PG_VERSION_NUM >= 140000
	ListCell   *lc;

	foreach(lc, estate->es_opened_result_relations)
	{
		ResultRelInfo *rri = (ResultRelInfo *) lfirst(lc);

		if (is_outbox_name(RelationGetRelationName(rri->ri_RelationDesc)))
			return true;
	}
#else
	int			i;

	for (i = 0; i < estate->es_num_result_relations; i++)
	{
		ResultRelInfo *rri = &estate->es_result_relations[i];

		if (is_outbox_name(RelationGetRelationName(rri->ri_RelationDesc)))
			return true;
	}
#endif
	return false;
}

/*
 * ExecutorEnd hook: a statement that wrote to the outbox (a direct INSERT,
 * metronome_retry(), the mapping trigger's own INSERT) wakes the worker at
 * commit.  A hook rather than a trigger on the outbox: it costs nothing to
 * the statements that do not write there, and no trigger machinery to those
 * that do.
 */
static void
wake_ExecutorEnd(QueryDesc *queryDesc)
{
	if (queryDesc->estate != NULL && writes_outbox(queryDesc->estate))
		DeliveryWakeAtCommit();
	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

#if PG_VERSION_NUM >= 140000
/*
 * ProcessUtility hook: COPY ... FROM into a relation named
 * metronome_outbox does not go through ExecutorEnd; it wakes the worker
 * at commit too.
 */
static void
wake_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (stmt != NULL && IsA(stmt, CopyStmt) && ((CopyStmt *) stmt)->is_from &&
		((CopyStmt *) stmt)->relation != NULL &&
		is_outbox_name(((CopyStmt *) stmt)->relation->relname))
		DeliveryWakeAtCommit();
}
#endif

/*
 * Install the hooks (from _PG_init, when preloaded: every
 * backend then has it, and without preloading there is no worker to wake).
 */
void
DeliveryInstallWakeHook(void)
{
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = wake_ExecutorEnd;
#if PG_VERSION_NUM >= 140000
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = wake_ProcessUtility;
#endif
}
