--
-- segment_fql: FQL as Segment's own code evaluates it (issue 10, found by
-- test/conformance): a bare number after != is true only for another
-- number, and ordering takes a quoted number, read as JavaScript's
-- Number() reads it.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS metronome;
RESET client_min_messages;

-- != 1200: a number other than 1200, nothing else (Segment's
-- number_not_equals); a missing value is not billed
SELECT v, metronome_matches('properties.value != 1200', jsonb_build_object('properties', jsonb_build_object('value', v::jsonb))) AS ne
  FROM (VALUES ('1200'), ('1200.0'), ('5'), ('-3'), ('"1200"'), ('"abc"'), ('true'), ('null'), ('[1200]'), ('{}')) AS t(v);
SELECT metronome_matches('properties.value != 1200', '{"properties": {}}') AS missing,
       metronome_matches('properties.value != 1200', '{}') AS no_properties,
       metronome_matches('not properties.value = 1200', '{}') AS not_eq;
-- the other literals of != still include a missing field
SELECT metronome_matches('properties.value != "x"', '{}') AS ne_string,
       metronome_matches('properties.value != true', '{}') AS ne_true,
       metronome_matches('properties.value != null', '{}') AS ne_null;

-- ordering against a quoted number compares with Number("...")
SELECT lit, v,
       metronome_matches('properties.value < ' || lit, jsonb_build_object('properties', jsonb_build_object('value', v::jsonb))) AS lt,
       metronome_matches('properties.value >= ' || lit, jsonb_build_object('properties', jsonb_build_object('value', v::jsonb))) AS ge
  FROM (VALUES ('"10"'), ('" 10 "'), ('"1e1"'), ('"0xA"'), ('"+10"'), ('"10."'), ('".5"'), ('""'),
               ('"abc"'), ('"Infinity"'), ('"-Infinity"'), ('"1e5000"'), ('"0x"')) AS l(lit),
       (VALUES ('5'), ('10'), ('-3'), ('"5"')) AS w(v)
 ORDER BY lit, v;
-- a string value is never ordered, whatever the literal
SELECT metronome_matches('properties.value > "1"', '{"properties": {"value": "5"}}') AS string_value;
