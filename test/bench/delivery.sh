#!/usr/bin/env bash
# test/bench/delivery.sh: the delivery core's benchmarks (issue 8, a-f).
#
# Usage: test/bench/delivery.sh [--quick] [--case LIST] [--runs R]
#            [--events N] [--load L] [--history H] [--latency K] [--timeout S]
#            [--record PREFIX] [--steady vacuum|analyze]
#
# A throwaway server with the library preloaded ships to test/bench/sink.c
# (a C HTTP sink on 127.0.0.1, compiled here with cc) and measures, in one
# run, with R (2) runs of each case interleaved, every run printed:
#   cap  the sink's own capacity: its load generator sends the request body
#        the worker sent (captured by the sink) over max_inflight keep-alive
#        connections; it must be at least 3x the drain
#   a    drain of N (1,000,000) pending events, worker on, to the sink:
#        events/s from enabling the worker to the moment metronome_status()
#        shows nothing pending; against the database-only floor of the same
#        design (bench_floor_cycle, test/bench/floor.c, the worker's cycle
#        without HTTP, one transaction per cycle).  The outbox is emptied by
#        TRUNCATE, loaded and drained with autovacuum off: no statistics at
#        all, the unflattering case
#   b    end to end: 4 sessions (pgbench) committing 500-event batches into
#        segment_events, L (200,000) events, the worker on: time until every
#        event is acknowledged, against the same load with shipping off
#   c    the drain of (a) (burst after TRUNCATE, no ANALYZE) against a steady
#        drain (the same load after VACUUM ANALYZE, autovacuum on); and the
#        floor on both loads, whose ratio is the claim's own dependence on
#        statistics and hint bits, without the HTTP side's share of the CPUs
#   d    the drain of (a) with H (10,000,000) acknowledged rows retained
#   e    commit-to-sink latency of K (1,000) single events committed 10 ms
#        apart into segment_events, alone and under the load of (b) (the 4
#        sessions commit for as long as the K events take): p50, p99, max
#   f    PgQ side by side (postgresql-NN-pgq3, installed when run as root):
#        the same N events through pgq.insert_event (1,000 per transaction,
#        a tick after each) and a consumer loop (next_batch, get_batch_events,
#        finish_batch, one transaction per batch), no HTTP, against our floor
#   r    retention without per-row deletes: ROUNDS (10) rounds of N events
#        loaded and drained with metronome.retain_sent = 2s, autovacuum
#        off: the outbox's size (heap, indexes, TOAST of every table of its
#        storage) after each round against after the first (not in the
#        default cases; --case r; --rounds ROUNDS)
# --case a,c,f picks cases (cap runs with a; the floor with a or f).
# --steady analyze: (c)'s steady load is only ANALYZEd, not VACUUMed: the
# rows have fresh statistics but no hint bits set, as rows claimed soon
# after their commit have (default vacuum: VACUUM ANALYZE).
# --record PREFIX: the sink records the arrival of the ids that start with
# PREFIX (default lat-, what (e) needs; e2e- lets a stuck wait of (b) list
# the rows that never arrived).
# --quick: small sizes, one run, for a smoke test in under a minute.
# Every wait is bounded (a drain gives up after --timeout S (180) seconds,
# reports what arrived and prints the queue's state on stderr).  The CPU seconds of the worker and of the sink are
# printed: on a shared machine they say more than wall-clock time.
# Figures and ratios, no assertion; it fails only when events are lost.
# Runs as root or not (as root it re-runs itself as an unprivileged user).

set -euo pipefail
BENCH_SCRIPT=test/bench/delivery.sh
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

EVENTS=1000000
LOAD=200000
HISTORY=10000000
LATENCY=1000
RUNS=2
ROUNDS=10
CASES=cap,a,b,c,d,e,f
CAP_SECONDS=3
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-180}
RECORD=lat-
STEADY="VACUUM ANALYZE"
ARGS=("$@")
while [ $# -gt 0 ]; do
	case "$1" in
		--quick) EVENTS=20000; LOAD=20000; HISTORY=200000; LATENCY=100; RUNS=1
		         CAP_SECONDS=1; DRAIN_TIMEOUT=20; shift ;;
		--case) CASES=$2; shift 2 ;;
		--runs) RUNS=$2; shift 2 ;;
		--rounds) ROUNDS=$2; shift 2 ;;
		--events) EVENTS=$2; shift 2 ;;
		--load) LOAD=$2; shift 2 ;;
		--history) HISTORY=$2; shift 2 ;;
		--latency) LATENCY=$2; shift 2 ;;
		--timeout) DRAIN_TIMEOUT=$2; shift 2 ;;
		--record) RECORD=$2; shift 2 ;;
		--steady) case "$2" in
		              vacuum) STEADY="VACUUM ANALYZE" ;;
		              analyze) STEADY=ANALYZE ;;
		              *) mt_die "--steady takes vacuum or analyze" ;;
		          esac; shift 2 ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) mt_die "unknown argument $1" ;;
	esac
done
want() { case ",$CASES," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
want a && CASES="$CASES,cap"
[ $((LOAD % 2000)) -eq 0 ] || mt_die "--load must be a multiple of 2000 (4 sessions x 500)"

mt_find_pg_config
want f && MT_EXTRA_PACKAGES="postgresql-$PG_MAJOR-pgq3"
bench_setup "${ARGS[@]}"

# --- the sink ---------------------------------------------------------------
SINK_BIN=$MT_WORKDIR/bench_sink
cc -O2 -Wall -Wextra -Werror -o "$SINK_BIN" "$MT_SRC/test/bench/sink.c" || mt_die "cc sink.c failed"
TOKEN=bench-token-$$
SAMPLE=$MT_WORKDIR/sample.json
: >"$MT_WORKDIR/sink.out"
"$SINK_BIN" serve --token "$TOKEN" --record-prefix "$RECORD" --sample "$SAMPLE" \
	>"$MT_WORKDIR/sink.out" 2>"$MT_WORKDIR/sink.err" &
BENCH_MOCK_PID=$!
for _ in $(seq 100); do
	SINK_PORT=$(sed -n 's/^PORT //p' "$MT_WORKDIR/sink.out")
	[ -n "$SINK_PORT" ] && break
	sleep 0.05
done
[ -n "$SINK_PORT" ] || mt_die "the sink did not start: $(cat "$MT_WORKDIR/sink.err")"
SINK=http://127.0.0.1:$SINK_PORT
sink() { curl -s -X "$1" "$SINK$2"; }
sink_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

# --- the floor module ---------------------------------------------------------
FLOOR_SO=$MT_TI$PG_PKGLIBDIR/bench_floor.so
FLOOR_DEF=
grep -q 'SHIP_PROCEDURE' "$MT_SRC/src/delivery.h" && FLOOR_DEF=-DBENCH_FLOOR_PROCEDURE
cc -O2 -fPIC -shared -Wall -Wextra -Werror $FLOOR_DEF \
	-isystem "$("$PGC" --includedir-server)" -I"$MT_SRC/src" \
	$(pkg-config --cflags libcurl json-c) \
	-o "$FLOOR_SO" "$MT_SRC/test/bench/floor.c" || mt_die "cc floor.c failed"

bench_start_cluster \
	"shared_preload_libraries = 'metronome'" \
	"metronome.ingest_url = '$SINK/v1/ingest'" \
	"metronome.api_token = '$TOKEN'" \
	"metronome.enabled = off" \
	"metronome.retain_sent = -1" \
	"max_connections = 50"

if [ -n "$FLOOR_DEF" ]; then
	bench_psql -c "CREATE PROCEDURE bench_floor() AS '\$libdir/bench_floor', 'bench_floor' LANGUAGE C"
	FLOOR_SQL="CALL bench_floor();"
else
	bench_psql -c "CREATE FUNCTION bench_floor_cycle(integer) RETURNS bigint
	    AS '\$libdir/bench_floor', 'bench_floor_cycle' LANGUAGE C"
	FLOOR_SQL='DO $$ BEGIN LOOP EXIT WHEN bench_floor_cycle(NULL) = 0; COMMIT; END LOOP; END $$;'
fi
bench_psql <<'SQL'
CREATE EXTENSION metronome;
INSERT INTO metronome_mappings (name) VALUES ('tracks');
-- 500 realistic Segment track events (about 1 KB each): one batch of (b)
CREATE TABLE staging500 AS
SELECT i, jsonb_build_object(
    'type', 'track', 'event', 'API Call',
    'userId', 'user-' || (i % 5000), 'anonymousId', md5('anon' || i),
    'timestamp', to_char(now() AT TIME ZONE 'UTC' - interval '1 hour' + i * interval '10 ms',
                         'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'context', jsonb_build_object(
        'groupId', 'org-' || (i % 500),
        'library', jsonb_build_object('name', 'analytics-node', 'version', '6.2.0'),
        'ip', '10.' || (i % 256) || '.17.4',
        'userAgent', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Safari/537.36',
        'locale', 'en-US', 'timezone', 'America/New_York',
        'page', jsonb_build_object('path', '/v1/search',
                                   'url', 'https://app.example.com/v1/search?q=' || md5(i::text))),
    'properties', jsonb_build_object(
        'endpoint', '/v1/search', 'method', 'POST', 'status', 200,
        'tokens', i % 4000, 'latency_ms', (i * 7) % 900, 'region', 'us-east-1',
        'model', 'large-v2', 'request_id', md5('r' || i)),
    'integrations', jsonb_build_object('All', true)) AS event
  FROM generate_series(1, 500) AS i;
CREATE SEQUENCE bench_batch;
CREATE TABLE bench_commits (transaction_id text, committed_at float8);
VACUUM ANALYZE staging500;
SQL

cat >"$MT_WORKDIR/load.sql" <<'EOF'
SELECT nextval('bench_batch') AS b \gset
INSERT INTO segment_events (event)
SELECT event || jsonb_build_object('messageId', 'e2e-' || :b || '-' || i) FROM staging500;
EOF

setting()
{
	bench_psql -c "ALTER SYSTEM SET $1 = '$2'" -c "SELECT pg_reload_conf()" >/dev/null
}
worker_pid()
{
	bench_psql -At -c "SELECT pid FROM pg_stat_activity WHERE backend_type ~ 'metronome' AND backend_type !~ 'launcher' LIMIT 1"
}
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
sub() { echo "$1 $2" | awk '{ printf "%.3f", $1 - $2 }'; }
rate() { echo "$1 $2" | awk '{ if ($2 > 0) printf "%.0f", $1 / $2; else print "n/a" }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }
pending() { bench_psql -At -c "SELECT pending FROM metronome_status()"; }

# --- what depends on the outbox's storage --------------------------------------
# 0.1.0's layout: metronome_outbox is a table, a row is acknowledged by
# status = 'sent'.  0.2.0's queue (branch delivery): metronome_outbox is a
# view; the rows live in metronome_queue (segments stamped with their
# txid), acknowledged by the cursor row of metronome_delivery.
QUEUE=$(bench_psql -At -c "SELECT to_regclass('metronome_queue') IS NOT NULL")

# reset_outbox: empty the outbox the way an operator would (TRUNCATE), which
# also throws its statistics away.
reset_outbox()
{
	if [ "$QUEUE" = t ]; then
		bench_psql -c "TRUNCATE metronome_queue, metronome_outbox_state, metronome_ticks,
		               segment_events, metronome_rejected" >/dev/null
	else
		bench_psql -c "TRUNCATE metronome_outbox, segment_events, metronome_rejected" >/dev/null
	fi
}

# load_pending PREFIX N: N pending rows of realistic size (about 200 bytes
# of properties) in one statement: into the storage the mapping trigger
# writes (metronome_queue), or the 0.1.0 table.
load_pending()
{
	local into=metronome_outbox
	[ "$QUEUE" = t ] && into=metronome_queue
	bench_psql -c "
	INSERT INTO $into (transaction_id, customer_id, event_type, \"timestamp\", properties)
	SELECT '$1-' || g || '-' || md5(g::text), 'org-' || (g % 500), 'api_call',
	       now() - interval '1 hour' + g * interval '1 ms',
	       jsonb_build_object('endpoint', '/v1/search', 'method', 'POST', 'status', 200,
	                          'tokens', g % 4000, 'latency_ms', (g * 7) % 900,
	                          'region', 'us-east-1', 'model', 'large-v2',
	                          'request_id', md5('r' || g))
	  FROM generate_series(1, $2) g" >/dev/null
}

# load_history N: N acknowledged rows, written straight into the storage
# and acknowledged as the design does after a 2xx: 0.1.0 marks each row
# (status 'sent', sent_at); the queue moves its cursor past them (one
# metronome_delivery row and one tick, as finishing a batch does).  Small
# properties, so that 10,000,000 rows take a minute or two.  Checks that
# nothing is left pending.
load_history()
{
	if [ "$QUEUE" = t ]; then
		bench_psql -c "
		INSERT INTO metronome_queue (transaction_id, customer_id, event_type, \"timestamp\", properties)
		SELECT 'hist-' || g, 'org-' || (g % 500), 'api_call',
		       now() - interval '2 days' + g * interval '1 ms', jsonb_build_object('tokens', g % 4000)
		  FROM generate_series(1, $1) g" >/dev/null
		bench_psql <<'SQL' >/dev/null
BEGIN;
UPDATE metronome_delivery
   SET last_snap = pg_current_snapshot(), cur_snap = NULL, pos_txid = '0', pos_id = 0,
       acked_at = now(),
       system_id = coalesce(system_id, (SELECT system_identifier FROM pg_control_system()));
INSERT INTO metronome_ticks (tick_xmax, snap, acked_at)
VALUES (pg_snapshot_xmax(pg_current_snapshot()), pg_current_snapshot(), now());
COMMIT;
SQL
	else
		bench_psql -c "
		INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\",
		                              properties, status, sent_at, attempts)
		SELECT 'hist-' || g, 'org-' || (g % 500), 'api_call',
		       now() - interval '2 days' + g * interval '1 ms',
		       jsonb_build_object('tokens', g % 4000), 'sent', now() - interval '1 day', 1
		  FROM generate_series(1, $1) g" >/dev/null
	fi
	local left
	left=$(pending)
	[ "$left" = 0 ] || mt_die "the history left $left rows pending"
}

# ack_time: when the last acknowledgement committed (epoch seconds), read
# from the design's own record of it, so that how often a script polls for
# "nothing pending" does not change the figure: the queue's cursor row
# (acked_at, set by every acknowledgement), 0.1.0's newest sent_at (its
# partial index on sent rows).
ack_time()
{
	if [ "$QUEUE" = t ]; then
		bench_psql -At -c "SELECT extract(epoch FROM max(acked_at)) FROM metronome_delivery"
	else
		bench_psql -At -c "SELECT extract(epoch FROM max(sent_at)) FROM metronome_outbox WHERE status = 'sent'"
	fi
}

# floor_run: the database-only floor over what is pending, one cycle per
# transaction, asynchronous commit like the worker, DRAIN_TIMEOUT seconds
# at most.  Prints "seconds cpu".
floor_run()
{
	local out
	out=$(bench_psql -At 2>/dev/null <<SQL
SELECT pg_backend_pid() AS pid \gset
SET synchronous_commit = off;
SELECT extract(epoch FROM clock_timestamp()) AS t0,
       (SELECT (split_part(pg_read_file('/proc/' || :pid || '/stat'), ') ', 2)::text) AS s) AS st \gset
\set ON_ERROR_STOP 0
SET statement_timeout = '${DRAIN_TIMEOUT}s';
$FLOOR_SQL
RESET statement_timeout;
\set ON_ERROR_STOP 1
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3) AS secs,
       (SELECT split_part(pg_read_file('/proc/' || :pid || '/stat'), ') ', 2) AS s) AS st1 \gset
SELECT :'secs', round(((split_part(:'st1', ' ', 12)::int + split_part(:'st1', ' ', 13)::int)
                 - (split_part(:'st', ' ', 12)::int + split_part(:'st', ' ', 13)::int)) / 100.0, 2);
SQL
)
	echo "$out" | tail -n1 | tr '|' ' '
}

# stuck_report: what the outbox says when a wait gives up (on stderr).
stuck_report()
{
	{
		bench_psql -x -c "SELECT * FROM metronome_status()"
		if [ "$QUEUE" = t ]; then
			bench_psql -x -c "SELECT *, pg_current_snapshot() AS now_snap FROM metronome_delivery"
			bench_psql -c "SELECT q.txid, min(q.id), max(q.id), count(*), min(q.transaction_id)
			    FROM metronome_queue q, metronome_delivery d
			   WHERE NOT metronome_acked(q.txid, q.id, d.last_snap, d.cur_snap, d.pos_txid, d.pos_id)
			   GROUP BY q.txid ORDER BY q.txid LIMIT 20"
			bench_psql -c "SELECT status, count(*) FROM metronome_outbox_state GROUP BY 1"
			bench_psql -c "SELECT * FROM metronome_ticks ORDER BY tick_xmax DESC LIMIT 5"
			if [ "$RECORD" != lat- ]; then
				sink GET /_arrivals >"$MT_WORKDIR/arrived.txt"
				bench_psql -c "CREATE TEMP TABLE arrived (transaction_id text, at float8)" \
					-c "\\copy arrived FROM '$MT_WORKDIR/arrived.txt' WITH (DELIMITER ' ')" \
					-c "SELECT q.txid, min(q.id), max(q.id), count(*), min(q.transaction_id), min(q.created_at), max(t.tick_xmax) AS tick_before
					      FROM metronome_queue q
					      LEFT JOIN LATERAL (SELECT tick_xmax FROM metronome_ticks t WHERE t.tick_xmax <= q.txid ORDER BY tick_xmax DESC LIMIT 1) t ON true
					     WHERE q.transaction_id LIKE '$RECORD%'
					       AND NOT EXISTS (SELECT 1 FROM arrived a WHERE a.transaction_id = q.transaction_id)
					     GROUP BY q.txid ORDER BY q.txid" \
					-c "SELECT tick_xmax, snap, acked_at FROM metronome_ticks ORDER BY tick_xmax"
			fi
		fi
	} >&2 || true
}

# wait_acked N T0 TIMEOUT: wait until the sink has N unique events and the
# outbox has nothing pending.  Prints "seconds_to_ack seconds_to_sink
# unique duplicates" (seconds from T0); when TIMEOUT passes first, the
# seconds are those at the timeout and unique says how far it got.
wait_acked()
{
	local n=$1 t0=$2 timeout=$3 st uniq dups last left t1
	left=$(echo "$t0 $timeout $(now)" | awk '{ t = $1 + $2 - $3; printf "%.1f", (t > 0.1 ? t : 0.1) }')
	st=$(curl -s --max-time "$(echo "$left" | awk '{ print $1 + 5 }')" "$SINK/_wait?unique_events=$n&timeout=$left")
	uniq=$(echo "$st" | sink_field unique_events)
	dups=$(echo "$st" | sink_field duplicates)
	last=$(echo "$st" | sink_field last_unique_at)
	if [ "$uniq" -lt "$n" ]; then
		t1=$(now)
		mt_log "$uniq of $n events arrived at the sink in ${timeout}s:"
		stuck_report
		echo "$(sub "$t1" "$t0") $(sub "$last" "$t0") $uniq $dups"
		return
	fi
	while :; do
		[ "$(pending)" = 0 ] && break
		if [ "$(echo "$(now) $t0 $timeout" | awk '{ print ($1 - $2 > $3 + 30) }')" = 1 ]; then
			mt_log "every event arrived at the sink, but rows are still pending:"
			stuck_report
			break
		fi
		sleep 0.05
	done
	t1=$(ack_time)
	[ -n "$t1" ] || t1=$(now)
	echo "$(sub "$t1" "$t0") $(sub "$last" "$t0") $uniq $dups"
}

# The worker's private memory (kB), after each drain: it must not grow with
# what it ships.
rss_anon() { awk '$1 == "RssAnon:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# drain N: enable the worker, wait until all N are acknowledged, disable
# it.  Prints "seconds worker_cpu sink_cpu unique duplicates to_sink".
drain()
{
	local n=$1 w c0 c1 s0 s1 t0 res
	w=$(worker_pid)
	[ -n "$w" ] || mt_die "no delivery worker"
	sink POST /_reset >/dev/null
	c0=$(cpu_of "$w"); s0=$(sink GET /_stats | sink_field cpu_s)
	t0=$(now)
	setting metronome.enabled on
	res=$(wait_acked "$n" "$t0" "$DRAIN_TIMEOUT")
	echo "$w $(rss_anon "$w") $n" >>"$MT_WORKDIR/memory.txt"
	c1=$(cpu_of "$w"); s1=$(sink GET /_stats | sink_field cpu_s)
	setting metronome.enabled off
	read -r secs tosink uniq dups <<<"$res"
	[ "$uniq" -ge "$n" ] || mt_log "drain timed out after ${secs}s: $uniq of $n events arrived"
	echo "$secs $c0 $c1 $s0 $s1 $uniq $dups $tosink" |
		awk '{ printf "%s %.2f %.2f %d %d %s", $1, ($3 - $2) / 100, $5 - $4, $6, $7, $8 }'
}

# prepare_load PREFIX MODE: reset the outbox and load EVENTS pending rows,
# then CHECKPOINT.  MODE burst: autovacuum off, no statistics; steady:
# autovacuum on and $STEADY (VACUUM ANALYZE, or ANALYZE) after the load.
prepare_load()
{
	local prefix=$1 mode=$2
	if [ "$mode" = burst ]; then
		setting autovacuum off
	else
		setting autovacuum on
	fi
	reset_outbox
	load_pending "$prefix" "$EVENTS"
	if [ "$mode" = steady ]; then
		if [ "$QUEUE" = t ]; then
			bench_psql -c "$STEADY metronome_queue, metronome_outbox_state, metronome_delivery, metronome_ticks" >/dev/null
		else
			bench_psql -c "$STEADY metronome_outbox" >/dev/null
		fi
	fi
	bench_psql -c "CHECKPOINT" >/dev/null
}

# one_drain LABEL PREFIX MODE: reset, load EVENTS rows, drain them; MODE is
# burst (autovacuum off, no statistics) or steady (VACUUM ANALYZE first).
# Appends "seconds rate" to the arrays named LABEL_S and LABEL_R.
declare -A NOTE
one_drain()
{
	local label=$1 prefix=$2 mode=$3 secs wc sc uniq dups tosink r
	prepare_load "$prefix" "$mode"
	read -r secs wc sc uniq dups tosink <<<"$(drain "$EVENTS")"
	if [ "$uniq" -ge "$EVENTS" ]; then
		r=$(rate "$EVENTS" "$secs")
	else
		r=$(rate "$uniq" "$secs"); NOTE[$label]="timed out after ${DRAIN_TIMEOUT}s ($uniq of $EVENTS)"
	fi
	eval "${label}_S+=(\"$secs\"); ${label}_R+=(\"$r\"); ${label}_W+=(\"$wc\"); ${label}_K+=(\"$sc\"); ${label}_D+=(\"$dups\")"
	mt_log "  $label $mode: $secs s, $r events/s (worker CPU $wc s, sink CPU $sc s, $dups duplicates, last event at the sink after $tosink s)"
	setting autovacuum on
}

# one_floor LABEL PREFIX MODE: reset, load EVENTS rows, run the database-only
# floor over them; MODE as for one_drain.  Appends to LABEL_S, LABEL_R and
# LABEL_C (seconds, events/s, backend CPU seconds).  The floor is one
# backend and no HTTP: its burst/steady ratio is what the claim's own cost
# owes to statistics and hint bits, free of the sink's and the I/O thread's
# share of the two cores.
one_floor()
{
	local label=$1 prefix=$2 mode=$3 secs cpu left
	prepare_load "$prefix" "$mode"
	read -r secs cpu <<<"$(floor_run)"
	setting autovacuum on
	left=$(pending)
	if [ "$left" != 0 ]; then
		mt_log "  the floor timed out after ${DRAIN_TIMEOUT}s: $((EVENTS - left)) of $EVENTS events"
		NOTE[$label]="timed out after ${DRAIN_TIMEOUT}s ($((EVENTS - left)) of $EVENTS)"
	fi
	eval "${label}_S+=(\"$secs\"); ${label}_R+=(\"$(rate "$((EVENTS - left))" "$secs")\"); ${label}_C+=(\"$cpu\")"
	mt_log "  floor $mode: $secs s, $(rate "$((EVENTS - left))" "$secs") events/s (backend CPU $cpu s)"
}

# Warm-up: the worker connects, prepares its plans and does whatever its
# first cycle in a new cluster does, before anything is measured.
mt_log "warm-up: 1000 events"
reset_outbox
load_pending warm 1000
read -r _ _ _ warm_uniq _ <<<"$(drain 1000)"
[ "$warm_uniq" -ge 1000 ] || mt_die "the warm-up drain did not arrive ($warm_uniq of 1000)"
: >"$MT_WORKDIR/memory.txt"

declare -a A_S A_R A_W A_K A_D C_S C_R C_W C_K C_D D_S D_R D_W D_K D_D FL_S FL_R FL_C FS_S FS_R FS_C
declare -a CAP_R B_OFF B_ON B_RATIO PQ_P PQ_C

# --- a, c: burst drains, steady drains, floor, interleaved ----------------------
if want a || want c || want f; then
	for ((r = 1; r <= RUNS; r++)); do
		if want a || want c; then
			mt_log "run $r of $RUNS: burst drain of $EVENTS events (TRUNCATE, no statistics)"
			one_drain A a$r burst
		fi
		if want c; then
			mt_log "run $r of $RUNS: steady drain of $EVENTS events (after VACUUM ANALYZE)"
			one_drain C c$r steady
		fi
		mt_log "run $r of $RUNS: database-only floor over $EVENTS events (TRUNCATE, no statistics)"
		one_floor FL fl$r burst
		if want c; then
			mt_log "run $r of $RUNS: database-only floor over $EVENTS events (after VACUUM ANALYZE)"
			one_floor FS fs$r steady
		fi
	done
fi

# --- cap: the sink's own capacity with the worker's request body -----------------
if want cap; then
	[ -s "$SAMPLE" ] || { load_pending cap 1000; drain 1000 >/dev/null; }
	for ((r = 1; r <= RUNS; r++)); do
		sink POST /_reset >/dev/null
		read -r _ reqs _ evs _ secs <<<"$(SINK_TOKEN=$TOKEN "$SINK_BIN" load "$SINK_PORT" "$SAMPLE" 4 "$CAP_SECONDS")"
		got=$(sink GET /_stats | sink_field unique_events)
		[ "$got" -ge "$evs" ] || mt_die "the sink counted $got unique events of $evs sent"
		CAP_R+=("$(rate "$evs" "$secs")")
		mt_log "  sink capacity run $r: $reqs requests, ${CAP_R[-1]} events/s"
	done
	sample_events=$(grep -o '{"transaction_id":"' "$SAMPLE" | wc -l)
	sample_bytes=$(wc -c <"$SAMPLE")
fi

# --- d: the drain with HISTORY acknowledged rows retained --------------------------
if want d; then
	mt_log "generating $HISTORY acknowledged rows"
	setting autovacuum off
	reset_outbox
	t0=$(now)
	load_history "$HISTORY"
	hist_secs=$(sub "$(now)" "$t0")
	hist_size=$(bench_psql -At -c "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid)))
	    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	   WHERE n.nspname = 'public' AND c.relkind = 'r'
	     AND (c.relname LIKE 'metronome_outbox%' OR c.relname LIKE 'metronome_queue%')")
	bench_psql -c "CHECKPOINT" >/dev/null
	mt_log "  $HISTORY rows in $hist_secs s ($hist_size)"
	for ((r = 1; r <= RUNS; r++)); do
		mt_log "run $r of $RUNS: drain of $EVENTS events with $HISTORY acknowledged rows retained"
		setting autovacuum off
		load_pending d$r "$EVENTS"
		bench_psql -c "CHECKPOINT" >/dev/null
		read -r secs wc sc uniq dups tosink <<<"$(drain "$EVENTS")"
		if [ "$uniq" -ge "$EVENTS" ]; then r_=$(rate "$EVENTS" "$secs")
		else r_=$(rate "$uniq" "$secs"); NOTE[D]="timed out after ${DRAIN_TIMEOUT}s ($uniq of $EVENTS)"; fi
		D_S+=("$secs"); D_R+=("$r_"); D_W+=("$wc"); D_K+=("$sc"); D_D+=("$dups")
		mt_log "  $secs s, $r_ events/s (worker CPU $wc s)"
		# what is drained joins the history; keep the history at HISTORY rows
		# only where the design can do that cheaply: here it grows
	done
	setting autovacuum on
fi

# --- b: end to end, four sessions of 500-event batches --------------------------------
loaders()
{
	# loaders CLIENT_ARGS...: pgbench with the 500-event batches
	pgbench -n -c 4 -j 4 -f "$MT_WORKDIR/load.sql" "$@" >"$MT_WORKDIR/pgbench.out" 2>&1
}
if want b; then
	per_client=$((LOAD / 500 / 4))
	for ((r = 1; r <= RUNS; r++)); do
		mt_log "run $r of $RUNS: $LOAD events by 4 sessions, shipping off"
		setting metronome.enabled off
		reset_outbox
		bench_psql -c "CHECKPOINT" >/dev/null
		t0=$(now)
		loaders -t "$per_client" || mt_die "pgbench failed: $(tail -5 "$MT_WORKDIR/pgbench.out")"
		off=$(sub "$(now)" "$t0")
		n=$(bench_psql -At -c "SELECT count(*) FROM metronome_outbox")
		[ "$n" -eq "$LOAD" ] || mt_die "(b) mapped $n of $LOAD events"

		mt_log "run $r of $RUNS: $LOAD events by 4 sessions, the worker shipping"
		reset_outbox
		bench_psql -c "CHECKPOINT" >/dev/null
		sink POST /_reset >/dev/null
		setting metronome.enabled on
		sleep 0.5
		w=$(worker_pid); c0=$(cpu_of "$w")
		t0=$(now)
		loaders -t "$per_client" || mt_die "pgbench failed: $(tail -5 "$MT_WORKDIR/pgbench.out")"
		loaded=$(sub "$(now)" "$t0")
		read -r on tosink uniq dups <<<"$(wait_acked "$LOAD" "$t0" "$DRAIN_TIMEOUT")"
		c1=$(cpu_of "$w")
		setting metronome.enabled off
		[ "$uniq" -ge "$LOAD" ] || NOTE[B]="timed out after ${DRAIN_TIMEOUT}s ($uniq of $LOAD)"
		B_OFF+=("$off"); B_ON+=("$on"); B_RATIO+=("$(bench_ratio "$on" "$off")")
		mt_log "  off $off s; on: loaded in $loaded s, all at the sink after $tosink s, acknowledged after $on s (ratio ${B_RATIO[-1]}, worker CPU $(echo "$c0 $c1" | awk '{ printf "%.2f", ($2 - $1) / 100 }') s, $dups duplicates)"
	done
fi

# --- e: commit-to-sink latency, alone and under the load of (b) ------------------------
# latency_send TAG: K single events into segment_events, 10 ms apart,
# their commit times into bench_commits.  latency_collect TAG: waits (30 s
# at most) for them at the sink and prints "p50 p99 max n" in ms (n: how
# many arrived).
latency_send()
{
	local tag=$1
	bench_psql -c "TRUNCATE bench_commits" >/dev/null
	bench_psql <<SQL >/dev/null
DO \$\$
DECLARE
    t float8[] := '{}';
    e jsonb := (SELECT event FROM staging500 WHERE i = 1);
BEGIN
    FOR i IN 1..$LATENCY LOOP
        INSERT INTO segment_events (event)
        VALUES (e || jsonb_build_object('messageId', 'lat-$tag-' || i));
        COMMIT;
        t := t || extract(epoch FROM clock_timestamp())::float8;
        PERFORM pg_sleep(0.01);
    END LOOP;
    INSERT INTO bench_commits SELECT 'lat-$tag-' || i, t[i] FROM generate_series(1, $LATENCY) i;
END
\$\$;
SQL
}
latency_collect()
{
	local tag=$1 k
	for k in $(seq 300); do
		[ "$(sink GET /_arrivals | grep -c "^lat-$tag-")" -ge "$LATENCY" ] && break
		sleep 0.1
	done
	bench_psql -At -F ' ' -c "SELECT transaction_id, committed_at FROM bench_commits" >"$MT_WORKDIR/commits.txt"
	sink GET /_arrivals >"$MT_WORKDIR/arrivals.txt"
	python3 - "$MT_WORKDIR/commits.txt" "$MT_WORKDIR/arrivals.txt" <<'PY'
import sys
commits = dict((a, float(b)) for a, b in (l.split() for l in open(sys.argv[1]) if l.strip()))
got = dict((a, float(b)) for a, b in (l.split() for l in open(sys.argv[2]) if l.strip()))
lat = sorted((got[k] - v) * 1000 for k, v in commits.items() if k in got)
if not lat:
    print("nan nan nan 0")
else:
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print("%.2f %.2f %.1f %d" % (pick(0.50), pick(0.99), lat[-1], len(lat)))
PY
}
declare -a E_ALONE E_LOAD E_LOADN
if want e; then
	for ((r = 1; r <= RUNS; r++)); do
		mt_log "run $r of $RUNS: latency over $LATENCY single events, alone"
		reset_outbox
		setting metronome.enabled on
		sleep 0.5
		sink POST /_reset >/dev/null
		latency_send a$r
		E_ALONE+=("$(latency_collect a$r)")
		mt_log "  p50 p99 max n: ${E_ALONE[-1]}"

		mt_log "run $r of $RUNS: latency over $LATENCY single events, under the load of (b)"
		reset_outbox
		sink POST /_reset >/dev/null
		pgbench -n -c 4 -j 4 -f "$MT_WORKDIR/load.sql" -T 600 >"$MT_WORKDIR/pgbench_e.out" 2>&1 &
		lpid=$!
		sleep 1
		latency_send l$r
		kill -TERM "$lpid" 2>/dev/null || true
		wait "$lpid" 2>/dev/null || true
		E_LOAD+=("$(latency_collect l$r)")
		mapped=$(bench_psql -At -c "SELECT count(*) FROM metronome_outbox WHERE transaction_id LIKE 'e2e-%'")
		mt_log "  p50 p99 max n: ${E_LOAD[-1]} (with $mapped events of the loaders)"
		E_LOADN+=("$mapped")
		setting metronome.enabled off
	done
fi

# --- f: PgQ side by side ------------------------------------------------------------
if want f; then
	bench_psql -c "CREATE EXTENSION pgq" >/dev/null || mt_die "CREATE EXTENSION pgq failed (postgresql-$PG_MAJOR-pgq3)"
	pgq_version=$(bench_psql -At -c "SELECT extversion FROM pg_extension WHERE extname = 'pgq'")
	for ((r = 1; r <= RUNS; r++)); do
		mt_log "run $r of $RUNS: PgQ, $EVENTS events"
		bench_psql -c "SELECT pgq.create_queue('bench$r')" -c "SELECT pgq.register_consumer('bench$r', 'c')" >/dev/null
		bench_psql -c "CHECKPOINT" >/dev/null
		t0=$(now)
		bench_psql <<SQL >/dev/null
DO \$\$
BEGIN
    FOR b IN 0 .. ($EVENTS / 1000) - 1 LOOP
        PERFORM pgq.insert_event('bench$r', 'api_call',
                   jsonb_build_object('transaction_id', 'pq$r-' || g || '-' || md5(g::text),
                       'customer_id', 'org-' || (g % 500), 'event_type', 'api_call',
                       'timestamp', now() - interval '1 hour' + g * interval '1 ms',
                       'properties', jsonb_build_object('endpoint', '/v1/search', 'method', 'POST',
                           'status', 200, 'tokens', g % 4000, 'latency_ms', (g * 7) % 900,
                           'region', 'us-east-1', 'model', 'large-v2',
                           'request_id', md5('r' || g)))::text)
          FROM generate_series(b * 1000 + 1, b * 1000 + 1000) g;
        COMMIT;
        PERFORM pgq.ticker('bench$r');
        COMMIT;
    END LOOP;
END
\$\$;
SQL
		prod=$(sub "$(now)" "$t0")
		bench_psql -c "CHECKPOINT" >/dev/null
		t0=$(now)
		got=$(bench_psql -At <<SQL
SET synchronous_commit = off;
CREATE TEMP TABLE got (n bigint);
DO \$\$
DECLARE
    bid bigint;
    n bigint := 0;
    k bigint;
    bytes bigint;
    idle int := 0;
BEGIN
    LOOP
        bid := pgq.next_batch('bench$r', 'c');
        IF bid IS NULL THEN
            EXIT WHEN n >= $EVENTS OR idle > 50;
            idle := idle + 1;
            PERFORM pgq.ticker('bench$r');
            COMMIT;
            PERFORM pg_sleep(0.1);
            CONTINUE;
        END IF;
        SELECT count(*), sum(length(ev_data)) INTO k, bytes FROM pgq.get_batch_events(bid);
        n := n + k;
        PERFORM pgq.finish_batch(bid);
        COMMIT;
    END LOOP;
    INSERT INTO got VALUES (n);
END
\$\$;
SELECT n FROM got;
SQL
)
		cons=$(sub "$(now)" "$t0")
		[ "$got" -ge "$EVENTS" ] || mt_die "the PgQ consumer got $got of $EVENTS events"
		PQ_P+=("$(rate "$EVENTS" "$prod")"); PQ_C+=("$(rate "$EVENTS" "$cons")")
		mt_log "  producer $prod s (${PQ_P[-1]} events/s), consumer $cons s (${PQ_C[-1]} events/s)"
		bench_psql -c "SELECT pgq.unregister_consumer('bench$r', 'c')" -c "SELECT pgq.drop_queue('bench$r')" >/dev/null
	done
fi

# --- r: retention by TRUNCATE of whole segments ----------------------------------------
# outbox_size: bytes of every table of the outbox's storage, with indexes
# and TOAST
outbox_size()
{
	bench_psql -At -c "SELECT sum(pg_total_relation_size(c.oid))
	    FROM pg_class c WHERE c.relkind IN ('r', 'p')
	     AND c.relname ~ '^metronome_(queue|queue_[0-9]+|outbox_state|delivery|ticks|outbox)$'"
}
R_SIZES=()
R_CLEAN=()
R_DEL=()
if want r; then
	[ "$QUEUE" = t ] || mt_die "case r needs the 0.2.0 layout"
	setting autovacuum off
	reset_outbox
	setting metronome.retain_sent 2s
	setting metronome.enabled on
	for ((k = 1; k <= ROUNDS; k++)); do
		sink POST /_reset >/dev/null
		load_pending "rt$k" "$EVENTS"
		res=$(wait_acked "$EVENTS" "$(now)" "$DRAIN_TIMEOUT")
		read -r _ _ uniq _ <<<"$res"
		[ "$uniq" -ge "$EVENTS" ] || mt_die "round $k: $uniq of $EVENTS events arrived"
		# the size with this round's rows acknowledged but still retained
		R_SIZES+=("$(outbox_size)")
		# past retain_sent and the worker's clean-up interval: the segments
		# that hold only acknowledged rows older than that are truncated
		sleep 5
		R_CLEAN+=("$(outbox_size)")
		R_DEL+=("$(bench_psql -At -c "SELECT coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables WHERE relname ~ '^metronome_queue'")")
		mt_log "  round $k: outbox storage ${R_SIZES[-1]} bytes after the drain, ${R_CLEAN[-1]} after the clean-up; rows deleted from the queue so far ${R_DEL[-1]}"
	done
	setting metronome.enabled off
	setting metronome.retain_sent 7d
	setting autovacuum on
fi

# --- report ------------------------------------------------------------------------
design=$(bench_psql -At -c "SELECT CASE c.relkind WHEN 'v' THEN 'view over the queue storage' ELSE 'table (0.1.0 layout)' END
    FROM pg_class c WHERE c.relname = 'metronome_outbox'")
ver=$(bench_psql -At -c "SELECT extversion FROM pg_extension WHERE extname = 'metronome'")
med() { [ $# -gt 0 ] && median "$@" || echo n/a; }
spr() { [ $# -gt 0 ] && spread "$@" || echo n/a; }
cat <<EOF

delivery benchmark: metronome $ver, outbox: $design
  $(nproc) cores, PostgreSQL $PG_MAJOR, sink on 127.0.0.1; batch_size 100, max_inflight 4 (defaults)
  $RUNS runs per case, interleaved; median and [spread over runs]; load average now $(cut -d' ' -f1-3 /proc/loadavg)
EOF
fa=$(med "${FL_R[@]}")
if want a; then
	aa=$(med "${A_R[@]}")
	cat <<EOF

(a) drain of $EVENTS pending events (TRUNCATE, no statistics), worker to the sink
    drain      $aa events/s  [$(spr "${A_R[@]}")]  seconds ${A_S[*]}  ${NOTE[A]:-}
    floor      $fa events/s  [$(spr "${FL_R[@]}")]  seconds ${FL_S[*]}  (database only, same design) ${NOTE[FL]:-}
    drain/floor = $(bench_ratio "$aa" "$fa")   (target: at least 0.8)
    drain       = $aa events/s   (target: at least 100000)
    CPU seconds: worker ${A_W[*]}; sink ${A_K[*]}; floor backend ${FL_C[*]}; duplicates at the sink ${A_D[*]}
    sink capacity (load generator, 4 connections, the worker's body of $sample_events events, $sample_bytes bytes):
               $(med "${CAP_R[@]}") events/s  [$(spr "${CAP_R[@]}")]
    sink/drain  = $(bench_ratio "$(med "${CAP_R[@]}")" "$aa")   (must be at least 3)
    worker memory (RssAnon, kB) after each drain (pid kB events): $(tr '\n' ';' <"$MT_WORKDIR/memory.txt")
EOF
fi
if want b; then
	cat <<EOF

(b) end to end: $LOAD events, 4 sessions committing 500-event batches into segment_events
    shipping off: $(med "${B_OFF[@]}") s  [$(spr "${B_OFF[@]}")]  ($(rate "$LOAD" "$(med "${B_OFF[@]}")") events/s mapped)
    shipping on, until every event is acknowledged: $(med "${B_ON[@]}") s  [$(spr "${B_ON[@]}")]  ${NOTE[B]:-}
    on/off = $(med "${B_RATIO[@]}")  [$(spr "${B_RATIO[@]}")]   (target: at most 1.3)
EOF
fi
if want c; then
	ca=$(med "${C_R[@]}")
	cat <<EOF

(c) burst after TRUNCATE with no ANALYZE against the steady state
    burst      $(med "${A_R[@]}") events/s  [$(spr "${A_R[@]}")]
    steady     $ca events/s  [$(spr "${C_R[@]}")]  seconds ${C_S[*]}  ${NOTE[C]:-} ($STEADY before)
    burst/steady = $(bench_ratio "$(med "${A_R[@]}")" "$ca")   (target: at least 0.90)
    per run    $(for ((i = 0; i < ${#C_R[@]}; i++)); do printf '%s ' "$(bench_ratio "${A_R[$i]}" "${C_R[$i]}")"; done)
    database-only floor, the same two loads (one backend, no HTTP):
    floor burst  $(med "${FL_R[@]}") events/s  [$(spr "${FL_R[@]}")]  backend CPU ${FL_C[*]}
    floor steady $(med "${FS_R[@]}") events/s  [$(spr "${FS_R[@]}")]  backend CPU ${FS_C[*]}  ${NOTE[FS]:-}
    floor burst/steady = $(bench_ratio "$(med "${FL_R[@]}")" "$(med "${FS_R[@]}")")
EOF
fi
if want d; then
	da=$(med "${D_R[@]}")
	cat <<EOF

(d) drain with $HISTORY acknowledged rows retained (generated in $hist_secs s, $hist_size)
    with history    $da events/s  [$(spr "${D_R[@]}")]  seconds ${D_S[*]}  ${NOTE[D]:-}
    without (a)     $(med "${A_R[@]}") events/s
    with/without = $(bench_ratio "$da" "$(med "${A_R[@]}")")   (target: at least 0.90)
    with/steady drain of (c) = $(bench_ratio "$da" "$(med "${C_R[@]}")")
EOF
fi
if want e; then
	cat <<EOF

(e) commit-to-sink latency, $LATENCY single events 10 ms apart into segment_events (p50 p99 max ms, n)
EOF
	for ((r = 0; r < ${#E_ALONE[@]}; r++)); do
		echo "    run $((r + 1)): alone ${E_ALONE[$r]}   under the load of (b) ${E_LOAD[$r]} (${E_LOADN[$r]} loader events meanwhile)"
	done
	echo "    (targets: p50 at most 5 ms, p99 at most 50 ms)"
fi
if want f; then
	pc=$(med "${PQ_C[@]}")
	cat <<EOF

(f) PgQ $pgq_version side by side, $EVENTS events, no HTTP
    PgQ producer (insert_event, 1000 per transaction + tick)   $(med "${PQ_P[@]}") events/s  [$(spr "${PQ_P[@]}")]
    PgQ consumer (next_batch, get_batch_events, finish_batch)  $pc events/s  [$(spr "${PQ_C[@]}")]
    our floor                                                  $fa events/s  [$(spr "${FL_R[@]}")]
    floor/PgQ consumer = $(bench_ratio "$fa" "$pc")   (target: at least 1)
EOF
fi
if want r; then
	maxr=$(printf '%s\n' "${R_SIZES[@]}" | sort -g | tail -1)
	cat <<EOF

(r) retention: $ROUNDS rounds of $EVENTS events, retain_sent 2s, autovacuum off
    outbox storage after each round's drain (MB): $(printf '%s\n' "${R_SIZES[@]}" | awk '{ printf "%.1f ", $1 / 1048576 }')
    and after the clean-up that follows (MB):      $(printf '%s\n' "${R_CLEAN[@]}" | awk '{ printf "%.1f ", $1 / 1048576 }')
    largest/after the first = $(bench_ratio "$maxr" "${R_SIZES[0]}")   (target: at most 1.2)
    rows DELETEd from the queue: ${R_DEL[-1]} (retention truncates whole segments)
EOF
fi
