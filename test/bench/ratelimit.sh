#!/usr/bin/env bash
# test/bench/ratelimit.sh: metronome.max_events_per_second against the
# arrival rate measured at the mock Metronome.
#
# Usage: test/bench/ratelimit.sh [--seconds S] [--rates "500 2000 10000 30000 0"] [--quick]
#
# A throwaway server (library preloaded, batch_size 100, max_inflight 4)
# ships to test/mock_metronome.py, which records the arrival time of every
# request (/_rates).  For each configured rate R (0 = no limit) the outbox
# gets about S (default 5) seconds' worth of events (at least 10,000;
# 50,000 with no limit) in one transaction, and the script prints R, the
# measured rate (events / time from the first to the last arrival), their
# ratio, and the most events that arrived within any one second.  Then the
# adaptive slowdown: no limit of ours, and the mock answering 429 without
# Retry-After above 2,000 events/s (its rate_limit fault): the delivered
# rate, its ratio to the account's limit, and the share of requests
# refused.  The mock (about 1,000-1,500 requests/s here) caps what the
# unlimited run can show.  It asserts nothing.  Runs as root or not (as
# root it re-runs itself as an unprivileged user); needs no network.

set -euo pipefail
BENCH_SCRIPT=test/bench/ratelimit.sh
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

SECONDS_EACH=5
RATES="500 2000 10000 30000 0"
ARGS=("$@")
while [ $# -gt 0 ]; do
	case "$1" in
		--seconds) SECONDS_EACH=$2; shift 2 ;;
		--rates) RATES=$2; shift 2 ;;
		--quick) SECONDS_EACH=2; RATES="2000 0"; shift ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) mt_die "unknown argument $1" ;;
	esac
done
bench_setup "${ARGS[@]}"

MOCK_PORT_FILE=$MT_WORKDIR/mock.port
rm -f "$MOCK_PORT_FILE"
python3 "$ROOT_DIR/test/mock_metronome.py" --port 0 --port-file "$MOCK_PORT_FILE" \
	--token bench-token --max-recorded 1 >/dev/null 2>"$MT_WORKDIR/mock.log" &
BENCH_MOCK_PID=$!
for _ in $(seq 100); do [ -s "$MOCK_PORT_FILE" ] && break; sleep 0.1; done
[ -s "$MOCK_PORT_FILE" ] || mt_die "the mock did not start"
MOCK="http://127.0.0.1:$(cat "$MOCK_PORT_FILE")"

bench_start_cluster "shared_preload_libraries = 'metronome'" \
	"metronome.database = 'postgres'" \
	"metronome.ingest_url = '$MOCK/v1/ingest'" \
	"metronome.api_token = 'bench-token'" \
	"metronome.batch_size = 100" \
	"metronome.max_inflight = 4" \
	"metronome.max_backoff = '1s'" \
	"metronome.retain_sent = -1"
bench_psql -c "CREATE EXTENSION metronome"

# mock METHOD PATH [BODY]: a control call; prints the JSON answer
mock()
{
	python3 - "$MOCK" "$@" <<'PY'
import json, sys, urllib.request
base, method, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(base + path, data=body, method=method)
print(urllib.request.urlopen(req, timeout=130).read().decode())
PY
}

# one_run N LABEL [FAULTS]: N events into the outbox (the mock reset, then
# given FAULTS), wait for them at the mock, print "events seconds rate
# max_in_1s requests refused"
one_run()
{
	local n=$1 label=$2 t0
	mock POST /_reset '{}' >/dev/null
	[ -n "${3:-}" ] && mock POST /_faults "$3" >/dev/null
	t0=$(date +%s.%N)
	bench_psql -c "INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\")
		SELECT '$label-' || g, 'bench', 'api_call', now() FROM generate_series(1, $n) g"
	mock GET "/_wait?unique_events=$n&timeout=120" >/dev/null
	mock GET "/_rates?since=$t0" | python3 -c '
import json, sys
r = json.load(sys.stdin)
d = (r["last"] or 0) - (r["first"] or 0)
refused = sum(b["by_status"].get("429", 0) for b in r["seconds"])
print(r["events"], "%.2f" % d, "%.0f" % (r["rate"] or 0), r["max_window_events"], r["requests"], refused)'
}

printf '%-14s %10s %9s %14s %8s %12s\n' "configured" "events" "seconds" "measured/s" "ratio" "most in 1 s"
run=0
for rate in $RATES; do
	run=$((run + 1))
	bench_psql -c "ALTER SYSTEM SET metronome.max_events_per_second = $rate" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 0.5
	if [ "$rate" -eq 0 ]; then n=50000; else n=$((rate * SECONDS_EACH)); [ "$n" -lt 10000 ] && n=10000; fi
	read -r events secs measured most _ _ < <(one_run "$n" "r$run")
	if [ "$rate" -eq 0 ]; then
		printf '%-14s %10d %9s %14s %8s %12d\n' "no limit" "$events" "$secs" "$measured" "-" "$most"
	else
		printf '%-14s %10d %9s %14s %8s %12d\n' "$rate" "$events" "$secs" "$measured" \
			"$(bench_ratio "$measured" "$rate")" "$most"
	fi
done

echo
echo "adaptive slowdown: no limit of ours, the mock refuses (429, no Retry-After) above 2000 events/s"
bench_psql -c "ALTER SYSTEM SET metronome.max_events_per_second = 0" -c "SELECT pg_reload_conf()" >/dev/null
n=$((2000 * SECONDS_EACH * 2)); [ "$n" -lt 10000 ] && n=10000
read -r events secs measured most requests refused < \
	<(one_run "$n" "aimd" '{"rate_limit": {"events_per_second": 2000}}')
printf '  %d events in %s s: %s events/s delivered = %s of the account limit; most in 1 s: %d; %d of %d requests refused (%s)\n' \
	"$events" "$secs" "$measured" "$(bench_ratio "$measured" 2000)" "$most" "$refused" "$requests" \
	"$(bench_ratio "$refused" "$requests")"
bench_psql -At -c "SELECT 'metronome_rate_limit(): slowdown ' || slowdown || ', rate ' || coalesce(round(slowdown_rate)::text, '-') || ', last refused at ' || coalesce(round(slowdown_peak)::text, '-') || ', slowdowns ' || slowdowns FROM metronome_rate_limit()"
