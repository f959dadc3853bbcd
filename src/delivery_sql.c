/*-------------------------------------------------------------------------
 *
 * delivery_sql.c
 *	  The SQL surface of the delivery that is not a shipping cycle:
 *	  metronome_status(), metronome_rate_limit().  (CALL metronome_ship() and
 *	  metronome_check_connection() are in ship.c, next to the HTTP client
 *	  they drive.)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "delivery.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "metronome.h"
#include "ratelimit.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(metronome_status);
PG_FUNCTION_INFO_V1(metronome_rate_limit);

/*
 * metronome_status() -> (worker_pid, state, pending, failed, oldest_pending,
 *		last_success_at, last_error, last_error_at, sent_total, requests_total)
 *
 * The worker's live state from shared memory, and the queue's figures from
 * this database's outbox (each counted through its partial index).
 */
Datum
metronome_status(PG_FUNCTION_ARGS)
{
	DeliveryStatusView snap;
	TupleDesc	tupdesc;
	Datum		values[10];
	bool		nulls[10];
	char	   *sql;
	int			ret;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	StatusRead(&snap);

	memset(nulls, 0, sizeof(nulls));

	if (snap.worker_pid != 0)
		values[0] = Int32GetDatum((int32) snap.worker_pid);
	else
		nulls[0] = true;

	/* a gate in force shows as backoff even between two worker cycles */
	if (snap.gate_kind == DELIVERY_GATE_TRANSIENT &&
		snap.gate_until > GetCurrentTimestamp() &&
		(snap.state == DELIVERY_IDLE || snap.state == DELIVERY_SHIPPING))
		snap.state = DELIVERY_BACKOFF;
	values[1] = CStringGetTextDatum(DeliveryStateName(snap.state));

	/*
	 * Pending queue rows are those after the cursor: an index range on
	 * (txid, id) from last_snap's xmin, not a scan of the history.
	 */
	sql = psprintf("WITH d AS (SELECT * FROM %1$s.metronome_delivery dd"
				   " ORDER BY dd.system_id IS NULL LIMIT 1),"
				   " q AS (SELECT q.created_at FROM %1$s.metronome_queue q, d"
				   " WHERE q.txid >= pg_catalog.pg_snapshot_xmin(d.last_snap)"
				   " AND NOT %1$s.metronome_acked(q.txid, q.id, d.last_snap, d.cur_snap, d.pos_txid, d.pos_id)"
				   " AND NOT EXISTS (SELECT 1 FROM %1$s.metronome_outbox_state s WHERE s.id = q.id))"
				   " SELECT (SELECT count(*) FROM q) +"
				   " (SELECT count(*) FROM %1$s.metronome_outbox_state WHERE status = 'pending'),"
				   " (SELECT count(*) FROM %1$s.metronome_outbox_state WHERE status = 'failed'),"
				   " LEAST((SELECT min(created_at) FROM q),"
				   " (SELECT min(created_at) FROM %1$s.metronome_outbox_state WHERE status = 'pending'))",
				   MetronomeSchemaName());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute(sql, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not count the outbox: %s", SPI_result_code_string(ret));
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		/* copied out of SPI's memory (by reference on 32-bit builds) */
		for (int i = 0; i < 3; i++)
		{
			Datum		d = SPI_getbinval(tup, desc, i + 1, &isnull);

			nulls[2 + i] = isnull;
			values[2 + i] = isnull ? (Datum) 0 :
				SPI_datumTransfer(d, FLOAT8PASSBYVAL, sizeof(int64));
		}
	}
	SPI_finish();

	if (snap.last_success_at != 0)
		values[5] = TimestampTzGetDatum(snap.last_success_at);
	else
		nulls[5] = true;
	if (snap.last_error_at != 0)
	{
		values[6] = CStringGetTextDatum(snap.last_error);
		values[7] = TimestampTzGetDatum(snap.last_error_at);
	}
	else
		nulls[6] = nulls[7] = true;
	values[8] = Int64GetDatum((int64) snap.sent_total);
	values[9] = Int64GetDatum((int64) snap.requests_total);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * metronome_rate_limit() -> (setting, shared, rate, burst, tokens,
 *		slowdown, slowdown_rate, slowdown_peak, slowdowns, observed_rate)
 *
 * The server's rate limit (ratelimit.c): the setting in force, the
 * effective rate (NULL: no limit), the bucket, the adaptive slowdown, and
 * the events started in the last second.
 */
Datum
metronome_rate_limit(PG_FUNCTION_ARGS)
{
	RateLimitView v;
	TupleDesc	tupdesc;
	Datum		values[10];
	bool		nulls[10];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	RateLimitRead(&v);
	memset(nulls, 0, sizeof(nulls));
	values[0] = Int32GetDatum(v.setting);
	values[1] = BoolGetDatum(v.shared);
	values[2] = Float8GetDatum(v.rate);
	values[3] = Float8GetDatum(v.burst);
	values[4] = Float8GetDatum(v.tokens);
	nulls[2] = nulls[3] = nulls[4] = (v.rate <= 0);
	values[5] = BoolGetDatum(v.slowdown);
	values[6] = Float8GetDatum(v.slowdown_rate);
	nulls[6] = !v.slowdown;
	values[7] = Float8GetDatum(v.slowdown_peak);
	nulls[7] = (v.slowdowns == 0);
	values[8] = Int64GetDatum(v.slowdowns);
	values[9] = Float8GetDatum(v.observed);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
