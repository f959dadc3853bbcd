--
-- fql: Segment subscriptions (FQL) through metronome_matches(subscription, event).
--
-- Each section lists subscriptions and, for each, the names of the events it
-- matches (in the events' order), so that every line can be checked against
-- segment-semantics.md: typed comparisons, missing fields, precedence,
-- contains/match, paths, strings, numbers and syntax errors with positions.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS metronome;
RESET client_min_messages;

-- One field "v" holding a value of each JSON type, or missing.
CREATE TEMP TABLE typed (ord int, name text, event jsonb);
INSERT INTO typed VALUES
  (1, 'str "5"',   '{"v": "5"}'),
  (2, 'str ""',    '{"v": ""}'),
  (3, 'str "abc"', '{"v": "abc"}'),
  (4, 'num 5',     '{"v": 5}'),
  (5, 'num 5.0',   '{"v": 5.0}'),
  (6, 'num -2.5',  '{"v": -2.5}'),
  (7, 'num 0',     '{"v": 0}'),
  (8, 'true',      '{"v": true}'),
  (9, 'false',     '{"v": false}'),
  (10, 'null',     '{"v": null}'),
  (11, 'object',   '{"v": {"a": 5}}'),
  (12, 'array',    '{"v": [5]}'),
  (13, 'missing',  '{"w": 5}');

-- The events each subscription matches.
CREATE FUNCTION typed_matches(subs text[])
RETURNS TABLE (subscription text, matches text)
LANGUAGE sql AS $$
  SELECT s, coalesce(string_agg(t.name, ', ' ORDER BY t.ord)
                       FILTER (WHERE metronome_matches(s, t.event)), '(none)')
    FROM unnest(subs) WITH ORDINALITY AS u(s, n) CROSS JOIN typed t
   GROUP BY s, n ORDER BY n
$$;

-- = and != with each kind of value: a string is never equal to a number,
-- numbers compare as numerics, = null means missing or null, and != is
-- exactly "not =" (true on a missing field and on other types).
SELECT * FROM typed_matches(ARRAY[
  'v = "5"', 'v != "5"',
  'v = ""', 'v != ""',
  'v = 5', 'v != 5',
  'v = 5.00', 'v = 5e0', 'v = 50e-1', 'v = 0', 'v = -0', 'v = -2.5',
  'v = true', 'v != true', 'v = false', 'v != false',
  'v = null', 'v != null',
  'v = "abc"', 'v = "ABC"', 'v = "ab"', 'v != "abc"']);

-- < <= > >= are true only for numbers.
SELECT * FROM typed_matches(ARRAY[
  'v > 4', 'v >= 5', 'v > 5', 'v < 5', 'v <= 5', 'v < 0', 'v <= -2.5',
  'v > -3', 'v >= -1e3', 'v < .5', 'v > -.5', 'v < +1', 'v >= 005']);

-- contains() and match() only match strings; their "!" forms too (a missing
-- or non-string value matches neither), while "not" and "!( )" are plain
-- logical negations, true on a missing field.
SELECT * FROM typed_matches(ARRAY[
  'contains(v, "b")', 'contains(v, "")', 'contains(v, "5")', 'contains(v, "B")',
  '!contains(v, "b")', '! contains(v, "b")', 'not contains(v, "b")', '!(contains(v, "b"))',
  'match(v, "*")', 'match(v, "a*")', 'match(v, "5")', 'match(v, "")',
  '!match(v, "a*")', 'not match(v, "a*")', '!(match(v, "a*"))']);

-- Numbers: integers, decimals, signs, exponents, leading zeros, and values
-- beyond double precision compare exactly.
SELECT s AS subscription, e AS event, metronome_matches(s, e::jsonb) AS matches
  FROM (VALUES
    ('n = 12345678901234567890', '{"n": 12345678901234567890}'),
    ('n = 12345678901234567890', '{"n": 12345678901234567891}'),
    ('n = 12345678901234567890.000', '{"n": 12345678901234567890}'),
    ('n = 0.1', '{"n": 0.10}'),
    ('n = 0.3', '{"n": 0.30000000000000004}'),
    ('n < 0.3', '{"n": 0.29999999999999999}'),
    ('n = 1e2', '{"n": 100}'),
    ('n = 100', '{"n": 1E2}'),
    ('n = 1.5E+3', '{"n": 1500}'),
    ('n > 1e-10', '{"n": 1e-11}'),
    ('n < 1e-10', '{"n": 1e-11}'),
    ('n = -0.0', '{"n": 0}'),
    ('n = 007', '{"n": 7}'),
    ('n = +7', '{"n": 7}'),
    ('n = -.5', '{"n": -0.5}'),
    ('n >= 1e1000', '{"n": 5}'),
    ('n = 5', '{"n": "5.0"}'),
    ('n = "5"', '{"n": 5}'),
    ('n > 4', '{"n": "5"}'),
    ('n != 5', '{"n": "5"}')
  ) AS t(s, e);

-- Booleans: and binds tighter than or, not/! tighter than and, parentheses
-- group.  One row per combination of a, b, c.
SELECT a, b, c,
       metronome_matches('a = true or b = true and c = true', e) AS "a or b and c",
       metronome_matches('(a = true or b = true) and c = true', e) AS "(a or b) and c",
       metronome_matches('a = true and b = true or c = true', e) AS "a and b or c",
       metronome_matches('a = true and (b = true or c = true)', e) AS "a and (b or c)",
       metronome_matches('not a = true or b = true', e) AS "not a or b",
       metronome_matches('!(a = true or b = true)', e) AS "!(a or b)",
       metronome_matches('!a = true and !b = true', e) AS "!a and !b",
       metronome_matches('not not a = true', e) AS "not not a",
       metronome_matches('a = true or b = true or c = true', e) AS "a or b or c",
       metronome_matches('a = true and b = true and c = true', e) AS "a and b and c",
       metronome_matches('((a = true) or ((b = true) and (c = true)))', e) AS "nested"
  FROM (SELECT a, b, c, jsonb_build_object('a', a, 'b', b, 'c', c) AS e
          FROM (VALUES (false), (true)) x(a), (VALUES (false), (true)) y(b),
               (VALUES (false), (true)) z(c)) t
 ORDER BY a, b, c;

-- Nesting to any depth, long chains.
SELECT metronome_matches(repeat('(', 1000) || 'a = 1' || repeat(')', 1000), '{"a": 1}') AS "1000 parens",
       metronome_matches(repeat('not ', 1001) || 'a = 1', '{"a": 1}') AS "1001 nots",
       metronome_matches(repeat('!', 1000) || 'a = 1', '{"a": 1}') AS "1000 bangs",
       metronome_matches(repeat('(a = 2 or ', 500) || 'a = 1' || repeat(')', 500), '{"a": 1}') AS "500 nested ors",
       metronome_matches((SELECT string_agg(format('a = %s', i), ' or ') FROM generate_series(1, 2000) i),
                         '{"a": 2000}') AS "2000 terms or",
       metronome_matches((SELECT string_agg(format('a != %s', i), ' and ') FROM generate_series(1, 2000) i),
                         '{"a": 2000}') AS "2000 terms and";

-- Unbounded nesting ends in a clean error, not a crash.
DO $$
BEGIN
  PERFORM metronome_matches(repeat('(', 1000000) || 'a = 1' || repeat(')', 1000000), '{}');
  RAISE NOTICE 'no error';
EXCEPTION WHEN statement_too_complex THEN
  RAISE NOTICE 'deep nesting: %', SQLERRM;
END
$$;

-- Whitespace is free, keywords need no surrounding spaces where
-- punctuation separates them.
SELECT replace(replace(replace(s, E'\n', '\n'), E'\t', '\t'), E'\r', '\r') AS subscription,
       metronome_matches(s, '{"type": "track", "event": "x", "n": 1}') AS matches
  FROM (VALUES
    (E'type="track"and event="x"'),
    (E'\n\ttype\n=\n"track"\r\nand\tevent = "x"  '),
    ('(type="track")or(event="y")'),
    ('!(n>1)and!(n<1)'),
    ('not(n=2)'),
    ('n>=1and n<=1'),
    ('n=1or n=2')
  ) AS t(s);

-- Strings: both quotes, escapes, unicode, case-sensitivity.
SELECT s AS subscription, e AS event, metronome_matches(s, e::jsonb) AS matches
  FROM (VALUES
    ('s = ''single''', '{"s": "single"}'),
    ('s = ''say "hi"''', '{"s": "say \"hi\""}'),
    ('s = "it''s"', '{"s": "it''s"}'),
    ('s = "a\"b"', '{"s": "a\"b"}'),
    ('s = ''a\''b''', '{"s": "a''b"}'),
    ('s = "back\\slash"', '{"s": "back\\slash"}'),
    ('s = "tab\there"', '{"s": "tab\there"}'),
    ('s = "line\nbreak"', '{"s": "line\nbreak"}'),
    ('s = "\/\b\f\r"', '{"s": "/\b\f\r"}'),
    ('s = "caf\u00e9"', '{"s": "café"}'),
    ('s = "café"', '{"s": "caf\u00e9"}'),
    ('s = "\ud83d\ude00"', '{"s": "😀"}'),
    ('s = "\u00C9"', '{"s": "É"}'),
    ('s = "a\qb"', '{"s": "a\\qb"}'),
    ('s = "a\*"', '{"s": "a\\*"}'),
    ('s = "Track"', '{"s": "track"}'),
    ('s = "track "', '{"s": "track"}'),
    ('s = ""', '{"s": ""}'),
    ('s = "null"', '{"s": null}'),
    ('s = "true"', '{"s": true}'),
    ('s = "123"', '{"s": 123}')
  ) AS t(s, e);

-- Globs: the whole string must match; * any run (also empty), ? exactly one
-- character (not byte), [abc] [a-z] [!a-z] [^a-z] classes, \x the character
-- x itself; case-sensitive.
SELECT p AS pattern,
       CASE WHEN length(v) > 20 THEN format('%s... (%s characters)', left(v, 8), length(v)) ELSE v END AS value,
       metronome_matches(format('match(v, %s)', p), jsonb_build_object('v', v)) AS matches
  FROM (VALUES
    ('"a*d"', 'abcd'), ('"*"', ''), ('"*"', 'anything'), ('"ab"', 'abc'),
    ('"a??d"', 'abcd'), ('"a??d"', 'abd'), ('"*d"', 'abcd'), ('"a*"', 'abcd'),
    ('"*bc*"', 'abcd'), ('"*x*"', 'abcd'), ('""', ''), ('""', 'a'),
    ('"ab\*d"', 'ab*d'), ('"ab\*d"', 'abcd'), ('"ab\\*d"', 'ab*d'), ('"a\?c"', 'a?c'),
    ('"a\?c"', 'abc'), ('"\[x]"', '[x]'), ('"a\\\\b"', 'a\b'),
    ('"ab[cC]d"', 'abCd'), ('"ab[a-z]d"', 'abcd'), ('"ab[A-Z]d"', 'abcd'),
    ('"ab[!a-z]d"', 'abcd'), ('"ab[!a-z]d"', 'ab-d'), ('"ab[^0-9]d"', 'ab5d'),
    ('"[a-]"', '-'), ('"[-a]"', '-'), ('"[\]]"', ']'), ('"[*?]x"', '*x'), ('"[*?]x"', 'ax'),
    ('"?"', 'é'), ('"??"', 'é'), ('"caf?"', 'café'), ('"[à-ü]"', 'é'), ('"?本"', '日本'),
    ('"*a*b*c*"', 'xxaxxbxxcxx'), ('"*a*b*c*"', 'xxcxxbxxaxx'),
    ('"a*a*a*a*a*a*b"', repeat('a', 5000)), ('"a*a*a*a*a*a*b"', repeat('a', 5000) || 'b'),
    ('"API *"', 'API Call'), ('"API *"', 'api call'), ('"*@company.com"', 'jo@company.com'),
    ('"1.*"', '1.0'), ('"2.*"', '1.0'), ('"**x**"', 'x'), ('"a*"', 'a')
  ) AS t(p, v);

-- The examples of Segment's FQL documentation.
SELECT s AS subscription,
       metronome_matches(s, '{"event": "Button Clicked", "type": "track",
                              "context": {"library": {"name": "analytics.js", "version": "1.0"}}}') AS matches
  FROM (VALUES
    ('event = ''Button Clicked'''), ('event = ''Screen Tapped'''),
    ('context.path.path = ''/login'''), ('type = ''identify'' or type = ''track'''),
    ('event = ''Button Clicked'' and type = ''track'''),
    ('match( context.library.version, ''1.*'' )'), ('match( context.library.version, ''2.*'' )'),
    ('type = ''track'' and ( event = ''Click'' or match( event, ''Button *'' ) )'),
    ('!contains( context.library.name, ''js'' )')
  ) AS t(s);

-- Paths: nested keys, array indexes (dotted or bracketed), quoted and
-- escaped keys, keys that look like keywords or functions, steps into
-- scalars and past the end of arrays (undefined).
SELECT s AS subscription,
       metronome_matches(s, '{
         "type": "track", "userId": "u1",
         "context": {"groupId": "g1", "library": {"name": "analytics.js"}},
         "properties": {"a": {"b": {"c": 3}}, "plan": "pro",
                        "items": [{"sku": "x1"}, {"sku": "x2", "tags": ["t"]}],
                        "odd key": 1, "product 1": {"price": "19.99"}, "a.b": "dot",
                        "café": "yes", "dark-mode": true, "2fa": "on", "null": "nk",
                        "contains": "c", "match": "m", "x\"y": "q", "": "empty"},
         "traits": {"email": "jo@example.com"}}') AS matches
  FROM (VALUES
    ('properties.a.b.c = 3'), ('properties.a.b = null'), ('properties.a.b != null'),
    ('properties.a.b.c.d = null'), ('properties.plan.x = null'), ('properties.plan.0 = null'),
    ('properties.items.0.sku = "x1"'), ('properties.items[1].sku = "x2"'),
    ('properties.items[1].tags[0] = "t"'), ('properties.items.1.tags.0 = "t"'),
    ('properties.items.2 = null'), ('properties.items.2.sku != null'),
    ('properties["odd key"] = 1'), ('properties[''odd key''] = 1'),
    ('properties.odd\ key = 1'), ('properties.product\ 1.price = "19.99"'),
    ('properties.a\.b = "dot"'), ('properties["a.b"] = "dot"'), ('properties.a.b = "dot"'),
    ('properties.café = "yes"'), ('properties.dark-mode = true'), ('properties.2fa = "on"'),
    ('properties.\null = "nk"'), ('properties.null = "nk"'),
    ('properties.contains = "c"'), ('contains(properties.match, "m")'),
    ('properties["x\"y"] = "q"'), ('properties.x\"y = "q"'), ('properties[""] = "empty"'),
    ('context.groupId = "g1"'), ('userId = "u1"'), ('traits.email = "jo@example.com"'),
    ('match(traits.email, "*@example.com")'), ('Type = "track"'), ('properties.Plan = "pro"')
  ) AS t(s);

-- Events that are not objects have no fields; a top-level array is indexed.
SELECT s AS subscription, e AS event, metronome_matches(s, e::jsonb) AS matches
  FROM (VALUES
    ('type = null', '5'), ('type != null', '5'), ('type = null', '"track"'),
    ('type != "track"', '"track"'), ('type = null', 'null'), ('type = null', '[1]'),
    ('[0] = 1', '[1]'), ('[1] = null', '[1]'), ('type = null', '{}'), ('type != null', '{}')
  ) AS t(s, e);

-- Segment reads properties.* from traits on identify events; we read the
-- path as written.
SELECT metronome_matches('properties.plan = "pro"',
                         '{"type": "identify", "traits": {"plan": "pro"}}') AS "properties on identify",
       metronome_matches('traits.plan = "pro"',
                         '{"type": "identify", "traits": {"plan": "pro"}}') AS "traits on identify";

-- A realistic track event and the subscriptions a billing setup would use.
CREATE TEMP TABLE track AS SELECT '{
  "anonymousId": "507f191e810c19729de860ea",
  "context": {
    "groupId": "acme-inc",
    "ip": "8.8.8.8",
    "library": {"name": "analytics-node", "version": "6.2.0"},
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"
  },
  "event": "API Call",
  "messageId": "ajs-next-69e1a3f4f2b5c0d1",
  "properties": {"endpoint": "/v1/chat", "model": "gpt-4", "tokens": 1532,
                 "latency_ms": 245.5, "cached": false, "region": null,
                 "tags": ["beta", "eu"]},
  "receivedAt": "2024-05-01T12:00:01.120Z",
  "timestamp": "2024-05-01T12:00:00.000Z",
  "type": "track",
  "userId": "user-42"
}'::jsonb AS event;

SELECT s AS subscription, metronome_matches(s, event) AS matches
  FROM track, (VALUES
    ('type = "track"'),
    ('type = "track" and event = "API Call"'),
    ('type = "track" and (event = "API Call" or event = "Order Completed") and properties.model != "free"'),
    ('type = "identify" or type = "track" and properties.tokens >= 1000'),
    ('type = "identify" or type = "track" and properties.tokens >= 2000'),
    ('properties.tokens > 1531 and properties.tokens < 1533 and properties.latency_ms <= 245.5'),
    ('properties.cached = false and properties.region = null and properties.missing = null'),
    ('properties.region != null'),
    ('context.groupId != null and userId != null'),
    ('match(context.library.name, "analytics-*") and match(context.library.version, "6.?.*")'),
    ('contains(context.userAgent, "Mozilla") and !contains(context.userAgent, "Windows")'),
    ('match(properties.endpoint, "/v1/[ce]*")'),
    ('properties.tags.0 = "beta" and properties.tags[1] = "eu"'),
    ('event = "api call"'),
    ('not (type = "track" and event = "API Call")')
  ) AS t(s);

-- A query over many rows parses each subscription once; several
-- subscriptions interleaved on one call site are each cached.
SELECT s.sub, count(*) FILTER (WHERE metronome_matches(s.sub, e.event)) AS matching
  FROM (SELECT jsonb_build_object('n', i, 'kind', CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END) AS event
          FROM generate_series(1, 100) i) e
  CROSS JOIN (VALUES ('kind = "even"'), ('n > 50'), ('n <= 10 or n = 100'),
                     ('not kind = "even" and n < 21')) AS s(sub)
 GROUP BY s.sub ORDER BY s.sub;

-- NULL in, NULL out (the function is strict).
SELECT metronome_matches(NULL, '{}') IS NULL AS null_sub, metronome_matches('a = 1', NULL) IS NULL AS null_event;

-- Syntax errors: what was expected, what was found, and the 1-based
-- character position.
CREATE FUNCTION fql_error(sub text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM metronome_matches(sub, '{}');
  RETURN 'ok';
EXCEPTION WHEN syntax_error THEN
  RETURN SQLERRM;
END
$$;

SELECT s AS subscription, fql_error(s) AS error
  FROM (VALUES
    (''), ('   '),
    ('type ='), ('type = "track" and'), ('type = "track" or'), ('type = "track" and or event = "x"'),
    ('type'), ('type "track"'), ('type == "track"'), ('type <> "track"'), ('type = = "track"'),
    ('type = track'), ('type = "track'), ('type = ''track'), ('type = "track\"'),
    ('type = "track" event = "x"'), ('type = "track" AND event = "x"'), ('type = "track" Or event = "x"'),
    ('NOT type = "x"'), ('type = "track" && event = "x"'), ('type = "track" || event = "x"'),
    ('type = TRUE'), ('type = Null'), ('and = 1'), ('null = 1'), ('true'),
    ('(type = "track"'), ('((type = "track") and (event = "x")'), ('type = "track")'), ('()'),
    ('!'), ('not'), ('! = 1'), ('not = 1'),
    ('n > "5"'), ('n < true'), ('n >= null'), ('n <= x'),
    ('n = 1.'), ('n = 1.2.3'), ('n = 1e'), ('n = 1e+'), ('n = 5abc'), ('n = -'), ('n = 1e1001'),
    ('n = 0x10'), ('n = 1 and m = 2.'),
    ('s = "\u12"'), ('s = "\uZZZZ"'), ('s = "\ud800"'), ('s = "\ude00"'), ('s = "\u0000"'),
    ('a. = 1'), ('a..b = 1'), ('a.[0] = 1'), ('a[0 = 1'), ('a[] = 1'), ('a["x] = 1'), ('a["x"b] = 1'),
    ('a[0]b = 1'), ('a\'), ('$.type = "track"'), ('-a = 1'), ('1a = 1'),
    ('contains'), ('contains('), ('contains(a'), ('contains(a,'), ('contains(a, "x"'),
    ('contains(a "x")'), ('contains(a, 5)'), ('contains("a", "x")'), ('contains(null, "x")'),
    ('match(a, x)'), ('match(a, "[a-")'), ('match(a, "[]")'), ('match(a, "[z-a]")'), ('match(a, "x\\")'),
    ('!contains(a, "x") and'), ('x # 1'), ('type = "track" ; drop table x'),
    ('é = 1 and ü = '), ('"日本" = 1'), ('type = "track" and 日本 >'),
    ('a = 1 and (b = 2 or (c = 3 and d = ))')
  ) AS t(s);

-- The full error a user sees.
\set VERBOSITY default
SELECT metronome_matches('type = "track" and event =', '{}');
\set VERBOSITY terse
SELECT metronome_matches('properties.x > "5"', '{}');
\set VERBOSITY default

-- A valid subscription cached in the same call site does not hide a later
-- invalid one.
SELECT s, metronome_matches(s, '{"a": 1}')
  FROM (VALUES (1, 'a = 1'), (2, 'a = 2'), (3, 'a = ')) AS t(n, s) ORDER BY n;

DROP FUNCTION fql_error(text);
DROP FUNCTION typed_matches(text[]);
