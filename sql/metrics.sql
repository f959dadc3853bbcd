--
-- metrics: metronome_metrics() (Prometheus's text format) and
-- metronome_metrics_table() without preloading: the counters are this
-- session's (nothing shipped: all zero), the gauges come from the outbox.
-- Everything runs in a transaction that is rolled back, and the sequences
-- are set back after it, so the other tests see the tables as they were.
--
CREATE EXTENSION IF NOT EXISTS metronome;
SET metronome.on_mapping_error = 'reject';
SELECT (SELECT last_value FROM segment_events_id_seq) AS ev_last,
       (SELECT is_called FROM segment_events_id_seq) AS ev_called,
       (SELECT last_value FROM metronome_outbox_id_seq) AS ob_last,
       (SELECT is_called FROM metronome_outbox_id_seq) AS ob_called,
       (SELECT last_value FROM metronome_rejected_id_seq) AS rj_last,
       (SELECT is_called FROM metronome_rejected_id_seq) AS rj_called,
       (SELECT last_value FROM metronome_mappings_id_seq) AS mp_last,
       (SELECT is_called FROM metronome_mappings_id_seq) AS mp_called \gset

-- The reasons of rejected rows: a bounded set of words.
SELECT e AS error, metronome_rejected_reason(e) AS reason
  FROM (VALUES ('missing required field ''customer_id'''),
               ('missing required field ''transaction_id'' (an array whose only element is empty)'),
               ('missing required field ''timestamp'''),
               ('missing required field ''event_type'''),
               ('customer_id must be a string, not an object'),
               ('transaction_id must be at most 128 characters, not 129'),
               ('timestamp "2024-02-30" is not a valid date'),
               ('timestamp 1e30 is out of range (a number is epoch milliseconds)'),
               ('event_type: @path: unexpected character (at character 3)'),
               ('properties must be an object, not an array'),
               ('mapping "calls" is invalid: subscription: unexpected end'),
               ('mapping "calls" does not exist or is not enabled'),
               ('the subscription of mapping "calls" no longer matches the event'),
               ('transaction_id "m-1" is also built by mapping "a" for this event, use another'),
               ('event is not a JSON object (it is an array)'),
               ('something else entirely'),
               (NULL)) AS v(e);

BEGIN;
TRUNCATE metronome_queue, metronome_outbox_state, metronome_rejected;
DELETE FROM metronome_mappings;

-- Nothing in the outbox, no mapping: every gauge 0, every counter 0.
SELECT line FROM regexp_split_to_table(metronome_metrics(), E'\n') AS line
 WHERE line NOT LIKE '# HELP %';

-- Two mappings (one with a name that needs escaping), pending rows of each
-- and of direct inserts, failed rows, rejected rows.
INSERT INTO metronome_mappings (name) VALUES ('tracks');
INSERT INTO metronome_mappings (name, subscription, transaction_id)
VALUES (E'we"ird\\na\nme', 'type = "track" and event = "Seat Added"',
        '{"@template": "{{messageId}}-seat"}');
INSERT INTO segment_events (event)
SELECT jsonb_build_object('type', 'track', 'event', CASE WHEN g <= 2 THEN 'Seat Added' ELSE 'API Call' END,
                          'messageId', 'met-' || g, 'timestamp', '2024-03-01T10:00:00Z',
                          'context', CASE WHEN g = 5 THEN '{}'::jsonb ELSE '{"groupId": "acme"}' END)
  FROM generate_series(1, 5) g;
INSERT INTO segment_events (event) VALUES ('[1]'),
  ('{"type": "track", "event": "API Call", "messageId": "met-6", "timestamp": "2024-02-30T00:00:00Z", "context": {"groupId": "acme"}}');
INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
VALUES ('direct-1', 'acme', 'api_call', now()), ('direct-2', 'acme', 'api_call', now());
INSERT INTO metronome_outbox_state (id, transaction_id, customer_id, event_type, "timestamp",
                                    mapping, status, attempts, last_error, created_at)
VALUES (-1, 'gone-1', 'acme', 'api_call', now(), 'tracks', 'failed', 3, 'HTTP 400: no', now() - interval '1 hour'),
       (-2, 'gone-2', 'acme', 'api_call', now(), 'tracks', 'pending', 1, 'HTTP 503', now() - interval '2 hours');
SELECT mapping, status, count(*) FROM metronome_outbox GROUP BY 1, 2 ORDER BY mapping COLLATE "C", status;
SELECT mapping, metronome_rejected_reason(error), count(*) FROM metronome_rejected GROUP BY 1, 2 ORDER BY 1, 2;

-- The gauges (the age of the oldest pending row: the retried one, 2 hours).
SELECT line FROM regexp_split_to_table(metronome_metrics(), E'\n') AS line
 WHERE line ~ '^metronome_(pending|failed|mapping|rejected)_events';
SELECT substring(line FROM ' ([0-9.]+)$')::float8 BETWEEN 7200 AND 7300 AS oldest_is_two_hours
  FROM regexp_split_to_table(metronome_metrics(), E'\n') AS line
 WHERE line LIKE 'metronome_oldest_pending_age_seconds{%';

-- Every line is a HELP, a TYPE or a sample of the format, the last ends
-- with a newline, each family is declared once, before its samples.
WITH t AS (SELECT metronome_metrics() AS m),
     l AS (SELECT line, n FROM t, regexp_split_to_table(rtrim(m, E'\n'), E'\n') WITH ORDINALITY AS x(line, n))
SELECT (SELECT right(m, 1) = E'\n' FROM t) AS ends_with_newline,
       count(*) FILTER (WHERE line !~ '^# HELP metronome_[a-z_]+ [^\n]+$'
                          AND line !~ '^# TYPE metronome_[a-z_]+ (counter|gauge|histogram)$'
                          AND line !~ '^metronome_[a-z_]+\{[a-z_]+="([^"\\]|\\[\\"n])*"(,[a-z_]+="([^"\\]|\\[\\"n])*")*\} (-?[0-9]+(\.[0-9]+)?|\+Inf|NaN)$') AS bad_lines,
       count(*) FILTER (WHERE line LIKE '# TYPE %') AS families,
       count(DISTINCT split_part(line, ' ', 3)) FILTER (WHERE line LIKE '# TYPE %') AS distinct_families,
       count(*) FILTER (WHERE line LIKE '# HELP %') AS helps,
       count(*) FILTER (WHERE line LIKE 'metronome_%') AS samples
  FROM l;
-- counters end in _total; every sample follows the TYPE line of its family
WITH l AS (SELECT line, n FROM regexp_split_to_table(metronome_metrics(), E'\n') WITH ORDINALITY AS x(line, n)),
     ty AS (SELECT split_part(line, ' ', 3) AS fam, split_part(line, ' ', 4) AS type, n FROM l WHERE line LIKE '# TYPE %'),
     s AS (SELECT substring(line FROM '^([a-z_]+)') AS name, n FROM l WHERE line LIKE 'metronome_%')
SELECT (SELECT count(*) FROM ty WHERE type = 'counter' AND fam NOT LIKE '%\_total') AS counters_without_total,
       (SELECT count(*) FROM s WHERE NOT EXISTS (
            SELECT 1 FROM ty WHERE ty.n < s.n
               AND (s.name = ty.fam OR (ty.type = 'histogram' AND s.name IN (ty.fam || '_bucket', ty.fam || '_sum', ty.fam || '_count')))
               AND NOT EXISTS (SELECT 1 FROM ty t2 WHERE t2.n > ty.n AND t2.n < s.n))) AS misplaced_samples;

-- The table form holds the same samples.
SELECT name, labels, value FROM metronome_metrics_table()
 WHERE name LIKE 'metronome_mapping_events' OR name LIKE 'metronome_ack_latency_seconds_%'
    OR name = 'metronome_requests_total' AND labels->>'class' = 'network'
 ORDER BY name, labels->>'mapping' COLLATE "C", labels->>'status', (labels->>'le')::float8;
SELECT (SELECT count(*) FROM metronome_metrics_table()) =
       (SELECT count(*) FROM regexp_split_to_table(metronome_metrics(), E'\n') AS line
         WHERE line LIKE 'metronome_%') AS same_number_of_samples;
ROLLBACK;
SELECT setval('segment_events_id_seq', :ev_last, :'ev_called') IS NOT NULL AS ev,
       setval('metronome_outbox_id_seq', :ob_last, :'ob_called') IS NOT NULL AS ob,
       setval('metronome_rejected_id_seq', :rj_last, :'rj_called') IS NOT NULL AS rj,
       setval('metronome_mappings_id_seq', :mp_last, :'mp_called') IS NOT NULL AS mp;

-- Who may call them: not PUBLIC; a role granted EXECUTE needs nothing else
-- (it may not read the outbox, yet gets its counts).
CREATE ROLE regress_metronome_monitor;
SET ROLE regress_metronome_monitor;
SELECT metronome_metrics();
SELECT count(*) FROM metronome_metrics_table();
RESET ROLE;
GRANT EXECUTE ON FUNCTION metronome_metrics(), metronome_metrics_table() TO regress_metronome_monitor;
SET ROLE regress_metronome_monitor;
SELECT count(*) FROM metronome_outbox;
SELECT count(*) > 0 AS lines FROM regexp_split_to_table(metronome_metrics(), E'\n');
SELECT count(*) > 0 AS samples FROM metronome_metrics_table();
RESET ROLE;
REVOKE ALL ON FUNCTION metronome_metrics(), metronome_metrics_table() FROM regress_metronome_monitor;
DROP ROLE regress_metronome_monitor;
