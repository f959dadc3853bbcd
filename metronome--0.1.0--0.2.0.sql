/* metronome--0.1.0--0.2.0.sql: update of the metronome extension from 0.1.0 */

\echo Use "ALTER EXTENSION metronome UPDATE TO '0.2.0'" to load this file. \quit

-- A new installation of 0.2.0 runs metronome--0.1.0.sql and then this file
-- (PostgreSQL follows the update path), so every 0.2.0 object is created
-- here and an updated database is the same as a new one.

------------------------------------------------------------------------------
-- Delivery core: the outbox as a queue with O(1) acknowledgement
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Trust boundary: mapping runs as the invoking user
------------------------------------------------------------------------------

-- The mapping trigger runs as the user who inserts: to_jsonb() of a row runs
-- the casts to json of the row's column types, which their owners wrote.
-- The library switches to the extension's owner (with
-- SECURITY_RESTRICTED_OPERATION) only around its own statements on the
-- extension's tables, so a role allowed only to INSERT events still gets
-- them mapped.
ALTER FUNCTION metronome_map_trigger() SECURITY INVOKER;
COMMENT ON FUNCTION metronome_map_trigger() IS
  'AFTER INSERT trigger: maps each new event (TG_ARGV[0] names its jsonb column; none: the whole row); runs as the inserting user';

-- A partitioned table gets a row-level trigger, which PostgreSQL clones to
-- every partition, present and future: rows inserted or copied into the
-- parent or straight into a partition are all mapped.  (A statement-level
-- trigger on the parent fires only for statements on the parent.)
CREATE OR REPLACE FUNCTION metronome_attach(tbl regclass, event_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
DECLARE
    coltype regtype;
    per_row boolean;
    parent  regclass;
    part    regclass;
    trigfn  text;
BEGIN
    SELECT pg_catalog.format('%I.%I', n.nspname, p.proname) INTO trigfn
      FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE p.oid = 'metronome_map_trigger()'::regprocedure;

    IF event_column IS NOT NULL THEN
        SELECT a.atttypid::regtype INTO coltype
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attname = event_column
           AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'column "%" of relation % does not exist', event_column, tbl
                USING ERRCODE = 'undefined_column',
                      HINT = 'Name the jsonb column that holds the Segment event, or pass NULL to map the whole row.';
        END IF;
        IF coltype <> 'jsonb'::regtype THEN
            RAISE EXCEPTION 'column "%" of relation % is of type %, not jsonb', event_column, tbl, coltype
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'Store events in a jsonb column, or pass NULL to map the whole row.';
        END IF;
    END IF;

    -- A partition of an attached partitioned table has its trigger already.
    SELECT pt.tgrelid::regclass INTO parent
      FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_trigger pt ON pt.oid = t.tgparentid
     WHERE t.tgrelid = tbl AND t.tgname = 'metronome_map';
    IF parent IS NOT NULL THEN
        RAISE EXCEPTION 'relation % is mapped through its partitioned table %', tbl, parent
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = pg_catalog.format('Its rows are mapped already. To map it differently, call metronome_detach(%L) first.', parent::text);
    END IF;

    -- A statement-level trigger with a transition table maps a multi-row
    -- INSERT or COPY in one pass.  Partitioned tables, partitions and
    -- inheritance children get a row-level trigger: partitions cannot have
    -- transition tables, and a partitioned table's statement-level trigger
    -- would miss the rows inserted straight into its partitions.
    SELECT c.relkind = 'p' OR c.relispartition
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid)
      INTO per_row
      FROM pg_catalog.pg_class c WHERE c.oid = tbl;

    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                WHERE tgrelid = tbl AND tgname = 'metronome_map') THEN
        EXECUTE pg_catalog.format('DROP TRIGGER metronome_map ON %s', tbl);
    END IF;
    -- partitions attached by themselves are mapped through the parent now
    FOR part IN
        SELECT t.tgrelid::regclass
          FROM pg_catalog.pg_partition_tree(tbl) p
          JOIN pg_catalog.pg_trigger t ON t.tgrelid = p.relid
         WHERE p.relid <> tbl AND t.tgname = 'metronome_map' AND t.tgparentid = 0
    LOOP
        RAISE NOTICE 'partition % is mapped through % from now on', part, tbl;
        EXECUTE pg_catalog.format('DROP TRIGGER metronome_map ON %s', part);
    END LOOP;
    IF per_row THEN
        EXECUTE pg_catalog.format('CREATE TRIGGER metronome_map AFTER INSERT ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION %s(%s)',
                       tbl, trigfn,
                       COALESCE(pg_catalog.quote_literal(event_column), ''));
    ELSE
        EXECUTE pg_catalog.format('CREATE TRIGGER metronome_map AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS metronome_new '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)',
                       tbl, trigfn,
                       COALESCE(pg_catalog.quote_literal(event_column), ''));
    END IF;
END;
$$;
REVOKE ALL ON FUNCTION metronome_attach(regclass, name) FROM PUBLIC;

-- Partitioned tables attached by 0.1.0 (statement-level trigger): attach
-- them again, with the same event column, so their partitions map too.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.tgrelid::regclass AS tbl,
               CASE WHEN t.tgnargs > 0 THEN
                   pg_catalog.convert_from(
                       pg_catalog.substr(t.tgargs, 1, pg_catalog.position(t.tgargs, '\x00'::bytea) - 1),
                       pg_catalog.current_setting('server_encoding'))
               END AS col
          FROM pg_catalog.pg_trigger t
          JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
         WHERE t.tgname = 'metronome_map' AND c.relkind = 'p'
           AND t.tgfoid = 'metronome_map_trigger()'::regprocedure
           AND (t.tgtype & 1) = 0       -- FOR EACH STATEMENT
    LOOP
        PERFORM metronome_attach(r.tbl, r.col);
    END LOOP;
END;
$$;

------------------------------------------------------------------------------
-- Operations: replay, backfill, retention of events, metrics
------------------------------------------------------------------------------
