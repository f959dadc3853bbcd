/* metronome--0.1.0--0.2.0.sql: update of the metronome extension from 0.1.0 */

\echo Use "ALTER EXTENSION metronome UPDATE TO '0.2.0'" to load this file. \quit

-- A new installation of 0.2.0 runs metronome--0.1.0.sql and then this file
-- (PostgreSQL follows the update path), so every 0.2.0 object is created
-- here and an updated database is the same as a new one.

------------------------------------------------------------------------------
-- Delivery core: the outbox as a queue with O(1) acknowledgement
------------------------------------------------------------------------------
--
-- metronome_outbox becomes a view over three kinds of tables (design in the
-- banner of src/ship.c):
--
--   metronome_queue        the events, partitioned into three segments by
--                          time (metronome_segment()); each row stamped
--                          with its inserting transaction (txid).  Written
--                          once, never updated, never deleted: a segment
--                          leaves by TRUNCATE when all it holds is
--                          acknowledged and older than retain_sent.
--   metronome_delivery     one row: the delivery cursor (PgQ's "ticks":
--                          snapshots) and the lease of the shipper at work.
--   metronome_outbox_state a row per exception only: a row that failed, is
--                          waiting for a retry, or came from 0.1.0; it
--                          carries the whole event, so it outlives its
--                          segment.
--   metronome_ticks        one row per finished batch of the cursor, for
--                          sent_at.

-- 0.1.0's rows are converted below; the id sequence is kept (its position
-- too) and outlives the table that owned it.
ALTER SEQUENCE metronome_outbox_id_seq OWNED BY NONE;
ALTER TABLE metronome_outbox RENAME TO metronome_outbox_010;

CREATE FUNCTION metronome_segment()
RETURNS smallint
AS 'MODULE_PATHNAME', 'metronome_segment'
LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION metronome_segment() IS
  'The queue segment that new outbox rows go to (rotates with metronome.retain_sent)';

CREATE TABLE metronome_queue (
    id              bigint NOT NULL DEFAULT nextval('metronome_outbox_id_seq'),
    seg             smallint NOT NULL DEFAULT metronome_segment(),
    txid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    transaction_id  text COLLATE "C" NOT NULL,
    customer_id     text NOT NULL,
    event_type      text NOT NULL,
    "timestamp"     timestamptz NOT NULL,
    properties      jsonb NOT NULL DEFAULT '{}',
    mapping         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT metronome_queue_transaction_id_check
        CHECK (length(transaction_id) BETWEEN 1 AND 128),
    CONSTRAINT metronome_queue_customer_id_check CHECK (customer_id <> ''),
    CONSTRAINT metronome_queue_event_type_check CHECK (event_type <> ''),
    CONSTRAINT metronome_queue_properties_check
        CHECK (jsonb_typeof(properties) = 'object')
) PARTITION BY LIST (seg);
COMMENT ON TABLE metronome_queue IS
  'Outbox rows as inserted (never updated); their status is derived from metronome_delivery and metronome_outbox_state';
CREATE TABLE metronome_queue_0 PARTITION OF metronome_queue FOR VALUES IN (0);
CREATE TABLE metronome_queue_1 PARTITION OF metronome_queue FOR VALUES IN (1);
CREATE TABLE metronome_queue_2 PARTITION OF metronome_queue FOR VALUES IN (2);
-- Dedup: the leading column serves the probe by transaction_id alone.
CREATE UNIQUE INDEX metronome_queue_transaction_id_key
    ON metronome_queue (transaction_id, seg);
-- The claim: rows of a batch in (txid, id) order, an index range.
CREATE INDEX metronome_queue_txid_idx ON metronome_queue (txid, id);

-- The exceptions: rows that failed, wait for a retry, or came from 0.1.0.
CREATE TABLE metronome_outbox_state (
    id              bigint PRIMARY KEY,
    transaction_id  text COLLATE "C" NOT NULL UNIQUE,
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
    CONSTRAINT metronome_outbox_state_status_check
        CHECK (status IN ('pending', 'sent', 'failed')),
    CONSTRAINT metronome_outbox_state_attempts_check CHECK (attempts >= 0)
);
COMMENT ON TABLE metronome_outbox_state IS
  'Outbox rows with a history: failed, waiting for a retry, or converted from 0.1.0';
CREATE INDEX metronome_outbox_state_pending_idx
    ON metronome_outbox_state (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX metronome_outbox_state_failed_idx
    ON metronome_outbox_state (id) WHERE status = 'failed';
CREATE INDEX metronome_outbox_state_sent_idx
    ON metronome_outbox_state (sent_at) WHERE status = 'sent';

-- The delivery cursor.  Every queue row whose txid is visible in last_snap
-- is acknowledged; so is one visible in cur_snap (the batch being
-- delivered) up to (pos_txid, pos_id).  lease_*: the shipper at work and
-- the end of what it claimed.  system_id: the cluster the txids come from
-- (NULL: not known yet; a restore into another cluster re-stamps the rows,
-- see ship.c).  The row inserted here has system_id NULL and is not dumped;
-- after a restore the dumped row wins and the shipper deletes this one.
CREATE TABLE metronome_delivery (
    last_snap   pg_snapshot NOT NULL,
    cur_snap    pg_snapshot,
    pos_txid    xid8 NOT NULL DEFAULT '0',
    pos_id      bigint NOT NULL DEFAULT 0,
    acked_at    timestamptz,
    lease_pid   integer,
    lease_until timestamptz,
    lease_txid  xid8,
    lease_id    bigint,
    lease_final boolean,
    system_id   numeric
);
COMMENT ON TABLE metronome_delivery IS
  'The delivery cursor over metronome_queue (one row)';
INSERT INTO metronome_delivery (last_snap) VALUES ('1:1:');

-- One row per finished batch: when its rows were acknowledged (sent_at).
CREATE TABLE metronome_ticks (
    tick_xmax xid8 NOT NULL,
    snap     pg_snapshot NOT NULL,
    acked_at timestamptz NOT NULL
);
CREATE INDEX metronome_ticks_xmax_idx ON metronome_ticks (tick_xmax);

-- Is a queue row acknowledged?  (inlined into the view)
CREATE FUNCTION metronome_acked(txid xid8, id bigint, last_snap pg_snapshot,
                                cur_snap pg_snapshot, pos_txid xid8, pos_id bigint)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.pg_visible_in_snapshot(txid, last_snap)
        OR (cur_snap IS NOT NULL
            AND pg_catalog.pg_visible_in_snapshot(txid, cur_snap)
            AND (txid, id) <= (pos_txid, pos_id))
$$;

CREATE VIEW metronome_outbox AS
SELECT q.id, q.transaction_id, q.customer_id, q.event_type, q."timestamp",
       q.properties, q.mapping,
       CASE WHEN a.acked THEN 'sent' ELSE 'pending' END AS status,
       CASE WHEN a.acked THEN 1 ELSE 0 END AS attempts,
       q.created_at AS next_attempt_at,
       NULL::text AS last_error,
       q.created_at,
       CASE WHEN a.acked THEN
           coalesce((SELECT t.acked_at FROM metronome_ticks t
                      WHERE t.tick_xmax > q.txid
                        AND pg_catalog.pg_visible_in_snapshot(q.txid, t.snap)
                      ORDER BY t.tick_xmax LIMIT 1), d.acked_at)
       END AS sent_at
  FROM metronome_queue q
 CROSS JOIN (SELECT * FROM metronome_delivery dd
              ORDER BY dd.system_id IS NULL LIMIT 1) d
 CROSS JOIN LATERAL (SELECT metronome_acked(q.txid, q.id, d.last_snap, d.cur_snap, d.pos_txid, d.pos_id) AS acked) a
 WHERE NOT EXISTS (SELECT 1 FROM metronome_outbox_state s WHERE s.id = q.id)
UNION ALL
SELECT s.id, s.transaction_id, s.customer_id, s.event_type, s."timestamp",
       s.properties, s.mapping, s.status, s.attempts, s.next_attempt_at,
       s.last_error, s.created_at, s.sent_at
  FROM metronome_outbox_state s;
-- The defaults of 0.1.0's columns, for INSERT INTO metronome_outbox.
ALTER VIEW metronome_outbox ALTER COLUMN id SET DEFAULT nextval('metronome_outbox_id_seq');
ALTER VIEW metronome_outbox ALTER COLUMN properties SET DEFAULT '{}';
ALTER VIEW metronome_outbox ALTER COLUMN status SET DEFAULT 'pending';
ALTER VIEW metronome_outbox ALTER COLUMN attempts SET DEFAULT 0;
ALTER VIEW metronome_outbox ALTER COLUMN next_attempt_at SET DEFAULT now();
ALTER VIEW metronome_outbox ALTER COLUMN created_at SET DEFAULT now();
COMMENT ON VIEW metronome_outbox IS
  'Metronome usage events to ship (pending), shipped (sent) or refused by Metronome (failed)';

-- INSERT INTO metronome_outbox (the five fields, and mapping): a row of the
-- queue; a duplicate transaction_id is skipped.  SECURITY DEFINER, as the
-- 0.1.0 table was: a role granted INSERT on metronome_outbox needs no
-- privilege on the tables under it.  It runs fixed SQL on the extension's
-- own tables only (no user code: the values are typed already).
CREATE FUNCTION metronome_outbox_insert()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM metronome_outbox_state s
                WHERE s.transaction_id = NEW.transaction_id)
       OR EXISTS (SELECT 1 FROM metronome_queue q
                   WHERE q.transaction_id = NEW.transaction_id) THEN
        RETURN NULL;
    END IF;
    -- A row with a history (a later first attempt, a status, attempts, an
    -- error) is an exception row from the start.
    IF NEW.next_attempt_at > now() OR NEW.status IS DISTINCT FROM 'pending'
       OR NEW.attempts IS DISTINCT FROM 0 OR NEW.last_error IS NOT NULL
       OR NEW.sent_at IS NOT NULL THEN
        INSERT INTO metronome_outbox_state
            (id, transaction_id, customer_id, event_type, "timestamp", properties,
             mapping, status, attempts, next_attempt_at, last_error, created_at, sent_at)
        VALUES (coalesce(NEW.id, nextval('metronome_outbox_id_seq')),
                NEW.transaction_id, NEW.customer_id, NEW.event_type, NEW."timestamp",
                coalesce(NEW.properties, '{}'), NEW.mapping,
                coalesce(NEW.status, 'pending'), coalesce(NEW.attempts, 0),
                coalesce(NEW.next_attempt_at, now()), NEW.last_error,
                coalesce(NEW.created_at, now()), NEW.sent_at)
        RETURNING id, created_at INTO NEW.id, NEW.created_at;
        RETURN NEW;
    END IF;
    INSERT INTO metronome_queue (id, transaction_id, customer_id, event_type,
                                 "timestamp", properties, mapping)
    SELECT coalesce(NEW.id, nextval('metronome_outbox_id_seq')),
           NEW.transaction_id, NEW.customer_id, NEW.event_type,
           NEW."timestamp", coalesce(NEW.properties, '{}'), NEW.mapping
    ON CONFLICT DO NOTHING
    RETURNING id, created_at INTO NEW.id, NEW.created_at;
    IF NEW.id IS NULL THEN
        RETURN NULL;
    END IF;
    NEW.status := 'pending';
    NEW.attempts := 0;
    NEW.next_attempt_at := NEW.created_at;
    NEW.last_error := NULL;
    NEW.sent_at := NULL;
    RETURN NEW;
END;
$$;
CREATE TRIGGER metronome_outbox_insert
    INSTEAD OF INSERT ON metronome_outbox
    FOR EACH ROW EXECUTE FUNCTION metronome_outbox_insert();

-- DELETE FROM metronome_outbox: removes the row (an exceptional, per-row
-- operation; retention never deletes).
CREATE FUNCTION metronome_outbox_delete()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM metronome_outbox_state WHERE id = OLD.id;
    DELETE FROM metronome_queue WHERE id = OLD.id;
    RETURN OLD;
END;
$$;
CREATE TRIGGER metronome_outbox_delete
    INSTEAD OF DELETE ON metronome_outbox
    FOR EACH ROW EXECUTE FUNCTION metronome_outbox_delete();

-- 0.1.0's rows, every status, with their attempts, errors and times: they
-- keep their ids and become exception rows (pending ones are shipped from
-- there, due at their next_attempt_at).
INSERT INTO metronome_outbox_state
    (id, transaction_id, customer_id, event_type, "timestamp", properties,
     mapping, status, attempts, next_attempt_at, last_error, created_at, sent_at)
SELECT id, transaction_id, customer_id, event_type, "timestamp", properties,
       mapping, status, attempts, next_attempt_at, last_error, created_at, sent_at
  FROM metronome_outbox_010;
-- out of the extension first: that also takes it out of the tables pg_dump
-- dumps (extconfig), where a dropped table would stay as a bare OID
ALTER EXTENSION metronome DROP TABLE metronome_outbox_010;
DROP TABLE metronome_outbox_010;

SELECT pg_catalog.pg_extension_config_dump('metronome_queue_0', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_queue_1', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_queue_2', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_outbox_state', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_delivery', 'WHERE system_id IS NOT NULL');
SELECT pg_catalog.pg_extension_config_dump('metronome_ticks', '');

-- metronome_ship is a procedure: it commits its claim, sends with no
-- transaction snapshot held, and acknowledges in a new transaction.
DROP FUNCTION metronome_ship(integer);
CREATE PROCEDURE metronome_ship(max_events integer DEFAULT NULL,
                                INOUT accepted bigint DEFAULT NULL)
AS 'MODULE_PATHNAME', 'metronome_ship'
LANGUAGE C;
COMMENT ON PROCEDURE metronome_ship(integer, bigint) IS
  'Ship due pending outbox rows from this session (CALL, outside a transaction block); accepted: how many events Metronome accepted';

CREATE OR REPLACE FUNCTION metronome_retry(ids bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
    WITH retried AS (
        UPDATE metronome_outbox_state
           SET status = 'pending', attempts = 0, next_attempt_at = now()
         WHERE status = 'failed' AND (ids IS NULL OR id = ANY (ids))
        RETURNING 1)
    SELECT count(*) FROM retried;
$$;

REVOKE ALL ON FUNCTION metronome_segment() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_outbox_insert() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_outbox_delete() FROM PUBLIC;
REVOKE ALL ON PROCEDURE metronome_ship(integer, bigint) FROM PUBLIC;

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

-- Replay and backfill: events mapped again, through one mapping, by the
-- engine the trigger uses (src/replay.c).
CREATE FUNCTION metronome_map_batch(mapping text, events jsonb[],
                                    write_rejected boolean DEFAULT true,
                                    OUT outcomes text[], OUT errors text[],
                                    OUT mapped bigint, OUT written bigint,
                                    OUT rejected bigint, OUT unmatched bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'metronome_map_batch'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION metronome_map_batch(text, jsonb[], boolean) IS
  'Map events by one enabled mapping into metronome_outbox (duplicates skipped); one outcome per event: mapped, rejected or unmatched';

-- When a rejected row was last replayed (and still failed).
ALTER TABLE metronome_rejected ADD COLUMN last_replayed_at timestamptz;

CREATE FUNCTION metronome_replay_rejected(
    mapping text DEFAULT NULL,
    ids bigint[] DEFAULT NULL,
    since timestamptz DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    OUT replayed bigint,
    OUT duplicates bigint,
    OUT still_rejected bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = @extschema@, pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    m       text;
    last_id bigint;
    rids    bigint[];
    evs     jsonb[];
    b       record;
    known   boolean;
BEGIN
    replayed := 0;
    duplicates := 0;
    still_rejected := 0;
    FOR m IN
        SELECT DISTINCT r.mapping FROM metronome_rejected r
         WHERE (metronome_replay_rejected.mapping IS NULL OR r.mapping = metronome_replay_rejected.mapping)
           AND (metronome_replay_rejected.ids IS NULL OR r.id = ANY (metronome_replay_rejected.ids))
           AND (metronome_replay_rejected.since IS NULL OR r.created_at >= metronome_replay_rejected.since)
           AND (metronome_replay_rejected.until IS NULL OR r.created_at < metronome_replay_rejected.until)
         ORDER BY 1
    LOOP
        IF m IS NULL THEN
            CONTINUE;       -- not a JSON object: no mapping can take it
        END IF;
        known := EXISTS (SELECT 1 FROM metronome_mappings mm WHERE mm.name = m AND mm.enabled);
        last_id := 0;
        LOOP
            -- a chunk at a time; rows another replay holds are skipped
            SELECT array_agg(s.id ORDER BY s.id), array_agg(s.event ORDER BY s.id)
              INTO rids, evs
              FROM (SELECT r.id, r.event FROM metronome_rejected r
                     WHERE r.mapping = m AND r.id > last_id
                       AND (metronome_replay_rejected.ids IS NULL OR r.id = ANY (metronome_replay_rejected.ids))
                       AND (metronome_replay_rejected.since IS NULL OR r.created_at >= metronome_replay_rejected.since)
                       AND (metronome_replay_rejected.until IS NULL OR r.created_at < metronome_replay_rejected.until)
                     ORDER BY r.id LIMIT 10000
                       FOR UPDATE SKIP LOCKED) s;
            EXIT WHEN rids IS NULL;
            last_id := rids[array_upper(rids, 1)];
            IF NOT known THEN
                UPDATE metronome_rejected r
                   SET error = format('mapping "%s" does not exist or is not enabled', m),
                       last_replayed_at = now()
                 WHERE r.id = ANY (rids);
                still_rejected := still_rejected + array_length(rids, 1);
                CONTINUE;
            END IF;
            SELECT * INTO b FROM metronome_map_batch(m, evs, false);
            -- mapped (or already in the outbox): the rejection is over
            DELETE FROM metronome_rejected r
             USING unnest(rids, b.outcomes) AS o(id, outcome)
             WHERE r.id = o.id AND o.outcome = 'mapped';
            UPDATE metronome_rejected r
               SET error = CASE o.outcome
                               WHEN 'rejected' THEN o.error
                               ELSE format('the subscription of mapping "%s" no longer matches the event', m)
                           END,
                   last_replayed_at = now()
              FROM unnest(rids, b.outcomes, b.errors) AS o(id, outcome, error)
             WHERE r.id = o.id AND o.outcome <> 'mapped';
            replayed := replayed + b.mapped;
            duplicates := duplicates + b.mapped - b.written;
            still_rejected := still_rejected + b.rejected + b.unmatched;
        END LOOP;
    END LOOP;
END;
$$;
COMMENT ON FUNCTION metronome_replay_rejected(text, bigint[], timestamptz, timestamptz) IS
  'Map rejected events again with the current mappings: those that map go to metronome_outbox and leave metronome_rejected, the others keep a row with the new reason';

-- Progress of backfills, one row per run; a crashed or cancelled run is
-- resumed by calling metronome_backfill again with the same arguments.
CREATE TABLE metronome_backfills (
    id          bigserial PRIMARY KEY,
    mapping     text NOT NULL,
    source      regclass NOT NULL,
    since       timestamptz,
    until       timestamptz,
    batch_size  integer NOT NULL,
    last_key    text,                -- key of the last event done; NULL: none yet
    scanned     bigint NOT NULL DEFAULT 0,
    mapped      bigint NOT NULL DEFAULT 0,  -- new outbox rows
    duplicates  bigint NOT NULL DEFAULT 0,  -- already in the outbox: skipped
    rejected    bigint NOT NULL DEFAULT 0,  -- to metronome_rejected
    unmatched   bigint NOT NULL DEFAULT 0,  -- the subscription does not match
    pid         integer,             -- backend running it, while it runs
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
COMMENT ON TABLE metronome_backfills IS
  'Backfills of historical events through one mapping: committed progress, resumable';
CREATE UNIQUE INDEX metronome_backfills_unfinished_idx
    ON metronome_backfills (mapping, source, coalesce(since, '-infinity'), coalesce(until, 'infinity'))
    WHERE finished_at IS NULL;
SELECT pg_catalog.pg_extension_config_dump('metronome_backfills', '');
SELECT pg_catalog.pg_extension_config_dump('metronome_backfills_id_seq', '');

CREATE VIEW metronome_backfill_progress AS
SELECT b.id, b.mapping, b.source, b.since, b.until, b.last_key,
       b.scanned, b.mapped, b.duplicates, b.rejected, b.unmatched,
       CASE WHEN b.finished_at IS NOT NULL THEN 'done'
            WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                          WHERE a.pid = b.pid AND a.state = 'active') THEN 'running'
            ELSE 'stopped' END AS state,
       round(b.scanned / greatest(extract(epoch FROM coalesce(b.finished_at, b.updated_at) - b.started_at), 0.001)) AS events_per_second,
       b.started_at, b.updated_at, b.finished_at
  FROM metronome_backfills b;
COMMENT ON VIEW metronome_backfill_progress IS
  'Backfills: progress, state (running, stopped: resume it by calling it again, done) and speed';

-- A procedure that commits after every batch: it cannot have a SET clause
-- (PostgreSQL refuses COMMIT there), so every name is qualified instead.
CREATE PROCEDURE metronome_backfill(
    mapping text,
    since timestamptz DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    source regclass DEFAULT NULL,
    batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    src     regclass := coalesce(source, '@extschema@.segment_events'::regclass);
    evexpr  text;
    keycol  name;
    keytype text;
    tfilter text := '';
    fetchq  text;
    bf      @extschema@.metronome_backfills;
    evs     jsonb[];
    lastk   text;
    n       bigint;
    b       record;
    other   integer;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM @extschema@.metronome_mappings mm
                    WHERE mm.name = metronome_backfill.mapping AND mm.enabled) THEN
        RAISE EXCEPTION 'mapping "%" does not exist or is not enabled', metronome_backfill.mapping
            USING ERRCODE = 'undefined_object',
                  HINT = 'A backfill maps events through one enabled row of metronome_mappings.';
    END IF;

    -- The event: the column the table's trigger metronome_map reads, else
    -- the whole row (as the trigger maps it).
    SELECT CASE WHEN t.tgnargs = 1
                THEN pg_catalog.quote_ident(pg_catalog.convert_from(
                         substring(t.tgargs FROM 1 FOR position('\x00'::bytea IN t.tgargs) - 1), 'UTF8'))
           END
      INTO evexpr
      FROM pg_catalog.pg_trigger t
     WHERE t.tgrelid = src AND t.tgname = 'metronome_map';
    evexpr := coalesce('t.' || evexpr, 'pg_catalog.to_jsonb(t.*)');

    -- The key the progress is kept by: the first column of the primary key.
    SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
      INTO keycol, keytype
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid = src AND i.indisprimary;
    IF keycol IS NULL THEN
        RAISE EXCEPTION 'relation % has no primary key', src
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'A backfill walks the events in the order of the first column of the primary key, and resumes from there.';
    END IF;

    IF since IS NOT NULL OR until IS NOT NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = src AND a.attname = 'received_at'
                          AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'relation % has no column "received_at"', src
                USING ERRCODE = 'undefined_column',
                      HINT = 'since and until select events by their received_at; pass NULL for both to backfill every event.';
        END IF;
        tfilter := ' AND ($3::timestamptz IS NULL OR t.received_at >= $3)'
                || ' AND ($4::timestamptz IS NULL OR t.received_at < $4)';
    END IF;

    -- The events after $1 up to the batch_size-th one (all of that last
    -- key's events, should the key not be unique).
    fetchq := format(
        'SELECT array_agg(s.e ORDER BY s.k), max(s.k)::text, count(*) FROM ('
        ' SELECT t.%1$I AS k, %2$s AS e FROM %3$s t'
        '  WHERE ($1::text IS NULL OR t.%1$I > $1::%4$s)%5$s'
        '    AND t.%1$I <= (SELECT max(l.k) FROM ('
        '        SELECT t.%1$I AS k FROM %3$s t'
        '         WHERE ($1::text IS NULL OR t.%1$I > $1::%4$s)%5$s'
        '         ORDER BY t.%1$I LIMIT $2) l)) s',
        keycol, evexpr, src, keytype, tfilter);

    SELECT * INTO bf FROM @extschema@.metronome_backfills x
     WHERE x.mapping = metronome_backfill.mapping AND x.source = src
       AND x.since IS NOT DISTINCT FROM metronome_backfill.since
       AND x.until IS NOT DISTINCT FROM metronome_backfill.until
       AND x.finished_at IS NULL
       FOR UPDATE;
    IF FOUND THEN
        SELECT a.pid INTO other FROM pg_catalog.pg_stat_activity a
         WHERE a.pid = bf.pid AND a.pid <> pg_catalog.pg_backend_pid() AND a.state = 'active';
        IF other IS NOT NULL THEN
            RAISE EXCEPTION 'backfill % is already running (process %)', bf.id, other
                USING ERRCODE = 'object_in_use',
                      HINT = 'Follow it in metronome_backfill_progress, or cancel it with pg_cancel_backend() and call metronome_backfill again to resume it.';
        END IF;
        RAISE NOTICE 'backfill %: resuming after % % (% events done)', bf.id, keycol, coalesce(bf.last_key, '(none)'), bf.scanned;
        UPDATE @extschema@.metronome_backfills x SET pid = pg_catalog.pg_backend_pid(), batch_size = metronome_backfill.batch_size
         WHERE x.id = bf.id;
    ELSE
        INSERT INTO @extschema@.metronome_backfills (mapping, source, since, until, batch_size, pid)
        VALUES (metronome_backfill.mapping, src, metronome_backfill.since, metronome_backfill.until,
                metronome_backfill.batch_size, pg_catalog.pg_backend_pid())
        RETURNING * INTO bf;
        RAISE NOTICE 'backfill %: mapping "%" over %', bf.id, bf.mapping, src;
    END IF;
    COMMIT;

    LOOP
        EXECUTE fetchq INTO evs, lastk, n USING bf.last_key, batch_size, since, until;
        EXIT WHEN n = 0;
        SELECT * INTO b FROM @extschema@.metronome_map_batch(bf.mapping, evs, true);
        UPDATE @extschema@.metronome_backfills x
           SET last_key = lastk,
               scanned = x.scanned + n,
               mapped = x.mapped + b.written,
               duplicates = x.duplicates + b.mapped - b.written,
               rejected = x.rejected + b.rejected,
               unmatched = x.unmatched + b.unmatched,
               updated_at = pg_catalog.clock_timestamp()
         WHERE x.id = bf.id
        RETURNING * INTO bf;
        COMMIT;
        RAISE NOTICE 'backfill %: % events: % mapped, % duplicates skipped, % rejected, % not matching (up to % %)',
            bf.id, bf.scanned, bf.mapped, bf.duplicates, bf.rejected, bf.unmatched, keycol, lastk;
    END LOOP;

    UPDATE @extschema@.metronome_backfills x
       SET finished_at = pg_catalog.clock_timestamp(), updated_at = pg_catalog.clock_timestamp(), pid = NULL
     WHERE x.id = bf.id
    RETURNING * INTO bf;
    COMMIT;
    RAISE NOTICE 'backfill % done: % events scanned, % mapped, % rejected, % skipped as duplicates, % not matching the subscription',
        bf.id, bf.scanned, bf.mapped, bf.rejected, bf.duplicates, bf.unmatched;
END;
$$;
COMMENT ON PROCEDURE metronome_backfill(text, timestamptz, timestamptz, regclass, integer) IS
  'Map the events of segment_events (or source) received in [since, until) through one mapping, committing after each batch; resumable';

-- Retention of segment_events (src/retain.c): the worker runs it when
-- metronome.retain_events is set; an operator or pg_cron may call it.
CREATE FUNCTION metronome_retain_events(older_than interval DEFAULT NULL,
                                        max_rows integer DEFAULT 100000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'metronome_retain_events'
LANGUAGE C VOLATILE;
COMMENT ON FUNCTION metronome_retain_events(interval, integer) IS
  'Delete mapped events of segment_events older than older_than (NULL: metronome.retain_events); returns how many';

REVOKE ALL ON FUNCTION metronome_map_batch(text, jsonb[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_replay_rejected(text, bigint[], timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON PROCEDURE metronome_backfill(text, timestamptz, timestamptz, regclass, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_retain_events(interval, integer) FROM PUBLIC;

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

------------------------------------------------------------------------------
-- Metrics: metronome_metrics() in Prometheus's text format, the same as rows
-- for prometheus-postgres-exporter (metronome-exporter-queries.yaml)
------------------------------------------------------------------------------

-- The reason of a rejected row as one word of a bounded set (a label that
-- groups rows; the error's text itself would make a series per event).
CREATE FUNCTION metronome_rejected_reason(error text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
SELECT CASE
    WHEN error IS NULL THEN 'other'
    WHEN error LIKE 'mapping "%" is invalid: %' THEN 'invalid_mapping'
    WHEN error LIKE 'mapping "%" does not exist or is not enabled' THEN 'mapping_unavailable'
    WHEN error LIKE 'the subscription of mapping "%" no longer matches the event' THEN 'no_longer_matches'
    WHEN error LIKE 'transaction_id "%" is also built by mapping "%' THEN 'duplicate_transaction_id'
    WHEN error LIKE 'event is not a JSON object%' THEN 'not_an_object'
    WHEN error LIKE 'missing required field ''transaction\_id''%' THEN 'missing_transaction_id'
    WHEN error LIKE 'missing required field ''customer\_id''%' THEN 'missing_customer_id'
    WHEN error LIKE 'missing required field ''timestamp''%' THEN 'missing_timestamp'
    WHEN error LIKE 'missing required field ''event\_type''%' THEN 'missing_event_type'
    WHEN error LIKE 'missing required field ''properties''%' THEN 'missing_properties'
    WHEN error ~ '^transaction_id[ :]' THEN 'invalid_transaction_id'
    WHEN error ~ '^customer_id[ :]' THEN 'invalid_customer_id'
    WHEN error ~ '^timestamp[ :]' THEN 'invalid_timestamp'
    WHEN error ~ '^event_type[ :]' THEN 'invalid_event_type'
    WHEN error ~ '^properties[ :]' THEN 'invalid_properties'
    ELSE 'other'
END
$$;
COMMENT ON FUNCTION metronome_rejected_reason(text) IS
  'The reason of a metronome_rejected error as one word of a bounded set (the label reason of metronome_rejected_events)';

CREATE FUNCTION metronome_metrics()
RETURNS text
AS 'MODULE_PATHNAME', 'metronome_metrics'
LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION metronome_metrics() IS
  'The delivery''s counters, latency histogram and outbox gauges in Prometheus''s text exposition format (0.0.4)';

CREATE FUNCTION metronome_metrics_table(OUT name text, OUT labels jsonb, OUT value double precision)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'metronome_metrics_table'
LANGUAGE C VOLATILE STRICT ROWS 80;
COMMENT ON FUNCTION metronome_metrics_table() IS
  'The samples of metronome_metrics() as rows (name, labels, value), for prometheus-postgres-exporter';

-- Counts and ages only, no event, error text or setting: grant EXECUTE to
-- the monitoring role (e.g. the exporter's), as with metronome_status().
REVOKE ALL ON FUNCTION metronome_metrics() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_metrics_table() FROM PUBLIC;
REVOKE ALL ON FUNCTION metronome_rejected_reason(text) FROM PUBLIC;

------------------------------------------------------------------------------
-- Rate limits: metronome.max_events_per_second, one token bucket for the
-- whole server, and the adaptive slowdown after 429 without Retry-After
-- (src/ratelimit.c).
------------------------------------------------------------------------------

CREATE FUNCTION metronome_rate_limit(
    OUT setting integer,
    OUT shared boolean,
    OUT rate double precision,
    OUT burst double precision,
    OUT tokens double precision,
    OUT slowdown boolean,
    OUT slowdown_rate double precision,
    OUT slowdown_peak double precision,
    OUT slowdowns bigint,
    OUT observed_rate double precision)
RETURNS record
LANGUAGE C VOLATILE STRICT
AS 'MODULE_PATHNAME', 'metronome_rate_limit';
COMMENT ON FUNCTION metronome_rate_limit() IS
  'The server''s rate limit of events sent to Metronome: the setting, the effective rate (NULL: no limit), the bucket, the adaptive slowdown after 429 answers, and the events started in the last second';
REVOKE ALL ON FUNCTION metronome_rate_limit() FROM PUBLIC;
