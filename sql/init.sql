--
-- init: CREATE / DROP EXTENSION metronome, the objects of the contract, and
-- the metronome.* settings.
--
-- pg_regress created the extension (--load-extension=metronome) in the
-- default schema; this test leaves it there, installed and empty, when it
-- ends.  The library is not preloaded here: LOAD defines the settings.
--

-- The extension: version 0.2.0, not relocatable.
SELECT e.extname, e.extversion, e.extrelocatable, n.nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'metronome';

-- Every column of the contract, with its type, NOT NULL and default:
-- the query lists what is missing or different (nothing).
WITH contract(tbl, col, typ, nn, dflt) AS (VALUES
    ('segment_events', 'id', 'bigint', true, 'nextval'),
    ('segment_events', 'event', 'jsonb', true, NULL),
    ('segment_events', 'received_at', 'timestamp with time zone', true, 'now()'),
    ('metronome_mappings', 'id', 'integer', true, 'nextval'),
    ('metronome_mappings', 'name', 'text', true, NULL),
    ('metronome_mappings', 'subscription', 'text', true, '''type = "track"''::text'),
    ('metronome_mappings', 'transaction_id', 'jsonb', true, '''{"@path": "$.messageId"}''::jsonb'),
    ('metronome_mappings', 'customer_id', 'jsonb', true, '''{"@path": "$.context.groupId"}''::jsonb'),
    ('metronome_mappings', 'timestamp', 'jsonb', true, '''{"@path": "$.timestamp"}''::jsonb'),
    ('metronome_mappings', 'event_type', 'jsonb', true, '''{"@path": "$.event"}''::jsonb'),
    ('metronome_mappings', 'properties', 'jsonb', true, '''{"@path": "$.properties"}''::jsonb'),
    ('metronome_mappings', 'enabled', 'boolean', true, 'true'),
    ('metronome_outbox', 'id', 'bigint', true, 'nextval'),
    ('metronome_outbox', 'transaction_id', 'text', true, NULL),
    ('metronome_outbox', 'customer_id', 'text', true, NULL),
    ('metronome_outbox', 'event_type', 'text', true, NULL),
    ('metronome_outbox', 'timestamp', 'timestamp with time zone', true, NULL),
    ('metronome_outbox', 'properties', 'jsonb', true, '''{}''::jsonb'),
    ('metronome_outbox', 'mapping', 'text', false, NULL),
    ('metronome_outbox', 'status', 'text', true, '''pending''::text'),
    ('metronome_outbox', 'attempts', 'integer', true, '0'),
    ('metronome_outbox', 'next_attempt_at', 'timestamp with time zone', true, 'now()'),
    ('metronome_outbox', 'last_error', 'text', false, NULL),
    ('metronome_outbox', 'created_at', 'timestamp with time zone', true, 'now()'),
    ('metronome_outbox', 'sent_at', 'timestamp with time zone', false, NULL),
    ('metronome_rejected', 'id', 'bigint', true, 'nextval'),
    ('metronome_rejected', 'mapping', 'text', false, NULL),
    ('metronome_rejected', 'event', 'jsonb', true, NULL),
    ('metronome_rejected', 'error', 'text', true, NULL),
    ('metronome_rejected', 'created_at', 'timestamp with time zone', true, 'now()')
), actual AS (
    SELECT c.relname::text AS tbl, a.attname::text AS col,
           format_type(a.atttypid, a.atttypmod) AS typ, a.attnotnull AS nn,
           pg_get_expr(d.adbin, d.adrelid) AS dflt
      FROM pg_class c
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
     WHERE c.relnamespace = 'public'::regnamespace
)
-- (metronome_outbox is a view since 0.2.0: its NOT NULLs are those of the
-- tables under it, so only its types and defaults are compared.)
SELECT k.tbl, k.col, k.typ AS want_type, a.typ AS got_type,
       k.nn AS want_not_null, a.nn AS got_not_null,
       k.dflt AS want_default, a.dflt AS got_default
  FROM contract k LEFT JOIN actual a USING (tbl, col)
 WHERE a.col IS NULL OR a.typ <> k.typ OR (a.nn <> k.nn AND k.tbl <> 'metronome_outbox')
    OR (k.dflt = 'nextval' AND a.dflt NOT LIKE 'nextval(%')
    OR (k.dflt <> 'nextval' AND a.dflt IS DISTINCT FROM k.dflt)
    OR (k.dflt IS NULL AND a.dflt IS NOT NULL);

-- Keys the contract names.
SELECT conrelid::regclass AS tbl, contype,
       array_agg(a.attname ORDER BY a.attname) AS cols
  FROM pg_constraint k
  JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)
 WHERE conrelid IN ('segment_events'::regclass, 'metronome_mappings'::regclass,
                    'metronome_outbox'::regclass, 'metronome_rejected'::regclass)
   AND contype IN ('p', 'u')
 GROUP BY conrelid, conname, contype
 ORDER BY 1::text, 2, 3::text;

-- The functions of the contract and what they return.
SELECT p.oid::regprocedure AS function, pg_get_function_result(p.oid) AS returns
  FROM pg_proc p
 WHERE p.oid IN (to_regprocedure('metronome_matches(text, jsonb)'),
                 to_regprocedure('metronome_evaluate(jsonb, jsonb)'),
                 to_regprocedure('metronome_map(jsonb)'),
                 to_regprocedure('metronome_enqueue(jsonb)'),
                 to_regprocedure('metronome_map_trigger()'),
                 to_regprocedure('metronome_attach(regclass, name)'),
                 to_regprocedure('metronome_ship(integer, bigint)'),
                 to_regprocedure('metronome_check_connection()'),
                 to_regprocedure('metronome_retry(bigint[])'),
                 to_regprocedure('metronome_status()'))
 ORDER BY 1::text;

-- metronome_status() has at least the contract's columns.
SELECT unnest(ARRAY['worker_pid integer', 'state text', 'pending bigint',
                    'failed bigint', 'oldest_pending timestamp with time zone',
                    'last_success_at timestamp with time zone', 'last_error text',
                    'last_error_at timestamp with time zone'])
EXCEPT
SELECT a.name || ' ' || format_type(a.typ, NULL)
  FROM pg_proc p,
       unnest(p.proargnames, p.proallargtypes, p.proargmodes) AS a(name, typ, mode)
 WHERE p.oid = 'metronome_status()'::regprocedure AND a.mode = 'o';

-- segment_events carries the mapping trigger.
SELECT tgname, tgenabled, tgfoid::regproc AS function
  FROM pg_trigger WHERE tgrelid = 'segment_events'::regclass AND NOT tgisinternal;

-- The preset: a mapping row with only a name gets Segment's defaults.
INSERT INTO metronome_mappings (name) VALUES ('x')
RETURNING name, subscription, transaction_id, customer_id, "timestamp",
          event_type, properties, enabled;
-- names are unique
INSERT INTO metronome_mappings (name) VALUES ('x');

-- Count the extension's objects, to compare after DROP and CREATE.
SELECT count(*) AS n_objects FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'metronome') \gset

-- Not relocatable; created once.
CREATE SCHEMA metronome_other;
ALTER EXTENSION metronome SET SCHEMA metronome_other;
CREATE EXTENSION metronome;
CREATE EXTENSION IF NOT EXISTS metronome;

-- DROP EXTENSION removes every object (no CASCADE needed) ...
DROP EXTENSION metronome;
SELECT c.oid::regclass FROM pg_class c
 WHERE c.relname ~ '^(metronome_|segment_events)';
SELECT p.oid::regprocedure FROM pg_proc p WHERE p.proname ~ '^metronome_';

-- ... and CREATE EXTENSION makes them all again, empty.
CREATE EXTENSION metronome;
SELECT count(*) = :n_objects AS same_objects FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'metronome');
SELECT (SELECT count(*) FROM metronome_mappings) AS mappings,
       (SELECT count(*) FROM metronome_outbox) AS outbox,
       (SELECT count(*) FROM metronome_rejected) AS rejected,
       (SELECT count(*) FROM segment_events) AS events;

-- CREATE EXTENSION ... SCHEMA puts every object in that schema, and the
-- trigger on its segment_events calls that schema's trigger function.
DROP EXTENSION metronome;
CREATE EXTENSION metronome SCHEMA metronome_other;
SELECT n.nspname, count(*)
  FROM pg_depend d
  LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
  LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
  JOIN pg_namespace n ON n.oid = coalesce(c.relnamespace, p.pronamespace)
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'metronome')
 GROUP BY n.nspname;
SELECT tgname, tgfoid::regprocedure AS function
  FROM pg_trigger
 WHERE tgrelid = 'metronome_other.segment_events'::regclass AND NOT tgisinternal;
SELECT to_regclass('public.metronome_outbox') AS in_public;
INSERT INTO metronome_other.metronome_mappings (name) VALUES ('tracks')
RETURNING name, subscription, enabled;
DROP EXTENSION metronome;
DROP SCHEMA metronome_other;
CREATE EXTENSION metronome;

--
-- Settings
--
LOAD 'metronome';

-- Defaults, units, contexts and ranges (as a superuser sees them).
SELECT name, setting, unit, context, vartype, min_val, max_val, enumvals
  FROM pg_settings WHERE name LIKE 'metronome.%' ORDER BY name;
-- as SHOW prints them
SHOW metronome.api_token;
SHOW metronome.ingest_url;
SHOW metronome.database;
SHOW metronome.batch_size;
SHOW metronome.max_inflight;
SHOW metronome.poll_interval;
SHOW metronome.request_timeout;
SHOW metronome.max_backoff;
SHOW metronome.max_attempts;
SHOW metronome.retain_sent;
SHOW metronome.enabled;
SHOW metronome.on_mapping_error;

-- The prefix is reserved: a misspelt setting is an error, not a new one.
SET metronome.batchsize = 10;

-- Delivery settings are reloaded from the configuration, not SET.
SET metronome.batch_size = 50;
SET metronome.api_token = 'abcd';
SET metronome.database = 'other';
-- ALTER SYSTEM checks values and ranges (these write nothing).
ALTER SYSTEM SET metronome.batch_size = 0;
ALTER SYSTEM SET metronome.batch_size = 101;
ALTER SYSTEM SET metronome.max_attempts = -1;
ALTER SYSTEM SET metronome.retain_sent = -2;
ALTER SYSTEM SET metronome.enabled = 'maybe';
ALTER SYSTEM SET metronome.ingest_url = 'ftp://metronome.example/v1/ingest';
ALTER SYSTEM SET metronome.ingest_url = 'metronome.example/v1/ingest';

-- metronome.on_mapping_error is per session: reject or error only.
SET metronome.on_mapping_error = 'error';
SHOW metronome.on_mapping_error;
SET metronome.on_mapping_error = 'ignore';
SET metronome.on_mapping_error = 'Reject';
SHOW metronome.on_mapping_error;
RESET metronome.on_mapping_error;

-- A plain role cannot read the token nor the URL, by any means.
CREATE ROLE regress_metronome_plain;
SET ROLE regress_metronome_plain;
SHOW metronome.api_token;
SELECT current_setting('metronome.api_token');
SELECT current_setting('metronome.api_token', true) IS NULL AS hidden;
SHOW metronome.ingest_url;
SELECT name FROM pg_settings WHERE name IN ('metronome.api_token', 'metronome.ingest_url');
SELECT count(*) FROM pg_show_all_settings() WHERE name = 'metronome.api_token';
SET metronome.api_token = 'abcd';
-- it can use the per-session setting
SET metronome.on_mapping_error = 'error';
SHOW metronome.on_mapping_error;
RESET metronome.on_mapping_error;
-- and cannot write the extension's tables
INSERT INTO metronome_mappings (name) VALUES ('mine');
SELECT count(*) FROM metronome_outbox;
RESET ROLE;
DROP ROLE regress_metronome_plain;
