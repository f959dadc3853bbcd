/*-------------------------------------------------------------------------
 *
 * metrics_sql.c
 *	  metronome_metrics(): the delivery's metrics in Prometheus's text
 *	  exposition format (0.0.4), and metronome_metrics_table(), the same
 *	  samples as rows (name, labels, value) for prometheus-postgres-exporter's
 *	  custom queries (metronome-exporter-queries.yaml).
 *
 * Two sources, one list of metric families:
 *
 *	counters	from metrics.c (shared memory when preloaded, per database;
 *				this session's own otherwise): requests by answer class,
 *				events sent, failed, retried, batch splits, cycles, and the
 *				histogram of the time from an event's created_at to its
 *				acknowledgement
 *	gauges		computed now by SQL over this database's outbox: pending
 *				and failed events (in total and by mapping), the oldest
 *				pending event's age, rejected events by mapping and reason
 *				(metronome_rejected_reason(): a bounded set of words, never
 *				the error's text), and the worker's state from status.c
 *
 * The SQL runs as the extension's owner in a security-restricted operation
 * (metronome.c), so a monitoring role needs EXECUTE on these functions and
 * nothing else: what it reads is counts, ages and mapping names, never an
 * event, an error text or a setting.  EXECUTE is revoked from PUBLIC.
 *
 * Every sample carries the label database (the current database's name), so
 * the outputs of several databases can be collected side by side.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "delivery.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "metrics.h"
#include "metronome.h"
#include "miscadmin.h"
#include "pg_compat.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(metronome_metrics);
PG_FUNCTION_INFO_V1(metronome_metrics_table);

#define MAX_LABELS 4			/* database and up to three more */

/* one sample: the family's name + suffix, labels, value */
typedef struct Sample
{
	const char *suffix;			/* "", "_bucket", "_sum", "_count" */
	int			nlabels;
	const char *keys[MAX_LABELS];
	const char *vals[MAX_LABELS];
	double		value;
} Sample;

/* one metric family: # HELP, # TYPE and its samples */
typedef struct Family
{
	const char *name;
	const char *type;			/* counter, gauge, histogram */
	const char *help;
	Sample	   *samples;
	int			n;
	int			cap;
} Family;

typedef struct Families
{
	Family	   *f;
	int			n;
	int			cap;
	const char *database;
} Families;

/* a new family */
static Family *
family(Families *all, const char *name, const char *type, const char *help)
{
	Family	   *f;

	if (all->n == all->cap)
	{
		all->cap = all->cap ? all->cap * 2 : 16;
		all->f = all->f ? repalloc(all->f, sizeof(Family) * all->cap) :
			palloc(sizeof(Family) * all->cap);
	}
	f = &all->f[all->n++];
	memset(f, 0, sizeof(Family));
	f->name = name;
	f->type = type;
	f->help = help;
	return f;
}

/* a sample of a family, labelled database=... and up to three pairs (NULL ends) */
static void
sample(Families *all, Family *f, const char *suffix, double value,
	   const char *k1, const char *v1, const char *k2, const char *v2,
	   const char *k3, const char *v3)
{
	Sample	   *s;

	if (f->n == f->cap)
	{
		f->cap = f->cap ? f->cap * 2 : 8;
		f->samples = f->samples ? repalloc(f->samples, sizeof(Sample) * f->cap) :
			palloc(sizeof(Sample) * f->cap);
	}
	s = &f->samples[f->n++];
	s->suffix = suffix;
	s->value = value;
	s->nlabels = 0;
	s->keys[s->nlabels] = "database";
	s->vals[s->nlabels++] = all->database;
	if (k1)
	{
		s->keys[s->nlabels] = k1;
		s->vals[s->nlabels++] = v1;
	}
	if (k2)
	{
		s->keys[s->nlabels] = k2;
		s->vals[s->nlabels++] = v2;
	}
	if (k3)
	{
		s->keys[s->nlabels] = k3;
		s->vals[s->nlabels++] = v3;
	}
}

/* a sample without labels other than database */
static void
sample0(Families *all, Family *f, double value)
{
	sample(all, f, "", value, NULL, NULL, NULL, NULL, NULL, NULL);
}

/* the text of a bucket bound, as le="..." shows it */
static const char *
bound_text(int i)
{
	if (i >= METRICS_NBUCKETS - 1)
		return "+Inf";
	return psprintf("%g", MetricsBucketBounds[i]);
}

/* the counters of metrics.c */
static void
add_counters(Families *all)
{
	MetricsView v;
	Family	   *f;
	uint64		cum = 0;
	int			i;

	MetricsRead(&v);

	f = family(all, "metronome_requests_total", "counter",
			   "Requests sent to the ingest API, by the class of their answer (2xx, bad_batch: 400/413/422, auth: 401/403, config: 404/405/501/TLS/URL, rate_limited: 429, transient: 408/5xx, network: no complete answer).");
	for (i = 0; i < METRICS_NANSWERS; i++)
		sample(all, f, "", (double) v.requests[i],
			   "class", MetricsAnswerName((MetricsAnswer) i), NULL, NULL, NULL, NULL);

	f = family(all, "metronome_events_sent_total", "counter",
			   "Events acknowledged as accepted by the ingest API.");
	sample0(all, f, (double) v.events_sent);
	f = family(all, "metronome_mapping_events_sent_total", "counter",
			   "Events acknowledged as accepted, by mapping (empty: rows inserted into metronome_outbox directly; names cut at 63 bytes; \"~other~\": mappings beyond the first 32 seen since the server started).");
	for (i = 0; i < v.nmappings; i++)
		sample(all, f, "", (double) v.mapping_sent[i],
			   "mapping", pstrdup(v.mapping_name[i]), NULL, NULL, NULL, NULL);
	if (v.mapping_sent_other > 0)
		sample(all, f, "", (double) v.mapping_sent_other,
			   "mapping", "~other~", NULL, NULL, NULL, NULL);
	f = family(all, "metronome_events_failed_total", "counter",
			   "Events marked failed (refused alone by the ingest API, too many transient failures, or not sendable).");
	sample0(all, f, (double) v.events_failed);
	f = family(all, "metronome_events_retried_total", "counter",
			   "Events given another attempt later after a transient failure.");
	sample0(all, f, (double) v.events_retried);
	f = family(all, "metronome_batch_splits_total", "counter",
			   "Refused batches of more than one event cut in halves to isolate the bad events.");
	sample0(all, f, (double) v.splits);
	f = family(all, "metronome_cycles_total", "counter",
			   "Shipping cycles (claim, send, acknowledge) that claimed events.");
	sample0(all, f, (double) v.cycles);

	f = family(all, "metronome_ack_latency_seconds", "histogram",
			   "Seconds from an event's created_at (the start of the transaction that inserted it) to its acknowledgement as accepted.");
	for (i = 0; i < METRICS_NBUCKETS; i++)
	{
		cum += v.latency_buckets[i];
		sample(all, f, "_bucket", (double) cum, "le", bound_text(i),
			   NULL, NULL, NULL, NULL);
	}
	sample(all, f, "_sum", (double) v.latency_sum_us / USECS_PER_SEC,
		   NULL, NULL, NULL, NULL, NULL, NULL);
	sample(all, f, "_count", (double) cum, NULL, NULL, NULL, NULL, NULL, NULL);

	f = family(all, "metronome_counters_shared", "gauge",
			   "1 when the counters are the database's, kept in shared memory (library preloaded); 0 when they count this session's own shipping only.");
	sample0(all, f, v.shared ? 1 : 0);
}

/* run one read-only statement; every column is read as text */
static void
run_query(const char *sql)
{
	int			ret = SPI_execute(sql, true, 0);

	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not compute the metrics: %s", SPI_result_code_string(ret));
}

/* a text column of row i, copied into cxt ("" when null) */
static char *
col_text(MemoryContext cxt, uint64 i, int col)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col);

	return MemoryContextStrdup(cxt, v ? v : "");
}

/* a numeric column of row i (0 when null) */
static double
col_double(uint64 i, int col)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col);

	return v ? strtod(v, NULL) : 0;
}

/* the gauges computed from this database's outbox, as the extension's owner */
static void
add_gauges(Families *all)
{
	MemoryContext outer = CurrentMemoryContext;
	MetronomeAsOwner sw;
	const char *s = MetronomeSchemaName();
	Family	   *pend;
	Family	   *age;
	Family	   *failed;
	Family	   *bymap;
	Family	   *rej;
	double		npending = 0;
	double		nfailed = 0;
	double		oldest = 0;
	uint64		i;

	pend = family(all, "metronome_pending_events", "gauge",
				  "Events in the outbox waiting to be sent (new, or waiting for a retry).");
	age = family(all, "metronome_oldest_pending_age_seconds", "gauge",
				 "Age in seconds of the oldest pending event (from its created_at); 0 when none is pending.");
	failed = family(all, "metronome_failed_events", "gauge",
					"Events in the outbox marked failed (see metronome_outbox.last_error; metronome_retry() sends them again).");
	bymap = family(all, "metronome_mapping_events", "gauge",
				   "Pending and failed events in the outbox by mapping (mapping is empty for rows inserted into metronome_outbox directly).");
	rej = family(all, "metronome_rejected_events", "gauge",
				 "Events in metronome_rejected by mapping and reason (metronome_rejected_reason(error)).");

	MetronomeBeginAsOwner(InvalidOid, &sw);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* pending and failed by mapping: every enabled or disabled mapping, 0 too */
	run_query(psprintf("WITH d AS (SELECT * FROM %1$s.metronome_delivery dd"
					   " ORDER BY dd.system_id IS NULL LIMIT 1),"
					   " q AS (SELECT q.mapping, q.created_at FROM %1$s.metronome_queue q, d"
					   " WHERE q.txid >= pg_catalog.pg_snapshot_xmin(d.last_snap)"
					   " AND NOT %1$s.metronome_acked(q.txid, q.id, d.last_snap, d.cur_snap, d.pos_txid, d.pos_id)"
					   " AND NOT EXISTS (SELECT 1 FROM %1$s.metronome_outbox_state st WHERE st.id = q.id)),"
					   " p AS (SELECT coalesce(q.mapping, '') AS mapping, q.created_at, 'pending'::text AS status FROM q"
					   " UNION ALL SELECT coalesce(st.mapping, ''), st.created_at, st.status"
					   " FROM %1$s.metronome_outbox_state st WHERE st.status IN ('pending', 'failed')),"
					   " m AS (SELECT mm.name AS mapping FROM %1$s.metronome_mappings mm"
					   " UNION SELECT p.mapping FROM p)"
					   " SELECT m.mapping, st.status, count(p.status),"
					   " GREATEST(0, pg_catalog.date_part('epoch', pg_catalog.now() - min(p.created_at)))"
					   " FROM m CROSS JOIN (VALUES ('failed'), ('pending')) st(status)"
					   " LEFT JOIN p ON p.mapping = m.mapping AND p.status = st.status"
					   " GROUP BY 1, 2 ORDER BY m.mapping COLLATE \"C\", st.status", s));
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *mapping = col_text(outer, i, 1);
		char	   *status = col_text(outer, i, 2);
		double		n = col_double(i, 3);
		MemoryContext spi = MemoryContextSwitchTo(outer);

		sample(all, bymap, "", n, "mapping", mapping, "status", status, NULL, NULL);
		MemoryContextSwitchTo(spi);
		if (strcmp(status, "pending") == 0)
		{
			npending += n;
			if (n > 0)
				oldest = Max(oldest, col_double(i, 4));
		}
		else
			nfailed += n;
	}

	/* rejected by mapping and reason */
	run_query(psprintf("SELECT x.m, x.w, x.n FROM (SELECT coalesce(r.mapping, '') AS m,"
					   " %1$s.metronome_rejected_reason(r.error) AS w, count(*) AS n"
					   " FROM %1$s.metronome_rejected r GROUP BY 1, 2) x"
					   " ORDER BY x.m COLLATE \"C\", x.w COLLATE \"C\"", s));
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *mapping = col_text(outer, i, 1);
		char	   *reason = col_text(outer, i, 2);
		double		n = col_double(i, 3);
		MemoryContext spi = MemoryContextSwitchTo(outer);

		sample(all, rej, "", n, "mapping", mapping, "reason", reason, NULL, NULL);
		MemoryContextSwitchTo(spi);
	}

	SPI_finish();
	MetronomeEndAsOwner(&sw);

	sample0(all, pend, npending);
	sample0(all, age, oldest);
	sample0(all, failed, nfailed);
}

/* the worker's state (status.c) */
static void
add_worker(Families *all)
{
	DeliveryStatusView snap;
	Family	   *f;
	int			st;

	StatusRead(&snap);
	/* a gate in force shows as backoff between two cycles, as in metronome_status() */
	if (snap.gate_kind == DELIVERY_GATE_TRANSIENT &&
		snap.gate_until > GetCurrentTimestamp() &&
		(snap.state == DELIVERY_IDLE || snap.state == DELIVERY_SHIPPING))
		snap.state = DELIVERY_BACKOFF;

	f = family(all, "metronome_worker_up", "gauge",
			   "1 when this database's delivery worker runs, else 0.");
	sample0(all, f, snap.worker_pid != 0 ? 1 : 0);
	f = family(all, "metronome_worker_in_state", "gauge",
			   "1 for the delivery worker's current state (metronome_status().state), 0 for the other states.");
	for (st = DELIVERY_NOT_PRELOADED; st <= DELIVERY_CONFIG_ERROR; st++)
		sample(all, f, "", st == (int) snap.state ? 1 : 0,
			   "state", DeliveryStateName((DeliveryState) st), NULL, NULL, NULL, NULL);
}

/* every family, in the order they are shown */
static void
collect(Families *all)
{
	memset(all, 0, sizeof(Families));
	all->database = get_database_name(MyDatabaseId);
	if (all->database == NULL)
		all->database = "";
	add_counters(all);
	add_gauges(all);
	add_worker(all);
}

/* a label value as the exposition format writes it: \\, \" and \n escaped */
static void
append_label_value(StringInfo buf, const char *v)
{
	for (; *v; v++)
	{
		if (*v == '\\')
			appendStringInfoString(buf, "\\\\");
		else if (*v == '"')
			appendStringInfoString(buf, "\\\"");
		else if (*v == '\n')
			appendStringInfoString(buf, "\\n");
		else
			appendStringInfoChar(buf, *v);
	}
}

/* a HELP text: \\ and \n escaped */
static void
append_help(StringInfo buf, const char *v)
{
	for (; *v; v++)
	{
		if (*v == '\\')
			appendStringInfoString(buf, "\\\\");
		else if (*v == '\n')
			appendStringInfoString(buf, "\\n");
		else
			appendStringInfoChar(buf, *v);
	}
}

/* a value: an integer as an integer, else with microsecond precision */
static void
append_value(StringInfo buf, double v)
{
	if (isinf(v))
		appendStringInfoString(buf, v > 0 ? "+Inf" : "-Inf");
	else if (isnan(v))
		appendStringInfoString(buf, "NaN");
	else if (v == floor(v) && fabs(v) < 1e15)
		appendStringInfo(buf, "%.0f", v);
	else
		appendStringInfo(buf, "%.6f", v);
}

/*
 * metronome_metrics() -> text
 *
 * The metrics of this database's delivery in Prometheus's text exposition
 * format 0.0.4: # HELP and # TYPE lines, then the samples of each family.
 */
Datum
metronome_metrics(PG_FUNCTION_ARGS)
{
	Families	all;
	StringInfoData buf;
	int			i;
	int			j;
	int			k;

	(void) fcinfo;
	collect(&all);
	initStringInfo(&buf);
	for (i = 0; i < all.n; i++)
	{
		Family	   *f = &all.f[i];

		appendStringInfo(&buf, "# HELP %s ", f->name);
		append_help(&buf, f->help);
		appendStringInfo(&buf, "\n# TYPE %s %s\n", f->name, f->type);
		for (j = 0; j < f->n; j++)
		{
			Sample	   *s = &f->samples[j];

			appendStringInfo(&buf, "%s%s", f->name, s->suffix);
			if (s->nlabels > 0)
			{
				appendStringInfoChar(&buf, '{');
				for (k = 0; k < s->nlabels; k++)
				{
					appendStringInfo(&buf, "%s%s=\"", k ? "," : "", s->keys[k]);
					append_label_value(&buf, s->vals[k]);
					appendStringInfoChar(&buf, '"');
				}
				appendStringInfoChar(&buf, '}');
			}
			appendStringInfoChar(&buf, ' ');
			append_value(&buf, s->value);
			appendStringInfoChar(&buf, '\n');
		}
	}
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

/*
 * metronome_metrics_table() -> SETOF (name text, labels jsonb, value float8)
 *
 * The samples of metronome_metrics() as rows: name with its suffix
 * (metronome_ack_latency_seconds_bucket, ...), labels as a JSON object of
 * strings, value.  What metronome-exporter-queries.yaml reads.
 */
Datum
metronome_metrics_table(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Families	all;
	int			i;
	int			j;
	int			k;

	InitMaterializedSRF(fcinfo, 0);
	collect(&all);
	for (i = 0; i < all.n; i++)
	{
		Family	   *f = &all.f[i];

		for (j = 0; j < f->n; j++)
		{
			Sample	   *s = &f->samples[j];
			StringInfoData labels;
			Datum		values[3];
			bool		nulls[3] = {false, false, false};

			initStringInfo(&labels);
			appendStringInfoChar(&labels, '{');
			for (k = 0; k < s->nlabels; k++)
			{
				if (k)
					appendStringInfoString(&labels, ", ");
				escape_json(&labels, s->keys[k]);
				appendStringInfoString(&labels, ": ");
				escape_json(&labels, s->vals[k]);
			}
			appendStringInfoChar(&labels, '}');
			values[0] = CStringGetTextDatum(psprintf("%s%s", f->name, s->suffix));
			values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(labels.data));
			values[2] = Float8GetDatum(s->value);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			pfree(labels.data);
		}
	}
	return (Datum) 0;
}
