#!/bin/bash
#
# test/bench/citus.sh - what scaling pg_metronome on Citus depends on
#
# Usage: test/bench/citus.sh HOST PORT_COORDINATOR [EVENTS]
#
# Runs against a running Citus cluster whose coordinator listens on
# HOST:PORT_COORDINATOR, with pg_metronome created and metronome_citus_setup()
# done (test/lib/CitusCluster.pm makes one; README "Running on Citus" says
# how by hand), every node on this machine (it reads each node's CPU time
# from /proc), and a mock Metronome (test/mock_metronome.py) it starts
# itself.  It prints, per event:
#   - the coordinator's CPU (routing only: the events are mapped on the shards),
#   - the workers' CPU to map and store them (shipping paused),
#   - the workers' CPU to ship them, and the drain rate of one node,
#   - the baseline measured in the same run: the same events mapped into a
#     local (not distributed) table on the coordinator, as on one server.
# Nothing is asserted.  It creates and drops the table bench_citus_local and
# adds rows to segment_events; it changes metronome.* settings on every node
# with ALTER SYSTEM and resets them at the end.
set -euo pipefail
HOST=$1; PORT=$2; N=${3:-20000}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PSQL=(psql -X -q -At -h "$HOST" -p "$PORT" -d postgres)
q() { "${PSQL[@]}" -c "$1"; }

# node_cpu PORT: CPU ticks of the node (postmaster, live children, and the
# reaped ones through the postmaster's cutime/cstime)
node_cpu()
{
	local dir pm t=0 p
	dir=$(psql -X -At -h "$HOST" -p "$1" -d postgres -c 'SHOW data_directory')
	pm=$(head -1 "$dir/postmaster.pid")
	t=$(awk '{print $14+$15+$16+$17}' "/proc/$pm/stat")
	for p in $(pgrep -P "$pm"); do
		t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
HZ=$(getconf CLK_TCK)
mapfile -t PORTS < <(q "SELECT nodeport FROM pg_dist_node WHERE noderole = 'primary' ORDER BY groupid")
WPORTS=("${PORTS[@]:1}")
cpu_all() { local p; for p in "${PORTS[@]}"; do node_cpu "$p"; done; }
# us_per_event BEFORE AFTER: CPU microseconds per event
us() { echo "scale=1; ($2 - $1) * 1000000 / $HZ / $N" | bc; }

MOCKLOG=$(mktemp); python3 "$HERE/mock_metronome.py" --port 0 --token bench-token --log /dev/null >"$MOCKLOG" 2>/dev/null &
MOCK=$!; trap 'kill $MOCK 2>/dev/null; rm -f $MOCKLOG' EXIT
for i in $(seq 50); do grep -q '^PORT ' "$MOCKLOG" && break; sleep 0.1; done
MPORT=$(sed -n 's/^PORT //p' "$MOCKLOG")
setall() { q "SELECT count(*) FROM run_command_on_all_nodes(\$\$ALTER SYSTEM SET $1\$\$)" >/dev/null; q "SELECT count(*) FROM run_command_on_all_nodes('SELECT pg_reload_conf()')" >/dev/null; }
setall "metronome.ingest_url = 'http://127.0.0.1:$MPORT/v1/ingest'"
setall "metronome.api_token = 'bench-token'"
setall "metronome.enabled = off"
sleep 1

gen="SELECT jsonb_build_object('type','track','event','Bench','messageId', '%s-' || g,
       'timestamp','2024-03-01T10:00:00Z','context', jsonb_build_object('groupId','c' || (g %% 100)),
       'properties', jsonb_build_object('n', g, 'pad', repeat('x', 200)))
       FROM generate_series(%s, %s) g"
load() # load TABLE TAG: one session, one INSERT (a transaction) per 1000 events
{
	local b f
	f=$(mktemp)
	for ((b = 0; b < N; b += 1000)); do
		printf "INSERT INTO $1 (event) $gen;\n" "$2" $((b + 1)) $((b + 1000)) >>"$f"
	done
	"${PSQL[@]}" -f "$f" >/dev/null
	rm -f "$f"
}

tag=bench$(date +%s)
# baseline: one server (a local table on the coordinator, mapped there)
q "CREATE TABLE bench_citus_local (id bigserial PRIMARY KEY, event jsonb NOT NULL)" >/dev/null
q "SELECT metronome_attach('bench_citus_local', 'event')" >/dev/null
c0=$(node_cpu "${PORTS[0]}")
load bench_citus_local "$tag-local"
c1=$(node_cpu "${PORTS[0]}")
q "DROP TABLE bench_citus_local" >/dev/null
q "DELETE FROM metronome_outbox WHERE transaction_id LIKE '$tag-local-%'" >/dev/null
base=$(us "$c0" "$c1")

# distributed: routed by the coordinator, mapped on the workers
mapfile -t b0 < <(cpu_all)
t0=$(date +%s.%N)
load segment_events "$tag"
t1=$(date +%s.%N)
mapfile -t b1 < <(cpu_all)
coord=$(us "${b0[0]}" "${b1[0]}")
wmap=0; for i in $(seq 1 ${#WPORTS[@]}); do wmap=$((wmap + b1[i] - b0[i])); done
wmap=$(us 0 "$wmap")

# shipping: every node at once; the drain rate of the node with most rows
most=$(q "SELECT nodeport FROM metronome_cluster_status() ORDER BY pending DESC LIMIT 1")
mostn=$(q "SELECT pending FROM metronome_cluster_status() WHERE nodeport = $most")
mapfile -t s0 < <(cpu_all)
t2=$(date +%s.%N)
setall "metronome.enabled = on"
while [ "$(psql -X -At -h "$HOST" -p "$most" -d postgres -c "SELECT pending FROM metronome_status()")" != 0 ]; do sleep 0.05; done
t3=$(date +%s.%N)
while [ "$(q 'SELECT pending FROM metronome_cluster_summary()')" != 0 ]; do sleep 0.05; done
mapfile -t s1 < <(cpu_all)
wship=0; for i in $(seq 1 ${#WPORTS[@]}); do wship=$((wship + s1[i] - s0[i])); done
wship=$(us 0 "$wship")
cship=$(us "${s0[0]}" "${s1[0]}")

for s in metronome.ingest_url metronome.api_token metronome.enabled; do
	q "SELECT count(*) FROM run_command_on_all_nodes('ALTER SYSTEM RESET $s')" >/dev/null
done
q "SELECT count(*) FROM run_command_on_all_nodes('SELECT pg_reload_conf()')" >/dev/null

echo "events: $N through the coordinator in one session, ${#WPORTS[@]} workers, INSERTs of 1000"
echo "baseline, one server (local table mapped on the coordinator): $base us CPU/event"
echo "coordinator, routing only:                 $coord us CPU/event  (ratio to baseline $(echo "scale=2; $coord / $base" | bc))"
echo "workers, mapping and storing (sum):        $wmap us CPU/event  (ratio to baseline $(echo "scale=2; $wmap / $base" | bc))"
echo "workers, shipping (sum):                   $wship us CPU/event; coordinator meanwhile $cship us/event"
echo "load through the coordinator:              $(echo "scale=0; $N / ($t1 - $t0)" | bc) events/s"
echo "drain of one node ($mostn rows, port $most, while the other drains too): $(echo "scale=0; $mostn / ($t3 - $t2)" | bc) events/s"
