/*-------------------------------------------------------------------------
 *
 * mappings.c
 *	  The metronome_mappings table: validation of rows at INSERT/UPDATE, the
 *	  per-backend cache of compiled mappings, and the write of mapped rows
 *	  into the outbox (MappingsInsertOutbox: deduplication, its fast path,
 *	  its pinned plans).
 *
 * Mappings are parsed once: the first event a backend maps loads every
 * enabled row, compiles its FQL subscription and its five mapping values,
 * and prepares the SPI plans that write the outbox.  The cache follows
 * changes: a statement-level trigger on metronome_mappings sends a relcache
 * invalidation for the table, which reaches this backend at the next
 * command (same transaction) and other backends when the change commits;
 * the relcache callback then marks the cache stale.  Dropping and
 * re-creating the extension invalidates it the same way.
 *
 * The rows are read under the latest snapshot, not the caller's: a
 * REPEATABLE READ transaction or a long COPY that reloads after a change
 * must see the change, or it would keep applying a disabled or edited
 * mapping for the rest of the backend's life.  They are read (and the
 * plans run, enqueue.c) as the extension's owner: a role allowed only to
 * INSERT events cannot read metronome_mappings.
 *
 * A set is built in a context below the caller's, and moved under
 * CacheMemoryContext only once complete: a load that fails is freed with
 * the caller's memory.  A stale set is not freed at once: a statement
 * further up the stack may still hold it and run its plans.  It is retired;
 * when the transaction ends, no statement can be running it any more, and
 * the next MappingsGet() frees it, plans and all.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "mapping.h"
#include "jsonbval.h"
#include "metronome.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/resowner.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(metronome_mappings_validate);
PG_FUNCTION_INFO_V1(metronome_mappings_changed);

/* columns of metronome_mappings holding the five mapping values, in
 * MetField order */
static const char *const field_columns[NUM_FIELDS] = {
	"transaction_id", "customer_id", "timestamp", "event_type", "properties"
};

static MappingSet *current_set = NULL;
static bool current_valid = false;
static List *retired_sets = NIL;	/* stale, this transaction; in TopMemoryContext */
static List *finished_sets = NIL;	/* stale, of an ended transaction */
static bool callbacks_registered = false;

static void free_finished_sets(void);
static char *queue_insert_sql(const char *schema, bool on_conflict, bool probe_state);
static bool relation_has_blocks(Oid relid);
static uint64 queue_insert_run(SPIPlanPtr plan, Datum *args, Snapshot snap);
static void warn_shared_transaction_id(HeapTuple tuple, TupleDesc desc,
									   const char *name);

/*
 * Relcache callback: a change to one of the extension's tables (or a
 * reset of the whole relcache) makes the cache stale.
 */
static void
mappings_relcache_callback(Datum arg, Oid relid)
{
	(void) arg;
	if (current_set == NULL)
		return;
	if (relid == InvalidOid ||
		relid == current_set->mappings_relid ||
		relid == current_set->outbox_relid ||
		relid == current_set->rejected_relid)
		current_valid = false;
}

/*
 * End of transaction: the sets retired during it are no longer in use by
 * any statement; the next MappingsGet() frees them.  (Not here: at abort
 * the resource owners still hold references to their plans.)
 */
static void
mappings_xact_callback(XactEvent event, void *arg)
{
	MemoryContext old;

	(void) arg;
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	if (retired_sets == NIL)
		return;
	old = MemoryContextSwitchTo(TopMemoryContext);
	finished_sets = list_concat(finished_sets, retired_sets);
	MemoryContextSwitchTo(old);
	list_free(retired_sets);
	retired_sets = NIL;
}

/*
 * Free the sets retired by transactions that have ended.
 */
static void
free_finished_sets(void)
{
	ListCell   *lc;

	foreach(lc, finished_sets)
	{
		MappingSet *set = (MappingSet *) lfirst(lc);
		int			k;

		for (k = 0; k < 2; k++)
		{
			if (set->insert_outbox[k])
				SPI_freeplan(set->insert_outbox[k]);
			if (set->insert_fast[k])
				SPI_freeplan(set->insert_fast[k]);
		}
		SPI_freeplan(set->insert_rejected);
		MemoryContextDelete(set->context);
	}
	list_free(finished_sets);
	finished_sets = NIL;
}

/*
 * The INSERT of a batch into metronome_queue.  Parameters: $1..$6 the
 * column arrays, $7 the writing transaction's segment (metronome_segment()),
 * $8 and $9 the other segments to probe for a duplicate transaction_id (-1:
 * none; the Append is pruned at execution to those), and the exception rows
 * are probed when probe_state.  on_conflict: ON CONFLICT DO NOTHING covers
 * the writer's own segment (its unique index); without it a duplicate there
 * is a unique_violation (the fast path of MappingsInsertOutbox).
 *
 * Rows go in in the order of the arrays, which MappingsInsertOutbox
 * sorts by transaction_id (then by position): two sessions inserting the
 * same new events in different orders would otherwise each wait for the
 * other's uncommitted row (a unique check must wait) and deadlock; among
 * rows of one batch with the same transaction_id, the first goes in and
 * the later ones are the duplicates.  The pinned plan keeps that order:
 * the function scan emits the arrays in order, and with hash and merge
 * joins ruled out each probe is a nested loop over it (sorting in C costs
 * a tenth of what a Sort node over the rows did).
 *
 * Each probe is by index whatever the statistics say: the writer pins the
 * plan (MetronomePinPlans; a plan made while metronome_outbox_state was
 * empty once hashed the whole table for every batch after it had grown).
 * The probe of the exception rows is a separate plan, not "$n OR NOT
 * EXISTS": under an OR the planner may hash the subquery, which reads the
 * whole table.
 */
static char *
queue_insert_sql(const char *schema, bool on_conflict, bool probe_state)
{
	return psprintf("INSERT INTO %1$s.metronome_queue "
					"(seg, transaction_id, customer_id, event_type, \"timestamp\", properties, mapping) "
					"SELECT $7, r.t, r.c, r.e, r.ts, r.p, r.m "
					"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
					"pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), "
					"pg_catalog.unnest($6)) AS r (t, c, e, ts, p, m) "
					"WHERE NOT EXISTS (SELECT 1 FROM %1$s.metronome_queue q "
					"WHERE q.transaction_id = r.t COLLATE pg_catalog.\"C\" "
					"AND q.seg IN ($8, $9)) "
					"%2$s"
					"%3$s",
					schema,
					probe_state ?
					psprintf("AND NOT EXISTS (SELECT 1 FROM %s.metronome_outbox_state s "
							 "WHERE s.transaction_id = r.t COLLATE pg_catalog.\"C\") ",
							 schema) : "",
					on_conflict ? " ON CONFLICT DO NOTHING" : "");
}

/*
 * Compile one mapping row's subscription and fields into m.  Returns NULL
 * or an error message naming the column (and position, for FQL).
 */
static char *
compile_mapping(CompiledMapping *m, const char *subscription, Jsonb **fields)
{
	char	   *msg = NULL;
	int			pos = 0;
	int			f;

	m->subscription = FqlParse(subscription, &msg, &pos);
	if (m->subscription == NULL)
		return psprintf("invalid subscription at position %d: %s", pos, msg);
	for (f = 0; f < NUM_FIELDS; f++)
	{
		m->fields[f] = MapkitCompile(fields[f], &msg);
		if (m->fields[f] == NULL)
			return psprintf("invalid mapping in column \"%s\": %s",
							field_columns[f], msg);
	}
	return NULL;
}

/*
 * Prepare an SPI plan (kept by the caller once everything else is built).
 */
static SPIPlanPtr
prepare_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

/*
 * Load every enabled mapping (SPI must be connected; runs as the extension's
 * owner, see MappingsGet()).
 */
static MappingSet *
load_mappings(void)
{
	MemoryContext cxt;
	MemoryContext old;
	MappingSet *set;
	const char *schema;
	char	   *sql;
	SPIPlanPtr	select_plan;
	SPIPlanPtr	insert_outbox[2] = {NULL, NULL};
	SPIPlanPtr	insert_fast[2] = {NULL, NULL};
	SPIPlanPtr	insert_rejected;
	uint64		i;
	Oid			outbox_types[9] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TIMESTAMPTZARRAYOID, JSONBARRAYOID, TEXTARRAYOID, INT2OID, INT2OID, INT2OID};
	Oid			rejected_types[3] = {TEXTARRAYOID, JSONBARRAYOID, TEXTARRAYOID};

	/* below the caller's memory until complete: an error frees it */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "metronome mappings",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	set = palloc0(sizeof(MappingSet));
	set->context = cxt;
	set->schema = MetronomeSchemaOid(false);
	set->mappings_relid = MetronomeRelid("metronome_mappings", false);
	set->outbox_relid = MetronomeRelid("metronome_outbox", false);
	set->rejected_relid = MetronomeRelid("metronome_rejected", false);
	schema = MetronomeSchemaName();
	MemoryContextSwitchTo(old);

	/* the latest snapshot: see the banner */
	sql = psprintf("SELECT name, subscription, transaction_id, customer_id, "
				   "\"timestamp\", event_type, properties "
				   "FROM %s.metronome_mappings WHERE enabled ORDER BY id",
				   schema);
	select_plan = prepare_plan(sql, 0, NULL);
	if (SPI_execute_snapshot(select_plan, NULL, NULL, GetLatestSnapshot(),
							 InvalidSnapshot, true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read metronome_mappings");

	/* values are copied into cxt before SPI_finish frees the tuples */
	MemoryContextSwitchTo(cxt);
	set->nmappings = (int) SPI_processed;
	set->mappings = palloc0(sizeof(CompiledMapping) * Max(set->nmappings, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		CompiledMapping *m = &set->mappings[i];
		Jsonb	   *fields[NUM_FIELDS];
		bool		isnull;
		int			f;

		m->name = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		for (f = 0; f < NUM_FIELDS; f++)
			fields[f] = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 3 + f, &isnull));
		m->invalid = compile_mapping(m,
									 TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull)),
									 fields);
	}
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	SPI_freeplan(select_plan);

	/*
	 * 0.2.0 (delivery core): the outbox's rows live in metronome_queue (the
	 * view metronome_outbox shows them); see queue_insert_sql().
	 */
	set->queue = OidIsValid(MetronomeRelid("metronome_queue", true));
	if (!set->queue)
		/* the 0.1.0 objects (the update is still to run) */
		insert_outbox[0] = prepare_plan(psprintf(
												 "INSERT INTO %s.metronome_outbox "
												 "(transaction_id, customer_id, event_type, \"timestamp\", properties, mapping) "
												 "SELECT r.t, r.c, r.e, r.ts, r.p, r.m "
												 "FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
												 "pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5), "
												 "pg_catalog.unnest($6)) WITH ORDINALITY AS r (t, c, e, ts, p, m, o) "
												 "ORDER BY r.t COLLATE pg_catalog.\"C\", r.o "
												 "ON CONFLICT (transaction_id) DO NOTHING",
												 schema), 6, outbox_types);
	else
	{
		int			k;

		for (k = 0; k < METRONOME_NSEGMENTS; k++)
			set->segment_relid[k] =
				MetronomeRelid(psprintf("metronome_queue_%d", k), false);
		set->state_relid = MetronomeRelid("metronome_outbox_state", false);
		for (k = 0; k < 2; k++)
		{
			insert_outbox[k] = prepare_plan(queue_insert_sql(schema, true, k == 1),
											9, outbox_types);
			insert_fast[k] = prepare_plan(queue_insert_sql(schema, false, k == 1),
										  9, outbox_types);
		}
	}
	insert_rejected = prepare_plan(psprintf(
											"INSERT INTO %s.metronome_rejected (mapping, event, error) "
											"SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), "
											"pg_catalog.unnest($3))",
											schema), 3, rejected_types);

	/* complete: keep it */
	for (i = 0; i < 2; i++)
	{
		if (insert_outbox[i])
			SPI_keepplan(insert_outbox[i]);
		if (insert_fast[i])
			SPI_keepplan(insert_fast[i]);
		set->insert_outbox[i] = insert_outbox[i];
		set->insert_fast[i] = insert_fast[i];
	}
	SPI_keepplan(insert_rejected);
	set->insert_rejected = insert_rejected;
	MemoryContextSetParent(cxt, CacheMemoryContext);
	return set;
}

/* run one of the batch's INSERTs under snap; the rows written */
static uint64
queue_insert_run(SPIPlanPtr plan, Datum *args, Snapshot snap)
{
	if (SPI_execute_snapshot(plan, args, NULL, snap, InvalidSnapshot,
							 false, true, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into metronome_outbox");
	return SPI_processed;
}

/*
 * Can the relation hold a row?  (A relation that does not exist any more
 * is said to: its probe then fails in the plan, with the usual error.)
 */
static bool
relation_has_blocks(Oid relid)
{
	Relation	rel = try_relation_open(relid, AccessShareLock);
	bool		has;

	if (rel == NULL)
		return true;
	has = RelationGetNumberOfBlocks(rel) > 0;
	relation_close(rel, NoLock);
	return has;
}

/*
 * Write outbox rows: cols are the six arrays (transaction_id,
 * customer_id, event_type, timestamp, properties, mapping) of nrows rows.
 * Runs as the extension's owner (the caller's MetronomeBeginAsOwner, whose
 * GUC nest level also holds the pinned plan settings).  Returns the rows
 * written, duplicates not counted.
 *
 * Probes only where a duplicate can be: the statement's snapshot is taken
 * first, then a segment or the exception rows with no block at all are
 * left out (a row visible in that snapshot was written, and its block
 * added, before it).  The segment after the current one is empty most of
 * the time (retention truncates it), the exception rows often are.
 *
 * The fast path: a batch of at least WRITER_FAST_MIN_ROWS rows is written
 * by a plain INSERT (the probes, no ON CONFLICT) in a subtransaction.  A
 * duplicate in the writer's own segment (an earlier row, a concurrent
 * transaction's that committed, or two rows of the batch) then raises
 * unique_violation in its unique index: the subtransaction is rolled back
 * and the batch is written again with ON CONFLICT DO NOTHING, so a
 * duplicate is still skipped, never an error.  ON CONFLICT's speculative
 * insertion costs about as much per row as the rest of the deduplication
 * together (test/bench/mapping.sh).  Each subtransaction leaves a
 * subtransaction id in the backend's cache until the transaction ends,
 * and once that cache (PGPROC_MAX_CACHED_SUBXIDS) overflows every other
 * session's snapshots become expensive: the fast path is taken only while
 * the cache is less than half full, whatever filled it.
 */
#define WRITER_FAST_MIN_ROWS 32

/* the batch's rows and where they are in it, to sort */
typedef struct WriterRow
{
	const text *id;
	int			pos;
} WriterRow;

static int
writer_row_cmp(const void *a, const void *b)
{
	const WriterRow *x = a;
	const WriterRow *y = b;
	int			lx = VARSIZE_ANY_EXHDR(x->id);
	int			ly = VARSIZE_ANY_EXHDR(y->id);
	int			c = memcmp(VARDATA_ANY(x->id), VARDATA_ANY(y->id), Min(lx, ly));

	if (c != 0)
		return c;
	if (lx != ly)
		return lx < ly ? -1 : 1;
	return x->pos < y->pos ? -1 : (x->pos > y->pos);
}

uint64
MappingsInsertOutbox(MappingSet *set, Datum *const *cols, int nrows)
{
	static const Oid elem[6] = {TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
	JSONBOID, TEXTOID};
	Datum		args[9];
	WriterRow  *order;
	Datum	   *sorted;
	Snapshot	snap;
	int			seg;
	int			k;
	int			n = 0;
	int			probe_state;
	volatile uint64 written = 0;
	volatile bool done = false;

	MetronomePinPlans(true);

	/* the arrays, in transaction_id order (see queue_insert_sql) */
	order = palloc(sizeof(WriterRow) * nrows);
	for (k = 0; k < nrows; k++)
	{
		order[k].id = (const text *) DatumGetPointer(cols[0][k]);
		order[k].pos = k;
	}
	qsort(order, nrows, sizeof(WriterRow), writer_row_cmp);
	sorted = palloc(sizeof(Datum) * nrows);
	for (k = 0; k < 6; k++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;
		int			i;

		for (i = 0; i < nrows; i++)
			sorted[i] = cols[k][order[i].pos];
		get_typlenbyvalalign(elem[k], &typlen, &typbyval, &typalign);
		args[k] = PointerGetDatum(construct_array(sorted, nrows, elem[k],
												  typlen, typbyval, typalign));
	}
	pfree(sorted);
	pfree(order);

	if (!set->queue)
	{
		if (SPI_execute_plan(set->insert_outbox[0], args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into metronome_outbox");
		return SPI_processed;
	}

	snap = RegisterSnapshot(GetTransactionSnapshot());
	seg = MetronomeSegment();
	args[6] = Int16GetDatum((int16) seg);
	args[7] = args[8] = Int16GetDatum(-1);
	for (k = 0; k < METRONOME_NSEGMENTS; k++)
		if (k != seg && relation_has_blocks(set->segment_relid[k]))
			args[7 + n++] = Int16GetDatum((int16) k);
	probe_state = relation_has_blocks(set->state_relid) ? 1 : 0;

	if (nrows >= WRITER_FAST_MIN_ROWS &&
		!MyProc->subxidStatus.overflowed &&
		MyProc->subxidStatus.count < PGPROC_MAX_CACHED_SUBXIDS / 2)
	{
		MemoryContext cxt = CurrentMemoryContext;
		ResourceOwner owner = CurrentResourceOwner;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
		PG_TRY();
		{
			written = queue_insert_run(set->insert_fast[probe_state], args, snap);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			done = true;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
				ReThrowError(edata);
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
	if (!done)
		written = queue_insert_run(set->insert_outbox[probe_state], args, snap);
	UnregisterSnapshot(snap);
	return written;
}

/*
 * The current mapping set, (re)loaded when stale.
 */
MappingSet *
MappingsGet(void)
{
	MetronomeAsOwner sw;
	Oid			owner;

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(mappings_relcache_callback, (Datum) 0);
		RegisterXactCallback(mappings_xact_callback, NULL);
		callbacks_registered = true;
	}
	if (finished_sets != NIL)
		free_finished_sets();

	if (current_set != NULL && current_valid)
		return current_set;

	if (current_set != NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		retired_sets = lappend(retired_sets, current_set);
		MemoryContextSwitchTo(old);
		current_set = NULL;
	}

	/* mark valid before loading: an invalidation during the load wins */
	current_valid = true;
	owner = MetronomeOwnerOid();
	MetronomeBeginAsOwner(owner, &sw);
	current_set = load_mappings();
	current_set->owner = owner;
	MetronomeEndAsOwner(&sw);
	return current_set;
}

/*
 * The start of a mapping value's JSON text, for messages (a deeply nested
 * value can be megabytes long).
 */
static char *
value_excerpt(Jsonb *value)
{
	char	   *txt = JsonbToCString(NULL, &value->root, VARSIZE(value));

	return TextExcerpt(txt, strlen(txt), 200);
}

/*
 * Warn when an enabled mapping row builds its transaction_id the same way
 * as another enabled mapping: an event both match would give two usage
 * events with one transaction_id, and only the first could be kept
 * (enqueue.c records the second in metronome_rejected).
 */
static void
warn_shared_transaction_id(HeapTuple tuple, TupleDesc desc, const char *name)
{
	static Oid	argtypes[3] = {JSONBOID, INT4OID, TEXTOID};
	Datum		args[3];
	bool		isnull;
	bool		enabled;
	char	   *other = NULL;
	MemoryContext caller = CurrentMemoryContext;
	MetronomeAsOwner sw;

	enabled = DatumGetBool(SPI_getbinval(tuple, desc, SPI_fnumber(desc, "enabled"), &isnull));
	if (isnull || !enabled)
		return;
	args[0] = SPI_getbinval(tuple, desc, SPI_fnumber(desc, "transaction_id"), &isnull);
	if (isnull)
		return;
	args[1] = SPI_getbinval(tuple, desc, SPI_fnumber(desc, "id"), &isnull);
	if (isnull)
		return;
	args[2] = CStringGetTextDatum(name);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* the user may be allowed to write mappings without reading them */
	MetronomeBeginAsOwner(InvalidOid, &sw);
	if (SPI_execute_with_args(psprintf("SELECT name FROM %s.metronome_mappings "
									   "WHERE enabled AND transaction_id OPERATOR(pg_catalog.=) $1 "
									   "AND id OPERATOR(pg_catalog.<>) $2 AND name OPERATOR(pg_catalog.<>) $3 "
									   "ORDER BY id LIMIT 1",
									   MetronomeSchemaName()),
							  3, argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read metronome_mappings");
	MetronomeEndAsOwner(&sw);
	if (SPI_processed > 0)
		other = MemoryContextStrdup(caller,
									SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	SPI_finish();

	if (other != NULL)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("mappings \"%s\" and \"%s\" build the same transaction_id", other, name),
				 errdetail("An event that both match gives two usage events with one transaction_id: only the first is kept, and the second is recorded in metronome_rejected."),
				 errhint("Give mapping \"%s\" a distinct transaction_id, such as {\"@template\": \"{{messageId}}-%s\"}.",
						 name, name)));
}

/*
 * BEFORE INSERT OR UPDATE trigger on metronome_mappings: refuse a row whose
 * subscription or mapping values are invalid, saying which column and why;
 * keep updated_at current.
 */
Datum
metronome_mappings_validate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	TupleDesc	desc;
	CompiledMapping m;
	Jsonb	   *fields[NUM_FIELDS];
	char	   *name;
	char	   *subscription;
	char	   *msg = NULL;
	int			pos = 0;
	int			f;
	bool		isnull;
	MemoryContext cxt;
	MemoryContext old;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("metronome_mappings_validate() must be a BEFORE ROW trigger")));

	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	desc = trigdata->tg_relation->rd_att;

	name = SPI_getvalue(tuple, desc, SPI_fnumber(desc, "name"));
	subscription = SPI_getvalue(tuple, desc, SPI_fnumber(desc, "subscription"));
	if (name == NULL || subscription == NULL)
		return PointerGetDatum(tuple);	/* NOT NULL constraints will say so */

	/* compile into a throw-away context: this only validates */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "metronome validate",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);

	memset(&m, 0, sizeof(m));
	m.subscription = FqlParse(subscription, &msg, &pos);
	if (m.subscription == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid subscription for mapping \"%s\": %s", name, msg),
				 errdetail("Column \"subscription\", at character %d of: %s", pos, subscription),
				 errhint("A subscription is Segment FQL, for example: type = \"track\" and event = \"API Call\".")));

	for (f = 0; f < NUM_FIELDS; f++)
	{
		Datum		d = SPI_getbinval(tuple, desc, SPI_fnumber(desc, field_columns[f]), &isnull);

		if (isnull)
			continue;			/* NOT NULL constraints will say so */
		fields[f] = DatumGetJsonbP(d);
		if (MapkitCompile(fields[f], &msg) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid mapping for column \"%s\" of mapping \"%s\": %s",
							field_columns[f], name, msg),
					 errdetail("The value is: %s", value_excerpt(fields[f])),
					 errhint("A mapping value is a directive such as {\"@path\": \"$.context.groupId\"}, or plain JSON taken literally.")));
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);

	warn_shared_transaction_id(tuple, desc, name);

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		int			attnum = SPI_fnumber(desc, "updated_at");

		if (attnum > 0)
		{
			Datum		now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
			bool		nulls = false;

			tuple = heap_modify_tuple_by_cols(tuple, desc, 1, &attnum, &now, &nulls);
		}
	}
	return PointerGetDatum(tuple);
}

/*
 * AFTER ... FOR EACH STATEMENT trigger on metronome_mappings: every
 * backend's cache of compiled mappings is stale.
 */
Datum
metronome_mappings_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("metronome_mappings_changed() must be called as a trigger")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}
