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
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "delivery.h"
#include "fmgr.h"
#include "funcapi.h"
#include "metronome.h"
#include "miscadmin.h"
#include "pg_compat.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
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
	}
}

/*
 * OID of the schema the extension is installed in; InvalidOid (or an error
 * unless missing_ok) when it is not installed in this database.
 */
Oid
MetronomeSchemaOid(bool missing_ok)
{
	Oid			extoid = get_extension_oid("metronome", true);

	if (!OidIsValid(extoid))
	{
		if (missing_ok)
			return InvalidOid;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"metronome\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION metronome.")));
	}
	return get_extension_schema(extoid);
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
