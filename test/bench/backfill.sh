#!/usr/bin/env bash
# test/bench/backfill.sh: what a backfill costs, and that it stays small.
#
# Usage: test/bench/backfill.sh [--events N] [--batch B]
#
# Inserts N (1,000,000) Segment track events of about 0.5 KB into
# segment_events twice, measured in the same run:
#   (a) baseline: with the mapping enabled, so the trigger maps them at
#       INSERT (one INSERT ... SELECT);
#   (b) with no mapping, then CALL metronome_backfill() of that mapping in
#       batches of B (10,000), committing after each.
# Prints the events per second of each, the ratio b/a, how many
# transactions the backfill committed, and the backfilling backend's
# largest anonymous memory (RssAnon, sampled every 0.2 s from /proc)
# against an idle backend's.  It asserts nothing.  Runs as root or not (as
# root it re-runs itself as an unprivileged user); needs no network.

set -euo pipefail
BENCH_SCRIPT=test/bench/backfill.sh
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

EVENTS=1000000
BATCH=10000
ARGS=("$@")
while [ $# -gt 0 ]; do
	case "$1" in
		--events) EVENTS=$2; shift 2 ;;
		--batch) BATCH=$2; shift 2 ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) mt_die "unknown argument $1" ;;
	esac
done
bench_setup "${ARGS[@]}"
bench_start_cluster

EVENT_SQL="INSERT INTO segment_events (event)
SELECT jsonb_build_object('type', 'track', 'event', 'API Call', 'messageId', 'm-' || g,
       'timestamp', '2024-03-01T10:00:00Z', 'userId', 'user-' || (g % 1000),
       'context', jsonb_build_object('groupId', 'cust-' || (g % 100),
                                     'library', jsonb_build_object('name', 'analytics.js', 'version', '2.11.1'),
                                     'ip', '10.0.0.1', 'userAgent', repeat('x', 120)),
       'properties', jsonb_build_object('endpoint', '/v1/search', 'tokens', g % 5000, 'region', 'eu',
                                        'note', repeat('y', 150)))
  FROM generate_series(1, $EVENTS) g"

bench_psql -c "CREATE EXTENSION metronome"
bench_psql -c "INSERT INTO metronome_mappings (name) VALUES ('tracks')"

mt_log "(a) $EVENTS events mapped by the trigger at INSERT"
t_a=$(bench_time "$EVENT_SQL")
bench_psql -c "TRUNCATE segment_events, metronome_outbox"
bench_psql -c "VACUUM ANALYZE"
bench_psql -c "UPDATE metronome_mappings SET enabled = false"
bench_psql -c "$EVENT_SQL"
bench_psql -c "UPDATE metronome_mappings SET enabled = true; CHECKPOINT"

mt_log "(b) CALL metronome_backfill('tracks', batch_size => $BATCH)"
t0=$(date +%s.%N)
bench_psql -c "CALL metronome_backfill('tracks', batch_size => $BATCH)" 2>"$MT_WORKDIR/backfill.notices" &
call=$!
peak=0
pid=""
while kill -0 "$call" 2>/dev/null; do
	[ -n "$pid" ] || pid=$(bench_psql -At -c "SELECT pid FROM metronome_backfills WHERE finished_at IS NULL" 2>/dev/null || true)
	if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
		kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
		[ "${kb:-0}" -gt "$peak" ] && peak=$kb
	fi
	sleep 0.2
done
wait "$call" || { cat "$MT_WORKDIR/backfill.notices" >&2; mt_die "backfill failed"; }
t1=$(date +%s.%N)
t_b=$(echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }')
# a fresh backend's RssAnon, for comparison
bench_psql -c "SELECT pg_sleep(1.5)" >/dev/null &
sleeper=$!
sleep 0.7
p=$(bench_psql -At -c "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(1.5)' LIMIT 1")
idle_kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
wait "$sleeper"

tail -n 1 "$MT_WORKDIR/backfill.notices" | sed 's/^/  /'
rows=$(bench_psql -At -c "SELECT count(*) FROM metronome_outbox")
echo
echo "backfill of $EVENTS events in batches of $BATCH:"
printf '  (a) mapped by the trigger at INSERT: %8.0f events/s (%s s)\n' "$(echo "$EVENTS $t_a" | awk '{ print $1 / $2 }')" "$t_a"
printf '  (b) metronome_backfill:              %8.0f events/s (%s s), b/a time ratio %s\n' \
	"$(echo "$EVENTS $t_b" | awk '{ print $1 / $2 }')" "$t_b" "$(bench_ratio "$t_b" "$t_a")"
echo "  outbox rows after the backfill: $rows; transactions committed: $(( (EVENTS + BATCH - 1) / BATCH + 2 ))"
echo "  backfilling backend's largest RssAnon: $(( peak / 1024 )) MB (a fresh backend: $(( ${idle_kb:-0} / 1024 )) MB)"
