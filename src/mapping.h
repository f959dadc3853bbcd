/*-------------------------------------------------------------------------
 *
 * mapping.h
 *	  The mapping pipeline: metronome_mappings rows compiled and cached per
 *	  backend (mappings.c), and one event mapped by one mapping into the
 *	  five Metronome fields (enqueue.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_MAPPING_H
#define METRONOME_MAPPING_H

#include "postgres.h"

#include "executor/spi.h"
#include "fields.h"
#include "fql.h"
#include "mapkit.h"
#include "metronome.h"

/* One enabled metronome_mappings row, compiled. */
typedef struct CompiledMapping
{
	char	   *name;
	FqlExpr    *subscription;
	MapNode    *fields[NUM_FIELDS];
	char	   *invalid;		/* why the row does not compile, else NULL */
} CompiledMapping;

/* Every enabled mapping of this database, in id order, and what the
 * pipeline needs to write (valid until the next MappingsGet()). */
typedef struct MappingSet
{
	int			nmappings;
	CompiledMapping *mappings;
	Oid			schema;
	Oid			owner;			/* the extension's owner: writes run as it */
	Oid			mappings_relid;
	Oid			outbox_relid;
	Oid			rejected_relid;
	bool		queue;			/* 0.2.0's metronome_queue (else 0.1.0's table) */
	Oid			segment_relid[METRONOME_NSEGMENTS]; /* metronome_queue_N */
	Oid			state_relid;	/* metronome_outbox_state */
	SPIPlanPtr	insert_outbox[2];	/* the batch's INSERT, ON CONFLICT DO
									 * NOTHING; [1] also probes the exception
									 * rows (mappings.c) */
	SPIPlanPtr	insert_fast[2]; /* the same without ON CONFLICT */
	SPIPlanPtr	insert_rejected;	/* unnest($1..$3) */
	MemoryContext context;
} MappingSet;

/* The current mapping set, loaded or reloaded as needed (needs SPI
 * connected). */
extern MappingSet *MappingsGet(void);

/* Write nrows outbox rows, cols[c][i] the value of column c (transaction_id,
 * customer_id, event_type, timestamp, properties, mapping) of row i, as the
 * owner (between the caller's MetronomeBeginAsOwner/EndAsOwner); duplicates
 * are skipped, the first of a batch's duplicates kept.  Returns the rows
 * written. */
extern uint64 MappingsInsertOutbox(MappingSet *set, Datum *const *cols, int nrows);

/* One event mapped by one mapping. */
typedef struct MappedEvent
{
	text	   *fields_text[NUM_FIELDS];	/* transaction_id, customer_id,
											 * event_type */
	TimestampTz timestamp;
	Jsonb	   *properties;
	char	   *error;			/* NULL when mapped */
} MappedEvent;

/*
 * Map an event (a JSON object) by one mapping whose subscription matched.
 * Fills *out; out->error says why it failed.
 */
extern void MapEvent(const CompiledMapping *m, Jsonb *event, TimestampTz now,
					 MappedEvent *out);

#endif							/* METRONOME_MAPPING_H */
