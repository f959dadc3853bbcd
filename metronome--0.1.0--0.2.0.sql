/* metronome--0.1.0--0.2.0.sql: update of the metronome extension from 0.1.0 */

\echo Use "ALTER EXTENSION metronome UPDATE TO '0.2.0'" to load this file. \quit

-- A new installation of 0.2.0 runs metronome--0.1.0.sql and then this file
-- (PostgreSQL follows the update path), so every 0.2.0 object is created
-- here and an updated database is the same as a new one.

------------------------------------------------------------------------------
-- Delivery core: the outbox as a queue with O(1) acknowledgement
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Trust boundary: mapping runs as the invoking user
------------------------------------------------------------------------------

------------------------------------------------------------------------------
-- Operations: replay, backfill, retention of events, metrics
------------------------------------------------------------------------------
