--
-- segment_timestamp: the date forms Segment reads where the instant is
-- unambiguous (issue 10): reduced ISO 8601 precision, YYYY/MM/DD, RFC 2822
-- / RFC 1123, 24:00; and the refusals, with the reason, of what Segment
-- would bill at a wrong instant.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS metronome;
RESET client_min_messages;
SET timezone = 'UTC';

INSERT INTO metronome_mappings (name, timestamp) VALUES ('ts_forms', '{"@path": "$.properties.ts"}');
SELECT ts, to_char(m."timestamp", 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS utc, m.error
  FROM (VALUES ('2024'), ('2024-03'), ('2024-03-01'), ('2024/03/01'), ('2024/03/01 10:15'), ('2024/03/01 10:15:30.25'),
               ('Fri, 01 Mar 2024 10:15:30 GMT'), ('Fri, 01 Mar 2024 12:15:30 +0200'), ('Fri, 1 Mar 2024 05:15:30 -0500'),
               ('01 Mar 2024 10:15:30 UTC'), ('Friday, 01 Mar 2024 10:15 GMT'), ('Fri, 01 Mar 2024 05:15:30 EST'),
               ('Fri, 01 Mar 2024 10:15:30 GMT+0100'), ('Fri, 01 Mar 2024 10:15:30'), ('fri, 01 mar 2024 10:15:30 gmt'),
               ('2024-03-01T24:00:00Z'), ('2023-12-31T24:00:00.000+01:00'), ('2024-03-01T24:00:01Z'), ('2024-03-01T24:30:00Z'),
               ('2024-02-30T00:00:00Z'), ('2023-02-29'), ('2024-13-01'), ('2024/02/30'), ('1709288130000'), ('20240301'),
               ('10000-01-01T00:00:00Z'), ('yesterday'), ('Fri, 32 Mar 2024 10:15:30 GMT'), ('Fri, 01 Foo 2024 10:15:30 GMT'),
               ('2024/03'), ('2024/03-01'), ('2024/03/01T10:15:30'), ('2024/03/01 10:15:30Z')) AS t(ts),
       LATERAL metronome_map(jsonb_build_object('type', 'track', 'event', 'e', 'messageId', 'm',
           'context', jsonb_build_object('groupId', 'g'), 'properties', jsonb_build_object('ts', ts))) AS m
 WHERE m.mapping = 'ts_forms';
DELETE FROM metronome_mappings WHERE name = 'ts_forms';
