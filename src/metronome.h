/*-------------------------------------------------------------------------
 *
 * metronome.h
 *	  Declarations shared by every part of the metronome extension: the
 *	  settings (GUCs), the version, and how to find the extension's objects.
 *
 * Architecture, by file:
 *	  metronome.c	_PG_init: settings, secret redaction, worker registration
 *	  guc.c			the metronome.* settings
 *	  path.c		lodash-style paths into jsonb (shared by fql.c, mapkit.c)
 *	  fql.c			Segment's subscription language (FQL): parse, evaluate
 *	  mapkit.c		Segment's mapping-kit directives: validate, evaluate
 *	  fields.c		coercion and validation of the five Metronome fields
 *	  mappings.c	metronome_mappings rows: validation trigger, per-backend cache
 *	  enqueue.c		the mapping trigger, metronome_enqueue, metronome_map
 *	  encoding.c	server encoding <-> Metronome's UTF-8
 *	  wake.c		waking the delivery worker at commit
 *	  http.c		the HTTP layer (libcurl multi, json-c for answers), no backend state
 *	  ship.c		claim / send / mark: one shipping cycle (worker and SQL)
 *	  worker.c		the background worker
 *	  status.c		shared-memory state, metronome_status()
 *	  metrics.c		the delivery's counters and latency histogram (a leaf)
 *	  metrics_sql.c	metronome_metrics(), metronome_metrics_table()
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_H
#define METRONOME_H

#include "postgres.h"

#ifndef METRONOME_VERSION
#define METRONOME_VERSION "0.1.0"
#endif

/* values of metronome.on_mapping_error */
typedef enum MetronomeOnMappingError
{
	ON_MAPPING_ERROR_REJECT,	/* write a metronome_rejected row */
	ON_MAPPING_ERROR_ERROR		/* abort the INSERT */
} MetronomeOnMappingError;

/* settings, defined in guc.c */
extern char *metronome_api_token;
extern char *metronome_ingest_url;
extern char *metronome_ca_file;		/* "" = the system's authorities */
extern char *metronome_database;
extern int	metronome_batch_size;		/* events per request, 1..100 */
extern int	metronome_max_inflight;		/* concurrent requests */
extern int	metronome_max_events_per_second;	/* 0 = no limit */
extern int	metronome_poll_interval;	/* milliseconds */
extern int	metronome_request_timeout;	/* milliseconds */
extern int	metronome_max_backoff;		/* milliseconds */
extern int	metronome_max_attempts;		/* 0 = retry forever */
extern int	metronome_retain_sent;		/* seconds; -1 keeps sent rows */
extern int	metronome_event_retention;	/* seconds; -1 keeps events */
extern bool metronome_enabled;
extern int	metronome_on_mapping_error; /* MetronomeOnMappingError */
extern bool metronome_skip_mapping;	/* restoring a dump: map nothing */

/* guc.c */
extern void MetronomeDefineSettings(void);
extern void MetronomeInstallRedaction(void);

/* metronome.c: where the installed extension lives in this database */
extern Oid	MetronomeSchemaOid(bool missing_ok);
extern const char *MetronomeSchemaName(void);	/* quoted, for SQL text */
extern Oid	MetronomeRelid(const char *relname, bool missing_ok);
extern Oid	MetronomeOwnerOid(void);

/*
 * metronome.c: statements on the extension's own tables run as its owner
 * (with SECURITY_RESTRICTED_OPERATION), everything else as the user.
 */
typedef struct MetronomeAsOwner
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} MetronomeAsOwner;

extern void MetronomeBeginAsOwner(Oid owner, MetronomeAsOwner *sw);
extern void MetronomeEndAsOwner(MetronomeAsOwner *sw);

/*
 * metronome.c: plans whose shape must not depend on table statistics (the
 * claim, the mapping writer's INSERT).  Within the caller's GUC nest level:
 * generic plans, and no sequential, bitmap, index-only (an index path with
 * no condition), hash-join or merge-join paths, so every table is reached by
 * an index condition whatever ANALYZE last saw; allow_sort
 * false also rules out sorts (the claim reads in index order).
 */
extern void MetronomePinPlans(bool allow_sort);

/*
 * metronome.c: the queue segment (0..METRONOME_NSEGMENTS-1) that rows
 * written by the current transaction go to: the default of
 * metronome_queue.seg.  A function of the transaction's start time and
 * metronome.retain_sent only, so it is the same for every statement of a
 * transaction.
 */
#define METRONOME_NSEGMENTS 3
extern int	MetronomeSegment(void);

#endif							/* METRONOME_H */
