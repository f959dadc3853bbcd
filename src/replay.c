/*-------------------------------------------------------------------------
 *
 * replay.c
 *	  Mapping stored events again, through one mapping: the engine of
 *	  metronome_replay_rejected() and of the procedure metronome_backfill()
 *	  (both in SQL, in metronome--0.1.0--0.2.0.sql).
 *
 * metronome_map_batch(mapping, events jsonb[], write_rejected) maps an
 * array of events by the named enabled mapping, with the engine the
 * mapping trigger uses (mapping.h: the compiled, cached mapping set, and
 * MapEvent), and writes the outbox rows with the set's own prepared
 * INSERT ... ON CONFLICT (transaction_id) DO NOTHING, so a replay or a
 * backfill that meets an event already in the outbox skips it, exactly as
 * the trigger does, whatever the outbox's storage is.  It returns one
 * outcome per event, in order:
 *
 *	  mapped	 the event maps: its outbox row is written (or was there
 *				 already: written counts the new ones, mapped - written are
 *				 the duplicates skipped)
 *	  rejected	 the mapping's subscription matches but a field cannot be
 *				 mapped; errors[i] says why (and, with write_rejected, a
 *				 metronome_rejected row keeps it)
 *	  unmatched	 the mapping's subscription does not match the event
 *
 * The callers keep the batches bounded (metronome_backfill commits after
 * each one), so a batch's values are simply held until its two INSERTs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "delivery.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mapping.h"
#include "metronome.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(metronome_map_batch);

static const CompiledMapping *replay_find_mapping(MappingSet *set, const char *name);
static Datum replay_array(Datum *values, bool *nulls, int n, Oid elemtype);

/*
 * The enabled mapping called name in the current set; an error when there
 * is none.
 */
static const CompiledMapping *
replay_find_mapping(MappingSet *set, const char *name)
{
	int			i;

	for (i = 0; i < set->nmappings; i++)
	{
		if (strcmp(set->mappings[i].name, name) == 0)
			return &set->mappings[i];
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("mapping \"%s\" does not exist or is not enabled", name),
			 errhint("Events are mapped only by enabled rows of metronome_mappings.")));
	return NULL;				/* keep the compiler quiet */
}

/*
 * A one-dimensional array of n values (nulls may be NULL: none is null).
 */
static Datum
replay_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	if (n == 0)
		return PointerGetDatum(construct_empty_array(elemtype));
	dims[0] = n;
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs,
											  elemtype, typlen, typbyval,
											  typalign));
}

/*
 * metronome_map_batch(mapping text, events jsonb[], write_rejected boolean)
 *	 -> (outcomes text[], errors text[], mapped bigint, written bigint,
 *		 rejected bigint, unmatched bigint)
 *
 * Maps each event by the named enabled mapping (see the banner).  A NULL
 * element, or an event that is not a JSON object, is rejected, as the
 * trigger rejects it.
 */
Datum
metronome_map_batch(PG_FUNCTION_ARGS)
{
	char	   *name;
	ArrayType  *arr;
	bool		write_rejected;
	Datum	   *events;
	bool	   *event_nulls;
	int			n;
	TupleDesc	tupdesc;
	MappingSet *set;
	const CompiledMapping *m;
	TimestampTz now = GetCurrentTimestamp();
	MemoryContext caller = CurrentMemoryContext;
	Datum	   *outcomes;
	Datum	   *errors;
	bool	   *error_nulls;
	Datum	   *ocols[6];
	Datum	   *rcols[3];
	int			nout = 0;
	int			nrej = 0;
	int64		mapped = 0;
	int64		written = 0;
	int64		rejected = 0;
	int64		unmatched = 0;
	Jsonb	   *null_event;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	int			i;
	int			c;
	MetronomeAsOwner sw;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("mapping and events must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	arr = PG_GETARG_ARRAYTYPE_P(1);
	write_rejected = PG_ARGISNULL(2) ? true : PG_GETARG_BOOL(2);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("events must be a one-dimensional array")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	deconstruct_array(arr, JSONBOID, -1, false, TYPALIGN_INT,
					  &events, &event_nulls, &n);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	set = MappingsGet();
	m = replay_find_mapping(set, name);
	/* everything below, the results included, outlives SPI_finish */
	MemoryContextSwitchTo(caller);

	outcomes = palloc(sizeof(Datum) * Max(n, 1));
	errors = palloc(sizeof(Datum) * Max(n, 1));
	error_nulls = palloc(sizeof(bool) * Max(n, 1));
	for (c = 0; c < 6; c++)
		ocols[c] = palloc(sizeof(Datum) * Max(n, 1));
	for (c = 0; c < 3; c++)
		rcols[c] = palloc(sizeof(Datum) * Max(n, 1));
	null_event = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("null")));

	for (i = 0; i < n; i++)
	{
		Jsonb	   *event = event_nulls[i] ? null_event : DatumGetJsonbP(events[i]);
		MappedEvent me;
		const char *error = NULL;

		CHECK_FOR_INTERRUPTS();
		error_nulls[i] = true;
		errors[i] = (Datum) 0;

		if (!JB_ROOT_IS_OBJECT(event))
			error = JB_ROOT_IS_SCALAR(event) ?
				"event is not a JSON object (it is a scalar)" :
				"event is not a JSON object (it is an array)";
		else if (m->invalid == NULL && !FqlEval(m->subscription, event))
		{
			outcomes[i] = CStringGetTextDatum("unmatched");
			unmatched++;
			continue;
		}
		else
		{
			/* the mapped values are kept until the INSERT below */
			MapEvent(m, event, now, &me);
			error = me.error;
		}

		if (error != NULL)
		{
			outcomes[i] = CStringGetTextDatum("rejected");
			errors[i] = CStringGetTextDatum(error);
			error_nulls[i] = false;
			rejected++;
			if (write_rejected)
			{
				rcols[0][nrej] = CStringGetTextDatum(m->name);
				rcols[1][nrej] = JsonbPGetDatum(event);
				rcols[2][nrej] = errors[i];
				nrej++;
			}
			continue;
		}

		outcomes[i] = CStringGetTextDatum("mapped");
		mapped++;
		ocols[0][nout] = PointerGetDatum(me.fields_text[FIELD_TRANSACTION_ID]);
		ocols[1][nout] = PointerGetDatum(me.fields_text[FIELD_CUSTOMER_ID]);
		ocols[2][nout] = PointerGetDatum(me.fields_text[FIELD_EVENT_TYPE]);
		ocols[3][nout] = TimestampTzGetDatum(me.timestamp);
		ocols[4][nout] = JsonbPGetDatum(me.properties);
		ocols[5][nout] = CStringGetTextDatum(m->name);
		nout++;
	}

	/* The writes run as the extension owner, as the trigger's do. */
	MetronomeBeginAsOwner(set->owner, &sw);
	if (nout > 0)
	{
		written = (int64) MappingsInsertOutbox(set, ocols, nout);
		if (written > 0)
			DeliveryWakeAtCommit();
	}
	if (nrej > 0)
	{
		Datum		args[3];

		args[0] = replay_array(rcols[0], NULL, nrej, TEXTOID);
		args[1] = replay_array(rcols[1], NULL, nrej, JSONBOID);
		args[2] = replay_array(rcols[2], NULL, nrej, TEXTOID);
		if (SPI_execute_plan(set->insert_rejected, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into metronome_rejected");
	}
	MetronomeEndAsOwner(&sw);
	SPI_finish();

	values[0] = replay_array(outcomes, NULL, n, TEXTOID);
	values[1] = replay_array(errors, error_nulls, n, TEXTOID);
	values[2] = Int64GetDatum(mapped);
	values[3] = Int64GetDatum(written);
	values[4] = Int64GetDatum(rejected);
	values[5] = Int64GetDatum(unmatched);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
