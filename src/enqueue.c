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
 * INSERT, with metronome.on_mapping_error = 'error').  Nothing is dropped:
 * a second mapping that builds the same transaction_id for the same event
 * (which ON CONFLICT would silently skip) is a rejected pair too.  Only
 * metronome.skip_mapping (superuser-only, for restoring a dump) and
 * session_replication_role = replica (which PostgreSQL honours for every
 * ordinary trigger) turn mapping off.
 *
 * Trust: the trigger is not SECURITY DEFINER.  Everything that can reach
 * user-defined code (to_jsonb() of the row runs the casts to json of the
 * row's types; the mapping engine itself is pure C over jsonb) runs as the
 * inserting user.  Only the statements on the extension's own tables run
 * as its owner, with SECURITY_RESTRICTED_OPERATION: the load of the
 * mappings (mappings.c) and the write of outbox and rejected rows, all of
 * which is in writer_flush() (MetronomeBeginAsOwner(), metronome.c).  A
 * role allowed only to INSERT into an attached table so still gets its
 * events mapped, and cannot make the owner run its code.
 *
 * Rows are written in batches: the mapped values are collected into arrays
 * and written by one prepared INSERT ... SELECT FROM unnest(...) per batch
 * of up to WRITER_BATCH_ROWS (MappingsInsertOutbox, mappings.c), so a
 * multi-row INSERT or a COPY into a table with the statement-level trigger
 * (what metronome_attach creates) costs one executor run per few thousand
 * events, not one per event.  A duplicate transaction_id is skipped, never
 * an error; how (the unique index of the writing transaction's segment,
 * index probes of the other segments and of the exception rows, a plan
 * pinned whatever the statistics say) is mappings.c's.
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
#include "jsonbval.h"
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

/*
 * Rows collected before one INSERT writes them (large enough that a big
 * INSERT or COPY needs few: each batch of the writer's fast path costs a
 * subtransaction, mappings.c) ...
 */
#define WRITER_BATCH_ROWS 4096
/* ... or this many bytes of mapped values */
#define WRITER_BATCH_BYTES (8 * 1024 * 1024)
/* the column arrays start this long and double up to WRITER_BATCH_ROWS */
#define WRITER_FIRST_ROWS 64
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
	int			cap;			/* room in cols (in the writer's context) */
	Datum	   *cols[6];		/* outbox columns */
	int			nrejected;
	int			rcap;			/* room in rcols and rnull */
	Datum	   *rcols[3];		/* rejected columns */
	bool	   *rnull;			/* rejected.mapping is null */
	Size		bytes;
	int64		written;		/* outbox rows inserted (not duplicates) */
	int64		rejected;
} OutboxWriter;

static const char *transaction_id_taken(text **ids, const char **id_by,
										int nids, text *id);
static bool outbox_has(MappingSet *set, text *id);
static char *shared_transaction_id(const char *mapping, const char *taken_by,
								   text *id);

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

	return TextExcerpt(txt, strlen(txt), EVENT_QUOTE_CHARS);
}

static void
writer_init(OutboxWriter *w, MappingSet *set)
{
	int			c;

	memset(w, 0, sizeof(OutboxWriter));
	w->set = set;
	w->batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
										 "metronome outbox batch",
										 ALLOCSET_DEFAULT_SIZES);
	w->cap = w->rcap = WRITER_FIRST_ROWS;
	for (c = 0; c < 6; c++)
		w->cols[c] = palloc(sizeof(Datum) * WRITER_FIRST_ROWS);
	for (c = 0; c < 3; c++)
		w->rcols[c] = palloc(sizeof(Datum) * WRITER_FIRST_ROWS);
	w->rnull = palloc(sizeof(bool) * WRITER_FIRST_ROWS);
}

/* room for one more outbox row (rejected: one more rejected row) */
static void
writer_reserve(OutboxWriter *w, bool rejected)
{
	int		   *cap = rejected ? &w->rcap : &w->cap;
	int			c;

	if ((rejected ? w->nrejected : w->nrows) < *cap)
		return;
	*cap = Min(*cap * 2, WRITER_BATCH_ROWS);
	if (rejected)
	{
		for (c = 0; c < 3; c++)
			w->rcols[c] = repalloc(w->rcols[c], sizeof(Datum) * *cap);
		w->rnull = repalloc(w->rnull, sizeof(bool) * *cap);
	}
	else
		for (c = 0; c < 6; c++)
			w->cols[c] = repalloc(w->cols[c], sizeof(Datum) * *cap);
}

/*
 * Write what was collected: one INSERT for the outbox rows, one for the
 * rejected rows, as the extension's owner.  This is the only place the
 * mapping pipeline writes the extension's tables.
 */
static void
writer_flush(OutboxWriter *w)
{
	MemoryContext old;
	MetronomeAsOwner sw;
	bool		wake = false;

	if (w->nrows == 0 && w->nrejected == 0)
		return;
	old = MemoryContextSwitchTo(w->batch_cxt);
	MetronomeBeginAsOwner(w->set->owner, &sw);

	if (w->nrows > 0)
	{
		uint64		n = MappingsInsertOutbox(w->set, w->cols, w->nrows);

		if (n > 0)
		{
			w->written += n;
			wake = true;
		}
	}

	if (w->nrejected > 0)
	{
		Datum		args[3];
		int			dims[1] = {w->nrejected};
		int			lbs[1] = {1};

		args[0] = PointerGetDatum(construct_md_array(w->rcols[0], w->rnull, 1, dims, lbs,
													 TEXTOID, -1, false, TYPALIGN_INT));
		args[1] = PointerGetDatum(construct_array(w->rcols[1], w->nrejected,
												  JSONBOID, -1, false, TYPALIGN_INT));
		args[2] = PointerGetDatum(construct_array(w->rcols[2], w->nrejected,
												  TEXTOID, -1, false, TYPALIGN_INT));
		if (SPI_execute_plan(w->set->insert_rejected, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into metronome_rejected");
		w->rejected += w->nrejected;
	}

	MetronomeEndAsOwner(&sw);
	if (wake)
		DeliveryWakeAtCommit();
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
	MemoryContext old;
	int			n = w->nrows;
	int			f;
	int			c = 0;

	writer_reserve(w, false);
	old = MemoryContextSwitchTo(w->batch_cxt);

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

	writer_reserve(w, true);
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
 * Which earlier mapping of the same event built this transaction_id
 * (compared byte by byte, as the outbox's unique index does)?  NULL when
 * none did.
 */
static const char *
transaction_id_taken(text **ids, const char **id_by, int nids, text *id)
{
	int			i;

	for (i = 0; i < nids; i++)
		if (VARSIZE_ANY_EXHDR(ids[i]) == VARSIZE_ANY_EXHDR(id) &&
			memcmp(VARDATA_ANY(ids[i]), VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id)) == 0)
			return id_by[i];
	return NULL;
}

/*
 * Is this transaction_id in the outbox already?  Asked only when two
 * mappings built it for one event (rare: a misconfiguration), so one query
 * each time is cheap enough.  Runs as the extension's owner.
 */
static bool
outbox_has(MappingSet *set, text *id)
{
	static Oid	argtypes[1] = {TEXTOID};
	Datum		args[1];
	MetronomeAsOwner sw;
	bool		found;

	args[0] = PointerGetDatum(id);
	MetronomeBeginAsOwner(set->owner, &sw);
	if (SPI_execute_with_args(psprintf("SELECT 1 FROM %s.metronome_outbox "
									   "WHERE transaction_id OPERATOR(pg_catalog.=) $1",
									   quote_identifier(get_namespace_name(set->schema))),
							  1, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read metronome_outbox");
	found = SPI_processed > 0;
	MetronomeEndAsOwner(&sw);
	return found;
}

/*
 * Why the second of two mappings that built one transaction_id for one
 * event is rejected.
 */
static char *
shared_transaction_id(const char *mapping, const char *taken_by, text *id)
{
	return psprintf("transaction_id \"%s\" is also built by mapping \"%s\" for this event, "
					"and only one usage event can have it: give mapping \"%s\" a distinct "
					"transaction_id, such as {\"@template\": \"{{messageId}}-%s\"}",
					text_to_cstring(id), taken_by, mapping, mapping);
}

/*
 * Map one event by every enabled mapping whose subscription matches.
 * Temporary allocations go to CurrentMemoryContext (reset by the caller).
 */
static void
map_event_into(OutboxWriter *w, Jsonb *event, TimestampTz now)
{
	MappingSet *set = w->set;
	text	  **ids = NULL;
	const char **id_by = NULL;
	int			nids = 0;
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
		const char *taken_by;

		if (m->invalid == NULL && !FqlEval(m->subscription, event))
			continue;
		MapEvent(m, event, now, &me);
		if (me.error)
		{
			writer_reject(w, m->name, event, me.error);
			continue;
		}
		if (ids == NULL)
		{
			ids = palloc(sizeof(text *) * set->nmappings);
			id_by = palloc(sizeof(char *) * set->nmappings);
		}
		taken_by = transaction_id_taken(ids, id_by, nids,
										me.fields_text[FIELD_TRANSACTION_ID]);
		if (taken_by != NULL)
		{
			/* a re-inserted event: its first row is there, skip quietly */
			if (outbox_has(w->set, me.fields_text[FIELD_TRANSACTION_ID]))
				continue;
			writer_reject(w, m->name, event,
						  shared_transaction_id(m->name, taken_by,
												me.fields_text[FIELD_TRANSACTION_ID]));
			continue;
		}
		ids[nids] = me.fields_text[FIELD_TRANSACTION_ID];
		id_by[nids++] = m->name;
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

	/* restoring a dump whose outbox rows are restored too */
	if (metronome_skip_mapping)
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
	text	  **ids;
	const char **id_by;
	int			nids = 0;
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

	ids = palloc(sizeof(text *) * Max(set->nmappings, 1));
	id_by = palloc(sizeof(char *) * Max(set->nmappings, 1));
	for (i = 0; i < set->nmappings; i++)
	{
		CompiledMapping *m = &set->mappings[i];
		MappedEvent me;
		Datum		values[7] = {0};
		bool		nulls[7] = {false, true, true, true, true, true, true};
		const char *taken_by;

		if (m->invalid == NULL && !FqlEval(m->subscription, event))
			continue;
		MapEvent(m, event, now, &me);
		/* as metronome_enqueue would reject it */
		if (me.error == NULL &&
			(taken_by = transaction_id_taken(ids, id_by, nids,
											 me.fields_text[FIELD_TRANSACTION_ID])) != NULL)
			me.error = shared_transaction_id(m->name, taken_by,
											 me.fields_text[FIELD_TRANSACTION_ID]);
		else if (me.error == NULL)
		{
			ids[nids] = me.fields_text[FIELD_TRANSACTION_ID];
			id_by[nids++] = m->name;
		}
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
