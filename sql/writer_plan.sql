--
-- The mapping writer's INSERT finds duplicates by index probes, whatever
-- the statistics say: a plan made while metronome_outbox_state was empty
-- used to hash the whole table for every batch once it had grown (a
-- restore of 0.1.0 rows, an outage's failed rows).
--
INSERT INTO metronome_mappings (name, subscription) VALUES ('writer_plan', 'event = "Writer Plan"');

-- the session's plan is made now, with the exception rows empty
INSERT INTO segment_events (event) VALUES
  ('{"type": "track", "event": "Writer Plan", "messageId": "wp-0", "userId": "u",
     "context": {"groupId": "org"}, "timestamp": "2026-11-01T00:00:00Z"}');

-- then they grow (never analyzed)
INSERT INTO metronome_outbox_state (id, transaction_id, customer_id, event_type, "timestamp", status)
SELECT -i, 'wp-state-' || i, 'org', 'Writer Plan', now(), 'failed'
  FROM generate_series(1, 5000) AS i;
SELECT pg_stat_force_next_flush();
CREATE TEMP TABLE probes_before AS
SELECT coalesce(idx_tup_read, 0) AS tup_read
  FROM pg_stat_user_indexes
 WHERE indexrelname = 'metronome_outbox_state_transaction_id_key';
CREATE TEMP TABLE scans_before AS
SELECT relname, seq_scan, coalesce(idx_scan, 0) AS idx_scan
  FROM pg_stat_user_tables
 WHERE relname IN ('metronome_outbox_state', 'metronome_queue_0', 'metronome_queue_1', 'metronome_queue_2');

-- three statements, three batches: a new event, a duplicate of a queue row,
-- a duplicate of an exception row
INSERT INTO segment_events (event)
SELECT jsonb_build_object('type', 'track', 'event', 'Writer Plan', 'messageId', 'wp-' || i,
                          'userId', 'u', 'context', jsonb_build_object('groupId', 'org'),
                          'timestamp', '2026-11-01T00:00:00Z')
  FROM generate_series(1, 300) AS i;
INSERT INTO segment_events (event) VALUES
  ('{"type": "track", "event": "Writer Plan", "messageId": "wp-1", "userId": "u",
     "context": {"groupId": "org"}, "timestamp": "2026-11-01T00:00:00Z"}');
INSERT INTO segment_events (event) VALUES
  ('{"type": "track", "event": "Writer Plan", "messageId": "wp-state-7", "userId": "u",
     "context": {"groupId": "org"}, "timestamp": "2026-11-01T00:00:00Z"}');
SELECT pg_stat_force_next_flush();

-- every event once, the duplicates skipped
SELECT count(*) AS rows, count(DISTINCT transaction_id) AS ids,
       count(*) FILTER (WHERE status = 'failed') AS failed
  FROM metronome_outbox WHERE transaction_id LIKE 'wp-%';

-- no sequential scan of the exception rows or of a segment (an empty
-- segment is not probed at all); the exception rows were probed by index
SELECT s.relname, s.seq_scan - b.seq_scan AS new_seq_scans
  FROM pg_stat_user_tables s JOIN scans_before b USING (relname)
 ORDER BY s.relname;
SELECT coalesce(s.idx_scan, 0) > b.idx_scan AS exception_rows_probed_by_index
  FROM pg_stat_user_tables s JOIN scans_before b USING (relname)
 WHERE relname = 'metronome_outbox_state';
-- each probe of the exception rows reads at most the entry it looks for:
-- 302 events, not the whole index of 5,000 per event
SELECT s.idx_tup_read - b.tup_read <= 302 AS probes_read_only_their_entries
  FROM pg_stat_user_indexes s, probes_before b
 WHERE s.indexrelname = 'metronome_outbox_state_transaction_id_key';

-- A batch large enough for the writer's fast path (a plain INSERT in a
-- subtransaction) that holds a row already in the queue: the unique index
-- refuses it, the batch is written again with ON CONFLICT, and every new
-- event is there once, the duplicate skipped, no error.
INSERT INTO segment_events (event)
SELECT jsonb_build_object('type', 'track', 'event', 'Writer Plan', 'messageId', id,
                          'userId', 'u', 'context', jsonb_build_object('groupId', 'org'),
                          'timestamp', '2026-11-01T00:00:00Z', 'properties', jsonb_build_object('n', n))
  FROM (SELECT 'wp-fast-' || i AS id, i AS n FROM generate_series(1, 100) AS i
        UNION ALL SELECT 'wp-3', 0) AS e;
SELECT count(*) FILTER (WHERE transaction_id LIKE 'wp-fast-%') AS new_rows,
       count(*) FILTER (WHERE transaction_id = 'wp-3') AS old_row,
       count(*) FILTER (WHERE transaction_id = 'wp-3' AND properties ? 'n') AS old_row_replaced
  FROM metronome_outbox;

DELETE FROM metronome_outbox_state WHERE transaction_id LIKE 'wp-state-%';
DELETE FROM metronome_mappings WHERE name = 'writer_plan';
