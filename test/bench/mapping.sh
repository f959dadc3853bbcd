#!/usr/bin/env bash
# test/bench/mapping.sh: how much the mapping trigger costs an INSERT.
#
# Usage: test/bench/mapping.sh [--quick] [--events N] [--runs R] [--pgbench-seconds S]
#            [--history H]
#
# Loads N (100,000) realistic Segment track events of about 1 KB into a
# staging table, then inserts them with INSERT ... SELECT three ways, R (3)
# times each, interleaved, and reports the median:
#   (a) the floor: the events into a table with no trigger, plus the same
#       rows pre-mapped straight into a plain copy of the table the trigger
#       writes (metronome_outbox in 0.1.0, metronome_queue under 0.2.0's
#       view; same columns, defaults and indexes) -- the least any design
#       has to write;
#   (b) into segment_events, mapped by the extension's trigger;
#   (c) into a table whose hand-written PL/pgSQL trigger applies the same
#       preset mapping (what a user would write without the extension);
#   (d) (b) again with history where 0.2.0's writer probes for duplicates:
#       H (1,000,000) acknowledged rows retained in the previous queue
#       segment and 10,000 exception rows (an outage's failures), never
#       analyzed (0.2.0's queue only).
# Then single-row INSERT transactions with pgbench (1 client, S seconds),
# into a table without the trigger and into segment_events.
# --quick: 20,000 events, one run, 3 s of pgbench (a smoke test).
# It prints figures and ratios; it asserts nothing.  Runs as root or not
# (as root it re-runs itself as an unprivileged user); needs no network.

set -euo pipefail
BENCH_SCRIPT=test/bench/mapping.sh
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

EVENTS=100000
RUNS=3
PGBENCH_SECONDS=10
HISTORY=1000000
ARGS=("$@")
while [ $# -gt 0 ]; do
	case "$1" in
		--quick) EVENTS=20000; RUNS=1; PGBENCH_SECONDS=3; HISTORY=50000; shift ;;
		--history) HISTORY=$2; shift 2 ;;
		--events) EVENTS=$2; shift 2 ;;
		--runs) RUNS=$2; shift 2 ;;
		--pgbench-seconds) PGBENCH_SECONDS=$2; shift 2 ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) mt_die "unknown argument $1" ;;
	esac
done
bench_setup "${ARGS[@]}"
bench_start_cluster

# The table the mapping trigger writes: 0.1.0's metronome_outbox, or, where
# metronome_outbox is a view (0.2.0's queue), the storage under it.
bench_psql -c "CREATE EXTENSION metronome" >/dev/null
if [ "$(bench_psql -At -c "SELECT to_regclass('metronome_queue') IS NOT NULL")" = t ]; then
	STORAGE=metronome_queue
	STORAGE_ALL="metronome_queue, metronome_outbox_state"
else
	STORAGE=metronome_outbox
	STORAGE_ALL=metronome_outbox
fi

mt_log "preparing $EVENTS events"
bench_psql <<SQL
INSERT INTO metronome_mappings (name) VALUES ('tracks');

CREATE TABLE staging AS
SELECT i, jsonb_build_object(
    'type', 'track',
    'event', 'API Call',
    'messageId', 'msg-' || i || '-' || md5(i::text),
    'userId', 'user-' || (i % 5000),
    'anonymousId', md5('anon' || i),
    'timestamp', to_char(timestamp '2026-11-01' + i * interval '10 ms',
                         'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'originalTimestamp', to_char(timestamp '2026-11-01' + i * interval '10 ms',
                                 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'sentAt', to_char(timestamp '2026-11-01' + i * interval '10 ms',
                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'context', jsonb_build_object(
        'groupId', 'org-' || (i % 500),
        'library', jsonb_build_object('name', 'analytics-node', 'version', '6.2.0'),
        'ip', '10.' || (i % 256) || '.' || (i / 256 % 256) || '.17',
        'userAgent', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Safari/537.36',
        'locale', 'en-US',
        'timezone', 'America/New_York',
        'os', jsonb_build_object('name', 'Mac OS X', 'version', '10.15.7'),
        'page', jsonb_build_object('path', '/v1/search',
                                   'url', 'https://app.example.com/v1/search?q=' || md5(i::text))),
    'properties', jsonb_build_object(
        'endpoint', '/v1/search', 'method', 'POST', 'status', 200,
        'tokens', i % 4000, 'latency_ms', (i * 7) % 900, 'region', 'us-east-1',
        'model', 'large-v2', 'request_id', md5('r' || i)),
    'integrations', jsonb_build_object('All', true)) AS event
  FROM generate_series(1, $EVENTS) AS i;
CREATE UNIQUE INDEX ON staging (i);

-- (a) the floor
CREATE TABLE plain_events (LIKE segment_events INCLUDING ALL);
-- a plain copy of the outbox's storage: same columns, defaults, indexes
CREATE TABLE outbox_floor (LIKE $STORAGE INCLUDING ALL);
CREATE TABLE premapped AS
SELECT i, event->>'messageId' AS transaction_id,
       event->'context'->>'groupId' AS customer_id,
       event->>'event' AS event_type,
       (event->>'timestamp')::timestamptz AS "timestamp",
       event->'properties' AS properties
  FROM staging;

-- (c) what a user would write by hand
CREATE TABLE pl_events (LIKE segment_events INCLUDING ALL);
CREATE TABLE pl_outbox (LIKE $STORAGE INCLUDING ALL);
CREATE TABLE pl_rejected (LIKE metronome_rejected INCLUDING ALL);
CREATE FUNCTION pl_map() RETURNS trigger LANGUAGE plpgsql AS \$\$
DECLARE
    e jsonb := NEW.event;
    cid text := e->'context'->>'groupId';
BEGIN
    IF e->>'type' IS DISTINCT FROM 'track' THEN
        RETURN NULL;
    END IF;
    IF coalesce(e->>'messageId', '') = '' OR coalesce(cid, '') = ''
       OR coalesce(e->>'event', '') = '' OR coalesce(e->>'timestamp', '') = '' THEN
        INSERT INTO pl_rejected (mapping, event, error)
        VALUES ('tracks', e, 'missing required field');
        RETURN NULL;
    END IF;
    INSERT INTO pl_outbox (transaction_id, customer_id, event_type, "timestamp",
                           properties, mapping)
    VALUES (e->>'messageId', cid, e->>'event', (e->>'timestamp')::timestamptz,
            coalesce(e->'properties', '{}'), 'tracks')
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
\$\$;
CREATE TRIGGER pl_map AFTER INSERT ON pl_events FOR EACH ROW EXECUTE FUNCTION pl_map();
VACUUM ANALYZE;
SQL

avg_size=$(bench_psql -At -c "SELECT round(avg(pg_column_size(event))) FROM staging")
raw_size=$(bench_psql -At -c "SELECT round(avg(length(event::text))) FROM staging")

reset_tables()
{
	bench_psql -c "TRUNCATE plain_events, outbox_floor, segment_events, $STORAGE_ALL,
	               metronome_rejected, pl_events, pl_outbox, pl_rejected" \
		-c "CHECKPOINT" >/dev/null
}

# load_history: (d)'s rows, after reset_tables
load_history()
{
	bench_psql -c "
	INSERT INTO metronome_queue (seg, transaction_id, customer_id, event_type, \"timestamp\", properties)
	SELECT (metronome_segment() + 2) % 3, 'hist-' || g || '-' || md5(g::text), 'org-' || (g % 500),
	       'API Call', now() - interval '2 days', jsonb_build_object('n', g)
	  FROM generate_series(1, $HISTORY) g" \
		-c "
	INSERT INTO metronome_outbox_state (id, transaction_id, customer_id, event_type, \"timestamp\",
	                                    status, attempts, last_error)
	SELECT -g, 'failed-' || g, 'org-1', 'API Call', now() - interval '1 day', 'failed', 1, 'HTTP 400'
	  FROM generate_series(1, 10000) g" \
		-c "CHECKPOINT" >/dev/null
}

declare -a A B C D
for ((r = 1; r <= RUNS; r++)); do
	mt_log "run $r of $RUNS"
	reset_tables
	t1=$(bench_time "INSERT INTO plain_events (event) SELECT event FROM staging ORDER BY i")
	t2=$(bench_time "INSERT INTO outbox_floor (transaction_id, customer_id, event_type, \"timestamp\", properties, mapping)
	                 SELECT transaction_id, customer_id, event_type, \"timestamp\", properties, 'tracks'
	                   FROM premapped ORDER BY i")
	A+=("$(echo "$t1 $t2" | awk '{ printf "%.3f", $1 + $2 }')")
	reset_tables
	B+=("$(bench_time "INSERT INTO segment_events (event) SELECT event FROM staging ORDER BY i")")
	# the mapping must have done its job: one outbox row per event
	mapped=$(bench_psql -At -c "SELECT count(*) FROM metronome_outbox")
	[ "$mapped" -eq "$EVENTS" ] || mt_die "(b) mapped $mapped of $EVENTS events"
	reset_tables
	C+=("$(bench_time "INSERT INTO pl_events (event) SELECT event FROM staging ORDER BY i")")
	if [ "$STORAGE" = metronome_queue ]; then
		reset_tables
		load_history
		D+=("$(bench_time "INSERT INTO segment_events (event) SELECT event FROM staging ORDER BY i")")
		mapped=$(bench_psql -At -c "SELECT count(*) FROM metronome_queue WHERE transaction_id LIKE 'msg-%'")
		[ "$mapped" -eq "$EVENTS" ] || mt_die "(d) mapped $mapped of $EVENTS events"
	fi
done

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ta=$(median "${A[@]}")
tb=$(median "${B[@]}")
tc=$(median "${C[@]}")
td=$( [ ${#D[@]} -gt 0 ] && median "${D[@]}" || echo 0)
rate() { echo "$EVENTS $1" | awk '{ printf "%.0f", $1 / $2 }'; }

mt_log "pgbench: single-row INSERT transactions, ${PGBENCH_SECONDS}s each"
cat >"$MT_WORKDIR/plain.sql" <<EOF
\set i random(1, $EVENTS)
INSERT INTO plain_events (event)
SELECT event || jsonb_build_object('messageId', 'pgb-' || txid_current()) FROM staging WHERE i = :i;
EOF
cat >"$MT_WORKDIR/mapped.sql" <<EOF
\set i random(1, $EVENTS)
INSERT INTO segment_events (event)
SELECT event || jsonb_build_object('messageId', 'pgb-' || txid_current()) FROM staging WHERE i = :i;
EOF
pgb()
{
	pgbench -n -c 1 -T "$PGBENCH_SECONDS" -f "$1" 2>/dev/null |
		awk '/latency average/ { lat = $4 } /^tps/ { tps = $3 } END { printf "%.3f %.0f", lat, tps }'
}
reset_tables
read -r lat_plain tps_plain <<<"$(pgb "$MT_WORKDIR/plain.sql")"
read -r lat_mapped tps_mapped <<<"$(pgb "$MT_WORKDIR/mapped.sql")"
pgb_rows=$(bench_psql -At -c "SELECT count(*) FROM metronome_outbox WHERE transaction_id LIKE 'pgb-%'")

cat <<EOF

mapping benchmark ($(nproc) cores, PostgreSQL $PG_MAJOR)
  $EVENTS track events, about $raw_size bytes of JSON each ($avg_size bytes as jsonb); median of $RUNS runs

  INSERT ... SELECT                                          seconds   events/s
  (a) floor: no trigger + pre-mapped rows into outbox copy   $(printf '%7.3f  %9s' "$ta" "$(rate "$ta")")
  (b) segment_events, mapped by the extension                $(printf '%7.3f  %9s' "$tb" "$(rate "$tb")")
  (c) hand-written PL/pgSQL trigger, same preset mapping     $(printf '%7.3f  %9s' "$tc" "$(rate "$tc")")
  (d) (b) with $HISTORY retained rows + 10000 exception rows   $(printf '%7.3f  %9s' "$td" "$( [ "$td" != 0 ] && rate "$td" || echo n/a)")
  runs (a): ${A[*]}   (b): ${B[*]}   (c): ${C[*]}   (d): ${D[*]:-none}

  b/a = $(bench_ratio "$tb" "$ta")   (target: at most 1.15; outbox storage: $STORAGE)
  c/b = $(bench_ratio "$tc" "$tb")   (how much slower the hand-written trigger is)
  d/a = $(bench_ratio "$td" "$ta"), d/b = $(bench_ratio "$td" "$tb")   (the probes of retained rows and exception rows)

  single-row INSERT transactions (pgbench, 1 client, ${PGBENCH_SECONDS} s)   latency ms   tps
  without trigger (plain table)                                $(printf '%8s  %6s' "$lat_plain" "$tps_plain")
  with the extension's trigger (segment_events)                $(printf '%8s  %6s' "$lat_mapped" "$tps_mapped")
  latency with/without = $(bench_ratio "$lat_mapped" "$lat_plain")   (target: at most 1.2; $pgb_rows events mapped)
EOF
