/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one delivery worker per database that
 *	  metronome.database names (a list, or '*' for every database where
 *	  the extension is installed), and the registry of those databases in
 *	  shared memory.
 *
 * Glossary:
 *	  launcher	static background worker ("metronome launcher"), connected
 *				to no database (shared catalogs only).  Every second, or
 *				when its latch is set, it reads pg_database and makes the
 *				delivery workers match what metronome.database asks for:
 *				it starts a dynamic background worker ("metronome
 *				delivery", worker.c) for each served database that has
 *				none, and restarts one that exits (later and later if it
 *				keeps dying young).  A database that does not exist yet
 *				costs one log line, not a worker dying with FATAL at every
 *				restart.
 *	  slot		one served database in shared memory (LauncherShared):
 *				its oid and name, and what the launcher knows of it.  The
 *				delivery worker finds its database through the slot index
 *				the launcher passes as bgw_main_arg.
 *	  '*' mode	metronome.database = '*': every database that accepts
 *				connections and is not a template is a candidate.  A
 *				worker that finds no extension in its database exits
 *				(LauncherNoExtension), and the launcher looks again
 *				(starts a worker there) only every PROBE_EVERY_MS, or at
 *				once when a CREATE EXTENSION metronome commits in that
 *				database (a ProcessUtility hook of every backend sets the
 *				launcher's latch).  With a list, a worker waits in its
 *				database for the extension, as with one database.
 *	  stepping aside
 *				DROP DATABASE (and ALTER DATABASE ... RENAME, and CREATE
 *				DATABASE ... TEMPLATE) need the database to have no other
 *				connection.  The same ProcessUtility hook, in the backend
 *				running that command, asks the launcher not to start a
 *				worker there for STEP_ASIDE_MS, ends the database's
 *				delivery worker (SIGTERM: its rows were never marked sent
 *				unless Metronome had them) and waits for it to go, before
 *				the command runs.  A dropped database's slot is freed.
 *
 * Not enough background worker slots (max_worker_processes) for every
 * served database: the launcher logs once which database went without a
 * worker and what to raise, and tries again every ten seconds.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "delivery.h"
#include "launcher.h"
#include "metronome.h"
#include "pg_compat.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procsignal.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"
#include "utils/wait_event.h"

PGDLLEXPORT void MetronomeLauncherMain(Datum main_arg);

/* how often '*' mode looks again at a database without the extension */
#define PROBE_EVERY_MS 60000
/* how long no worker is started in a database being dropped or renamed */
#define STEP_ASIDE_MS 30000
/* how long the command waits for the worker to go */
#define STEP_ASIDE_WAIT_MS 10000

/* One served database. */
typedef struct LauncherSlot
{
	Oid			dboid;			/* InvalidOid: free */
	char		dbname[NAMEDATALEN];
	pid_t		worker_pid;		/* as the launcher last saw it */
	bool		no_extension;	/* '*' mode: its worker found none */
	TimestampTz probe_after;	/* no worker before this (probe, step aside) */
} LauncherSlot;

typedef struct LauncherShared
{
	slock_t		mutex;
	Latch	   *launcher_latch;
	bool		serve_all;		/* metronome.database = '*' */
	LauncherSlot slots[LAUNCHER_MAX_DATABASES];
} LauncherShared;

static LauncherShared *launcher = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;
static bool created_extension = false;	/* this transaction: wake at commit */
static bool xact_callback_registered = false;

/* launcher process only: the handles of the workers it started */
static BackgroundWorkerHandle *handles[LAUNCHER_MAX_DATABASES];
static TimestampTz started_at[LAUNCHER_MAX_DATABASES];
static int	quick_exits[LAUNCHER_MAX_DATABASES];
static bool said_no_slot[LAUNCHER_MAX_DATABASES];

static void launcher_shmem_request(void);
static void launcher_shmem_startup(void);
static List *launcher_wanted_names(bool *all);
static void launcher_sync(List *names, bool all, List **missing);
static void launcher_start_workers(void);
static bool launcher_start_one(int i);
static void launcher_xact_callback(XactEvent event, void *arg);
static void launcher_step_aside(const char *dbname);
static void launcher_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
									bool readOnlyTree, ProcessUtilityContext context,
									ParamListInfo params, QueryEnvironment *queryEnv,
									DestReceiver *dest, QueryCompletion *qc);

/* shmem_request_hook: reserve the registry */
static void
launcher_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(LauncherShared)));
}

/* shmem_startup_hook: create or attach to the registry */
static void
launcher_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	launcher = ShmemInitStruct("metronome launcher", sizeof(LauncherShared), &found);
	if (!found)
	{
		memset(launcher, 0, sizeof(LauncherShared));
		SpinLockInit(&launcher->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * From _PG_init while preloading: the registry, the hook that notices
 * CREATE EXTENSION and DROP DATABASE, and the launcher itself.
 */
void
LauncherInit(void)
{
	BackgroundWorker bgw;

	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = launcher_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = launcher_shmem_startup;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = launcher_ProcessUtility;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = 5;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "metronome");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "MetronomeLauncherMain");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "metronome launcher");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "metronome launcher");
	RegisterBackgroundWorker(&bgw);
}

/*
 * The databases metronome.database names (a comma-separated list; *all
 * for '*').
 */
static List *
launcher_wanted_names(bool *all)
{
	char	   *raw = pstrdup(metronome_database ? metronome_database : "");
	List	   *names = NIL;

	*all = (strcmp(raw, "*") == 0);
	if (*all)
		return NIL;
	if (!SplitIdentifierString(raw, ',', &names))
	{
		ereport(LOG,
				(errmsg("metronome.database is not a valid list of database names: \"%s\"",
						metronome_database),
				 errhint("Name the databases separated by commas, or set it to '*' for every database where the extension is installed.")));
		return NIL;
	}
	return names;
}

/*
 * Read pg_database (a sequential scan of the shared catalog in its own
 * transaction: without a database there are no catalog caches) and make
 * the slots match: a slot for each served database, free slots for the
 * dropped ones.  *missing gets the listed names that do not exist.
 */
static void
launcher_sync(List *names, bool all, List **missing)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		seen[LAUNCHER_MAX_DATABASES];
	List	   *found_names = NIL;
	ListCell   *lc;
	int			i;

	memset(seen, 0, sizeof(seen));
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		const char *name = NameStr(db->datname);
		bool		wanted = false;
		int			free_i = -1;

		if (all)
			wanted = db->datallowconn && !db->datistemplate;
		else
		{
			foreach(lc, names)
			{
				if (strcmp((char *) lfirst(lc), name) == 0)
				{
					wanted = true;
					found_names = lappend(found_names, pstrdup(name));
				}
			}
		}
		if (!wanted)
			continue;

		SpinLockAcquire(&launcher->mutex);
		for (i = 0; i < LAUNCHER_MAX_DATABASES; i++)
		{
			if (launcher->slots[i].dboid == db->oid)
			{
				/* the name follows ALTER DATABASE ... RENAME */
				strlcpy(launcher->slots[i].dbname, name, NAMEDATALEN);
				break;
			}
			if (free_i < 0 && launcher->slots[i].dboid == InvalidOid && handles[i] == NULL)
				free_i = i;
		}
		if (i == LAUNCHER_MAX_DATABASES && free_i >= 0)
		{
			LauncherSlot *s = &launcher->slots[free_i];

			memset(s, 0, sizeof(LauncherSlot));
			s->dboid = db->oid;
			strlcpy(s->dbname, name, NAMEDATALEN);
			i = free_i;
		}
		SpinLockRelease(&launcher->mutex);
		if (i < LAUNCHER_MAX_DATABASES)
			seen[i] = true;
		else
			ereport(LOG,
					(errmsg("database \"%s\" is not served: at most %d databases are",
							name, LAUNCHER_MAX_DATABASES)));
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);

	/* dropped (or no longer listed) databases free their slot */
	SpinLockAcquire(&launcher->mutex);
	for (i = 0; i < LAUNCHER_MAX_DATABASES; i++)
	{
		if (launcher->slots[i].dboid != InvalidOid && !seen[i])
			launcher->slots[i].dboid = InvalidOid;
	}
	SpinLockRelease(&launcher->mutex);

	*missing = NIL;
	foreach(lc, names)
	{
		ListCell   *lc2;
		bool		found = false;

		foreach(lc2, found_names)
			found = found || strcmp((char *) lfirst(lc), (char *) lfirst(lc2)) == 0;
		if (!found)
			*missing = lappend(*missing, lfirst(lc));
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * Start the delivery worker of slot i; false when no background worker
 * slot is free.
 */
static bool
launcher_start_one(int i)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART;
	bgw.bgw_notify_pid = MyProcPid;
	bgw.bgw_main_arg = Int32GetDatum(i);
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "metronome");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "MetronomeDeliveryMain");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "metronome delivery");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "metronome delivery");
	return RegisterDynamicBackgroundWorker(&bgw, &handles[i]);
}

/*
 * Start or restart the workers the slots need.
 */
static void
launcher_start_workers(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	for (i = 0; i < LAUNCHER_MAX_DATABASES; i++)
	{
		LauncherSlot *s = &launcher->slots[i];
		Oid			dboid;
		char		dbname[NAMEDATALEN];
		TimestampTz after;
		pid_t		pid = 0;

		if (handles[i] != NULL)
		{
			if (GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
			{
				SpinLockAcquire(&launcher->mutex);
				s->worker_pid = pid;
				SpinLockRelease(&launcher->mutex);
				continue;
			}
			/* it exited: again later, later still if it keeps dying young */
			pfree(handles[i]);
			handles[i] = NULL;
			if (!TimestampDifferenceExceeds(started_at[i], now, 10000))
				quick_exits[i] = Min(quick_exits[i] + 1, 6);
			else
				quick_exits[i] = 0;
			SpinLockAcquire(&launcher->mutex);
			s->worker_pid = 0;
			s->probe_after = Max(s->probe_after,
								 TimestampTzPlusMilliseconds(now, 1000L << quick_exits[i]));
			if (s->no_extension)
				s->probe_after = Max(s->probe_after,
									 TimestampTzPlusMilliseconds(now, PROBE_EVERY_MS));
			SpinLockRelease(&launcher->mutex);
		}

		SpinLockAcquire(&launcher->mutex);
		dboid = s->dboid;
		strlcpy(dbname, s->dbname, NAMEDATALEN);
		after = s->probe_after;
		SpinLockRelease(&launcher->mutex);
		if (dboid == InvalidOid || now < after)
			continue;
		/* a worker left by a previous launcher still counts */
		if (StatusWorkerPidOf(dboid) != 0)
			continue;

		if (!launcher_start_one(i))
		{
			handles[i] = NULL;
			if (!said_no_slot[i])
				ereport(LOG,
						(errmsg("could not start the delivery worker for database \"%s\": no background worker slot is free",
								dbname),
						 errhint("Raise max_worker_processes (now %d): the launcher and one delivery worker per served database each need one, besides parallel query and other extensions.",
								 max_worker_processes)));
			said_no_slot[i] = true;
			SpinLockAcquire(&launcher->mutex);
			s->probe_after = TimestampTzPlusMilliseconds(now, 10000);
			SpinLockRelease(&launcher->mutex);
			continue;
		}
		if (said_no_slot[i])
			ereport(LOG,
					(errmsg("started the delivery worker for database \"%s\"", dbname)));
		said_no_slot[i] = false;
		started_at[i] = now;
	}
}

/*
 * Main of the launcher.
 */
void
MetronomeLauncherMain(Datum main_arg)
{
	List	   *said_missing = NIL;
	bool		all;
	MemoryContext cxt;

	(void) main_arg;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	pqsignal(SIGUSR1, procsignal_sigusr1_handler);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("metronome launcher");
	pgstat_report_activity(STATE_IDLE, NULL);

	cxt = AllocSetContextCreate(TopMemoryContext, "metronome launcher",
								ALLOCSET_DEFAULT_SIZES);
	(void) launcher_wanted_names(&all);
	SpinLockAcquire(&launcher->mutex);
	launcher->launcher_latch = MyLatch;
	launcher->serve_all = all;
	SpinLockRelease(&launcher->mutex);

	for (;;)
	{
		List	   *names;
		List	   *missing;
		List	   *still_missing = NIL;
		ListCell   *lc;
		MemoryContext old;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		old = MemoryContextSwitchTo(TopMemoryContext);
		names = launcher_wanted_names(&all);
		MemoryContextSwitchTo(old);
		launcher_sync(names, all, &missing);

		/* one line per missing database, until it exists */
		foreach(lc, missing)
		{
			char	   *name = (char *) lfirst(lc);
			ListCell   *lc2;
			bool		said = false;

			foreach(lc2, said_missing)
				said = said || strcmp(name, (char *) lfirst(lc2)) == 0;
			if (!said)
				ereport(LOG,
						(errmsg("database \"%s\" does not exist; waiting for it to be created",
								name),
						 errhint("Create the database, or set metronome.database and restart the server.")));
			old = MemoryContextSwitchTo(cxt);
			still_missing = lappend(still_missing, pstrdup(name));
			MemoryContextSwitchTo(old);
		}
		list_free_deep(said_missing);
		said_missing = still_missing;
		StatusSetState(missing != NIL ? DELIVERY_WAITING_DATABASE : DELIVERY_STOPPED);
		list_free(names);

		launcher_start_workers();

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PgCompatWaitEvent("MetronomeIdle"));
	}
}

/*
 * For the delivery worker: the database of slot i (from bgw_main_arg),
 * and its name (palloc'd).  InvalidOid when the slot was freed meanwhile.
 */
Oid
LauncherSlotDatabase(Datum main_arg, char **dbname)
{
	int			i = DatumGetInt32(main_arg);
	Oid			dboid = InvalidOid;

	*dbname = NULL;
	if (launcher == NULL || i < 0 || i >= LAUNCHER_MAX_DATABASES)
		return InvalidOid;
	*dbname = palloc(NAMEDATALEN);
	SpinLockAcquire(&launcher->mutex);
	dboid = launcher->slots[i].dboid;
	strlcpy(*dbname, launcher->slots[i].dbname, NAMEDATALEN);
	SpinLockRelease(&launcher->mutex);
	return dboid;
}

/*
 * Is metronome.database '*'?
 */
bool
LauncherServesAll(void)
{
	bool		all = false;

	if (launcher == NULL)
		return false;
	SpinLockAcquire(&launcher->mutex);
	all = launcher->serve_all;
	SpinLockRelease(&launcher->mutex);
	return all;
}

/*
 * For the delivery worker, when its database has no extension: in '*'
 * mode, note it (the launcher looks again later, or at CREATE EXTENSION)
 * and return true, the worker then exits; with a list, false (the worker
 * waits there).
 */
bool
LauncherNoExtension(void)
{
	bool		all = false;
	int			i;

	if (launcher == NULL)
		return false;
	SpinLockAcquire(&launcher->mutex);
	all = launcher->serve_all;
	if (all)
	{
		for (i = 0; i < LAUNCHER_MAX_DATABASES; i++)
		{
			if (launcher->slots[i].dboid == MyDatabaseId)
				launcher->slots[i].no_extension = true;
		}
	}
	SpinLockRelease(&launcher->mutex);
	return all;
}

/*
 * Transaction callback: a CREATE EXTENSION metronome has committed in this
 * database: the launcher starts its worker now rather than at the next
 * probe.
 */
static void
launcher_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch = NULL;
	int			i;

	(void) arg;
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		created_extension = false;
	if ((event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT) ||
		!created_extension || launcher == NULL)
		return;
	created_extension = false;
	SpinLockAcquire(&launcher->mutex);
	for (i = 0; i < LAUNCHER_MAX_DATABASES; i++)
	{
		if (launcher->slots[i].dboid == MyDatabaseId)
		{
			launcher->slots[i].no_extension = false;
			launcher->slots[i].probe_after = 0;
		}
	}
	latch = launcher->launcher_latch;
	SpinLockRelease(&launcher->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * Before a command that needs dbname to have no other connection: keep
 * the launcher from starting a worker there for a while, end the worker
 * that runs there, and wait (a bounded time) for it to be gone.
 */
static void
launcher_step_aside(const char *dbname)
{
	Oid			dboid = get_database_oid(dbname, true);
	TimestampTz until;
	int			i;
	int			waited = 0;

	if (!OidIsValid(dboid) || launcher == NULL)
		return;
	until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STEP_ASIDE_MS);
	SpinLockAcquire(&launcher->mutex);
	for (i = 0; i < LAUNCHER_MAX_DATABASES; i++)
	{
		if (launcher->slots[i].dboid == dboid)
			launcher->slots[i].probe_after = Max(launcher->slots[i].probe_after, until);
	}
	SpinLockRelease(&launcher->mutex);

	for (;;)
	{
		pid_t		pid = StatusWorkerPidOf(dboid);

		if (pid == 0 || waited >= STEP_ASIDE_WAIT_MS)
			break;
		if (waited == 0)
			(void) kill(pid, SIGTERM);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		waited += 20;
	}
}

/*
 * ProcessUtility hook of every backend (when preloaded): CREATE EXTENSION
 * metronome wakes the launcher at commit; DROP DATABASE, ALTER DATABASE
 * ... RENAME and CREATE DATABASE ... TEMPLATE make a served database's
 * worker step aside first.
 */
static void
launcher_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
						bool readOnlyTree, ProcessUtilityContext context,
						ParamListInfo params, QueryEnvironment *queryEnv,
						DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	if (IsA(stmt, DropdbStmt))
		launcher_step_aside(((DropdbStmt *) stmt)->dbname);
	else if (IsA(stmt, RenameStmt) &&
			 ((RenameStmt *) stmt)->renameType == OBJECT_DATABASE)
		launcher_step_aside(((RenameStmt *) stmt)->subname);
	else if (IsA(stmt, CreatedbStmt))
	{
		ListCell   *lc;

		foreach(lc, ((CreatedbStmt *) stmt)->options)
		{
			DefElem    *opt = (DefElem *) lfirst(lc);

			if (strcmp(opt->defname, "template") == 0 && opt->arg != NULL)
				launcher_step_aside(defGetString(opt));
		}
	}

	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
							params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);

	if (IsA(stmt, CreateExtensionStmt) &&
		strcmp(((CreateExtensionStmt *) stmt)->extname, "metronome") == 0)
	{
		if (!xact_callback_registered)
		{
			RegisterXactCallback(launcher_xact_callback, NULL);
			xact_callback_registered = true;
		}
		created_extension = true;
	}
}
