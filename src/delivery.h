/*-------------------------------------------------------------------------
 *
 * delivery.h
 *	  The shipping half: the delivery worker, its shared state, the wake-up
 *	  at commit, and one shipping cycle shared by the worker and
 *	  metronome_ship().
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_DELIVERY_H
#define METRONOME_DELIVERY_H

#include "postgres.h"

/*
 * Called from _PG_init while shared_preload_libraries is being processed:
 * requests shared memory and registers the delivery worker.
 */
extern void DeliveryInit(void);

/*
 * The current transaction wrote outbox rows: wake the worker when (and only
 * if) it commits.  Cheap; call it once per statement that wrote rows.
 */
extern void DeliveryWakeAtCommit(void);

#endif							/* METRONOME_DELIVERY_H */
