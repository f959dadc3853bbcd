#!/usr/bin/env bash
# scratch (not committed): profile the mapping trigger's INSERT
set -euo pipefail
BENCH_SCRIPT=test/bench/scratch_prof.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
EVENTS=${EVENTS:-200000}
bench_setup "$@"
bench_start_cluster
bench_psql -c "CREATE EXTENSION metronome" >/dev/null
sed -n '/^CREATE TABLE staging AS/,/^CREATE UNIQUE INDEX ON staging/p' "$MT_SRC/test/bench/mapping.sh" | sed "s/\$EVENTS/$EVENTS/" > "$MT_WORKDIR/st.sql"
bench_psql -c "INSERT INTO metronome_mappings (name) VALUES ('tracks')" -f "$MT_WORKDIR/st.sql" >/dev/null
bench_psql -c "CREATE TABLE plain_events (LIKE segment_events INCLUDING ALL)" -c "VACUUM ANALYZE" >/dev/null
for mode in ${MODES:-mapped}; do
  if [ $mode = mapped ]; then tgt=segment_events; else tgt=plain_events; fi
  bench_psql -c "TRUNCATE segment_events, plain_events, metronome_queue, metronome_outbox_state" -c CHECKPOINT >/dev/null
  bench_psql <<SQL
\pset tuples_only on
\pset format unaligned
SELECT pg_backend_pid() \g /tmp/mapprof.pid
SELECT pg_sleep(2);
\timing on
INSERT INTO $tgt (event) SELECT event FROM staging ORDER BY i;
SQL
  rm -f /tmp/mapprof.pid
done
