--
-- hostile: input that is deeply nested, huge or malformed gets a clear
-- error or a correct result, never a crash.  Recursion in the engine is
-- bounded by the server's stack check (max_stack_depth), so its limits are
-- errors; values the engine builds from data (@excludeWhenNull, @json
-- decode) are bounded at 1000 levels.  The libFuzzer targets in test/fuzz/
-- search for the rest.
--
-- Depths are chosen far from the limits, so that the results do not
-- depend on how much stack a build's frames take: 1000 to 2000 levels must
-- work wherever the engine recurses; 9000 to 10000 levels (about the
-- deepest JSON the server's own parser accepts) must work where the engine
-- does not recurse (paths), and be refused where it does; 100000 levels of
-- FQL are refused by the stack check.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS metronome;
RESET client_min_messages;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO';
SET max_stack_depth = '2MB';
SET metronome.on_mapping_error = 'reject';
-- rows that exist already (this file removes only its own at the end)
SELECT coalesce((SELECT max(id) FROM segment_events), 0) AS events_before,
       coalesce((SELECT max(id) FROM metronome_outbox), 0) AS outbox_before,
       coalesce((SELECT max(id) FROM metronome_rejected), 0) AS rejected_before \gset

-- The outcome of a query: "ok: <its value, cut>" or "<SQLSTATE>: <message>"
-- (an error's detail may quote the whole input: it is left out).
CREATE FUNCTION pg_temp.outcome(query text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE query INTO r;
    RETURN 'ok: ' || coalesce(left(r, 60), '(null)');
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;

-- {"a": {"a": ... leaf ...}}, n levels of objects
CREATE FUNCTION pg_temp.deep(n int, leaf text DEFAULT '1') RETURNS text
LANGUAGE sql AS $$ SELECT repeat('{"a": ', n) || leaf || repeat('}', n) $$;

-- the path a.a.a... (n steps) for FQL, or $.a.a... for mappings
CREATE FUNCTION pg_temp.apath(n int) RETURNS text
LANGUAGE sql AS $$ SELECT 'a' || repeat('.a', n - 1) $$;

CREATE TEMP TABLE deep_events AS
SELECT n, pg_temp.deep(n)::jsonb AS e FROM unnest(ARRAY[2000, 10000]) AS n;

-------------------------------------------------------------------------
-- Deep events through FQL: paths are walked without recursion, at any
-- depth; the answers are those of a shallow event.
-------------------------------------------------------------------------
SELECT n,
       metronome_matches(pg_temp.apath(n) || ' = 1', e) AS leaf_is_1,
       metronome_matches(pg_temp.apath(n) || ' = "1"', e) AS leaf_is_str_1,
       metronome_matches(pg_temp.apath(n + 1) || ' = null', e) AS past_leaf_is_null,
       metronome_matches('a.a.a = 1', e) AS shallow_is_1,
       metronome_matches('a != null and not contains(a, "a")', e) AS a_is_object,
       metronome_matches('match(a, "*")', e) AS a_matches_glob
  FROM deep_events ORDER BY n;

-- Deep subscriptions: 2000 levels of parentheses or "not" parse and
-- evaluate; 100000 are refused by the stack check, whatever the event.
SELECT metronome_matches(repeat('(', 2000) || 'type = "track"' || repeat(')', 2000),
                         '{"type": "track"}') AS parens_2000,
       metronome_matches(repeat('not ', 2000) || 'type = "track"',
                         '{"type": "track"}') AS not_2000,
       metronome_matches(repeat('!', 2001) || 'type = "track"',
                         '{"type": "track"}') AS bang_2001;
SELECT pg_temp.outcome(format('SELECT metronome_matches(%L, %L)',
                              repeat('(', 100000) || 'type = "track"' || repeat(')', 100000),
                              '{"type": "track"}')) AS parens_100000,
       pg_temp.outcome(format('SELECT metronome_matches(%L, %L)',
                              repeat('not ', 100000) || 'type = "track"',
                              '{"type": "track"}')) AS not_100000;
SELECT pg_temp.outcome(format('SELECT metronome_matches(%L, %L)',
                              repeat('!', 100000) || 'type = "track"',
                              '{"type": "track"}')) AS bang_100000,
       pg_temp.outcome(format('SELECT metronome_matches(%L, %L)',
                              repeat('(', 100000), '{}')) AS unclosed_100000;

-- Long flat subscriptions (30000 terms, 400 kB) are not recursion.
SELECT metronome_matches(string_agg(format('v = %s', i), ' or '), '{"v": 29999}') AS or_30000,
       metronome_matches(string_agg(format('v != %s', i), ' and '), '{"v": 29999}') AS and_30000
  FROM generate_series(0, 29999) AS i;

-------------------------------------------------------------------------
-- Deep events through mapping values.
-------------------------------------------------------------------------
-- Paths and templates reach the bottom at any depth; what they return is
-- the event's own (binary) value, so no depth limit applies to it.
SELECT n,
       metronome_evaluate(format('{"@path": "$.%s"}', pg_temp.apath(n))::jsonb, e) AS leaf,
       length(metronome_evaluate('{"@path": "$.a"}', e)::text) AS a_length,
       metronome_evaluate(format('{"@template": "<{{%s}}>"}', pg_temp.apath(n))::jsonb, e) AS template,
       metronome_evaluate('{"@if": {"exists": {"@path": "$.a"}, "then": "yes", "else": "no"}}', e) AS if_exists
  FROM deep_events ORDER BY n;

-- Directives that walk the value itself, at 2000 levels: JSON.stringify,
-- flattening into one key a.a.a..., and the in-memory values they build.
SELECT length(metronome_evaluate('{"@json": {"mode": "encode", "value": {"@path": "$"}}}', e)::text) AS json_encode_length,
       metronome_evaluate('{"@flatten": {"value": {"@path": "$"}, "separator": "/"}}', e)
         ->> (repeat('a/', 1999) || 'a') AS flatten_leaf,
       metronome_evaluate('{"@merge": {"objects": [{"@path": "$"}, {"b": 2}], "direction": "right"}}', e)
         - 'a' AS merge_without_a,
       length(metronome_evaluate('{"@arrayPath": ["$", {"x": {"@path": "$.a.a"}}]}', e)::text) AS arraypath_length
  FROM deep_events WHERE n = 2000;

-- Values the engine builds from data are refused past 1000 levels, with
-- the directive named: @excludeWhenNull on a deep object, and @json decode
-- of a deep JSON text (which passes unchanged, as text that is not JSON).
SELECT n, pg_temp.outcome(format('SELECT metronome_evaluate(%L, %L)',
                                 '{"@excludeWhenNull": {"@path": "$"}}', e)) AS exclude_when_null
  FROM deep_events ORDER BY n;
SELECT jsonb_typeof(metronome_evaluate('{"@json": {"mode": "decode", "value": {"@path": "$.s"}}}',
                                       jsonb_build_object('s', pg_temp.deep(1000)))) AS decode_1000,
       jsonb_typeof(metronome_evaluate('{"@json": {"mode": "decode", "value": {"@path": "$.s"}}}',
                                       jsonb_build_object('s', pg_temp.deep(1001)))) AS decode_1001,
       jsonb_typeof(metronome_evaluate('{"@json": {"mode": "decode", "value": {"@path": "$.s"}}}',
                                       jsonb_build_object('s', repeat('[', 100000)))) AS decode_unclosed;

-- Deep mapping values: 1000 levels of plain JSON (with a directive at the
-- bottom) or of directives compile and evaluate; 9000 levels are refused
-- by name.
SELECT metronome_evaluate(pg_temp.deep(1000, '{"@path": "$.x"}')::jsonb, '{"x": 7}')
         #> string_to_array(pg_temp.apath(1000), '.') AS literal_1000,
       metronome_evaluate((repeat('{"@if": {"exists": 1, "then": ', 500) || '{"@path": "$.x"}'
                           || repeat('}}', 500))::jsonb, '{"x": 7}') AS if_chain_500,
       metronome_evaluate((repeat('[', 1000) || '{"@path": "$.x"}' || repeat(']', 1000))::jsonb,
                          '{"x": 7}') #> array_fill('0'::text, ARRAY[1000]) AS array_1000;
SELECT pg_temp.outcome(format('SELECT metronome_evaluate(%L, %L)',
                              pg_temp.deep(9000, '{"@path": "$.x"}'), '{"x": 7}')) AS literal_9000,
       pg_temp.outcome(format('SELECT metronome_evaluate(%L, %L)',
                              repeat('[', 9000) || '1' || repeat(']', 9000), '{}')) AS array_9000;

-------------------------------------------------------------------------
-- Mapping rows: invalid ones are refused when written, deep ones included.
-------------------------------------------------------------------------
SELECT pg_temp.outcome(format(
         $q$INSERT INTO metronome_mappings (name, subscription) VALUES ('hostile_sub', %L) RETURNING name$q$,
         repeat('(', 100000) || 'type = "track"' || repeat(')', 100000))) AS deep_subscription,
       pg_temp.outcome(format(
         $q$INSERT INTO metronome_mappings (name, properties) VALUES ('hostile_map', %L) RETURNING name$q$,
         pg_temp.deep(9000, '{"@path": "$.x"}'))) AS deep_mapping;

-- The mapping the rest uses: "hostile" events, properties from $.p.
INSERT INTO metronome_mappings (name, subscription, transaction_id, customer_id,
                                "timestamp", event_type, properties)
VALUES ('hostile', 'type = "hostile"', '{"@path": "$.id"}', '{"@path": "$.customer"}',
        '"2024-05-01T00:00:00Z"', '"hostile_event"', '{"@path": "$.p"}');

-------------------------------------------------------------------------
-- Deep events through the trigger and the preview.
-------------------------------------------------------------------------
-- properties 9000 levels deep: mapped; a deep value where a string is
-- needed: rejected, with the reason; not objects: rejected.
INSERT INTO segment_events (event)
SELECT jsonb_build_object('type', 'hostile', 'id', 'deep-props', 'customer', 'c1',
                          'p', pg_temp.deep(9000)::jsonb)
UNION ALL
SELECT jsonb_build_object('type', 'hostile', 'id', 'deep-customer', 'p', '{}'::jsonb,
                          'customer', pg_temp.deep(9000)::jsonb)
UNION ALL
SELECT (repeat('[', 10000) || repeat(']', 10000))::jsonb
UNION ALL
SELECT pg_temp.deep(10000)::jsonb;
SELECT transaction_id, customer_id, event_type, "timestamp",
       length(properties::text) AS properties_length,
       properties #>> string_to_array(pg_temp.apath(9000), '.') AS properties_leaf
  FROM metronome_outbox WHERE mapping = 'hostile' ORDER BY id;
SELECT mapping, left(error, 80) AS error, length(event::text) AS event_length
  FROM metronome_rejected WHERE id > :rejected_before ORDER BY id;

-- The preview gives the same, and with on_mapping_error = 'error' the
-- deep event that cannot be mapped aborts its INSERT.
SELECT mapping, transaction_id, length(properties::text) AS properties_length, error
  FROM metronome_map(jsonb_build_object('type', 'hostile', 'id', 'deep-preview', 'customer', 'c1',
                                        'p', pg_temp.deep(9000)::jsonb));
SET metronome.on_mapping_error = 'error';
SELECT pg_temp.outcome($q$INSERT INTO segment_events (event)
  SELECT jsonb_build_object('type', 'hostile', 'id', 'deep-error', 'p', '{}'::jsonb,
                            'customer', pg_temp.deep(9000)::jsonb) RETURNING id$q$) AS deep_error;
SET metronome.on_mapping_error = 'reject';
SELECT count(*) AS deep_error_rows FROM segment_events WHERE event->>'id' = 'deep-error';

-------------------------------------------------------------------------
-- Huge strings.
-------------------------------------------------------------------------
CREATE TEMP TABLE big AS
SELECT jsonb_build_object('type', 'hostile', 'id', 'big', 'customer', 'c1',
                          'p', jsonb_build_object('blob', repeat('x', 2 * 1024 * 1024) || 'needle')) AS e;

-- FQL on a 2 MB string, and with a 2 MB literal.
SELECT metronome_matches('contains(p.blob, "needle")', e) AS contains_needle,
       metronome_matches('match(p.blob, "x*needle")', e) AS glob_needle,
       metronome_matches('match(p.blob, "*x*y*z")', e) AS glob_miss,
       metronome_matches(format('p.blob = "%s"', repeat('x', 2 * 1024 * 1024) || 'needle'), e) AS equal_2mb
  FROM big;

-- Directives over it: templates, replace, case, JSON.stringify.
SELECT length(metronome_evaluate('{"@template": "{{p.blob}}-{{p.blob}}-{{{p.blob}}}"}', e)::text) AS template_length,
       length(metronome_evaluate('{"@replace": {"pattern": "x", "replacement": "yy", "global": true, "value": {"@path": "$.p.blob"}}}', e)::text) AS replace_length,
       right(metronome_evaluate('{"@case": {"operator": "upper", "value": {"@path": "$.p.blob"}}}', e) #>> '{}', 6) AS case_tail,
       length(metronome_evaluate('{"@json": {"mode": "encode", "value": {"@path": "$.p"}}}', e)::text) AS encode_length
  FROM big;

-- Template placeholders are found in linear time, in text that is a long
-- run of "{" too (a value rendered by {{{...}}} is scanned again for
-- {{...}}).
SELECT length(metronome_evaluate('{"@template": "{{{t}}}"}',
                                 jsonb_build_object('t', repeat('{', 1024 * 1024)))::text) AS braces_1mb,
       length(metronome_evaluate('{"@template": {"@path": "$.t"}}',
                                 jsonb_build_object('t', repeat('{', 1024 * 1024)))::text) AS braces_dyn_1mb;

-- A transaction_id of 1M characters (2 MB): refused, with the field named
-- and its length in characters.  A number of 201 digits becomes its text as
-- JavaScript's String() writes it ("1e+200"), as for Segment.
SELECT mapping, transaction_id, error
  FROM metronome_map(jsonb_build_object('type', 'hostile', 'customer', 'c1', 'p', '{}'::jsonb,
                                        'id', repeat('é', 1024 * 1024)));
SELECT mapping, transaction_id, error
  FROM metronome_map(jsonb_build_object('type', 'hostile', 'customer', 'c1', 'p', '{}'::jsonb,
                                        'id', ('1' || repeat('0', 200))::numeric));

-------------------------------------------------------------------------
-- A 10 MB event through the trigger: mapped whole, or rejected whole.
-------------------------------------------------------------------------
INSERT INTO segment_events (event)
SELECT jsonb_build_object('type', 'hostile', 'id', 'ten-mb', 'customer', 'c1',
                          'p', jsonb_build_object('blob', repeat('0123456789', 1024 * 1024)))
UNION ALL
SELECT jsonb_build_object('type', 'hostile', 'customer', 'c1',
                          'p', jsonb_build_object('blob', repeat('0123456789', 1024 * 1024)));
SELECT transaction_id, length(properties->>'blob') AS blob_length,
       md5(properties->>'blob') = md5(repeat('0123456789', 1024 * 1024)) AS blob_intact
  FROM metronome_outbox WHERE transaction_id = 'ten-mb';
SELECT mapping, error, length(event->'p'->>'blob') AS blob_length
  FROM metronome_rejected WHERE id > :rejected_before AND error LIKE '%transaction_id%' ORDER BY id;

-------------------------------------------------------------------------
-- NUL bytes and invalid UTF-8: refused where the text enters the server,
-- with the server's own clear messages; the engine never sees them.
-------------------------------------------------------------------------
SELECT '{"a": "\u0000"}'::jsonb;
SELECT convert_from('\x7b2261223a2022006222207d', 'UTF8')::jsonb;
SELECT metronome_matches('a = "\u0000"', '{}');
SELECT metronome_evaluate('{"@template": "\u0000"}', '{}');
-- JSON.parse of text holding \u0000 (allowed in a jsonb string as the six
-- characters) cannot make a jsonb string: the text passes unchanged.
SELECT metronome_evaluate('{"@json": {"mode": "decode", "value": {"@path": "$.s"}}}',
                          '{"s": "{\"a\": \"\\u0000\"}"}') AS decode_nul;
SELECT convert_from('\x7b2261223a2022c328227d', 'UTF8')::jsonb;
SELECT metronome_matches(convert_from('\x61203d2022ff22', 'UTF8'), '{}');
SELECT E'{"a": "\xed\xa0\x80"}'::jsonb;
SELECT '{"a": "\ud800"}'::jsonb;
SELECT metronome_matches('a = "\ud800"', '{}');
SELECT metronome_matches('a = "\udc00"', '{}');
SELECT metronome_matches('a = "\ud83d\ude00" and b = "\u00e9"', '{"a": "😀", "b": "é"}') AS surrogate_pair;
-- A message quotes the start of a bad value, cut between two characters
-- (convert_to() checks the encoding): messages are stored in
-- metronome_rejected, where invalid text would make a dump that does not
-- restore.
INSERT INTO metronome_mappings (name, subscription, transaction_id, customer_id,
                                "timestamp", event_type)
VALUES ('hostile_ts', 'type = "hostile_ts"', '"t"', '"c"', '{"@path": "$.ts"}', '"e"');
SELECT mapping, error, length(convert_to(error, 'UTF8')) AS bytes
  FROM metronome_map(jsonb_build_object('type', 'hostile_ts', 'ts', 'x' || repeat('é', 40)));
INSERT INTO segment_events (event)
VALUES (jsonb_build_object('type', 'hostile_ts', 'ts', 'x' || repeat('é', 40)));
SELECT mapping, length(convert_to(error, 'UTF8')) AS bytes
  FROM metronome_rejected WHERE id > :rejected_before AND mapping = 'hostile_ts';

-- Positions in messages count characters, not bytes.
SELECT metronome_evaluate('{"@path": "$.éé..a"}', '{}');
SELECT metronome_evaluate('{"@path": {"@template": "$.éé..a"}}', '{}');
SELECT metronome_matches('a.éé = "x" nope', '{}');

-------------------------------------------------------------------------
-- Clean up: nothing this file made is left for the files after it.
-------------------------------------------------------------------------
DELETE FROM metronome_outbox WHERE id > :outbox_before;
DELETE FROM metronome_rejected WHERE id > :rejected_before;
DELETE FROM segment_events WHERE id > :events_before;
DELETE FROM metronome_mappings WHERE name IN ('hostile', 'hostile_ts');
RESET metronome.on_mapping_error;
RESET max_stack_depth;
