--
-- mapkit: Segment mapping-kit values through metronome_evaluate(mapping,
-- event): every directive and its edge cases, literals walked for
-- directives, undefined (SQL NULL, shown as "(undefined)") versus JSON null,
-- lodash paths, validation messages, and the preset mapping of the Metronome
-- destination on a realistic track event.
--
-- The expected results follow Segment's engine (packages/core/src/mapping-kit
-- in segmentio/action-destinations); comments say where a case shows one of
-- its JavaScript quirks, and where we knowingly differ.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS metronome;
RESET client_min_messages;
\pset null '(undefined)'

-- An invalid mapping, as the message it is refused with.
CREATE FUNCTION pg_temp.mapping_error(m jsonb) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM metronome_evaluate(m, '{}');
    RETURN 'valid';
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN SQLERRM;
END
$$;

-- A realistic Segment track event.
CREATE TEMP TABLE track (e jsonb);
INSERT INTO track VALUES ('{
  "type": "track",
  "event": "API Call",
  "messageId": "ajs-next-1f0b5c6e2d0a4c1f9b1e",
  "userId": "user_42",
  "anonymousId": "anon-7",
  "groupId": "top-level-group",
  "timestamp": "2024-03-01T12:34:56.789Z",
  "sentAt": "2024-03-01T12:34:57.000Z",
  "context": {
    "groupId": "org_1234",
    "ip": "203.0.113.7",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64)",
    "library": {"name": "analytics-node", "version": "6.2.0"},
    "page": null
  },
  "integrations": {"Actions Amplitude": {"session_id": "s-99"}},
  "properties": {
    "plan": "Pro",
    "units": 3,
    "price": 1.50,
    "region": "us-east-1",
    "beta": false,
    "coupon": null,
    "tags": ["a", "b"],
    "items": [
      {"sku": "sku-1", "qty": 2, "meta": {"color": "red"}},
      {"sku": "sku-2", "qty": 1, "meta": null}
    ],
    "weird key": {"it''s": "quoted", "dq\"": "double"}
  }
}');

------------------------------------------------------------------------
-- The preset mapping of the Metronome destination
------------------------------------------------------------------------
SELECT metronome_evaluate('{"@path": "$.messageId"}', e) AS transaction_id,
       metronome_evaluate('{"@path": "$.context.groupId"}', e) AS customer_id,
       metronome_evaluate('{"@path": "$.timestamp"}', e) AS "timestamp",
       metronome_evaluate('{"@path": "$.event"}', e) AS event_type
  FROM track;
SELECT metronome_evaluate('{"@path": "$.properties"}', e) AS properties FROM track;
-- customer_id is context.groupId, not the top-level groupId; a track event
-- without context has none.
SELECT metronome_evaluate('{"@path": "$.context.groupId"}', '{"groupId": "g"}');

------------------------------------------------------------------------
-- Literals: plain JSON is itself; its objects and arrays are walked
------------------------------------------------------------------------
SELECT label, metronome_evaluate(m::jsonb, '{"a": "A"}') AS result
  FROM (VALUES
    ('string', '"text"'),
    ('number', '12.50'),
    ('boolean', 'false'),
    ('null', 'null'),
    ('empty object', '{}'),
    ('empty array', '[]'),
    ('plain object', '{"x": {"y": [1, {"z": null}]}}'),
    ('directive inside', '{"x": {"y": [1, {"z": {"@path": "$.a"}}]}, "k": 1}'),
    ('undefined member dropped', '{"x": {"@path": "$.missing"}, "y": 1}'),
    ('all members undefined', '{"x": {"y": {"@path": "$.missing"}}}'),
    ('null member kept', '{"x": {"@path": "$.missing"}, "n": null}'),
    ('undefined array element is null', '[{"@path": "$.missing"}, {"@path": "$.a"}]'),
    ('_metadata is ignored', '{"@path": "$.a", "_metadata": {"label": "A", "type": "variable"}}'),
    ('_metadata on a plain object is a key', '{"_metadata": 1, "b": {"@path": "$.a"}}'),
    ('top-level undefined', '{"@path": "$.missing"}')
  ) t(label, m);

------------------------------------------------------------------------
-- @path: lodash paths; "$." optional; "" and "$." are the whole event
------------------------------------------------------------------------
SELECT label, metronome_evaluate(jsonb_build_object('@path', p), e) AS result
  FROM track, (VALUES
    ('leading $.', '$.properties.plan'),
    ('no $.', 'properties.plan'),
    ('index', '$.properties.items[0].sku'),
    ('index then key', 'properties.items[1].qty'),
    ('dot index', 'properties.tags.1'),
    ('index out of range', 'properties.items[5].sku'),
    ('single quotes', '$.properties[''weird key''][''it\''s'']'),
    ('double quotes', '$.properties["weird key"]["dq\""]'),
    ('space in a dotted key', '$.integrations.Actions Amplitude.session_id'),
    ('null value', '$.properties.coupon'),
    -- the shared path module stops at scalars and null; Segment's get()
    -- would give null here (it returns the first falsy value on the way)
    ('through null', '$.context.page.url'),
    -- lodash reads a string's length: 8 ("API Call".length)
    ('into a string', '$.event.length'),
    ('false value', '$.properties.beta'),
    ('missing', '$.properties.nope'),
    ('number', '$.properties.price')
  ) t(label, p);
SELECT metronome_evaluate('{"@path": ""}', '{"a": 1}') AS empty_path,
       metronome_evaluate('{"@path": "$."}', '{"a": 1}') AS dollar_dot,
       metronome_evaluate('{"@path": "."}', '{"a": 1}') AS dot;
-- an event is an object, as for Segment (an array or a scalar is an error)
\set VERBOSITY terse
SELECT metronome_evaluate('{"@path": "[0]"}', '["first"]') AS index_of_an_array_event;
\set VERBOSITY default
-- A directive may give the path: {"@path": {"@path": "$.which"}}.
SELECT metronome_evaluate('{"@path": {"@path": "$.which"}}', '{"which": "b", "b": "B"}') AS dynamic,
       metronome_evaluate('{"@path": {"@template": "properties.{{k}}"}}', '{"k": "x", "properties": {"x": 9}}') AS from_template;
-- ... and must give a string (an error of this event, not of the mapping).
SELECT metronome_evaluate('{"@path": {"@path": "$.which"}}', '{"which": 5}');
SELECT metronome_evaluate('{"@path": {"@path": "$.which"}}', '{}');
SELECT metronome_evaluate('{"@path": {"@path": "$.which"}}', '{"which": "a[0"}');

------------------------------------------------------------------------
-- @template
------------------------------------------------------------------------
SELECT label, metronome_evaluate(jsonb_build_object('@template', t), e) AS result
  FROM track, (VALUES
    ('text only', 'no placeholders'),
    ('basic', '{{event}} by {{userId}}'),
    ('spaces trimmed, $. optional', '[{{ $.properties.plan }}]'),
    ('triple braces', '{{{context.library.name}}}@{{context.library.version}}'),
    ('missing is empty', 'x{{nope.deeper}}y'),
    ('null is empty', 'x{{properties.coupon}}y'),
    ('number as JavaScript writes it', '{{properties.price}} * {{properties.units}}'),
    ('boolean', '{{properties.beta}}'),
    ('array joined with commas', '{{properties.tags}}'),
    ('object', '{{context.library}}'),
    ('brackets in a placeholder', '{{properties.items[1].sku}} {{properties["weird key"]["it''s"]}}'),
    ('empty braces are text', '{{}}'),
    ('blank placeholder is the whole event', '{{ }}'),
    ('so is a dot', '{{.}}'),
    ('unclosed', '{{event} and {{event'),
    ('brace inside', '{{{event}}')
  ) t(label, t);
-- Arrays render as JavaScript joins them: null empty, nested arrays flat,
-- objects "[object Object]".
SELECT metronome_evaluate('{"@template": "{{a}}"}', '{"a": [1, [2, [3]], null, {"x": 1}, "s", true, 0.10]}');
-- Triple-brace values are rendered first, and their text is then read for
-- double-brace placeholders, as Segment's two passes do.
SELECT metronome_evaluate('{"@template": "{{{v}}} {{v}}"}', '{"v": "{{w}}", "w": "W"}');
-- A directive may give the template (and must give a string).
SELECT metronome_evaluate('{"@template": {"@path": "$.t"}}', '{"t": "hi {{n}}", "n": "N"}');
SELECT metronome_evaluate('{"@template": {"@path": "$.t"}}', '{"t": ["x"]}');
-- Numbers: String(n) of the double JavaScript would hold (17 digits at most).
SELECT n, metronome_evaluate('{"@template": "{{n}}"}', jsonb_build_object('n', n::numeric)) AS rendered
  FROM (VALUES ('0'), ('-0'), ('1.50'), ('100'), ('-12.340'), ('0.000001'), ('0.0000001'),
               ('123456789012345678901'), ('1000000000000000000000'), ('1.5e21'),
               ('-2.5e-8'), ('12345678901234567890123.5')) t(n);

------------------------------------------------------------------------
-- @literal: the value, directives inside still resolved
------------------------------------------------------------------------
SELECT metronome_evaluate('{"@literal": false}', '{}') AS "false",
       metronome_evaluate('{"@literal": null}', '{}') AS "null",
       metronome_evaluate('{"@literal": {"a": {"@path": "$.a"}, "b": {"@path": "$.b"}}}', '{"a": "some value"}') AS nested,
       metronome_evaluate('{"@literal": "{{not a template}}"}', '{}') AS text,
       metronome_evaluate('{"x": [{"@literal": {"@path": "$.a"}}, {"@literal": 1}]}', '{"a": "A"}') AS in_array;

------------------------------------------------------------------------
-- @if
------------------------------------------------------------------------
-- exists: defined and not null ("" and 0 exist).
SELECT v AS a,
       metronome_evaluate('{"@if": {"exists": {"@path": "$.a"}, "then": "yes", "else": "no"}}', e) AS exists,
       metronome_evaluate('{"@if": {"blank": {"@path": "$.a"}, "then": "yes", "else": "no"}}', e) AS blank
  FROM (VALUES ('1', '{"a": 1}'), ('"x"', '{"a": "x"}'), ('" "', '{"a": " "}'),
               ('null', '{"a": null}'), ('missing', '{}'), ('""', '{"a": ""}'),
               -- blank is JavaScript's value != "": 0, false, [] and [null]
               -- are blank too; [0], {} and true are not
               ('0', '{"a": 0}'), ('0.0', '{"a": 0.0}'), ('false', '{"a": false}'),
               ('true', '{"a": true}'), ('[]', '{"a": []}'), ('[null]', '{"a": [null]}'),
               ('[[""]]', '{"a": [[""]]}'), ('[0]', '{"a": [0]}'), ('[1,2]', '{"a": [1, 2]}'),
               ('{}', '{"a": {}}')) t(v, e0), LATERAL (SELECT e0::jsonb AS e) j;
-- then / else: a missing branch is undefined; Segment takes "else" only when
-- it is truthy (a null, false, 0 or "" else gives undefined); "then" may be
-- null.
SELECT metronome_evaluate('{"x": {"@if": {"exists": {"@path": "$.a"}, "then": 1}}}', '{}') AS no_else,
       metronome_evaluate('{"x": {"@if": {"exists": {"@path": "$.a"}, "else": 2}}}', '{"a": 1}') AS no_then,
       metronome_evaluate('{"x": {"@if": {"exists": {"@path": "$.a"}, "then": 1, "else": false}}}', '{}') AS falsy_else,
       metronome_evaluate('{"x": {"@if": {"exists": {"@path": "$.a"}, "then": 1, "else": ""}}}', '{}') AS empty_else,
       metronome_evaluate('{"x": {"@if": {"exists": {"@path": "$.a"}, "then": null, "else": 2}}}', '{"a": 1}') AS null_then;
-- Branches and conditions are mapping values.
SELECT metronome_evaluate('{"@if": {"exists": {"@path": "$.properties.coupon"}, "then": {"@path": "$.properties.coupon"}, "else": {"plan": {"@path": "$.properties.plan"}, "none": true}}}', e) FROM track;
SELECT metronome_evaluate('{"@if": {"exists": "constant", "then": "always"}}', '{}') AS constant_condition,
       metronome_evaluate('{"@if": {"exists": {"@path": "$.a"}, "blank": {"@path": "$.b"}, "then": "t", "else": "e"}}', '{"a": "", "b": "x"}') AS exists_wins_over_blank;

------------------------------------------------------------------------
-- @case
------------------------------------------------------------------------
SELECT v AS value,
       metronome_evaluate('{"@case": {"operator": "lower", "value": {"@path": "$.a"}}}', e) AS lower,
       metronome_evaluate('{"@case": {"operator": "upper", "value": {"@path": "$.a"}}}', e) AS upper
  FROM (VALUES ('mixed', '{"a": "mIXeD StRinG CasING W/ NuMBErs 190wdB"}'),
               ('empty', '{"a": ""}'),
               ('non-ASCII', '{"a": "Ça Déjà Vu ÿ"}'),
               -- non-strings pass unchanged
               ('number', '{"a": 1}'), ('null', '{"a": null}'), ('false', '{"a": false}'),
               ('object', '{"a": {"key1": "with values", "key2": ["hi", true, null]}}'),
               ('missing', '{}')) t(v, e0), LATERAL (SELECT e0::jsonb AS e) j;
SELECT metronome_evaluate('{"@case": {"operator": "upper", "value": "literal text"}}', '{}') AS literal,
       metronome_evaluate('{"x": {"@case": {"operator": "upper", "value": ""}}}', '{}') AS empty_literal_is_undefined,
       metronome_evaluate('{"x": {"@case": {"operator": "upper"}}}', '{}') AS no_value;

------------------------------------------------------------------------
-- @replace: literal (not regular-expression) replacement
------------------------------------------------------------------------
SELECT label, metronome_evaluate(m::jsonb, e::jsonb) AS result
  FROM (VALUES
    ('global by default', '{"@replace": {"pattern": "+", "replacement": "_", "value": {"@path": "$.a"}}}', '{"a": "many+different+things"}'),
    ('first only', '{"@replace": {"pattern": "+", "replacement": "_", "global": false, "value": {"@path": "$.a"}}}', '{"a": "many+different+things"}'),
    ('no replacement: removed', '{"@replace": {"pattern": "many+", "value": {"@path": "$.a"}}}', '{"a": "many+different+things"}'),
    ('case sensitive by default', '{"@replace": {"pattern": "AaB", "replacement": "nice", "value": {"@path": "$.a"}}}', '{"a": "aab-----AaB---aab"}'),
    ('ignorecase', '{"@replace": {"pattern": "AaB", "replacement": "nice", "ignorecase": true, "value": {"@path": "$.a"}}}', '{"a": "aab-----AaB---aab"}'),
    ('ignorecase non-ASCII', '{"@replace": {"pattern": "É", "replacement": "e", "ignorecase": true, "value": "éÉe"}}', '{}'),
    ('regex characters are literal', '{"@replace": {"pattern": ".*[a]$", "replacement": "!", "value": {"@path": "$.a"}}}', '{"a": "x.*[a]$ and xa"}'),
    ('whole value', '{"@replace": {"pattern": "aaabbbcccd", "replacement": "", "value": {"@path": "$.a"}}}', '{"a": "aaabbbcccd"}'),
    ('second pattern', '{"@replace": {"pattern": "-", "replacement": " ", "pattern2": "great", "replacement2": "awesome", "value": {"@path": "$.a"}}}', '{"a": "something-great!"}'),
    ('second pattern, no replacement2', '{"@replace": {"pattern": "-", "replacement": " ", "pattern2": "!", "value": {"@path": "$.a"}}}', '{"a": "something-great!"}'),
    ('second pattern runs on the first''s result', '{"@replace": {"pattern": "a", "replacement": "b", "pattern2": "bb", "replacement2": "c", "value": "ab"}}', '{}'),
    ('boolean as text', '{"@replace": {"pattern": "true", "replacement": "granted", "pattern2": "false", "replacement2": "denied", "value": {"@path": "$.a"}}}', '{"a": true}'),
    ('boolean as text, second pattern', '{"@replace": {"pattern": "true", "replacement": "granted", "pattern2": "false", "replacement2": "denied", "value": {"@path": "$.a"}}}', '{"a": false}'),
    ('number as text', '{"@replace": {"pattern": ".", "replacement": ",", "value": {"@path": "$.a"}}}', '{"a": 1.50}'),
    ('null gives ""', '{"@replace": {"pattern": "-", "replacement": "nice", "value": {"@path": "$.a"}}}', '{"a": null}'),
    ('undefined gives ""', '{"@replace": {"pattern": "-", "replacement": "nice", "value": {"@path": "$.a"}}}', '{}'),
    ('object gives ""', '{"@replace": {"pattern": "-", "replacement": "nice", "value": {"@path": "$.a"}}}', '{"a": {"b": "-"}}'),
    ('empty literal value: undefined', '{"@replace": {"pattern": "-", "value": ""}}', '{}'),
    ('$ patterns in the replacement', '{"@replace": {"pattern": "b", "replacement": "[$&$`$''$$]", "value": "abc"}}', '{}'),
    ('no capture groups: $1 stays', '{"@replace": {"pattern": "b", "replacement": "$1$<x>$", "value": "abc"}}', '{}'),
    ('ten characters is the limit', '{"@replace": {"pattern": "0123456789", "replacement": "abcdefghij", "value": "x0123456789x"}}', '{}')
  ) t(label, m, e);

------------------------------------------------------------------------
-- @arrayPath: [path, item shape]; shape paths are relative to the item
------------------------------------------------------------------------
SELECT metronome_evaluate('{"@arrayPath": ["$.properties.items"]}', e) AS as_is,
       metronome_evaluate('{"@arrayPath": ["$.properties.items", {"id": {"@path": "$.sku"}, "n": {"@path": "qty"}, "color": {"@path": "$.meta.color"}, "source": "shop"}]}', e) AS shaped,
       metronome_evaluate('{"@arrayPath": ["$.properties.items", {"@path": "$.sku"}]}', e) AS directive_shape,
       metronome_evaluate('{"@arrayPath": ["$.properties.items", {}]}', e) AS empty_shape
  FROM track;
SELECT label, metronome_evaluate('{"neat": {"@arrayPath": ["$.products", {"product_id": {"@path": "$.productId"}}]}}', e::jsonb) AS result
  FROM (VALUES
    ('array', '{"products": [{"productId": "123"}, {"productId": "456"}]}'),
    ('items that are not objects', '{"products": [{"productId": "1"}, 5, "s", []]}'),
    ('an object is a one-item array', '{"products": {"productId": "123"}}'),
    ('an object without the key', '{"products": {"notAnArray": true}}'),
    ('a string passes unchanged', '{"products": "str"}'),
    ('null passes unchanged', '{"products": null}'),
    ('missing', '{}'),
    ('empty array', '{"products": []}')
  ) t(label, e);
-- The source may be a directive, whose value is the array itself.
SELECT metronome_evaluate('{"neat": {"@arrayPath": [{"@if": {"exists": {"@path": "$.products"}, "then": {"@path": "$.products"}, "else": []}}, {"id": {"@path": "$.productId"}}]}}', e::jsonb)
  FROM (VALUES ('{"products": [{"productId": "123"}]}'), ('{}')) t(e);
-- Nested: the shape of the outer items holds an inner @arrayPath.
SELECT metronome_evaluate('{"@arrayPath": ["$.orders", {"order": {"@path": "$.id"}, "skus": {"@arrayPath": ["$.lines", {"@path": "$.sku"}]}}]}',
                          '{"orders": [{"id": 1, "lines": [{"sku": "a"}, {"sku": "b"}]}, {"id": 2, "lines": []}]}');

------------------------------------------------------------------------
-- @json
------------------------------------------------------------------------
SELECT label, metronome_evaluate('{"neat": {"@json": {"mode": "encode", "value": {"@path": "$.foo"}}}}', e::jsonb) AS encoded
  FROM (VALUES
    ('string', '{"foo": "bar"}'),
    ('object', '{"foo": {"bar": "baz"}}'),
    ('array', '{"foo": ["bar", "baz"]}'),
    ('escapes and numbers', '{"foo": ["quote\" back\\ nl\n tab\t ctl\u0001 é", 1.50, -0.0, 1e21, null, true]}'),
    -- keys come in jsonb's order (jsonb does not keep the text's order)
    ('keys', '{"foo": {"bb": 1, "a": 2, "ccc": {"z": 1, "y": 2}}}'),
    ('null', '{"foo": null}'),
    ('undefined stays undefined', '{}')
  ) t(label, e);
SELECT label, metronome_evaluate('{"neat": {"@json": {"mode": "decode", "value": {"@path": "$.foo"}}}}', e::jsonb) AS decoded
  FROM (VALUES
    ('string', '{"foo": "\"bar\""}'),
    ('object', '{"foo": "{\"bar\": \"baz\"}"}'),
    ('array', '{"foo": "[\"bar\", \"baz\"]"}'),
    ('number with spaces', '{"foo": " 12.5 "}'),
    ('duplicate keys: the last wins', '{"foo": "{\"a\": 1, \"a\": 2}"}'),
    ('invalid text is returned as is', '{"foo": "Hello World"}'),
    ('empty text', '{"foo": ""}'),
    ('trailing garbage', '{"foo": "[1] x"}'),
    ('\u0000 cannot be stored: as is', '{"foo": "\"a\\u0000\""}'),
    -- JSON.parse would give Infinity, which JSON.stringify writes as null
    ('number out of range: as is', '{"foo": "1e99999"}'),
    ('not a string: unchanged', '{"foo": {"a": 1}}'),
    ('null: unchanged', '{"foo": null}'),
    ('undefined', '{}')
  ) t(label, e);
-- Round trip, and a decoded value used by other directives.
SELECT metronome_evaluate('{"@json": {"mode": "decode", "value": {"@json": {"mode": "encode", "value": {"@path": "$.properties.items"}}}}}', e) = e #> '{properties,items}' AS round_trip,
       metronome_evaluate('{"@transform": {"apply": {"p": {"@json": {"mode": "decode", "value": {"@path": "$.payload"}}}}, "mapping": {"@path": "$.p.deep[1]"}}}', '{"payload": "{\"deep\": [1, \"two\"]}"}') AS decoded_then_read
  FROM track;

------------------------------------------------------------------------
-- @flatten
------------------------------------------------------------------------
SELECT label, metronome_evaluate(m::jsonb, e::jsonb) AS result
  FROM (VALUES
    ('default separator "."', '{"@flatten": {"value": {"@path": "$.foo"}}}', '{"foo": {"bar": "baz", "aces": {"a": 1, "b": 2}}}'),
    ('separator', '{"@flatten": {"value": {"@path": "$.foo"}, "separator": "_"}}', '{"foo": {"bar": "baz", "aces": {"a": 1, "b": 2}}}'),
    ('arrays by index', '{"@flatten": {"value": {"@path": "$.foo"}, "separator": "."}}', '{"foo": [{"fazz": "bar", "fizz": "baz"}]}'),
    ('omitArrays', '{"@flatten": {"value": {"@path": "$.foo"}, "separator": ".", "omitArrays": true}}', '{"foo": {"bar": "baz", "aces": [1, {"a": 2}]}}'),
    ('omitArrays false', '{"@flatten": {"value": {"@path": "$.foo"}, "omitArrays": false}}', '{"foo": {"aces": [1, {"a": 2}]}}'),
    ('empty containers vanish', '{"@flatten": {"value": {"@path": "$.foo"}}}', '{"foo": {"a": {}, "b": [], "c": null, "d": {"e": {}}}}'),
    ('empty key is no prefix', '{"@flatten": {"value": {"@path": "$.foo"}}}', '{"foo": {"": {"a": 1}, "b": {"": 2}}}'),
    ('a scalar is keyed ""', '{"@flatten": {"value": {"@path": "$.foo"}}}', '{"foo": "x"}'),
    ('null is keyed ""', '{"@flatten": {"value": {"@path": "$.foo"}}}', '{"foo": null}'),
    ('undefined gives {}', '{"@flatten": {"value": {"@path": "$.foo"}}}', '{}'),
    ('literal value', '{"@flatten": {"value": {"a": {"b": {"@path": "$.x"}, "c": {"@path": "$.missing"}}}, "separator": "/"}}', '{"x": 1}')
  ) t(label, m, e);

------------------------------------------------------------------------
-- @merge: shallow; "right": later objects win, "left": earlier ones
------------------------------------------------------------------------
SELECT label, metronome_evaluate(m::jsonb, e::jsonb) AS result
  FROM (VALUES
    ('empty', '{"@merge": {"direction": "right", "objects": []}}', '{}'),
    ('one object', '{"@merge": {"direction": "left", "objects": [{"cool": true}]}}', '{}'),
    ('right', '{"@merge": {"direction": "right", "objects": [{"cool": true}, {"cool": "you bet"}]}}', '{}'),
    ('left', '{"@merge": {"direction": "left", "objects": [{"cool": true}, {"cool": "you bet"}]}}', '{}'),
    ('right with a directive', '{"@merge": {"direction": "right", "objects": [{"cool": true, "hey": "there"}, {"@path": "foo"}]}}', '{"foo": {"bar": "baz", "hey": "you"}}'),
    ('left with a directive', '{"@merge": {"direction": "left", "objects": [{"cool": true, "hey": "there"}, {"@path": "foo"}]}}', '{"foo": {"bar": "baz", "hey": "you"}}'),
    ('shallow', '{"@merge": {"direction": "right", "objects": [{"a": {"x": 1}}, {"a": {"y": 2}}]}}', '{}'),
    ('non-objects skipped', '{"@merge": {"direction": "right", "objects": [{"a": 1}, {"@path": "$.s"}, {"@path": "$.arr"}, {"@path": "$.n"}, {"@path": "$.missing"}]}}', '{"s": "str", "arr": [1], "n": null}'),
    -- Object.assign copies an undefined member too: it overrides, then vanishes
    ('undefined overrides (right)', '{"@merge": {"direction": "right", "objects": [{"@path": "$.foo"}, {"hey": {"@path": "$.missing"}, "x": 1}]}}', '{"foo": {"bar": "baz", "hey": "you"}}'),
    ('undefined overrides (left)', '{"@merge": {"direction": "left", "objects": [{"hey": {"@path": "$.missing"}, "x": 1}, {"@path": "$.foo"}]}}', '{"foo": {"bar": "baz", "hey": "you"}}'),
    ('null overrides', '{"@merge": {"direction": "right", "objects": [{"a": 1}, {"a": null}]}}', '{}')
  ) t(label, m, e);

------------------------------------------------------------------------
-- @transform: apply a mapping, then map its result
------------------------------------------------------------------------
SELECT metronome_evaluate('{"@transform": {"apply": {"foo": {"@path": "$.a"}}, "mapping": {"cool": {"@path": "$.foo"}}}}', '{"a": 1, "b": 2}') AS simple;
SELECT metronome_evaluate('{"@transform": {"apply": {"properties": {"@flatten": {"value": {"@path": "$.properties"}, "separator": "_"}}}, "mapping": {"properties": {"@path": "$.properties"}, "topLevel": {"@path": "$.properties.nested_a"}}}}',
                          '{"properties": {"test": "value", "another": "thing", "nested": {"a": "special", "b": 2}}, "otherStuff": "foo", "more": "bar"}') AS composed;
-- "apply" may be a directive; its result need not be an object.
SELECT metronome_evaluate('{"@transform": {"apply": {"@path": "$.properties"}, "mapping": {"p": {"@path": "$.plan"}, "all": {"@path": "$."}}}}', '{"properties": {"plan": "Pro"}}') AS apply_directive,
       metronome_evaluate('{"@transform": {"apply": {"@path": "$.missing"}, "mapping": {"p": {"@path": "$."}, "k": 1}}}', '{}') AS apply_undefined;
-- Inside an @arrayPath shape the current value is the item, which must be
-- an object for @transform (Segment: "data must be an object").
SELECT metronome_evaluate('{"@arrayPath": ["$.a", {"@transform": {"apply": {"v": {"@path": "$.x"}}, "mapping": {"@path": "$.v"}}}]}', '{"a": [{"x": 1}, {"x": 2}]}') AS per_item;
SELECT metronome_evaluate('{"@arrayPath": ["$.a", {"@transform": {"apply": {"v": {"@path": "$.x"}}, "mapping": {"@path": "$.v"}}}]}', '{"a": [{"x": 1}, 2]}');

------------------------------------------------------------------------
-- @excludeWhenNull
------------------------------------------------------------------------
SELECT metronome_evaluate('{"someFieldToExclude": {"@excludeWhenNull": {"@path": "$.foo.bar"}}, "anotherField": {"@path": "$.foo.aces.a"}}', '{"foo": {"bar": null, "aces": {"a": 1, "b": 2}}}') AS null_dropped,
       metronome_evaluate('{"neat": {"@excludeWhenNull": {"@path": "$.foo"}}}', '{"foo": {"bar": null, "aces": {"a": 1, "b": 2, "c": null, "d": {"a": null, "b": null}}, "arr": [null, {"x": null}]}}') AS nulls_inside_dropped,
       metronome_evaluate('{"n": {"@excludeWhenNull": 5}, "s": {"@excludeWhenNull": ""}, "a": {"@excludeWhenNull": [null]}}', '{}') AS others_unchanged;
-- Segment's own composition test, result for result.
SELECT jsonb_pretty(metronome_evaluate('{"massive": {
    "pathNull": {"@excludeWhenNull": {"@path": "$.foo.bar"}},
    "templateEmpty": {"@excludeWhenNull": {"@template": "{{foo.bar}}"}},
    "literalNull": {"@excludeWhenNull": {"@literal": null}},
    "ifNull": {"@excludeWhenNull": {"@if": {"exists": {"@path": "$.foo.foobar"}, "then": 1, "else": null}}},
    "caseNull": {"@excludeWhenNull": {"@case": {"operator": "upper", "value": {"@path": "$.foo.bar"}}}},
    "replaceNull": {"@excludeWhenNull": {"@replace": {"pattern": "-", "replacement": "nice", "value": {"@path": "$.foo.bar"}}}},
    "jsonNull": {"@excludeWhenNull": {"@json": {"mode": "decode", "value": {"@path": "$.foo.bar"}}}},
    "transformNull": {"@excludeWhenNull": {"@transform": {"apply": {"properties": {"@path": "$.foo.bar"}}, "mapping": {"properties": {"@excludeWhenNull": {"@path": "$.properties"}}}}}},
    "transformNull2": {"@excludeWhenNull": {"@transform": {"apply": {"properties": {"@excludeWhenNull": {"@path": "$.foo.bar"}}}, "mapping": {"properties": {"@path": "$.properties"}}}}},
    "transformValue": {"@excludeWhenNull": {"@transform": {"apply": {"properties": {"@path": "$.foo"}}, "mapping": {"properties": {"@path": "$.properties"}}}}},
    "jsonNullEncode": {"@excludeWhenNull": {"@json": {"mode": "encode", "value": {"@path": "$.foo.bar"}}}}
  }}', '{"foo": {"bar": null, "aces": {"a": 1, "b": 2}}}'));

------------------------------------------------------------------------
-- Directives inside each other and inside literals ("raw" has its keys in
-- jsonb's order: Segment would write "event" first)
------------------------------------------------------------------------
SELECT jsonb_pretty(metronome_evaluate('{
    "customer": {"@case": {"operator": "upper", "value": {"@template": "{{context.groupId}}-{{properties.region}}"}}},
    "plan": {"@replace": {"pattern": "Pro", "replacement": "pro-tier", "value": {"@path": "$.properties.plan"}}},
    "units": {"@if": {"exists": {"@path": "$.properties.units"}, "then": {"@path": "$.properties.units"}, "else": 0}},
    "skus": {"@arrayPath": ["$.properties.items", {"sku": {"@case": {"operator": "upper", "value": {"@path": "$.sku"}}}, "color": {"@excludeWhenNull": {"@path": "$.meta.color"}}}]},
    "flat": {"@flatten": {"value": {"@merge": {"direction": "right", "objects": [{"@path": "$.context.library"}, {"ip": {"@path": "$.context.ip"}}]}}, "separator": "_"}},
    "raw": {"@json": {"mode": "encode", "value": {"@literal": {"event": {"@path": "$.event"}, "n": [1, {"@path": "$.properties.units"}]}}}},
    "static": {"source": "segment", "version": 2, "list": ["a", null]}
  }', e)) FROM track;

------------------------------------------------------------------------
-- Compiled once per mapping: rows with different mappings in one query
------------------------------------------------------------------------
SELECT i, metronome_evaluate(m::jsonb, e::jsonb)
  FROM (VALUES (1, '{"@path": "$.a"}', '{"a": 1}'),
               (2, '{"@path": "$.a"}', '{"a": 2}'),
               (3, '{"@path": "$.b"}', '{"a": 3, "b": "b3"}'),
               (4, '{"@path": "$.a"}', '{"a": 4}'),
               (5, '{"@template": "<{{a}}>"}', '{"a": 5}')) t(i, m, e)
 ORDER BY i;

------------------------------------------------------------------------
-- Invalid mappings: refused with where and what
------------------------------------------------------------------------
SELECT metronome_evaluate('{"properties": {"plan": {"@if": {"exists": {"@path": "$.a"}, "then": {"@foo": 1}}}}}', '{}');
SELECT m AS mapping, pg_temp.mapping_error(m::jsonb) AS error
  FROM (VALUES
    -- structure
    ('{"@path": "a", "@template": "b"}'),
    ('{"a": 1, "@path": "$.foo.bar"}'),
    ('{"@foo": 1}'),
    ('{"@": 1}'),
    ('{"a": [1, {"b c": {"@nope": 1}}]}'),
    ('{"x": {"@literal": {"@x": 1}}}'),
    ('{"@liquid": "{{ properties.plan | upcase }}"}'),
    -- @path / @template
    ('{"@path": 5}'),
    ('{"@path": {}}'),
    ('{"@path": ["$.a"]}'),
    ('{"@path": "a[0"}'),
    ('{"@path": "a..b"}'),
    ('{"@path": "a.b."}'),
    ('{"@path": "a[''k]"}'),
    ('{"x": {"@path": {"@path": 1}}}'),
    ('{"@template": false}'),
    ('{"@template": "x {{a]}} y"}'),
    ('{"@template": "{{{a[}}}"}'),
    -- @if
    ('{"properties": {"plan": {"@if": {"then": 1}}}}'),
    ('{"@if": {"exists": null, "then": 1}}'),
    ('{"@if": {"blank": "", "then": 1}}'),
    ('{"@if": {"exists": {"@path": "$.a"}, "thn": 1}}'),
    ('{"@if": "x"}'),
    ('{"@if": {"@path": "x"}}'),
    ('{"@if": {"exists": {"@path": "$.a"}, "else": {"@case": 1}}}'),
    -- @case
    ('{"@case": {"operator": "title", "value": "x"}}'),
    ('{"@case": {"operator": "UPPER", "value": "x"}}'),
    ('{"@case": {"value": "x"}}'),
    ('{"@case": {"operator": "lower", "value": 5}}'),
    ('{"@case": "not an object"}'),
    -- @replace
    ('{"@replace": {"pattern": "abcdefghijk", "value": "x"}}'),
    ('{"@replace": {"pattern": "a", "replacement": "abcdefghijk", "value": "x"}}'),
    ('{"@replace": {"pattern": "a", "pattern2": "abcdefghijkl", "value": "x"}}'),
    ('{"@replace": {"pattern": "a", "replacement2": "abcdefghijkl", "value": "x"}}'),
    ('{"@replace": {"pattern": "😀😀😀😀😀😀", "value": "x"}}'),
    ('{"@replace": {"pattern": "", "value": "x"}}'),
    ('{"@replace": {"value": "x"}}'),
    ('{"@replace": {"pattern": "a"}}'),
    ('{"@replace": {"pattern": 1, "value": "x"}}'),
    ('{"@replace": {"pattern": "a", "value": "x", "global": "yes"}}'),
    ('{"@replace": {"pattern": "a", "value": "x", "ignorecase": 1}}'),
    ('{"@replace": {"pattern": "a", "value": "x", "replacement2": 5}}'),
    ('{"@replace": {"pattern": "a", "value": {"x": 1}}}'),
    -- @arrayPath
    ('{"@arrayPath": "$.a"}'),
    ('{"@arrayPath": []}'),
    ('{"@arrayPath": ["$.a", {}, 1]}'),
    ('{"@arrayPath": [5]}'),
    ('{"@arrayPath": ["$.a", "x"]}'),
    ('{"@arrayPath": ["$.a", null]}'),
    ('{"@arrayPath": ["$.a[", {}]}'),
    ('{"@arrayPath": ["$.a", {"b": {"@bad": 1}}]}'),
    -- @json
    ('{"@json": {"mode": "ENCODE", "value": "x"}}'),
    ('{"@json": {"mode": 1, "value": "x"}}'),
    ('{"@json": {"value": "x"}}'),
    ('{"@json": {"mode": "encode"}}'),
    ('{"@json": {"mode": "encode", "value": null}}'),
    ('{"@json": {"mode": "decode", "value": 0}}'),
    -- @flatten
    ('{"@flatten": {"separator": "."}}'),
    ('{"@flatten": {"value": 1, "separator": ""}}'),
    ('{"@flatten": {"value": 1, "separator": 5}}'),
    ('{"@flatten": {"value": 1, "omitArrays": "yes"}}'),
    ('{"@flatten": {"value": {"@path": "$.a"}, "sep": "_"}}'),
    -- @merge
    ('{"@merge": {"direction": "up", "objects": []}}'),
    ('{"@merge": {"objects": []}}'),
    ('{"@merge": {"direction": "left"}}'),
    ('{"@merge": {"direction": "left", "objects": {"a": 1}}}'),
    ('{"x": {"@merge": {"direction": "left", "objects": [{}, 123]}}}'),
    ('{"x": {"@merge": {"direction": "left", "objects": [{}, {"k": {"@if": {}}}]}}}'),
    -- @transform
    ('{"@transform": {"apply": {}}}'),
    ('{"@transform": {"mapping": {}}}'),
    ('{"@transform": {"apply": 1, "mapping": {}}}'),
    ('{"@transform": {"apply": {}, "mapping": "x"}}'),
    ('{"@transform": {"apply": {}, "mapping": {"a": {"@bad": 1}}}}'),
    -- @excludeWhenNull
    ('{"@excludeWhenNull": {"@path": 1}}')
  ) t(m);

------------------------------------------------------------------------
-- Robustness: deep nesting and big values are errors or results, never
-- crashes
------------------------------------------------------------------------
\set VERBOSITY terse
-- a mapping nested 1000 deep works; one too deep for the stack is refused
SELECT metronome_evaluate((repeat('[', 1000) || '{"@path": "$.a"}' || repeat(']', 1000))::jsonb, '{"a": 1}') #> array_fill('0'::text, ARRAY[1000]) AS deep_mapping;
SELECT metronome_evaluate((repeat('{"@excludeWhenNull": ', 9000) || '1' || repeat('}', 9000))::jsonb, '{}');
-- deep values are walked; @excludeWhenNull builds objects at most 1000
-- deep, deeper is an error of the event
SELECT length(metronome_evaluate('{"@json": {"mode": "encode", "value": {"@path": "$.d"}}}', jsonb_build_object('d', (repeat('[', 3000) || repeat(']', 3000))::jsonb))::text) AS deep_encode;
SELECT metronome_evaluate('{"@excludeWhenNull": {"@path": "$"}}', (repeat('{"a":', 3000) || '1' || repeat('}', 3000))::jsonb);
-- text nested deeper than 1000 is not decoded (JSON.parse would give up too)
SELECT jsonb_typeof(metronome_evaluate('{"@json": {"mode": "decode", "value": {"@path": "$.s"}}}', jsonb_build_object('s', repeat('[', 1000) || repeat(']', 1000)))) AS depth_1000,
       jsonb_typeof(metronome_evaluate('{"@json": {"mode": "decode", "value": {"@path": "$.s"}}}', jsonb_build_object('s', repeat('[', 1001) || repeat(']', 1001)))) AS depth_1001;
-- big strings
SELECT length(metronome_evaluate('{"@template": "{{a}}{{a}}"}', jsonb_build_object('a', repeat('x', 1000000)))::text) AS template_length,
       length(metronome_evaluate('{"@replace": {"pattern": "x", "replacement": "yy", "value": {"@path": "$.a"}}}', jsonb_build_object('a', repeat('x', 1000000)))::text) AS replace_length;
\set VERBOSITY default
