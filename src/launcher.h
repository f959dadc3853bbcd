/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The launcher of the delivery workers, one per served database, and
 *	  the registry of those databases in shared memory (launcher.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef METRONOME_LAUNCHER_H
#define METRONOME_LAUNCHER_H

#include "postgres.h"

/* Databases one server can serve at once (one delivery worker each). */
#define LAUNCHER_MAX_DATABASES 64

/* From _PG_init while preloading: shared memory, hooks, the launcher. */
extern void LauncherInit(void);

/* For the delivery worker: the database its bgw_main_arg names, and its
 * name (palloc'd); InvalidOid when the launcher no longer serves it. */
extern Oid	LauncherSlotDatabase(Datum main_arg, char **dbname);

/* For the delivery worker, when its database has no extension: true when
 * it should exit (metronome.database = '*'; the launcher looks again). */
extern bool LauncherNoExtension(void);

/* Is metronome.database '*'? */
extern bool LauncherServesAll(void);

#endif							/* METRONOME_LAUNCHER_H */
