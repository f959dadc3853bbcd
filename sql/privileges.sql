--
-- Privileges: an application role that may only INSERT events still gets
-- them mapped, and can read or change nothing else of the extension.
--
CREATE EXTENSION IF NOT EXISTS metronome;
CREATE ROLE regress_metronome_app;
GRANT INSERT ON segment_events TO regress_metronome_app;
GRANT USAGE ON SEQUENCE segment_events_id_seq TO regress_metronome_app;
INSERT INTO metronome_mappings (name) VALUES ('tracks');

SET ROLE regress_metronome_app;
INSERT INTO segment_events (event) VALUES
('{"type": "track", "event": "API Call", "messageId": "priv-1",
  "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}'),
('{"type": "track", "event": "API Call", "messageId": "priv-2",
  "timestamp": "2024-03-01T00:00:00Z"}');
SELECT * FROM metronome_outbox;
UPDATE metronome_outbox SET status = 'sent';
INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
VALUES ('x', 'y', 'z', now());
SELECT * FROM metronome_mappings;
INSERT INTO metronome_mappings (name) VALUES ('mine');
SELECT * FROM metronome_rejected;
SELECT * FROM segment_events;
SELECT metronome_enqueue('{"type": "track"}');
SELECT * FROM metronome_map('{"type": "track"}');
CALL metronome_ship();
SELECT metronome_retry();
SELECT * FROM metronome_status();
SELECT metronome_check_connection();
SELECT metronome_attach('segment_events', 'event');
-- the pure mapping functions are for everyone
SELECT metronome_matches('type = "track"', '{"type": "track"}');
SELECT metronome_evaluate('{"@path": "$.a"}', '{"a": 1}');
RESET ROLE;

SELECT transaction_id, customer_id, mapping FROM metronome_outbox ORDER BY id;
SELECT event->>'messageId' AS message_id, error FROM metronome_rejected ORDER BY id;

-- Nothing of the extension is granted to PUBLIC but the two pure functions.
SELECT c.relname, a.privilege_type
  FROM pg_class c
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'metronome',
       aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
 WHERE a.grantee = 0;
SELECT p.oid::regprocedure AS public_function
  FROM pg_proc p
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                  AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'metronome',
       aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'
 ORDER BY p.oid::regprocedure::text;

DELETE FROM metronome_mappings;
TRUNCATE metronome_queue, metronome_outbox_state, metronome_rejected, segment_events;
REVOKE ALL ON segment_events FROM regress_metronome_app;
REVOKE ALL ON SEQUENCE segment_events_id_seq FROM regress_metronome_app;
DROP ROLE regress_metronome_app;
