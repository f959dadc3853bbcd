/* metronome--0.1.0.sql: install script of the metronome extension */

\echo Use "CREATE EXTENSION metronome" to load this file. \quit

------------------------------------------------------------------------------
-- Mapping engine (pure functions)
------------------------------------------------------------------------------

CREATE FUNCTION metronome_matches(subscription text, event jsonb)
RETURNS boolean
AS 'MODULE_PATHNAME', 'metronome_matches'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metronome_matches(text, jsonb) IS
  'Does the event match the Segment FQL subscription?';

CREATE FUNCTION metronome_evaluate(mapping jsonb, event jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'metronome_evaluate'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION metronome_evaluate(jsonb, jsonb) IS
  'Resolve a Segment mapping value against an event (NULL when undefined)';

------------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------------

-- The default inbox: one Segment event per row.
CREATE TABLE segment_events (
    id          bigserial PRIMARY KEY,
    event       jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE segment_events IS
  'Segment events; each INSERT is mapped to metronome_outbox by trigger metronome_map';

-- Declarative mapping rows: one Segment "Send Event" action each.  Every
-- default reproduces the preset of Segment's Metronome (Actions) destination.
CREATE TABLE metronome_mappings (
    id             serial PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    subscription   text NOT NULL DEFAULT 'type = "track"',
    transaction_id jsonb NOT NULL DEFAULT '{"@path": "$.messageId"}',
    customer_id    jsonb NOT NULL DEFAULT '{"@path": "$.context.groupId"}',
    "timestamp"    jsonb NOT NULL DEFAULT '{"@path": "$.timestamp"}',
    event_type     jsonb NOT NULL DEFAULT '{"@path": "$.event"}',
    properties     jsonb NOT NULL DEFAULT '{"@path": "$.properties"}',
    enabled        boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT metronome_mappings_name_check CHECK (name <> '')
);
COMMENT ON TABLE metronome_mappings IS
  'Which Segment events to bill (FQL subscription) and how each Metronome field is built (mapping directives)';

-- What is to be sent, and what was sent.
CREATE TABLE metronome_outbox (
    id              bigserial PRIMARY KEY,
    transaction_id  text COLLATE "C" NOT NULL UNIQUE,   -- an identifier: compared byte by byte
    customer_id     text NOT NULL,
    event_type      text NOT NULL,
    "timestamp"     timestamptz NOT NULL,
    properties      jsonb NOT NULL DEFAULT '{}',
    mapping         text,
    status          text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT metronome_outbox_transaction_id_check
        CHECK (length(transaction_id) BETWEEN 1 AND 128),
    CONSTRAINT metronome_outbox_customer_id_check CHECK (customer_id <> ''),
    CONSTRAINT metronome_outbox_event_type_check CHECK (event_type <> ''),
    CONSTRAINT metronome_outbox_properties_check
        CHECK (jsonb_typeof(properties) = 'object'),
    CONSTRAINT metronome_outbox_status_check
        CHECK (status IN ('pending', 'sent', 'failed')),
    CONSTRAINT metronome_outbox_attempts_check CHECK (attempts >= 0)
);
COMMENT ON TABLE metronome_outbox IS
  'Metronome usage events to ship (pending), shipped (sent) or refused by Metronome (failed)';

-- The claim path: due pending rows in order.  Partial, so claiming costs the
-- same however many sent rows the table holds.
CREATE INDEX metronome_outbox_pending_idx
    ON metronome_outbox (next_attempt_at, id) WHERE status = 'pending';
-- metronome_status() and metronome_retry() on failed rows.
CREATE INDEX metronome_outbox_failed_idx
    ON metronome_outbox (id) WHERE status = 'failed';
-- The worker's retention clean-up of old sent rows.
CREATE INDEX metronome_outbox_sent_idx
    ON metronome_outbox (sent_at) WHERE status = 'sent';

-- Events that matched a subscription but could not be mapped.
CREATE TABLE metronome_rejected (
    id         bigserial PRIMARY KEY,
    mapping    text,
    event      jsonb NOT NULL,
    error      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE metronome_rejected IS
  'Events that matched a subscription but could not be mapped, with the reason';

-- pg_dump keeps the extension's data (the money is in these rows).
SELECT pg_catalog.pg_extension_config_dump('segment_events', '');
SELECT pg_catalog.pg_extension_config_dump('segment_events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_mappings', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_mappings_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_outbox', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_rejected', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_rejected_id_seq', '');

------------------------------------------------------------------------------
-- Mapping rows: validation and cache invalidation
------------------------------------------------------------------------------

CREATE FUNCTION metronome_mappings_validate()
RETURNS trigger
AS 'MODULE_PATHNAME', 'metronome_mappings_validate'
LANGUAGE C;

CREATE TRIGGER metronome_mappings_validate
    BEFORE INSERT OR UPDATE ON metronome_mappings
    FOR EACH ROW EXECUTE FUNCTION metronome_mappings_validate();

CREATE FUNCTION metronome_mappings_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'metronome_mappings_changed'
LANGUAGE C;

CREATE TRIGGER metronome_mappings_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON metronome_mappings
    FOR EACH STATEMENT EXECUTE FUNCTION metronome_mappings_changed();

------------------------------------------------------------------------------
-- Mapping events into the outbox
------------------------------------------------------------------------------

CREATE FUNCTION metronome_map(event jsonb)
RETURNS TABLE (mapping text, transaction_id text, customer_id text,
               event_type text, "timestamp" timestamptz, properties jsonb,
               error text)
AS 'MODULE_PATHNAME', 'metronome_map'
LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION metronome_map(jsonb) IS
  'Preview: how each enabled, matching mapping maps the event (no side effects)';

CREATE FUNCTION metronome_enqueue(event jsonb)
RETURNS integer
AS 'MODULE_PATHNAME', 'metronome_enqueue'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION metronome_enqueue(jsonb) IS
  'Map one event into metronome_outbox (or metronome_rejected); returns the outbox rows written';

-- The mapping trigger.  SECURITY DEFINER so that a role allowed only to
-- INSERT events still gets them mapped into the outbox it cannot touch.
CREATE FUNCTION metronome_map_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'metronome_map_trigger'
LANGUAGE C SECURITY DEFINER
SET search_path = @extschema@, pg_catalog, pg_temp;
COMMENT ON FUNCTION metronome_map_trigger() IS
  'AFTER INSERT trigger: maps each new event (TG_ARGV[0] names its jsonb column; none: the whole row)';

CREATE FUNCTION metronome_attach(tbl regclass, event_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
DECLARE
    coltype regtype;
    per_row boolean;
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

    -- A statement-level trigger with a transition table maps a multi-row
    -- INSERT or COPY in one pass; partitions and inheritance children cannot
    -- have transition tables, so they get a row-level trigger.
    SELECT c.relispartition
           OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid)
      INTO per_row
      FROM pg_catalog.pg_class c WHERE c.oid = tbl;

    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                WHERE tgrelid = tbl AND tgname = 'metronome_map') THEN
        EXECUTE format('DROP TRIGGER metronome_map ON %s', tbl);
    END IF;
    IF per_row THEN
        EXECUTE format('CREATE TRIGGER metronome_map AFTER INSERT ON %s '
                       'FOR EACH ROW EXECUTE FUNCTION %s(%s)',
                       tbl, trigfn,
                       coalesce(quote_literal(event_column), ''));
    ELSE
        EXECUTE format('CREATE TRIGGER metronome_map AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS metronome_new '
                       'FOR EACH STATEMENT EXECUTE FUNCTION %s(%s)',
                       tbl, trigfn,
                       coalesce(quote_literal(event_column), ''));
    END IF;
END;
$$;
COMMENT ON FUNCTION metronome_attach(regclass, name) IS
  'Create trigger metronome_map on a table: its inserts are mapped (event_column NULL: the whole row is the event)';

CREATE FUNCTION metronome_detach(tbl regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger
                    WHERE tgrelid = tbl AND tgname = 'metronome_map') THEN
        RAISE EXCEPTION 'relation % has no trigger metronome_map', tbl
            USING ERRCODE = 'undefined_object';
    END IF;
    EXECUTE format('DROP TRIGGER metronome_map ON %s', tbl);
END;
$$;
COMMENT ON FUNCTION metronome_detach(regclass) IS
  'Drop trigger metronome_map from a table';

SELECT metronome_attach('segment_events', 'event');

------------------------------------------------------------------------------
-- Delivery
------------------------------------------------------------------------------

CREATE FUNCTION metronome_ship(max_events integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'metronome_ship'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION metronome_ship(integer) IS
  'Ship due pending outbox rows from this session; returns how many events Metronome accepted';

CREATE FUNCTION metronome_check_connection()
RETURNS text
AS 'MODULE_PATHNAME', 'metronome_check_connection'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION metronome_check_connection() IS
  'Check metronome.ingest_url and metronome.api_token; returns ok or raises an error saying what is wrong';

CREATE FUNCTION metronome_retry(ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
    WITH retried AS (
        UPDATE metronome_outbox
           SET status = 'pending', attempts = 0, next_attempt_at = now()
         WHERE status = 'failed' AND (ids IS NULL OR id = ANY (ids))
        RETURNING 1)
    SELECT count(*) FROM retried;
$$;
COMMENT ON FUNCTION metronome_retry(bigint[]) IS
  'Put failed outbox rows (all when NULL) back to pending; returns how many';

CREATE FUNCTION metronome_status(
    OUT worker_pid integer,
    OUT state text,
    OUT pending bigint,
    OUT failed bigint,
    OUT oldest_pending timestamptz,
    OUT last_success_at timestamptz,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT sent_total bigint,
    OUT requests_total bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'metronome_status'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION metronome_status() IS
  'The delivery worker''s state and the queue''s figures';

------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC beyond the pure mapping functions.
------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION metronome_enqueue(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_map(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_map_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_attach(regclass, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_detach(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_mappings_validate() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_mappings_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_ship(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_check_connection() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_retry(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_status() FROM PUBLIC;
