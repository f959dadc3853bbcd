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

------------------------------------------------------------------------------
-- Operations: replay, backfill, retention of events, metrics
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Citus: mappings defined once on the coordinator, cluster-wide views
------------------------------------------------------------------------------
--
-- On a Citus cluster every node runs the extension (CREATE EXTENSION on the
-- coordinator is propagated to the workers) and keeps its own local
-- metronome_mappings, metronome_outbox and metronome_rejected: the mapping
-- trigger runs on the shard that stores the row and writes that node's
-- outbox in the inserting transaction, and each node's delivery worker
-- ships its own outbox.
--
-- Mappings are changed on the coordinator only (on a worker, the trigger
-- metronome_mappings_citus_guard refuses a change).  metronome_citus_setup()
-- makes metronome_mappings_cluster a Citus reference table; after each
-- statement that changes the coordinator's metronome_mappings, the trigger
-- metronome_mappings_citus copies the whole table into it, and Citus writes
-- that copy to the reference table's placement on every node in the same
-- distributed transaction (two-phase commit).  On each worker, the trigger
-- metronome_mappings_cluster_apply on the placement replaces the worker's
-- local metronome_mappings with it; the statement trigger
-- metronome_mappings_changed there invalidates the worker's mapping caches.
-- Before the statement, metronome_mappings_citus_guard on the coordinator
-- locks every distributed table that has the mapping trigger in EXCLUSIVE
-- mode (Citus takes the lock on every shard too): an INSERT waits for the
-- change to commit on every node, so a mapping changed mid-load applies to
-- the same events on every node.
--
-- Without Citus, or before metronome_citus_setup(), the triggers do nothing.

CREATE TABLE metronome_mappings_cluster (
    id             integer PRIMARY KEY,
    name           text NOT NULL,
    subscription   text NOT NULL,
    transaction_id jsonb NOT NULL,
    customer_id    jsonb NOT NULL,
    "timestamp"    jsonb NOT NULL,
    event_type     jsonb NOT NULL,
    properties     jsonb NOT NULL,
    enabled        boolean NOT NULL
);
COMMENT ON TABLE metronome_mappings_cluster IS
  'Citus: the coordinator''s metronome_mappings, replicated to every node (a reference table after metronome_citus_setup())';

-- metronome_citus_active(): Citus is installed here and
-- metronome_citus_setup() has made metronome_mappings_cluster a reference
-- table.
CREATE FUNCTION metronome_citus_active()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    RETURN EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
                    WHERE logicalrelid = 'metronome_mappings_cluster'::regclass);
END;
$$;

-- The coordinator's side: copy metronome_mappings to every node.  On a
-- worker, refuse a change that does not come from the coordinator.
CREATE FUNCTION metronome_mappings_citus()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
DECLARE
    tbl regclass;
BEGIN
    -- inline metronome_citus_active(): whoever may change the mappings runs
    -- this, without Citus too (two statements: pg_dist_partition is only
    -- parsed where it exists)
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition
                    WHERE logicalrelid = 'metronome_mappings_cluster'::regclass) THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.current_setting('metronome_citus.applying', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'metronome_mappings can only be changed on the Citus coordinator'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Each worker''s metronome_mappings is a copy of the coordinator''s.',
                  HINT = 'Change metronome_mappings on the coordinator: the change reaches every node in the same transaction.';
    END IF;
    IF TG_WHEN = 'BEFORE' THEN
        -- wait for the inserts in flight, hold off new ones until the
        -- change has committed on every node
        FOR tbl IN
            SELECT DISTINCT t.tgrelid::regclass
              FROM pg_catalog.pg_trigger t
              JOIN pg_catalog.pg_dist_partition p ON p.logicalrelid = t.tgrelid
             WHERE t.tgname = 'metronome_map'
               AND t.tgfoid = 'metronome_map_trigger()'::regprocedure
             ORDER BY 1
        LOOP
            EXECUTE pg_catalog.format('LOCK TABLE %s IN EXCLUSIVE MODE', tbl);
        END LOOP;
        RETURN NULL;
    END IF;
    DELETE FROM metronome_mappings_cluster;
    INSERT INTO metronome_mappings_cluster
        SELECT id, name, subscription, transaction_id, customer_id,
               "timestamp", event_type, properties, enabled
          FROM metronome_mappings;
    RETURN NULL;
END;
$$;

CREATE TRIGGER metronome_mappings_citus_guard
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON metronome_mappings
    FOR EACH STATEMENT EXECUTE FUNCTION metronome_mappings_citus();
CREATE TRIGGER metronome_mappings_citus
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON metronome_mappings
    FOR EACH STATEMENT EXECUTE FUNCTION metronome_mappings_citus();

-- The workers' side, a trigger on each placement of the reference table:
-- replace the local metronome_mappings with the placement's rows.
CREATE FUNCTION metronome_mappings_cluster_apply()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.citus_is_coordinator() THEN
        RETURN NULL;
    END IF;
    PERFORM pg_catalog.set_config('metronome_citus.applying', 'on', true);
    DELETE FROM metronome_mappings;
    EXECUTE pg_catalog.format(
        'INSERT INTO metronome_mappings (id, name, subscription, transaction_id, '
        'customer_id, "timestamp", event_type, properties, enabled) '
        'SELECT id, name, subscription, transaction_id, customer_id, '
        '"timestamp", event_type, properties, enabled FROM %I.%I',
        TG_TABLE_SCHEMA, TG_TABLE_NAME);
    PERFORM pg_catalog.set_config('metronome_citus.applying', 'off', true);
    RETURN NULL;
END;
$$;

-- Created with the table, so that create_reference_table() gives it to
-- every placement.
CREATE TRIGGER metronome_mappings_cluster_apply
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON metronome_mappings_cluster
    FOR EACH STATEMENT EXECUTE FUNCTION metronome_mappings_cluster_apply();

-- metronome_citus_setup(): on the coordinator, once after CREATE EXTENSION
-- (and again after adding nodes: it re-sends the mappings to every node).
CREATE FUNCTION metronome_citus_setup()
RETURNS integer
LANGUAGE plpgsql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
DECLARE
    nodes integer;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RAISE EXCEPTION 'the citus extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Run CREATE EXTENSION citus first; without Citus, metronome_citus_setup() is not needed.';
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'metronome_citus_setup() must run on the Citus coordinator'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT metronome_citus_active() THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        -- the placements get the table's trigger metronome_mappings_cluster_apply
        PERFORM create_reference_table('metronome_mappings_cluster');
    END IF;
    -- send the coordinator's mappings to every node (the statement fires
    -- metronome_mappings_citus)
    UPDATE metronome_mappings SET id = id WHERE false;
    SELECT count(*) INTO nodes FROM pg_catalog.pg_dist_node
     WHERE isactive AND noderole = 'primary' AND groupid <> 0;
    RETURN nodes;
END;
$$;
COMMENT ON FUNCTION metronome_citus_setup() IS
  'Citus: replicate metronome_mappings from the coordinator to every node (run on the coordinator after CREATE EXTENSION and after adding nodes); returns the number of worker nodes';

-- metronome_citus_nodes(command): run a query returning one json value on
-- every node of the cluster (the coordinator included) through Citus, and
-- return it per node.  An unreachable node gives success false and the error.
CREATE FUNCTION metronome_citus_nodes(command text,
    OUT nodeid integer, OUT nodename text, OUT nodeport integer,
    OUT is_coordinator boolean, OUT success boolean, OUT result text)
RETURNS SETOF record
LANGUAGE plpgsql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_node') IS NULL THEN
        RAISE EXCEPTION 'the citus extension is not installed in this database'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'On a single server, use metronome_status(), metronome_outbox and metronome_rejected.';
    END IF;
    RETURN QUERY
        SELECT r.nodeid, n.nodename::text, n.nodeport, n.groupid = 0,
               r.success, r.result
          FROM pg_catalog.run_command_on_all_nodes(command) r
          JOIN pg_catalog.pg_dist_node n ON n.nodeid = r.nodeid
         ORDER BY n.groupid, r.nodeid;
END;
$$;

-- metronome_cluster_status(): metronome_status() of every node.
CREATE FUNCTION metronome_cluster_status(
    OUT nodeid integer, OUT nodename text, OUT nodeport integer,
    OUT is_coordinator boolean, OUT reachable boolean,
    OUT worker_pid integer, OUT state text, OUT pending bigint,
    OUT failed bigint, OUT oldest_pending timestamptz,
    OUT last_success_at timestamptz, OUT last_error text,
    OUT last_error_at timestamptz, OUT sent_total bigint)
RETURNS SETOF record
LANGUAGE sql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
    SELECT c.nodeid, c.nodename, c.nodeport, c.is_coordinator, c.success,
           s.worker_pid, CASE WHEN c.success THEN s.state ELSE 'unreachable' END,
           s.pending, s.failed, s.oldest_pending, s.last_success_at,
           CASE WHEN c.success THEN s.last_error ELSE c.result END,
           s.last_error_at, s.sent_total
      FROM metronome_citus_nodes(
             'SELECT pg_catalog.row_to_json(s) FROM @extschema@.metronome_status() s') c
      LEFT JOIN LATERAL pg_catalog.json_to_record(
             CASE WHEN c.success THEN c.result::json END)
           AS s(worker_pid integer, state text, pending bigint, failed bigint,
                oldest_pending timestamptz, last_success_at timestamptz,
                last_error text, last_error_at timestamptz, sent_total bigint)
        ON true;
$$;
COMMENT ON FUNCTION metronome_cluster_status() IS
  'Citus: metronome_status() of every node (run on the coordinator)';

-- metronome_cluster_summary(): the cluster's totals.
CREATE FUNCTION metronome_cluster_summary(
    OUT nodes integer, OUT nodes_unreachable integer,
    OUT workers_running integer, OUT pending bigint, OUT failed bigint,
    OUT oldest_pending timestamptz, OUT last_success_at timestamptz,
    OUT sent_total bigint)
RETURNS record
LANGUAGE sql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
    SELECT count(*)::integer,
           count(*) FILTER (WHERE NOT reachable)::integer,
           count(worker_pid)::integer,
           coalesce(sum(pending), 0)::bigint, coalesce(sum(failed), 0)::bigint,
           min(oldest_pending), max(last_success_at),
           coalesce(sum(sent_total), 0)::bigint
      FROM metronome_cluster_status();
$$;
COMMENT ON FUNCTION metronome_cluster_summary() IS
  'Citus: totals over every node''s metronome_status() (run on the coordinator)';

-- metronome_cluster_outbox(only_status, max_rows_per_node): the outbox rows
-- of every node (only_status NULL: all statuses), the oldest first on each
-- node.  A node that cannot be reached is named in a WARNING.
CREATE FUNCTION metronome_cluster_outbox(only_status text DEFAULT NULL,
    max_rows_per_node integer DEFAULT 1000)
RETURNS TABLE (nodeid integer, nodename text, nodeport integer,
    id bigint, transaction_id text, customer_id text, event_type text,
    "timestamp" timestamptz, properties jsonb, mapping text, status text,
    attempts integer, next_attempt_at timestamptz, last_error text,
    created_at timestamptz, sent_at timestamptz)
LANGUAGE plpgsql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
DECLARE
    n record;
BEGIN
    FOR n IN SELECT * FROM metronome_citus_nodes(pg_catalog.format(
        'SELECT coalesce(pg_catalog.json_agg(o ORDER BY o.id), ''[]''::json) '
        'FROM (SELECT * FROM @extschema@.metronome_outbox WHERE %s ORDER BY id LIMIT %s) o',
        CASE WHEN only_status IS NULL THEN 'true'
             ELSE pg_catalog.format('status = %L', only_status) END,
        coalesce(max_rows_per_node::text, 'ALL')))
    LOOP
        IF NOT n.success THEN
            RAISE WARNING 'the outbox of node %:% could not be read: %',
                n.nodename, n.nodeport, n.result;
            CONTINUE;
        END IF;
        RETURN QUERY
            SELECT n.nodeid, n.nodename, n.nodeport, o.*
              FROM pg_catalog.json_to_recordset(n.result::json)
                   AS o(id bigint, transaction_id text, customer_id text,
                        event_type text, "timestamp" timestamptz,
                        properties jsonb, mapping text, status text,
                        attempts integer, next_attempt_at timestamptz,
                        last_error text, created_at timestamptz,
                        sent_at timestamptz);
    END LOOP;
END;
$$;
COMMENT ON FUNCTION metronome_cluster_outbox(text, integer) IS
  'Citus: the outbox rows of every node (run on the coordinator)';

-- metronome_cluster_rejected(max_rows_per_node): the rejected events of
-- every node, the oldest first on each node.  A node that cannot be reached
-- is named in a WARNING.
CREATE FUNCTION metronome_cluster_rejected(max_rows_per_node integer DEFAULT 1000)
RETURNS TABLE (nodeid integer, nodename text, nodeport integer,
    id bigint, mapping text, event jsonb, error text, created_at timestamptz)
LANGUAGE plpgsql
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
DECLARE
    n record;
BEGIN
    FOR n IN SELECT * FROM metronome_citus_nodes(pg_catalog.format(
        'SELECT coalesce(pg_catalog.json_agg(r ORDER BY r.id), ''[]''::json) '
        'FROM (SELECT * FROM @extschema@.metronome_rejected ORDER BY id LIMIT %s) r',
        coalesce(max_rows_per_node::text, 'ALL')))
    LOOP
        IF NOT n.success THEN
            RAISE WARNING 'the rejected events of node %:% could not be read: %',
                n.nodename, n.nodeport, n.result;
            CONTINUE;
        END IF;
        RETURN QUERY
            SELECT n.nodeid, n.nodename, n.nodeport, r.*
              FROM pg_catalog.json_to_recordset(n.result::json)
                   AS r(id bigint, mapping text, event jsonb, error text,
                        created_at timestamptz);
    END LOOP;
END;
$$;
COMMENT ON FUNCTION metronome_cluster_rejected(integer) IS
  'Citus: the rejected events of every node (run on the coordinator)';

-- metronome_attach() on a distributed table: Citus creates a trigger on a
-- distributed table (and on each of its shards) only with
-- citus.enable_unsafe_triggers on.  The mapping trigger writes only the local
-- outbox of the node that runs it, which is what that setting guards against
-- not doing, so metronome_attach() turns it on for itself.  Without Citus the
-- setting is an inert placeholder.
ALTER FUNCTION metronome_attach(regclass, name) SET citus.enable_unsafe_triggers = on;

REVOKE ALL ON FUNCTION metronome_citus_active() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_mappings_citus() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_mappings_cluster_apply() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_citus_setup() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_citus_nodes(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_cluster_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_cluster_summary() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_cluster_outbox(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_cluster_rejected(integer) FROM PUBLIC;
