--
-- The mapping pipeline: mapping rows, the trigger on segment_events, the
-- outbox, rejected rows, metronome_map (preview) and metronome_enqueue.
--
CREATE EXTENSION IF NOT EXISTS metronome;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO';
SET metronome.on_mapping_error = 'reject';

-- The preset is the whole mapping row.
INSERT INTO metronome_mappings (name) VALUES ('tracks');
SELECT name, subscription, transaction_id, customer_id, "timestamp",
       event_type, properties, enabled
  FROM metronome_mappings;

-- A realistic track event bills; an identify matches no subscription.
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "API Call", "messageId": "msg-1",
  "userId": "u-1", "timestamp": "2024-03-01T10:15:30.123456+02:00",
  "context": {"groupId": "acme", "library": {"name": "analytics.js", "version": "2.11.1"},
              "ip": "8.8.8.8"},
  "properties": {"endpoint": "/v1/search", "tokens": 1200, "region": "eu"}}'),
('{"type": "identify", "messageId": "msg-2", "userId": "u-1",
  "traits": {"email": "a@acme.test"}, "timestamp": "2024-03-01T10:15:31Z"}');

SELECT transaction_id, customer_id, event_type, "timestamp", properties,
       mapping, status, attempts, last_error, sent_at
  FROM metronome_outbox ORDER BY id;
SELECT count(*) AS rejected FROM metronome_rejected;

-- A track without context.groupId is rejected, with the reason; the top-level
-- groupId is not the customer (Segment's preset reads context.groupId).
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "API Call", "messageId": "msg-3", "groupId": "top",
  "timestamp": "2024-03-01T10:16:00Z", "properties": {}}');
SELECT mapping, event->>'messageId' AS message_id, error FROM metronome_rejected ORDER BY id;

-- The same messageId again is skipped, not an error, and not rejected.
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "API Call", "messageId": "msg-1",
  "timestamp": "2024-03-01T10:15:30Z", "context": {"groupId": "other"}}');
SELECT transaction_id, customer_id FROM metronome_outbox ORDER BY id;
SELECT count(*) AS rejected FROM metronome_rejected;

-- Many events in one statement (the statement-level trigger batches them),
-- duplicates inside the statement included.
INSERT INTO segment_events (event)
SELECT jsonb_build_object('type', 'track', 'event', 'API Call',
                          'messageId', 'bulk-' || (i % 1500),
                          'timestamp', '2024-03-02T00:00:00Z',
                          'context', jsonb_build_object('groupId', 'cust-' || (i % 7)),
                          'properties', jsonb_build_object('n', i))
  FROM generate_series(1, 2500) AS i;
SELECT count(*) AS bulk_rows, count(DISTINCT transaction_id) AS distinct_ids,
       min(properties->>'n') AS first_n
  FROM metronome_outbox WHERE transaction_id LIKE 'bulk-%';

-- Events that are not JSON objects are rejected, not crashed on.
INSERT INTO segment_events (event) VALUES ('[1, 2]'), ('"track"'), ('null');
SELECT mapping, event, error FROM metronome_rejected
 WHERE jsonb_typeof(event) <> 'object' ORDER BY id;

-- Two mappings on one event: two outbox rows.
INSERT INTO metronome_mappings (name, subscription, transaction_id, event_type, properties)
VALUES ('seats', 'type = "track" and event = "Seat Added"',
        '{"@template": "{{messageId}}-seat"}',
        '"seat_added"',
        '{"seats": {"@path": "$.properties.count"}, "plan": {"@path": "$.properties.plan"}}');
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "Seat Added", "messageId": "msg-4",
  "timestamp": 1709287200000, "context": {"groupId": "acme"},
  "properties": {"count": 3, "plan": "pro"}}');
SELECT mapping, transaction_id, customer_id, event_type, "timestamp", properties
  FROM metronome_outbox WHERE transaction_id LIKE 'msg-4%' ORDER BY mapping;

-- The preview shows the same, and writes nothing.
SELECT count(*) AS outbox_before FROM metronome_outbox \gset
SELECT * FROM metronome_map('{"type": "track", "event": "Seat Added", "messageId": "msg-5",
  "timestamp": "2024-03-01", "context": {"groupId": 42},
  "properties": {"count": "7"}}') ORDER BY mapping;
SELECT * FROM metronome_map('{"type": "track", "event": "Seat Added", "messageId": "msg-6",
  "timestamp": "yesterday", "context": {"groupId": {"id": 1}}}') ORDER BY mapping;
SELECT * FROM metronome_map('{"type": "page", "name": "Home"}');
SELECT * FROM metronome_map('[]');
SELECT count(*) = :outbox_before AS preview_wrote_nothing FROM metronome_outbox;

-- metronome_enqueue returns the outbox rows written (duplicates are not).
SELECT metronome_enqueue('{"type": "track", "event": "Seat Added", "messageId": "msg-7",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"},
  "properties": {"count": 1}}') AS written;
SELECT metronome_enqueue('{"type": "track", "event": "Seat Added", "messageId": "msg-7",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"},
  "properties": {"count": 1}}') AS written_again;
SELECT metronome_enqueue('{"type": "track", "event": "API Call", "messageId": "msg-8",
  "timestamp": "2024-03-01T00:00:00Z"}') AS written_missing_customer;

-- on_mapping_error = 'error' aborts the INSERT and writes nothing.
SET metronome.on_mapping_error = 'error';
SELECT count(*) AS events_before FROM segment_events \gset
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "API Call", "messageId": "msg-9",
  "timestamp": "2024-03-01T00:00:00Z", "context": {}}');
SELECT count(*) = :events_before AS insert_rolled_back FROM segment_events;
SELECT count(*) AS msg9 FROM metronome_rejected WHERE event->>'messageId' = 'msg-9';
SET metronome.on_mapping_error = 'reject';

-- Field coercion: strings, numbers, booleans, objects, lengths.
INSERT INTO metronome_mappings (name, subscription, transaction_id, customer_id,
                                "timestamp", event_type, properties)
VALUES ('coerce', 'type = "coerce"', '{"@path": "$.tid"}', '{"@path": "$.cid"}',
        '{"@path": "$.ts"}', '{"@path": "$.et"}', '{"@path": "$.props"}');
SELECT t.label, m.transaction_id, m.customer_id, m.event_type, m.properties, m.error
  FROM (VALUES
    ('strings',      '{"tid": "a", "cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z", "props": {"k": 1}}'),
    ('numbers',      '{"tid": 123, "cid": 4.50, "et": -1e3, "ts": "2024-01-01T00:00:00Z"}'),
    ('booleans',     '{"tid": true, "cid": false, "et": "e", "ts": "2024-01-01T00:00:00Z"}'),
    ('no tid',       '{"cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z"}'),
    ('null tid',     '{"tid": null, "cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z"}'),
    ('empty tid',    '{"tid": "", "cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z"}'),
    ('object cid',   '{"tid": "a", "cid": {"id": 1}, "et": "e", "ts": "2024-01-01T00:00:00Z"}'),
    ('array et',     '{"tid": "a", "cid": "c", "et": ["e"], "ts": "2024-01-01T00:00:00Z"}'),
    ('no et',        '{"tid": "a", "cid": "c", "ts": "2024-01-01T00:00:00Z"}'),
    ('tid 128',      '{"tid": "' || repeat('x', 128) || '", "cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z"}'),
    ('tid 129',      '{"tid": "' || repeat('x', 129) || '", "cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z"}'),
    ('tid 128 utf8', '{"tid": "' || repeat('é', 128) || '", "cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z"}'),
    ('props array',  '{"tid": "a", "cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z", "props": [1]}'),
    ('props string', '{"tid": "a", "cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z", "props": "x"}'),
    ('props null',   '{"tid": "a", "cid": "c", "et": "e", "ts": "2024-01-01T00:00:00Z", "props": null}')
  ) AS t(label, ev),
  LATERAL metronome_map(jsonb_set(t.ev::jsonb, '{type}', '"coerce"')) AS m
 ORDER BY t.label COLLATE "C";

-- Timestamps: strings are dates (no zone = UTC, offsets converted, digits
-- past milliseconds truncated), numbers are epoch milliseconds.
SELECT t.input, m."timestamp", m.error
  FROM (VALUES
    ('"2021-07-10T05:37:11.000Z"'),
    ('"2021-07-10T05:37:11Z"'),
    ('"2021-07-10T05:37:11.123456789Z"'),
    ('"2021-07-10T05:37:11.5Z"'),
    ('"2021-07-10T05:37:11"'),
    ('"2021-07-10 05:37:11"'),
    ('"2021-07-10T05:37"'),
    ('"2021-01-01"'),
    ('"2021-01-01T10:00:00+02:00"'),
    ('"2021-01-01T10:00:00-0530"'),
    ('"2021-01-01T10:00:00+02"'),
    ('"2021-01-01t10:00:00z"'),
    ('"2020-02-29T00:00:00Z"'),
    ('"2021-02-29T00:00:00Z"'),
    ('"2021-13-01"'),
    ('"2021-07-10T25:00:00Z"'),
    ('"2021-07-10T05:37:11+25:00"'),
    ('"10/07/2021"'),
    ('"not a date"'),
    ('"2021-07-10T05:37:11.Z"'),
    ('1625895431000'),
    ('1625895431000.9'),
    ('0'),
    ('-1000'),
    ('1e300'),
    ('true'),
    ('{"t": 1}'),
    ('[]'),
    ('null'),
    ('""'),
    ('"2999-01-01T00:00:00Z"')
  ) AS t(input),
  LATERAL metronome_map(jsonb_build_object('type', 'coerce', 'tid', 'a', 'cid', 'c',
                                           'et', 'e', 'ts', t.input::jsonb)) AS m;

-- A timestamp up to 24 hours ahead is accepted, more is not.
SELECT m.error IS NULL AS ok_23h
  FROM metronome_map(jsonb_build_object('type', 'coerce', 'tid', 'a', 'cid', 'c', 'et', 'e',
       'ts', to_char(now() AT TIME ZONE 'UTC' + interval '23 hours', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))) AS m;
SELECT m.error LIKE '%more than 24 hours in the future' AS refused_25h
  FROM metronome_map(jsonb_build_object('type', 'coerce', 'tid', 'a', 'cid', 'c', 'et', 'e',
       'ts', to_char(now() AT TIME ZONE 'UTC' + interval '25 hours', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))) AS m;

-- Invalid mapping rows are refused, saying which column and why.
INSERT INTO metronome_mappings (name, subscription) VALUES ('bad1', 'type = ');
INSERT INTO metronome_mappings (name, subscription) VALUES ('bad2', 'type = "track" and (event = "x"');
INSERT INTO metronome_mappings (name, customer_id) VALUES ('bad3', '{"@nope": "$.x"}');
INSERT INTO metronome_mappings (name, timestamp) VALUES ('bad4', '{"@path": "$.a", "@template": "b"}');
INSERT INTO metronome_mappings (name, properties) VALUES ('bad5', '{"a": {"@liquid": "{{x}}"}}');
UPDATE metronome_mappings SET event_type = '{"@path": 5}' WHERE name = 'tracks';
SELECT name FROM metronome_mappings ORDER BY id;

-- A changed mapping applies to the very next statement (the cache follows).
UPDATE metronome_mappings SET event_type = '"api_call"' WHERE name = 'tracks';
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "API Call", "messageId": "msg-10",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}');
SELECT transaction_id, event_type FROM metronome_outbox WHERE transaction_id = 'msg-10';
UPDATE metronome_mappings SET enabled = false WHERE name = 'tracks';
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "API Call", "messageId": "msg-11",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}');
SELECT count(*) AS msg11 FROM metronome_outbox WHERE transaction_id = 'msg-11';
UPDATE metronome_mappings SET enabled = true WHERE name = 'tracks';
-- ... also inside one transaction, and a rollback restores the old mapping.
BEGIN;
UPDATE metronome_mappings SET event_type = '"in_tx"' WHERE name = 'tracks';
SELECT event_type FROM metronome_map('{"type": "track", "event": "API Call", "messageId": "m",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}') WHERE mapping = 'tracks';
ROLLBACK;
SELECT event_type FROM metronome_map('{"type": "track", "event": "API Call", "messageId": "m",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}') WHERE mapping = 'tracks';
DELETE FROM metronome_mappings WHERE name = 'seats';
SELECT mapping FROM metronome_map('{"type": "track", "event": "Seat Added", "messageId": "m",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}');

-- Rows inserted into the outbox directly are checked like mapped ones.
INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
VALUES ('direct-1', 'acme', 'api_call', '2024-03-01T00:00:00Z');
\set VERBOSITY terse
INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
VALUES (repeat('x', 129), 'acme', 'api_call', now());
INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
VALUES ('direct-2', '', 'api_call', now());
INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp", properties)
VALUES ('direct-3', 'acme', 'api_call', now(), '[]');
\set VERBOSITY default
SELECT transaction_id, properties, mapping, status FROM metronome_outbox
 WHERE transaction_id LIKE 'direct-%';

-- Whole-row mode: a table shaped like Segment's warehouse "tracks" table.
CREATE TABLE warehouse_tracks (
    id               text PRIMARY KEY,
    user_id          text,
    event            text,
    event_text       text,
    "timestamp"      timestamptz,
    context_group_id text,
    tokens           integer
);
INSERT INTO metronome_mappings (name, subscription, transaction_id, customer_id,
                                "timestamp", event_type, properties)
VALUES ('warehouse', 'event = "api_call" and tokens > 0',
        '{"@path": "$.id"}', '{"@path": "$.context_group_id"}',
        '{"@path": "$.timestamp"}', '{"@path": "$.event_text"}',
        '{"tokens": {"@path": "$.tokens"}, "user": {"@path": "$.user_id"}}');
SELECT metronome_attach('warehouse_tracks');
INSERT INTO warehouse_tracks VALUES
  ('wh-1', 'u-1', 'api_call', 'API Call', '2024-03-01 12:00:00.5+01', 'acme', 10),
  ('wh-2', 'u-2', 'api_call', 'API Call', '2024-03-01 12:00:00+00', NULL, 5),
  ('wh-3', 'u-3', 'api_call', 'API Call', '2024-03-01 12:00:00+00', 'acme', 0);
SELECT transaction_id, customer_id, event_type, "timestamp", properties, mapping
  FROM metronome_outbox WHERE mapping = 'warehouse' ORDER BY id;
SELECT error FROM metronome_rejected WHERE mapping = 'warehouse';

-- COPY into an attached table maps too.
COPY warehouse_tracks FROM stdin;
wh-4	u-4	api_call	API Call	2024-03-01 13:00:00+00	globex	7
\.
SELECT transaction_id, customer_id FROM metronome_outbox WHERE transaction_id = 'wh-4';

-- A jsonb column of another table, named by the trigger argument.
CREATE TABLE app_events (id serial, payload jsonb, note text);
SELECT metronome_attach('app_events', 'payload');
INSERT INTO app_events (payload) VALUES
('{"type": "track", "event": "API Call", "messageId": "app-1",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}'),
(NULL);
SELECT transaction_id, mapping FROM metronome_outbox WHERE transaction_id = 'app-1';
SELECT event, error FROM metronome_rejected WHERE event = 'null' AND mapping IS NULL
 ORDER BY id DESC LIMIT 1;

-- metronome_attach refuses what cannot work.
SELECT metronome_attach('app_events', 'nope');
SELECT metronome_attach('app_events', 'note');
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = 'app_events'::regclass AND NOT tgisinternal;
SELECT metronome_detach('app_events');
SELECT count(*) AS triggers_left FROM pg_trigger
 WHERE tgrelid = 'app_events'::regclass AND NOT tgisinternal;

-- A partitioned table maps through its parent; a partition attached by
-- itself gets a row-level trigger (partitions cannot have transition tables).
CREATE TABLE part_events (id bigserial, event jsonb, day date) PARTITION BY RANGE (day);
CREATE TABLE part_events_2024 PARTITION OF part_events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
SELECT metronome_attach('part_events', 'event');
INSERT INTO part_events (event, day) VALUES
('{"type": "track", "event": "API Call", "messageId": "part-1",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}', '2024-03-01');
SELECT transaction_id FROM metronome_outbox WHERE transaction_id = 'part-1';
SELECT metronome_detach('part_events');
SELECT metronome_detach('part_events');
SELECT metronome_attach('part_events_2024', 'event');
SELECT pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = 'part_events_2024'::regclass AND tgname = 'metronome_map';
INSERT INTO part_events (event, day) VALUES
('{"type": "track", "event": "API Call", "messageId": "part-2",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}', '2024-03-01');
SELECT transaction_id FROM metronome_outbox WHERE transaction_id = 'part-2';

-- The trigger refuses to run where it cannot do its job.
CREATE TABLE misuse (event jsonb);
CREATE TRIGGER t BEFORE INSERT ON misuse FOR EACH ROW
    EXECUTE FUNCTION metronome_map_trigger('event');
INSERT INTO misuse VALUES ('{}');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t AFTER INSERT ON misuse FOR EACH STATEMENT
    EXECUTE FUNCTION metronome_map_trigger('event');
INSERT INTO misuse VALUES ('{}');
DROP TRIGGER t ON misuse;
CREATE TRIGGER t AFTER INSERT ON misuse FOR EACH ROW
    EXECUTE FUNCTION metronome_map_trigger('missing_column');
INSERT INTO misuse VALUES ('{}');

-- Restoring a dump (pg_dump's scripts turn these two off) does not map the
-- restored events again: their outbox rows are restored too.
SET check_function_bodies = off;
SET row_security = off;
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "API Call", "messageId": "restored-1",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}');
RESET row_security;
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "API Call", "messageId": "restored-2",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}');
RESET check_function_bodies;
SELECT transaction_id FROM metronome_outbox WHERE transaction_id LIKE 'restored-%';

DROP TABLE warehouse_tracks, app_events, part_events, misuse;
DELETE FROM metronome_mappings;
TRUNCATE metronome_queue, metronome_outbox_state, metronome_rejected, segment_events;
