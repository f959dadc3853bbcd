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

------------------------------------------------------------------------------
-- Operations: replay, backfill, retention of events, metrics
------------------------------------------------------------------------------
