#!/usr/bin/env bash
# test/demo.sh: pg_metronome end to end, on a throwaway server, in one command.
#
# Usage: test/demo.sh [--keep]
#
#   --keep   leave the server and the mock Metronome running, and print how
#            to connect with psql and how to stop everything
#
# Started as root or as a plain user, from a clean clone.  It builds and
# installs the extension as test/run.sh does (packages, unprivileged user,
# private install: nothing goes into the system's directories), then:
#   1. starts the bundled mock Metronome (test/mock_metronome.py) on
#      127.0.0.1 with a demo token; nothing leaves the machine;
#   2. starts a throwaway server with shared_preload_libraries = 'metronome',
#      metronome.ingest_url at the mock and metronome.api_token = the token;
#   3. CREATE EXTENSION metronome, and the preset mapping:
#      INSERT INTO metronome_mappings (name) VALUES ('tracks');
#   4. inserts Segment events into segment_events: "API Call" track events
#      of two customers (context.groupId), an identify that no subscription
#      matches, and a track without context.groupId, which is rejected;
#   5. waits (at most 15 s) for the delivery worker to ship the outbox;
#   6. prints the outbox with its statuses, the rejected event and why, and
#      the JSON the mock received.
# Everything is stopped and removed on exit unless --keep is given.

set -uo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
. "$ROOT_DIR/test/lib/common.sh"

KEEP=0
ORIG_ARGS=("$@")
while [ $# -gt 0 ]; do
	case "$1" in
		--keep) KEEP=1; shift ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) mt_die "unknown argument $1 (usage: test/demo.sh [--keep])" ;;
	esac
done

DEMO_TOKEN=demo-token-3f9c2a
WAIT_SECONDS=15

mt_find_pg_config
mt_ensure_packages

# Root: run the demo as the unprivileged user, in a private copy of the tree.
if [ "$(id -u)" -eq 0 ]; then
	mt_ensure_user
	mt_new_workdir pg_metronome_demo
	MT_EXTRA_ENV="MT_FROM_ROOT=1" mt_run_as_user "$MT_SRC/test/demo.sh" "${ORIG_ARGS[@]}"
	rc=$?
	if [ "$KEEP" -eq 0 ] || [ "$rc" -ne 0 ]; then
		rm -rf "$MT_WORKDIR"
	fi
	exit $rc
fi

if [ -n "${MT_WORKDIR:-}" ] && [ "$ROOT_DIR" = "$MT_WORKDIR/src" ]; then
	MT_SRC=$ROOT_DIR
	OWN_WORKDIR=0
else
	mt_new_workdir pg_metronome_demo
	OWN_WORKDIR=1
fi
W=$MT_WORKDIR
DATA=$W/data
PGPORT_DEMO=5432		# the socket lives in $W: no clash with other servers
MOCK_PID=""
SERVER_STARTED=0
KEPT=0

cleanup()
{
	if [ "$KEPT" -eq 1 ]; then
		return
	fi
	if [ "$SERVER_STARTED" -eq 1 ]; then
		"$MT_TI_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1
	fi
	if [ -n "$MOCK_PID" ]; then
		kill "$MOCK_PID" 2>/dev/null
		wait "$MOCK_PID" 2>/dev/null
	fi
	if [ "$OWN_WORKDIR" -eq 1 ]; then
		rm -rf "$W"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

title() { printf '\n=== %s\n' "$*"; }

cd "$MT_SRC" || mt_die "cannot cd to $MT_SRC"
title "building and installing into $W/tmp_install"
mt_build || mt_die "build failed"
mt_install_tmp || mt_die "install failed"

# 1. the mock Metronome
[ -f test/mock_metronome.py ] || mt_die "test/mock_metronome.py is missing"
title "starting the mock Metronome (test/mock_metronome.py)"
setsid python3 test/mock_metronome.py --port 0 --token "$DEMO_TOKEN" \
	--log "$W/mock_requests.jsonl" >"$W/mock.out" 2>"$W/mock.log" </dev/null &
MOCK_PID=$!
MOCK_PORT=""
for _ in $(seq 1 100); do
	MOCK_PORT=$(sed -n 's/^PORT \([0-9][0-9]*\)$/\1/p' "$W/mock.out" 2>/dev/null | head -n1)
	[ -n "$MOCK_PORT" ] && break
	kill -0 "$MOCK_PID" 2>/dev/null || break
	sleep 0.1
done
[ -n "$MOCK_PORT" ] || { cat "$W/mock.log" >&2; mt_die "the mock did not start"; }
MOCK_URL=http://127.0.0.1:$MOCK_PORT
echo "mock Metronome on $MOCK_URL/v1/ingest (token $DEMO_TOKEN)"

# 2. the server
title "starting a throwaway PostgreSQL $PG_MAJOR with the library preloaded"
"$MT_TI_BIN/initdb" -D "$DATA" -U postgres --auth=trust --no-locale -E UTF8 \
	>"$W/initdb.log" 2>&1 || { cat "$W/initdb.log" >&2; mt_die "initdb failed"; }
cat >>"$DATA/postgresql.conf" <<EOF

# pg_metronome demo
listen_addresses = ''
unix_socket_directories = '$W'
port = $PGPORT_DEMO
shared_preload_libraries = 'metronome'
metronome.database = 'postgres'
metronome.ingest_url = '$MOCK_URL/v1/ingest'
metronome.api_token = '$DEMO_TOKEN'
EOF
grep -A8 '^# pg_metronome demo' "$DATA/postgresql.conf" | sed -n '2,$p' | grep metronome
"$MT_TI_BIN/pg_ctl" -D "$DATA" -l "$W/server.log" -w start >/dev/null \
	|| { tail -n 30 "$W/server.log" >&2; mt_die "the server did not start"; }
SERVER_STARTED=1

PSQL=("$MT_TI_BIN/psql" -X -h "$W" -p "$PGPORT_DEMO" -U postgres -d postgres -v ON_ERROR_STOP=1)
sql() { "${PSQL[@]}" -q "$@"; }

# 3. the extension and the preset mapping
title "CREATE EXTENSION metronome; the preset mapping"
sql -e <<'EOF' || mt_die "creating the extension failed (see $W/server.log)"
CREATE EXTENSION metronome;
INSERT INTO metronome_mappings (name) VALUES ('tracks');
EOF
sql -c "SELECT name, subscription, transaction_id, customer_id, \"timestamp\", event_type, properties FROM metronome_mappings" -x

# 4. Segment events
title "inserting Segment events into segment_events"
sql <<'EOF' || mt_die "inserting events failed"
-- Segment timestamps: ISO 8601, UTC, milliseconds
CREATE FUNCTION pg_temp.seg_ts(ago interval) RETURNS text LANGUAGE sql AS
$$ SELECT to_char((now() - ago) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

-- "API Call" track events of two customers: these bill
INSERT INTO segment_events (event)
SELECT jsonb_build_object(
         'type', 'track',
         'event', 'API Call',
         'messageId', 'ajs-next-' || msg,
         'userId', usr,
         'anonymousId', null,
         'timestamp', pg_temp.seg_ts(ago),
         'context', jsonb_build_object(
             'groupId', grp,
             'library', jsonb_build_object('name', 'analytics-node', 'version', '1.3.0'),
             'ip', '203.0.113.7'),
         'properties', jsonb_build_object(
             'endpoint', endpoint, 'method', method, 'status', status,
             'duration_ms', ms, 'region', 'eu-west-1'))
  FROM (VALUES
    ('2c4f8e1a90b7', 'user_8812', 'acme-corp',   '/v1/search',   'GET',  200, 83,  interval '9 min'),
    ('5d1e7a3c22f0', 'user_8812', 'acme-corp',   '/v1/search',   'GET',  200, 91,  interval '8 min'),
    ('8b3a6f0d4e19', 'user_1203', 'acme-corp',   '/v1/export',   'POST', 202, 1240, interval '6 min'),
    ('a7c0e5b91d3f', 'user_0457', 'globex-inc',  '/v1/search',   'GET',  200, 77,  interval '4 min'),
    ('f09d2b6c8e71', 'user_0457', 'globex-inc',  '/v1/invoices', 'GET',  404, 12,  interval '2 min')
  ) AS e(msg, usr, grp, endpoint, method, status, ms, ago);

-- an identify: no subscription matches it (the preset takes type = "track")
INSERT INTO segment_events (event) VALUES (jsonb_build_object(
    'type', 'identify',
    'messageId', 'ajs-next-91be04c3d7a2',
    'userId', 'user_8812',
    'timestamp', pg_temp.seg_ts('10 min'),
    'traits', jsonb_build_object('email', 'jane@acme.example', 'plan', 'enterprise'),
    'context', jsonb_build_object('groupId', 'acme-corp')));

-- a track without context.groupId: the customer is missing, it is rejected
INSERT INTO segment_events (event) VALUES (jsonb_build_object(
    'type', 'track',
    'event', 'API Call',
    'messageId', 'ajs-next-e4d8c1f6a035',
    'userId', 'user_9999',
    'timestamp', pg_temp.seg_ts('1 min'),
    'context', jsonb_build_object('library', jsonb_build_object('name', 'analytics-node')),
    'properties', jsonb_build_object('endpoint', '/v1/search', 'method', 'GET', 'status', 200)));
EOF
sql -c "SELECT id, event->>'type' AS type, event->>'event' AS event, event->>'messageId' AS message_id,
               event#>>'{context,groupId}' AS group_id
          FROM segment_events ORDER BY id"

# 5. shipping
title "waiting for the delivery worker (at most ${WAIT_SECONDS}s)"
worker=""
for _ in $(seq 1 30); do
	worker=$(sql -At -c "SELECT pid FROM pg_stat_activity WHERE backend_type ILIKE '%metronome%' LIMIT 1")
	[ -n "$worker" ] && break
	sleep 0.1
done
if [ -z "$worker" ]; then
	echo "no metronome worker in pg_stat_activity: the delivery worker is not"
	echo "built yet (or did not start, see $W/server.log); stopping after mapping."
	SHIPPED=0
else
	echo "worker pid $worker"
	pending=""
	deadline=$((SECONDS + WAIT_SECONDS))
	while [ $SECONDS -lt $deadline ]; do
		pending=$(sql -At -c "SELECT count(*) FROM metronome_outbox WHERE status = 'pending'")
		[ "$pending" = 0 ] && break
		sleep 0.2
	done
	if [ "$pending" = 0 ]; then
		echo "outbox drained"
	else
		echo "still $pending pending row(s) after ${WAIT_SECONDS}s (see $W/server.log)"
	fi
	SHIPPED=1
fi

# 6. what happened
title "metronome_outbox"
sql -c "SELECT id, transaction_id, customer_id, event_type,
               to_char(\"timestamp\" AT TIME ZONE 'UTC', 'HH24:MI:SS') AS utc_time,
               properties->>'endpoint' AS endpoint, mapping, status, attempts,
               last_error
          FROM metronome_outbox ORDER BY id"
title "metronome_rejected"
sql -x -c "SELECT id, mapping, error, event->>'messageId' AS message_id,
                  event->>'type' AS type, event->'context' AS context
             FROM metronome_rejected ORDER BY id"
if [ "$SHIPPED" -eq 1 ]; then
	title "metronome_status()"
	sql -x -c "SELECT * FROM metronome_status()"
fi
title "what the mock Metronome received"
python3 - "$MOCK_URL" <<'EOF'
import json
import sys
import urllib.request

base = sys.argv[1]
def get(path):
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.load(r)

reqs = get("/_requests")
if not reqs:
    print("(no request)")
for r in reqs:
    print("POST %s -> %s   (authorization: %s, user-agent: %s)" % (
        r.get("path"), r.get("status"),
        r.get("headers", {}).get("authorization", "-"),
        r.get("headers", {}).get("user-agent", "-")))
    body = r.get("body")
    try:
        body = json.loads(body) if isinstance(body, str) else body
        print(json.dumps(body, indent=2))
    except ValueError:
        print(body)
s = get("/_stats")
print("stats: %d request(s), %d event(s), %d unique, %d duplicate(s), by status %s" % (
    s.get("requests", 0), s.get("events", 0), s.get("unique_events", 0),
    s.get("duplicates", 0), json.dumps(s.get("by_status", {}))))
EOF

if [ "$KEEP" -eq 1 ]; then
	KEPT=1
	as=""
	[ "${MT_FROM_ROOT:-0}" = 1 ] && as="runuser -u $MT_USER -- "
	title "left running (--keep)"
	echo "connect:  ${as}$MT_TI_BIN/psql -h $W -p $PGPORT_DEMO -U postgres postgres"
	echo "mock:     curl -s $MOCK_URL/_stats ; curl -s $MOCK_URL/_requests"
	echo "logs:     $W/server.log  $W/mock_requests.jsonl"
	echo "stop:     ${as}$MT_TI_BIN/pg_ctl -D $DATA stop; kill $MOCK_PID; rm -rf $W"
fi
exit 0
