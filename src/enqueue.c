/*-------------------------------------------------------------------------
 *
 * enqueue.c
 *	  Mapping events into the outbox: the trigger metronome_map_trigger(),
 *	  metronome_enqueue(event) and the side-effect-free preview
 *	  metronome_map(event).
 *
 * For each event and each enabled mapping whose subscription matches, the
 * five fields are resolved (mapkit.c), coerced and checked (fields.c), and
 * the result is either an outbox row or, when the pair cannot be mapped, a
 * metronome_rejected row with the reason (or an error that aborts the
 * INSERT, with metronome.on_mapping_error = 'error').  Nothing is dropped.
 * The one exception is the restore of a dump: see restoring_dump().
 *
 * Rows are written in batches: the mapped values are collected into arrays
 * and written by one prepared INSERT ... SELECT FROM unnest(...) ON CONFLICT
 * (transaction_id) DO NOTHING per batch, so a multi-row INSERT or a COPY into
 * a table with the statement-level trigger (what metronome_attach creates)
 * costs one executor run per thousand events, not one per event.  A
 * duplicate transaction_id is skipped, never an error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "delivery.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "mapping.h"
#include "metronome.h"
#include "miscadmin.h"
#include "pg_compat.h"
#include "nodes/makefuncs.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(metronome_map_trigger);
PG_FUNCTION_INFO_V1(metronome_enqueue);
PG_FUNCTION_INFO_V1(metronome_map);

/* rows collected before one INSERT writes them */
#define WRITER_BATCH_ROWS 1000
/* ... or this many bytes of mapped values */
#define WRITER_BATCH_BYTES (4 * 1024 * 1024)
/* how much of an event an error message quotes */
#define EVENT_QUOTE_CHARS 200

/*
 * Collects mapped and rejected rows, and writes them in batches.
 */
typedef struct OutboxWriter
{
	MappingSet *set;
	MemoryContext batch_cxt;	/* the collected values; reset per flush */
	int			nrows;
	Datum		cols[6][WRITER_BATCH_ROWS]; /* outbox columns */
	int			nrejected;
	Datum		rcols[3][WRITER_BATCH_ROWS];	/* rejected columns */
	bool		rnull[WRITER_BATCH_ROWS];	/* rejected.mapping is null */
	Size		bytes;
	int64		written;		/* outbox rows inserted (not duplicates) */
	int64		rejected;
} OutboxWriter;

/*
 * Resolve, coerce and check the five fields of one (event, mapping) pair.
 */
void
MapEvent(const CompiledMapping *m, Jsonb *event, TimestampTz now, MappedEvent *out)
{
	JsonbValue *values[NUM_FIELDS];
	char	   *err = NULL;
	int			f;

	memset(out, 0, sizeof(*out));
	if (m->invalid)
	{
		out->error = psprintf("mapping \"%s\" is invalid: %s", m->name, m->invalid);
		return;
	}

	for (f = 0; f < NUM_FIELDS; f++)
	{
		values[f] = MapkitEval(m->fields[f], event, &err);
		if (err != NULL)
		{
			out->error = psprintf("%s: %s", MetFieldNames[f], err);
			return;
		}
	}

	if ((err = FieldCoerceText(FIELD_TRANSACTION_ID, values[FIELD_TRANSACTION_ID],
							   &out->fields_text[FIELD_TRANSACTION_ID])) != NULL ||
		(err = FieldCoerceText(FIELD_CUSTOMER_ID, values[FIELD_CUSTOMER_ID],
							   &out->fields_text[FIELD_CUSTOMER_ID])) != NULL ||
		(err = FieldCoerceTimestamp(values[FIELD_TIMESTAMP], now,
									&out->timestamp)) != NULL ||
		(err = FieldCoerceText(FIELD_EVENT_TYPE, values[FIELD_EVENT_TYPE],
							   &out->fields_text[FIELD_EVENT_TYPE])) != NULL ||
		(err = FieldCoerceProperties(values[FIELD_PROPERTIES],
									 &out->properties)) != NULL)
		out->error = err;
}

/*
 * The start of an event's JSON text, for messages.
 */
static char *
event_excerpt(Jsonb *event)
{
	char	   *txt = JsonbToCString(NULL, &event->root, VARSIZE(event));

	if (strlen(txt) > EVENT_QUOTE_CHARS)
		return psprintf("%s...", pnstrdup(txt, pg_mbcliplen(txt, strlen(txt), EVENT_QUOTE_CHARS)));
	return txt;
}

static void
writer_init(OutboxWriter *w, MappingSet *set)
{
	memset(w, 0, offsetof(OutboxWriter, cols));
	w->set = set;
	w->batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
										 "metronome outbox batch",
										 ALLOCSET_DEFAULT_SIZES);
	w->nrows = w->nrejected = 0;
	w->bytes = 0;
	w->written = w->rejected = 0;
}

/*
 * Write what was collected: one INSERT for the outbox rows, one for the
 * rejected rows.
 */
static void
writer_flush(OutboxWriter *w)
{
	static const Oid outbox_elem[6] = {TEXTOID, TEXTOID, TEXTOID,
	TIMESTAMPTZOID, JSONBOID, TEXTOID};
	MemoryContext old = MemoryContextSwitchTo(w->batch_cxt);

	if (w->nrows > 0)
	{
		Datum		args[6];
		int			c;

		for (c = 0; c < 6; c++)
		{
			int16		typlen;
			bool		typbyval;
			char		typalign;

			get_typlenbyvalalign(outbox_elem[c], &typlen, &typbyval, &typalign);
			args[c] = PointerGetDatum(construct_array(w->cols[c], w->nrows,
													  outbox_elem[c], typlen,
													  typbyval, typalign));
		}
		if (SPI_execute_plan(w->set->insert_outbox, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into metronome_outbox");
		if (SPI_processed > 0)
		{
			w->written += SPI_processed;
			DeliveryWakeAtCommit();
		}
	}

	if (w->nrejected > 0)
	{
		Datum		args[3];
		int			dims[1] = {w->nrejected};
		int			lbs[1] = {1};
		bool		nulls[WRITER_BATCH_ROWS];
		int			i;

		for (i = 0; i < w->nrejected; i++)
			nulls[i] = w->rnull[i];
		args[0] = PointerGetDatum(construct_md_array(w->rcols[0], nulls, 1, dims, lbs,
													 TEXTOID, -1, false, TYPALIGN_INT));
		args[1] = PointerGetDatum(construct_array(w->rcols[1], w->nrejected,
												  JSONBOID, -1, false, TYPALIGN_INT));
		args[2] = PointerGetDatum(construct_array(w->rcols[2], w->nrejected,
												  TEXTOID, -1, false, TYPALIGN_INT));
		if (SPI_execute_plan(w->set->insert_rejected, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into metronome_rejected");
		w->rejected += w->nrejected;
	}

	MemoryContextSwitchTo(old);
	MemoryContextReset(w->batch_cxt);
	w->nrows = w->nrejected = 0;
	w->bytes = 0;
}

static void
writer_maybe_flush(OutboxWriter *w)
{
	if (w->nrows >= WRITER_BATCH_ROWS || w->nrejected >= WRITER_BATCH_ROWS ||
		w->bytes >= WRITER_BATCH_BYTES)
		writer_flush(w);
}

/*
 * Collect one mapped row (values are copied into the batch context).
 */
static void
writer_add(OutboxWriter *w, const char *mapping, MappedEvent *me)
{
	MemoryContext old = MemoryContextSwitchTo(w->batch_cxt);
	int			n = w->nrows;
	int			f;
	int			c = 0;

	for (f = 0; f < NUM_FIELDS; f++)
	{
		if (f == FIELD_TIMESTAMP || f == FIELD_PROPERTIES)
			continue;
		w->cols[c][n] = datumCopy(PointerGetDatum(me->fields_text[f]), false, -1);
		w->bytes += VARSIZE_ANY(me->fields_text[f]);
		c++;
	}
	w->cols[3][n] = TimestampTzGetDatum(me->timestamp);
	w->cols[4][n] = datumCopy(JsonbPGetDatum(me->properties), false, -1);
	w->bytes += VARSIZE(me->properties);
	w->cols[5][n] = CStringGetTextDatum(mapping);
	w->nrows++;
	MemoryContextSwitchTo(old);
	writer_maybe_flush(w);
}

/*
 * Collect one rejected (event, mapping) pair, or raise the error when
 * metronome.on_mapping_error = 'error'.
 */
static void
writer_reject(OutboxWriter *w, const char *mapping, Jsonb *event, const char *error)
{
	MemoryContext old;
	int			n = w->nrejected;

	if (metronome_on_mapping_error == ON_MAPPING_ERROR_ERROR)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 mapping ?
				 errmsg("could not map event with mapping \"%s\": %s", mapping, error) :
				 errmsg("could not map event: %s", error),
				 errdetail("The event is: %s", event_excerpt(event)),
				 errhint("With metronome.on_mapping_error = 'reject' such events are kept in metronome_rejected instead.")));

	old = MemoryContextSwitchTo(w->batch_cxt);
	w->rnull[n] = (mapping == NULL);
	w->rcols[0][n] = mapping ? CStringGetTextDatum(mapping) : (Datum) 0;
	w->rcols[1][n] = datumCopy(JsonbPGetDatum(event), false, -1);
	w->rcols[2][n] = CStringGetTextDatum(error);
	w->bytes += VARSIZE(event);
	w->nrejected++;
	MemoryContextSwitchTo(old);
	writer_maybe_flush(w);
}

/*
 * Why an event that is not a JSON object cannot be mapped.
 */
static const char *
not_an_object(Jsonb *event)
{
	return JB_ROOT_IS_SCALAR(event) ?
		"event is not a JSON object (it is a scalar)" :
		"event is not a JSON object (it is an array)";
}

/*
 * Map one event by every enabled mapping whose subscription matches.
 * Temporary allocations go to CurrentMemoryContext (reset by the caller).
 */
static void
map_event_into(OutboxWriter *w, Jsonb *event, TimestampTz now)
{
	MappingSet *set = w->set;
	int			i;

	if (!JB_ROOT_IS_OBJECT(event))
	{
		writer_reject(w, NULL, event, not_an_object(event));
		return;
	}

	for (i = 0; i < set->nmappings; i++)
	{
		CompiledMapping *m = &set->mappings[i];
		MappedEvent me;

		if (m->invalid == NULL && !FqlEval(m->subscription, event))
			continue;
		MapEvent(m, event, now, &me);
		if (me.error)
			writer_reject(w, m->name, event, me.error);
		else
			writer_add(w, m->name, &me);
	}
}

/*
 * The whole row as a jsonb object, as to_jsonb(NEW) would give it.
 */
typedef struct RowToJsonb
{
	FmgrInfo	flinfo;
	TupleDesc	desc;
} RowToJsonb;

static void
row_to_jsonb_init(RowToJsonb *r, Relation rel)
{
	FuncExpr   *expr;

	r->desc = RelationGetDescr(rel);
	fmgr_info(F_TO_JSONB, &r->flinfo);
	/* to_jsonb() reads its argument's type from the call expression */
	expr = makeFuncExpr(F_TO_JSONB, JSONBOID,
						list_make1(makeNullConst(rel->rd_rel->reltype, -1, InvalidOid)),
						InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
	fmgr_info_set_expr((Node *) expr, &r->flinfo);
}

static Jsonb *
row_to_jsonb(RowToJsonb *r, HeapTuple tuple)
{
	Datum		row = heap_copy_tuple_as_datum(tuple, r->desc);

	return DatumGetJsonbP(FunctionCall1(&r->flinfo, row));
}

/*
 * The event of a new row: its jsonb column, or the whole row.  NULL when
 * the column is NULL.
 */
static Jsonb *
event_of_row(HeapTuple tuple, TupleDesc desc, int attnum, RowToJsonb *whole)
{
	bool		isnull;
	Datum		d;

	if (attnum <= 0)
		return row_to_jsonb(whole, tuple);
	d = heap_getattr(tuple, attnum, desc, &isnull);
	return isnull ? NULL : DatumGetJsonbP(d);
}

/*
 * Is this session restoring a dump?  pg_dump's scripts (plain, or played by
 * pg_restore, whose parallel workers do the same) set check_function_bodies
 * = off, client_min_messages = warning and row_security = off before
 * loading data (row_security = on with --enable-row-security).  The
 * extension's tables are dumped with their contents, so events restored
 * into segment_events were mapped already, and mapping them again would
 * re-send events whose outbox rows the retention had deleted, and collide
 * with the restored rows' ids.  check_function_bodies = off alone is not
 * taken for a restore: an ordinary session that turns it off still maps.
 */
static bool
restoring_dump(void)
{
	return !check_function_bodies &&
		(!row_security || client_min_messages == WARNING);
}

/*
 * AFTER INSERT trigger, row- or statement-level (statement-level needs
 * REFERENCING NEW TABLE, as metronome_attach sets it up).  TG_ARGV[0]
 * names the jsonb column holding the event; without it the whole row is the
 * event.
 */
Datum
metronome_map_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	Relation	rel;
	TupleDesc	desc;
	int			attnum = 0;
	RowToJsonb	whole;
	OutboxWriter *w;
	MemoryContext row_cxt;
	MemoryContext old;
	TimestampTz now = GetCurrentTimestamp();
	Jsonb	   *null_event = NULL;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("metronome_map_trigger() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("metronome_map_trigger() must be an AFTER INSERT trigger"),
				 errhint("Use metronome_attach(table, column) to create the trigger.")));

	trigger = td->tg_trigger;
	rel = td->tg_relation;
	desc = RelationGetDescr(rel);

	if (trigger->tgnargs > 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("metronome_map_trigger() takes at most one argument"),
				 errhint("Name the jsonb column that holds the event, or none to map the whole row.")));
	if (trigger->tgnargs == 1)
	{
		attnum = SPI_fnumber(desc, trigger->tgargs[0]);
		if (attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"%s\" does not exist",
							trigger->tgargs[0], RelationGetRelationName(rel)),
					 errhint("The argument of trigger \"%s\" must name the jsonb column that holds the event.",
							 trigger->tgname)));
		if (TupleDescAttr(desc, attnum - 1)->atttypid != JSONBOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" of relation \"%s\" is not of type jsonb",
							trigger->tgargs[0], RelationGetRelationName(rel))));
	}
	else
		row_to_jsonb_init(&whole, rel);

	if (TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) && td->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("statement-level trigger \"%s\" needs a transition table", trigger->tgname),
				 errhint("Create it with metronome_attach(), or add REFERENCING NEW TABLE AS new_rows.")));

	if (restoring_dump())
		return PointerGetDatum(NULL);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	w = palloc(sizeof(OutboxWriter));
	writer_init(w, MappingsGet());
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "metronome event",
									ALLOCSET_DEFAULT_SIZES);

	/* a NULL event column is mapped as the JSON null (and so rejected) */
	if (attnum > 0)
		null_event = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("null")));

	if (w->set->nmappings > 0)
	{
		if (TRIGGER_FIRED_FOR_ROW(td->tg_event))
		{
			Jsonb	   *event;

			old = MemoryContextSwitchTo(row_cxt);
			event = event_of_row(td->tg_trigtuple, desc, attnum, &whole);
			if (event == NULL)
				event = null_event;
			map_event_into(w, event, now);
			MemoryContextSwitchTo(old);
		}
		else
		{
			Tuplestorestate *ts = td->tg_newtable;
			TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
			int			ptr = tuplestore_alloc_read_pointer(ts, 0);

			tuplestore_select_read_pointer(ts, ptr);
			tuplestore_rescan(ts);
			while (tuplestore_gettupleslot(ts, true, false, slot))
			{
				HeapTuple	tuple;
				bool		should_free;
				Jsonb	   *event;

				CHECK_FOR_INTERRUPTS();
				old = MemoryContextSwitchTo(row_cxt);
				tuple = ExecFetchSlotHeapTuple(slot, false, &should_free);
				event = event_of_row(tuple, desc, attnum, &whole);
				if (event == NULL)
					event = null_event;
				map_event_into(w, event, now);
				MemoryContextSwitchTo(old);
				MemoryContextReset(row_cxt);
			}
			tuplestore_select_read_pointer(ts, 0);
			ExecDropSingleTupleTableSlot(slot);
		}
		writer_flush(w);
	}

	SPI_finish();
	return PointerGetDatum(NULL);
}

/*
 * metronome_enqueue(event jsonb) -> integer: map one event and write its
 * outbox (or rejected) rows; returns the outbox rows written.
 */
Datum
metronome_enqueue(PG_FUNCTION_ARGS)
{
	Jsonb	   *event = PG_GETARG_JSONB_P(0);
	OutboxWriter *w;
	int64		written;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	w = palloc(sizeof(OutboxWriter));
	writer_init(w, MappingsGet());
	map_event_into(w, event, GetCurrentTimestamp());
	writer_flush(w);
	written = w->written;
	SPI_finish();
	PG_RETURN_INT32((int32) written);
}

/*
 * metronome_map(event jsonb): preview, no side effects.  One row per
 * enabled mapping whose subscription matches, with the mapped fields or the
 * error.
 */
Datum
metronome_map(PG_FUNCTION_ARGS)
{
	Jsonb	   *event = PG_GETARG_JSONB_P(0);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MappingSet *set;
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	InitMaterializedSRF(fcinfo, 0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	set = MappingsGet();

	if (!JB_ROOT_IS_OBJECT(event))
	{
		Datum		values[7] = {0};
		bool		nulls[7] = {true, true, true, true, true, true, false};

		values[6] = CStringGetTextDatum(not_an_object(event));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		SPI_finish();
		return (Datum) 0;
	}

	for (i = 0; i < set->nmappings; i++)
	{
		CompiledMapping *m = &set->mappings[i];
		MappedEvent me;
		Datum		values[7] = {0};
		bool		nulls[7] = {false, true, true, true, true, true, true};

		if (m->invalid == NULL && !FqlEval(m->subscription, event))
			continue;
		MapEvent(m, event, now, &me);
		values[0] = CStringGetTextDatum(m->name);
		if (me.error)
		{
			nulls[6] = false;
			values[6] = CStringGetTextDatum(me.error);
		}
		else
		{
			values[1] = PointerGetDatum(me.fields_text[FIELD_TRANSACTION_ID]);
			values[2] = PointerGetDatum(me.fields_text[FIELD_CUSTOMER_ID]);
			values[3] = PointerGetDatum(me.fields_text[FIELD_EVENT_TYPE]);
			values[4] = TimestampTzGetDatum(me.timestamp);
			values[5] = JsonbPGetDatum(me.properties);
			nulls[1] = nulls[2] = nulls[3] = nulls[4] = nulls[5] = false;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}
