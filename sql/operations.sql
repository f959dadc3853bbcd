--
-- operations: replaying rejected events after a mapping is fixed, backfilling
-- a new mapping over stored events (resumably), and the retention of
-- segment_events.  The library is not preloaded: shipping plays no part.
--
CREATE EXTENSION IF NOT EXISTS metronome;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO';
SET metronome.on_mapping_error = 'reject';

-- A mapping that reads the customer from the wrong place rejects events.
INSERT INTO metronome_mappings (name, customer_id)
VALUES ('calls', '{"@path": "$.context.accountId"}');
INSERT INTO segment_events (event)
SELECT jsonb_build_object('type', 'track', 'event', 'API Call',
                          'messageId', 'r-' || i,
                          'timestamp', '2024-03-01T10:00:00Z',
                          'context', CASE WHEN i = 4 THEN '{}'::jsonb
                                          ELSE jsonb_build_object('groupId', 'acme') END,
                          'properties', jsonb_build_object('i', i))
  FROM generate_series(1, 4) AS i;
INSERT INTO segment_events (event) VALUES ('[1]');
SELECT mapping, event->>'messageId' AS message_id, error, last_replayed_at
  FROM metronome_rejected ORDER BY id;
SELECT count(*) AS outbox FROM metronome_outbox;

-- Replaying before the fix changes nothing but the time of the replay.
SELECT * FROM metronome_replay_rejected();
SELECT count(*) AS rejected, count(last_replayed_at) AS replayed_once FROM metronome_rejected;

-- Fix the mapping; replay one id first, then the rest of the mapping's rows.
UPDATE metronome_mappings SET customer_id = '{"@path": "$.context.groupId"}' WHERE name = 'calls';
SELECT * FROM metronome_replay_rejected(ids => ARRAY[(SELECT min(id) FROM metronome_rejected)]);
SELECT * FROM metronome_replay_rejected(mapping => 'calls');
SELECT transaction_id, customer_id, mapping, status FROM metronome_outbox ORDER BY transaction_id;
-- what still fails keeps a row, with today's reason; the non-object stays
SELECT mapping, event->>'messageId' AS message_id, error, last_replayed_at IS NOT NULL AS replayed
  FROM metronome_rejected ORDER BY id;

-- Idempotent: again, nothing new reaches the outbox.
SELECT * FROM metronome_replay_rejected();
SELECT count(*) AS outbox FROM metronome_outbox;

-- An event rejected once, while its transaction_id reached the outbox some
-- other way, counts as a duplicate and leaves metronome_rejected.
INSERT INTO metronome_rejected (mapping, event, error)
SELECT 'calls', event, 'old reason' FROM segment_events WHERE event->>'messageId' = 'r-1';
SELECT * FROM metronome_replay_rejected(since => now() - interval '1 hour', until => now() + interval '1 hour');

-- A mapping that was deleted: its rejected rows stay and say so.
INSERT INTO metronome_rejected (mapping, event, error)
VALUES ('gone', '{"type": "track"}', 'old reason');
SELECT * FROM metronome_replay_rejected(mapping => 'gone');
SELECT error FROM metronome_rejected WHERE mapping = 'gone';
-- A subscription that no longer matches: kept, saying so.
INSERT INTO metronome_rejected (mapping, event, error)
VALUES ('calls', '{"type": "identify", "messageId": "x"}', 'old reason');
SELECT * FROM metronome_replay_rejected(mapping => 'calls');
SELECT error FROM metronome_rejected WHERE event->>'messageId' = 'x';
DELETE FROM metronome_rejected;

-- Backfill: a new billable metric over the events already stored.
INSERT INTO segment_events (event, received_at)
SELECT jsonb_build_object('type', 'track', 'event', 'Seat Added',
                          'messageId', 's-' || i,
                          'timestamp', '2024-03-02T00:00:00Z',
                          'context', jsonb_build_object('groupId', 'cust-' || (i % 3)),
                          'properties', jsonb_build_object('seats', i))
       || CASE WHEN i % 10 = 0 THEN '{"context": {}}'::jsonb ELSE '{}'::jsonb END,
       timestamptz '2024-03-02 00:00:00+00' + i * interval '1 minute'
  FROM generate_series(1, 250) AS i;
SELECT count(*) AS seat_rows FROM metronome_outbox WHERE transaction_id LIKE 's-%';
INSERT INTO metronome_mappings (name, subscription, transaction_id, event_type)
VALUES ('seats', 'type = "track" and event = "Seat Added"',
        '{"@template": "{{messageId}}-seat"}', '"seat_added"');
-- the events received since 00:50 (minutes 50..250: 201 events, 21 of
-- them without a customer; and the 5 events above, received now, of which
-- the array is rejected and the API calls do not match), in batches of 60,
-- with a NOTICE per batch
CALL metronome_backfill('seats', since => '2024-03-02 00:50:00+00', batch_size => 60);
SELECT mapping, source, scanned, mapped, duplicates, rejected, unmatched, state,
       last_key::bigint = (SELECT max(id) FROM segment_events) AS at_the_end
  FROM metronome_backfill_progress;
SELECT count(*) AS seat_rows, min(transaction_id) AS first, count(DISTINCT customer_id) AS customers
  FROM metronome_outbox WHERE mapping = 'seats';
SELECT count(*) AS rejected, min(error) AS error FROM metronome_rejected WHERE mapping = 'seats';

-- The whole table now: the 180 already mapped are duplicates, the 45
-- before 00:50 that map are new.
CALL metronome_backfill('seats', batch_size => 100);
SELECT id, scanned, mapped, duplicates, rejected, unmatched, state
  FROM metronome_backfill_progress ORDER BY id;

-- A cancelled (or crashed) run resumes where its last batch committed:
-- simulated by a run whose progress row was left unfinished half-way.
DELETE FROM metronome_outbox WHERE mapping = 'seats';
DELETE FROM metronome_rejected;
INSERT INTO metronome_backfills (mapping, source, batch_size, last_key, scanned)
SELECT 'seats', 'segment_events', 100, id::text, 200
  FROM segment_events WHERE event->>'messageId' = 's-195';
CALL metronome_backfill('seats', batch_size => 100);
SELECT count(*) AS seat_rows, min(properties->>'seats') AS from_seat
  FROM metronome_outbox WHERE mapping = 'seats';
SELECT scanned, mapped, rejected, state FROM metronome_backfill_progress ORDER BY id DESC LIMIT 1;

-- What a backfill refuses.
CALL metronome_backfill('nope');
UPDATE metronome_mappings SET enabled = false WHERE name = 'calls';
CALL metronome_backfill('calls');
UPDATE metronome_mappings SET enabled = true WHERE name = 'calls';
CREATE TABLE no_key (payload jsonb);
CALL metronome_backfill('seats', source => 'no_key');
CREATE TABLE keyed (id int PRIMARY KEY, payload jsonb);
CALL metronome_backfill('seats', since => now(), source => 'keyed');
CALL metronome_backfill('seats', batch_size => 0);
BEGIN;
CALL metronome_backfill('seats');
ROLLBACK;

-- The engine underneath, called directly: one outcome per event.
SELECT * FROM metronome_map_batch('seats', ARRAY[
    '{"type": "track", "event": "Seat Added", "messageId": "d-1", "timestamp": "2024-03-02T00:00:00Z", "context": {"groupId": "g"}}',
    '{"type": "track", "event": "Seat Added", "messageId": "d-1", "timestamp": "2024-03-02T00:00:00Z", "context": {"groupId": "g"}}',
    '{"type": "track", "event": "Seat Added", "messageId": "d-2"}',
    '{"type": "identify"}', NULL]::jsonb[], write_rejected => false);
SELECT * FROM metronome_map_batch('nope', ARRAY['{}'::jsonb]);
SELECT * FROM metronome_map_batch('seats', NULL);
SELECT * FROM metronome_map_batch('seats', '{}'::jsonb[]);
DELETE FROM metronome_outbox WHERE transaction_id = 'd-1-seat';

-- A table in whole-row mode, shaped like Segment's warehouse tables: the
-- backfill reads it as its trigger would, by the first column of its key.
CREATE TABLE tracks (id text PRIMARY KEY, event text, message_id text,
                     context_group_id text, "timestamp" timestamptz);
INSERT INTO tracks VALUES ('b', 'Seat Added', 'w-2', 'acme', '2024-03-03 00:00:00+00'),
                          ('a', 'Seat Added', 'w-1', 'acme', '2024-03-03 00:00:00+00');
INSERT INTO metronome_mappings (name, subscription, transaction_id, customer_id, event_type, properties)
VALUES ('warehouse', 'event = "Seat Added"', '{"@path": "$.message_id"}',
        '{"@path": "$.context_group_id"}', '"seat_added"', '{}');
CALL metronome_backfill('warehouse', source => 'tracks', batch_size => 1);
SELECT transaction_id, customer_id, "timestamp" FROM metronome_outbox
 WHERE mapping = 'warehouse' ORDER BY transaction_id;

-- Retention: mapped events older than the cut-off go, oldest first, up to
-- the first young one.
UPDATE segment_events SET received_at = now();
UPDATE segment_events SET received_at = now() - interval '2 days'
 WHERE id <= (SELECT min(id) + 9 FROM segment_events) OR id = (SELECT min(id) + 20 FROM segment_events);
SELECT count(*) AS events FROM segment_events;
SELECT metronome_retain_events();   -- metronome.retain_events = -1 keeps them
SELECT metronome_retain_events(interval '1 day', max_rows => 4);
SELECT metronome_retain_events(interval '1 day');
SELECT count(*) AS events, count(*) FILTER (WHERE received_at < now() - interval '1 day') AS old
  FROM segment_events;
-- an unfinished backfill holds back the events it has not reached
UPDATE segment_events SET received_at = now() - interval '2 days';
INSERT INTO metronome_backfills (mapping, source, batch_size, last_key)
SELECT 'seats', 'segment_events', 100, (min(id) + 4)::text FROM segment_events;
SELECT metronome_retain_events(interval '1 day');
UPDATE metronome_backfills SET last_key = NULL WHERE finished_at IS NULL;
SELECT metronome_retain_events(interval '1 day');    -- not started: holds all
DELETE FROM metronome_backfills WHERE finished_at IS NULL;
-- and so does a detached trigger: those events were never mapped
SELECT metronome_detach('segment_events');
SELECT metronome_retain_events(interval '1 day');
SELECT metronome_attach('segment_events', 'event');
SELECT metronome_retain_events(interval '1 day', max_rows => 0);
SELECT metronome_retain_events(interval '1 day');
-- metronome.retain_events is a server setting (sighup), not a session's
SET metronome.retain_events = '1d';

-- Clean up for the tests that follow.
DROP TABLE no_key, keyed, tracks;
DELETE FROM metronome_mappings;
TRUNCATE metronome_queue, metronome_outbox_state, metronome_rejected, segment_events, metronome_backfills;
