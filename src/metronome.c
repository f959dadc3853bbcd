/*-------------------------------------------------------------------------
 *
 * metronome.c
 *	  Entry point of the metronome extension: settings, log redaction, and
 *	  (when preloaded) the delivery worker; lookups of the extension's own
 *	  objects.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "delivery.h"
#include "fmgr.h"
#include "funcapi.h"
#include "launcher.h"
#include "metronome.h"
#include "miscadmin.h"
#include "pg_compat.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/tuplestore.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Module load: define settings everywhere; start the worker only when
 * loaded through shared_preload_libraries.
 */
void
_PG_init(void)
{
	MetronomeDefineSettings();
	MetronomeInstallRedaction();

	if (process_shared_preload_libraries_in_progress)
	{
		DeliveryInit();
		DeliveryInstallWakeHook();
		LauncherInit();
	}
}

/*
 * Schema and owner of an extension (PostgreSQL 15 exports no helper).
 */
static void
extension_row(Oid extoid, Oid *nsp, Oid *owner)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;

	*nsp = *owner = InvalidOid;
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		*nsp = ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace;
		*owner = ((Form_pg_extension) GETSTRUCT(tuple))->extowner;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/*
 * The installed extension's OID, or an error saying it is not installed.
 */
static Oid
extension_oid(bool missing_ok)
{
	Oid			extoid = get_extension_oid("metronome", true);

	if (!OidIsValid(extoid) && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"metronome\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION metronome.")));
	return extoid;
}

/*
 * OID of the schema the extension is installed in; InvalidOid (or an error
 * unless missing_ok) when it is not installed in this database.
 */
Oid
MetronomeSchemaOid(bool missing_ok)
{
	Oid			extoid = extension_oid(missing_ok);
	Oid			nsp;
	Oid			owner;

	if (!OidIsValid(extoid))
		return InvalidOid;
	extension_row(extoid, &nsp, &owner);
	return nsp;
}

/*
 * The role that owns the extension (and its tables): the mapping pipeline
 * writes the outbox as this role.
 */
Oid
MetronomeOwnerOid(void)
{
	Oid			nsp;
	Oid			owner;

	extension_row(extension_oid(false), &nsp, &owner);
	return owner;
}

/*
 * Become the extension's owner for a write into its own tables, the way
 * PostgreSQL's referential-integrity triggers and REFRESH MATERIALIZED VIEW
 * switch users: SECURITY_RESTRICTED_OPERATION forbids what could leak the
 * owner's rights beyond the operation, and search_path is pinned to
 * pg_catalog, pg_temp for its duration.  No user-defined code may run
 * between this and MetronomeEndAsOwner(): call it only around statements on
 * the extension's own tables.  An error ends the switch too (transaction
 * abort restores the user, the security context and the settings).
 * owner is the extension's owner if the caller knows it, else InvalidOid.
 */
void
MetronomeBeginAsOwner(Oid owner, MetronomeAsOwner *sw)
{
	if (!OidIsValid(owner))
		owner = MetronomeOwnerOid();

	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec_context);
	SetUserIdAndSecContext(owner, sw->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	sw->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Back to the user (and the settings) MetronomeBeginAsOwner() saved.
 */
void
MetronomeEndAsOwner(MetronomeAsOwner *sw)
{
	AtEOXact_GUC(false, sw->save_nestlevel);
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec_context);
}

/*
 * The extension's schema name, quoted for use in SQL text (palloc'd).
 */
const char *
MetronomeSchemaName(void)
{
	Oid			nsp = MetronomeSchemaOid(false);

	return quote_identifier(get_namespace_name(nsp));
}

/*
 * OID of one of the extension's relations.
 */
Oid
MetronomeRelid(const char *relname, bool missing_ok)
{
	Oid			nsp = MetronomeSchemaOid(missing_ok);
	Oid			relid;

	if (!OidIsValid(nsp))
		return InvalidOid;
	relid = get_relname_relid(relname, nsp);
	if (!OidIsValid(relid) && !missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s\" of extension \"metronome\" does not exist",
						relname)));
	return relid;
}

/*
 * See metronome.h.  set_config_option() with GUC_ACTION_SAVE: the caller's
 * AtEOXact_GUC() (or an error) restores the settings.
 */
void
MetronomePinPlans(bool allow_sort)
{
	/*
	 * enable_indexonlyscan too: an index-only scan is the one index path
	 * the planner builds with no index condition at all (the whole index,
	 * quals as a filter), and with a table's tuple count estimated at about
	 * nothing (an ANALYZE that ran while its rows were uncommitted) it looked
	 * as cheap as a probe: mapping.sh (d) once read a million-row segment's
	 * whole index per event.  Without it every index path has a condition.
	 */
	static const char *const off[] = {"enable_seqscan", "enable_bitmapscan",
		"enable_indexonlyscan", "enable_hashjoin", "enable_mergejoin"};
	int			i;

	for (i = 0; i < (int) lengthof(off); i++)
		(void) set_config_option(off[i], "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	if (!allow_sort)
		(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("plan_cache_mode", "force_generic_plan", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

/*
 * See metronome.h.  Time is cut into periods of retain_sent (1 s at least;
 * a day when sent rows are kept), the segments in turn: the rows of the
 * segment after the current one are then all older than retain_sent
 * (retention truncates it, ship.c).
 */
int
MetronomeSegment(void)
{
	int64		period;
	TimestampTz now = GetCurrentTransactionStartTimestamp();

	if (metronome_retain_sent >= 1)
		period = (int64) metronome_retain_sent * USECS_PER_SEC;
	else if (metronome_retain_sent == 0)
		period = USECS_PER_SEC;
	else
		period = USECS_PER_DAY;
	return (int) ((((now / period) % METRONOME_NSEGMENTS) + METRONOME_NSEGMENTS) %
				  METRONOME_NSEGMENTS);
}
