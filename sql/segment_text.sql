--
-- segment_text: text made from values as JavaScript makes it (issue 10):
-- numbers as String(n) writes the double JavaScript holds, the same in
-- templates, @json encode and the string fields; @case with Unicode's full
-- case mappings, independent of the locale; lodash "length"; a one-element
-- array where a string field is expected is its element; metronome_evaluate
-- refuses an event that is not an object.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS metronome;
RESET client_min_messages;
\pset null '(undefined)'

-- String(n) in a template and in @json encode; properties keep the digits
SELECT n,
       metronome_evaluate('{"@template": "{{v}}"}', jsonb_build_object('v', n::jsonb)) AS template,
       metronome_evaluate('{"@json": {"mode": "encode", "value": {"@path": "$.v"}}}', jsonb_build_object('v', n::jsonb)) AS json,
       metronome_evaluate('{"@path": "$.v"}', jsonb_build_object('v', n::jsonb)) AS kept
  FROM (VALUES ('1e21'), ('1e20'), ('12345678901234567890'), ('9007199254740993'), ('1.50'),
               ('0.1000000000000000055511151231257827'), ('1e-7'), ('0.000001'), ('5e-324'),
               ('1.7976931348623157e308'), ('1e400'), ('-0'), ('-2.5e-10'), ('123')) AS t(n);

-- the string fields: customer_id and event_type from numbers and arrays
INSERT INTO metronome_mappings (name, customer_id, event_type)
VALUES ('text_fields', '{"@path": "$.properties.c"}', '{"@template": "e-{{properties.c}}"}');
SELECT v, m.customer_id, m.event_type, m.error
  FROM (VALUES ('1e21'), ('12345678901234567890'), ('1.50'), ('true'), ('["acme"]'), ('[7]'), ('[true]'),
               ('[null]'), ('[""]'), ('[["a"]]'), ('[{"a": 1}]'), ('["a", "b"]'), ('[]')) AS t(v),
       LATERAL metronome_map(jsonb_build_object('type', 'track', 'messageId', 'm-' || v,
           'timestamp', '2024-03-01T00:00:00Z', 'properties', jsonb_build_object('c', v::jsonb))) AS m;
DELETE FROM metronome_mappings WHERE name = 'text_fields';
-- the preset with context.groupId as a one-element array
INSERT INTO metronome_mappings (name) VALUES ('preset_arr');
SELECT customer_id, error FROM metronome_map('{"type": "track", "event": "e", "messageId": "m-arr",
    "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": ["acme"]}}') WHERE mapping = 'preset_arr';
DELETE FROM metronome_mappings WHERE name = 'preset_arr';

-- @case: full case mappings, final sigma, the same in every locale
SELECT s,
       metronome_evaluate('{"@case": {"operator": "upper", "value": {"@path": "$.s"}}}', jsonb_build_object('s', s)) AS upper,
       metronome_evaluate('{"@case": {"operator": "lower", "value": {"@path": "$.s"}}}', jsonb_build_object('s', s)) AS lower
  FROM (VALUES ('straße'), ('ﬁne'), ('ΣΊΣΥΦΟΣ'), ('ΌΣΟΣ Σ'), ('İstanbul'), ('և'), ('ǅ'), ('ŉ'), ('Ça Été'), ('a😀b'), ('ΑΣ.')) AS t(s);
-- @replace with ignorecase folds one character to one character
SELECT metronome_evaluate('{"@replace": {"pattern": "É", "replacement": "e", "ignorecase": true, "global": true, "value": "éÉe"}}', '{}') AS folded;

-- lodash length: arrays, strings (UTF-16 units), an object's own key wins
SELECT p, metronome_evaluate(jsonb_build_object('@path', p), '{"items": [1, 2, 3], "s": "a😀é", "o": {"length": "own"}, "e": [], "x": {"a": 1}}') AS v
  FROM (VALUES ('$.items.length'), ('items[''length'']'), ('$.s.length'), ('$.o.length'), ('$.e.length'), ('$.x.length'), ('$.items.length.length')) AS t(p);
SELECT metronome_matches('properties.items.length > 2', '{"properties": {"items": [1, 2, 3]}}') AS fql_length;

-- metronome_evaluate: the event is a JSON object
SELECT metronome_evaluate('{"@path": "$.a"}', '5');
SELECT metronome_evaluate('{"@path": "$.a"}', '[1]');
SELECT metronome_evaluate('{"@path": "$.a"}', '"text"');
SELECT metronome_evaluate('{"@path": "$.a"}', '{"a": 1}') AS object_ok;
