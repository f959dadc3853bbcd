#!/usr/bin/env bash
# test/bench/ship.sh: how fast the delivery worker ships the outbox.
#
# Usage: test/bench/ship.sh [--events N] [--sent M] [--latency L]
#                           [--memory K] [--segment S] [--runs R]
#
# A throwaway server with the library preloaded ships to the mock Metronome
# (test/mock_metronome.py) on 127.0.0.1.  It measures, in one run:
#   (a) drain: N (200,000) pending rows shipped by the worker, events/s from
#       the moment shipping is enabled to the last row's sent_at;
#   (b) floor: the same claim and mark-sent cycle with no HTTP at all
#       (metronome_ship_floor, the worker's own code in dry-run mode, one
#       transaction per cycle as the worker), events/s, and the ratio a/b;
#   (c) the drain of (a) with M (1,000,000) sent rows already in the table:
#       the partial index keeps the claim's cost flat (ratio c/a);
#   (d) latency from an INSERT's commit to the mock's receipt, over L
#       (1,000) single events committed 10 ms apart: p50, p99, max;
#   (e) the worker's memory before and after shipping K (1,000,000) events
#       (RssAnon: its private memory; VmRSS also counts the shared buffers
#       it has touched);
#   (f) Segment's way: one event per request (batch_size = 1), S (20,000)
#       events, events/s and the ratio to (a).
# (a) and (b) run R (3) times, interleaved; the medians are reported.  The
# CPU seconds the worker and the mock used are printed too: on a shared
# machine they say more than wall-clock time.  Figures, not assertions.
# Runs as root or not (as root it re-runs itself as an unprivileged user);
# needs no network beyond 127.0.0.1.

set -euo pipefail
BENCH_SCRIPT=test/bench/ship.sh
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

EVENTS=200000
SENT=1000000
LATENCY=1000
MEMORY=1000000
SEGMENT=20000
RUNS=3
ARGS=("$@")
while [ $# -gt 0 ]; do
	case "$1" in
		--events) EVENTS=$2; shift 2 ;;
		--sent) SENT=$2; shift 2 ;;
		--latency) LATENCY=$2; shift 2 ;;
		--memory) MEMORY=$2; shift 2 ;;
		--segment) SEGMENT=$2; shift 2 ;;
		--runs) RUNS=$2; shift 2 ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) mt_die "unknown argument $1" ;;
	esac
done
bench_setup "${ARGS[@]}"

# The mock Metronome.
TOKEN=bench-token-$$
python3 "$MT_SRC/test/mock_metronome.py" --port 0 --token "$TOKEN" --max-recorded 3000 \
	>"$MT_WORKDIR/mock.out" 2>"$MT_WORKDIR/mock.err" &
BENCH_MOCK_PID=$!
for _ in $(seq 100); do
	MOCK_PORT=$(sed -n 's/^PORT //p' "$MT_WORKDIR/mock.out")
	[ -n "$MOCK_PORT" ] && break
	sleep 0.1
done
[ -n "$MOCK_PORT" ] || mt_die "the mock did not start: $(cat "$MT_WORKDIR/mock.err")"
MOCK=http://127.0.0.1:$MOCK_PORT

bench_start_cluster \
	"shared_preload_libraries = 'metronome'" \
	"metronome.ingest_url = '$MOCK/v1/ingest'" \
	"metronome.api_token = '$TOKEN'" \
	"metronome.enabled = off" \
	"metronome.retain_sent = -1"

bench_psql <<'SQL'
CREATE EXTENSION metronome;
-- the worker's cycle in dry-run mode: claim and mark sent, no HTTP
CREATE FUNCTION bench_ship_floor(integer) RETURNS bigint
    AS '$libdir/metronome', 'metronome_ship_floor' LANGUAGE C;
SQL

mock() { curl -s -X "$1" "$MOCK$2"; }
setting()
{
	bench_psql -c "ALTER SYSTEM SET $1 = '$2'" -c "SELECT pg_reload_conf()" >/dev/null
}
worker_pid()
{
	bench_psql -At -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'metronome delivery'"
}
cpu_of() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now() { bench_psql -At -c "SELECT extract(epoch FROM clock_timestamp())"; }

# load PREFIX N [STATUS]: N outbox rows of realistic size (about 200 bytes
# of properties)
load()
{
	local status=${3:-pending}
	bench_psql -c "
	INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\",
	                              properties, status, sent_at)
	SELECT '$1-' || g || '-' || md5(g::text), 'org-' || (g % 500), 'api_call',
	       now() - interval '1 hour' + g * interval '1 ms',
	       jsonb_build_object('endpoint', '/v1/search', 'method', 'POST', 'status', 200,
	                          'tokens', g % 4000, 'latency_ms', (g * 7) % 900,
	                          'region', 'us-east-1', 'model', 'large-v2',
	                          'request_id', md5('r' || g)),
	       '$status', CASE WHEN '$status' = 'sent' THEN now() END
	  FROM generate_series(1, $2) g" >/dev/null
}
prepare() { bench_psql -c "VACUUM ANALYZE metronome_outbox" -c "CHECKPOINT" >/dev/null; }
pending() { bench_psql -At -c "SELECT count(*) FROM metronome_outbox WHERE status = 'pending'"; }

# drain N: enable the worker, wait until nothing is pending, disable it.
# Prints "seconds worker_cpu mock_cpu".
drain()
{
	local n=$1 w t0 t1 c0 c1 m0 m1
	w=$(worker_pid)
	mock POST /_reset >/dev/null
	c0=$(cpu_of "$w"); m0=$(cpu_of "$BENCH_MOCK_PID")
	t0=$(now)
	setting metronome.enabled on
	while [ "$(pending)" != 0 ]; do sleep 0.2; done
	t1=$(bench_psql -At -c "SELECT extract(epoch FROM max(sent_at)) FROM metronome_outbox")
	c1=$(cpu_of "$w"); m1=$(cpu_of "$BENCH_MOCK_PID")
	setting metronome.enabled off
	local got
	got=$(mock GET /_stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["unique_events"])')
	[ "$got" -ge "$n" ] || mt_die "the mock received $got of $n events"
	echo "$t0 $t1 $c0 $c1 $m0 $m1" |
		awk '{ printf "%.3f %.2f %.2f", $2 - $1, ($4 - $3) / 100, ($6 - $5) / 100 }'
}

# floor N: the claim/mark-sent loop without HTTP, one transaction per cycle,
# asynchronous commit like the worker.  Prints "seconds backend_cpu".
floor_run()
{
	bench_psql -At <<'SQL' | tail -n1
SELECT pg_backend_pid() AS pid \gset
\setenv BENCH_BACKEND :pid
SET synchronous_commit = off;
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
\! awk '{ print $14 + $15 }' /proc/$BENCH_BACKEND/stat > "$PGHOST/floor_cpu0"
DO $$ BEGIN LOOP EXIT WHEN bench_ship_floor(NULL) = 0; COMMIT; END LOOP; END $$;
\! awk '{ print $14 + $15 }' /proc/$BENCH_BACKEND/stat > "$PGHOST/floor_cpu1"
\set QUIET on
SELECT extract(epoch FROM clock_timestamp()) - :t0;
SQL
}

rate() { echo "$1 $2" | awk '{ printf "%.0f", $1 / $2 }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# (a) and (b), interleaved
declare -a DA DB CA CB MA
for ((r = 1; r <= RUNS; r++)); do
	mt_log "run $r of $RUNS: drain of $EVENTS events"
	bench_psql -c "TRUNCATE metronome_outbox" >/dev/null
	load a$r "$EVENTS"; prepare
	read -r s wc mc <<<"$(drain "$EVENTS")"
	DA+=("$s"); CA+=("$wc"); MA+=("$mc")
	mt_log "run $r of $RUNS: floor"
	bench_psql -c "TRUNCATE metronome_outbox" >/dev/null
	load b$r "$EVENTS"; prepare
	s=$(floor_run)
	[ "$(pending)" = 0 ] || mt_die "the floor left rows pending"
	DB+=("$s")
	CB+=("$(echo "$(cat "$PGHOST/floor_cpu0") $(cat "$PGHOST/floor_cpu1")" | awk '{ printf "%.2f", ($2 - $1) / 100 }')")
done
ta=$(median "${DA[@]}"); tb=$(median "${DB[@]}")
ra=$(rate "$EVENTS" "$ta"); rb=$(rate "$EVENTS" "$tb")

# (c) with 1,000,000 sent rows in the table
mt_log "drain of $EVENTS events with $SENT sent rows in the table"
bench_psql -c "TRUNCATE metronome_outbox" >/dev/null
load old "$SENT" sent
load c "$EVENTS"; prepare
claim_plan=$(bench_psql -At -c "EXPLAIN (COSTS OFF) SELECT id FROM metronome_outbox
	WHERE status = 'pending' AND next_attempt_at <= now()
	  AND (next_attempt_at, id) > ('-infinity', 0)
	ORDER BY next_attempt_at, id LIMIT 3200 FOR UPDATE SKIP LOCKED" | grep -o 'Index Scan using [a-z_]*' || true)
read -r tc wcc mcc <<<"$(drain "$EVENTS")"
rc=$(rate "$EVENTS" "$tc")

# (d) latency from commit to the mock
mt_log "latency over $LATENCY single events"
bench_psql -c "TRUNCATE metronome_outbox" >/dev/null
setting metronome.enabled on
sleep 1
mock POST /_reset >/dev/null
bench_psql <<SQL >/dev/null
CREATE TABLE bench_commits (transaction_id text, committed_at float8);
DO \$\$
DECLARE
    t float8[] := '{}';
BEGIN
    FOR i IN 1..$LATENCY LOOP
        INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
        VALUES ('lat-' || i, 'org-1', 'api_call', now());
        COMMIT;
        t := t || extract(epoch FROM clock_timestamp())::float8;
        PERFORM pg_sleep(0.01);
    END LOOP;
    INSERT INTO bench_commits SELECT 'lat-' || i, t[i] FROM generate_series(1, $LATENCY) i;
END
\$\$;
SQL
for _ in $(seq 100); do [ "$(pending)" = 0 ] && break; sleep 0.1; done
bench_psql -At -F ' ' -c "SELECT transaction_id, committed_at FROM bench_commits" >"$MT_WORKDIR/commits.txt"
mock GET /_requests >"$MT_WORKDIR/requests.json"
read -r p50 p99 pmax nlat <<<"$(python3 - "$MT_WORKDIR/commits.txt" "$MT_WORKDIR/requests.json" <<'PY'
import datetime, json, sys
commits = dict((a, float(b)) for a, b in (l.split() for l in open(sys.argv[1]) if l.strip()))
got = {}
for r in json.load(open(sys.argv[2])):
    if r["status"] != 200:
        continue
    t = datetime.datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    for ev in json.loads(r["body"]):
        got.setdefault(ev["transaction_id"], t)
lat = sorted((got[k] - v) * 1000 for k, v in commits.items() if k in got)
if not lat:
    print("nan nan nan 0")
else:
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print("%.1f %.1f %.1f %d" % (pick(0.50), pick(0.99), lat[-1], len(lat)))
PY
)"
bench_psql -c "DROP TABLE bench_commits" >/dev/null
setting metronome.enabled off

# (e) the worker's memory over 1,000,000 events
mt_log "memory over $MEMORY events"
w=$(worker_pid)
mem() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
anon0=$(mem "$w" RssAnon); rss0=$(mem "$w" VmRSS)
bench_psql -c "TRUNCATE metronome_outbox" >/dev/null
load m "$MEMORY"; prepare
read -r tm _ _ <<<"$(drain "$MEMORY")"
[ "$(worker_pid)" = "$w" ] || mt_die "the worker restarted during the memory run"
anon1=$(mem "$w" RssAnon); rss1=$(mem "$w" VmRSS)

# (f) Segment's way: one event per request
mt_log "one event per request, $SEGMENT events"
setting metronome.batch_size 1
bench_psql -c "TRUNCATE metronome_outbox" >/dev/null
load s "$SEGMENT"; prepare
read -r tf _ _ <<<"$(drain "$SEGMENT")"
rf=$(rate "$SEGMENT" "$tf")
setting metronome.batch_size 100

cat <<EOF

shipping benchmark ($(nproc) cores, PostgreSQL $PG_MAJOR, mock Metronome on loopback)
  batch_size 100, max_inflight 4 (defaults); medians of $RUNS interleaved runs

                                                            seconds   events/s
  (a) drain of $EVENTS pending rows by the worker          $(printf '%8.3f  %9s' "$ta" "$ra")
  (b) floor: same claim + mark-sent cycle, no HTTP          $(printf '%8.3f  %9s' "$tb" "$rb")
  (c) drain (a) with $SENT sent rows in the table       $(printf '%8.3f  %9s' "$tc" "$rc")
  (f) Segment's way: one event per request ($SEGMENT events)   $(printf '%8.3f  %9s' "$tf" "$rf")
  runs (a): ${DA[*]}   (b): ${DB[*]}
  CPU seconds, worker in (a): ${CA[*]}   mock in (a): ${MA[*]}   backend in (b): ${CB[*]}
  worker CPU in (c): $wcc s; claim plan: ${claim_plan:-?}

  a/b = $(bench_ratio "$ra" "$rb")   (target: at least 0.6)
  a   = $ra events/s           (target: at least 50000)
  c/a = $(bench_ratio "$rc" "$ra")   (target: within 10%, 0.90 or more)
  a/f = $(bench_ratio "$ra" "$rf")   (batching against one event per request)

  (d) commit-to-mock latency over $nlat events 10 ms apart:
      p50 $p50 ms, p99 $p99 ms, max $pmax ms   (targets: p50 <= 20 ms, p99 <= 100 ms)
  (e) worker memory over $MEMORY events (drained in ${tm} s):
      RssAnon ${anon0} kB -> ${anon1} kB (growth $(( (anon1 - anon0) )) kB; target < 20480 kB)
      VmRSS   ${rss0} kB -> ${rss1} kB (includes shared buffers it touched)
EOF
