/*-------------------------------------------------------------------------
 *
 * retain.c
 *	  Keeping the inbox segment_events as long as the operator wants:
 *	  metronome.retain_events, RetainDeleteEvents() for the delivery
 *	  worker's housekeeping and metronome_retain_events() for an operator
 *	  (or a pg_cron job) to call.
 *
 * An event of segment_events is mapped by the trigger metronome_map in the
 * transaction that inserts it, so every committed event of a table that
 * carries the trigger has been mapped: its outbox rows (or rejected rows)
 * no longer need it.  Two cases are kept all the same, because a mapping
 * has not happened for them:
 *
 *	  - every event, while segment_events has no enabled trigger
 *		metronome_map (an operator who detached it maps its rows some other
 *		way, later: metronome_backfill);
 *	  - the events an unfinished metronome_backfill over segment_events has
 *		not reached yet (id > its last_key; all of them before its first
 *		batch).
 *
 * Removal walks segment_events in id order (its primary key: no index on
 * received_at is needed, and inserts pay for none) and deletes the oldest
 * events up to the first one younger than the cut-off, at most `limit` per
 * call: ids and received_at grow together, so what is left is young.  An
 * event inserted with an old received_at behind a young one waits until
 * that one is old too.
 *
 * For an inbox that should not be emptied row by row at all, README's
 * "Operating" section shows a partitioned inbox kept by pg_partman, whose
 * retention drops whole partitions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "metronome.h"
#include "miscadmin.h"
#include "retain.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(metronome_retain_events);

static int64 retain_delete(Oid relid, TimestampTz cutoff, int64 limit);

/*
 * Delete up to limit events of relid received before cutoff (see the
 * banner); SPI must not be connected.  Returns how many.
 */
static int64
retain_delete(Oid relid, TimestampTz cutoff, int64 limit)
{
	Oid			backfills = MetronomeRelid("metronome_backfills", true);
	const char *schema = MetronomeSchemaName();
	char	   *sql;
	Datum		values[3];
	Oid			types[3] = {OIDOID, TIMESTAMPTZOID, INT8OID};
	int			ret;
	int64		n;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* no enabled mapping trigger: its events are not being mapped */
	values[0] = ObjectIdGetDatum(relid);
	ret = SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_trigger "
								"WHERE tgrelid = $1 AND tgname = 'metronome_map' "
								"AND tgenabled <> 'D'",
								1, types, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_trigger");
	if (SPI_processed == 0)
	{
		SPI_finish();
		return 0;
	}

	/*
	 * The first event no unfinished backfill over this table has passed
	 * yet bounds the removal (segment_events' key is its bigint id).
	 */
	sql = psprintf("DELETE FROM %1$s.segment_events WHERE id IN ("
				   " SELECT id FROM ("
				   "  SELECT id, pg_catalog.bool_and(received_at < $2) OVER (ORDER BY id) AS old"
				   "    FROM (SELECT id, received_at FROM %1$s.segment_events"
				   "           ORDER BY id LIMIT $3) oldest) o"
				   "  WHERE old%2$s)",
				   schema,
				   OidIsValid(backfills) ?
				   psprintf(" AND id <= coalesce("
							"(SELECT pg_catalog.min(coalesce(b.last_key::bigint, 0))"
							"   FROM %s.metronome_backfills b"
							"  WHERE b.source = $1 AND b.finished_at IS NULL),"
							" 9223372036854775807)", schema) :
				   " AND $1 IS NOT NULL");
	values[1] = TimestampTzGetDatum(cutoff);
	values[2] = Int64GetDatum(limit);
	ret = SPI_execute_with_args(sql, 3, types, values, NULL, false, 0);
	if (ret != SPI_OK_DELETE)
		elog(ERROR, "could not delete from segment_events: %s",
			 SPI_result_code_string(ret));
	n = (int64) SPI_processed;
	SPI_finish();
	return n;
}

/*
 * For the delivery worker's housekeeping, in its transaction: delete up to
 * limit events older than metronome.retain_events.  Returns how many, or
 * -1 when there is nothing to do (retain_events = -1, no extension, or
 * segment_events locked by DDL: the worker steps aside).
 */
int64
RetainDeleteEvents(int64 limit)
{
	Oid			relid;
	int64		n;
	bool		pushed = false;

	if (metronome_event_retention < 0)
		return -1;
	relid = MetronomeRelid("segment_events", true);
	if (!OidIsValid(relid))
		return -1;
	if (!ConditionalLockRelationOid(relid, RowExclusiveLock))
		return -1;
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		return -1;
	/* the worker's transaction has no snapshot of its own yet */
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	n = retain_delete(relid,
					  GetCurrentTimestamp() -
					  (int64) metronome_event_retention * USECS_PER_SEC,
					  limit);
	if (pushed)
		PopActiveSnapshot();
	return n;
}

/*
 * metronome_retain_events(older_than interval DEFAULT NULL,
 *						   max_rows integer DEFAULT 100000) -> bigint
 *
 * Delete the mapped events of segment_events received more than older_than
 * (NULL: metronome.retain_events) ago, at most max_rows; returns how many.
 */
Datum
metronome_retain_events(PG_FUNCTION_ARGS)
{
	Oid			relid = MetronomeRelid("segment_events", false);
	TimestampTz cutoff;
	int64		limit = PG_ARGISNULL(1) ? 100000 : PG_GETARG_INT32(1);

	if (limit < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be at least 1")));
	if (PG_ARGISNULL(0))
	{
		if (metronome_event_retention < 0)
		{
			ereport(NOTICE,
					(errmsg("metronome.retain_events is -1: events are kept"),
					 errhint("Set metronome.retain_events, or pass how old the events to remove are.")));
			PG_RETURN_INT64(0);
		}
		cutoff = GetCurrentTimestamp() -
			(int64) metronome_event_retention * USECS_PER_SEC;
	}
	else
	{
		Datum		d = DirectFunctionCall2(timestamptz_mi_interval,
											TimestampTzGetDatum(GetCurrentTimestamp()),
											PG_GETARG_DATUM(0));

		cutoff = DatumGetTimestampTz(d);
	}
	LockRelationOid(relid, RowExclusiveLock);
	PG_RETURN_INT64(retain_delete(relid, cutoff, limit));
}
