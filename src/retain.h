/*-------------------------------------------------------------------------
 *
 * retain.h
 *	  Retention of the inbox segment_events (retain.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_RETAIN_H
#define METRONOME_RETAIN_H

#include "postgres.h"

/*
 * In a transaction (the delivery worker's housekeeping): delete up to limit
 * mapped events of segment_events older than metronome.retain_events.
 * Returns how many, or -1 when there is nothing to do.
 */
extern int64 RetainDeleteEvents(int64 limit);

#endif							/* METRONOME_RETAIN_H */
