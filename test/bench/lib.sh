# test/bench/lib.sh: what the benchmark scripts share.  Sourced, not run.
#
# A benchmark script sets BENCH_SCRIPT (its path from the top of the tree),
# sources this file and calls, in order:
#   bench_setup "$@"       as root: installs packages, re-runs the script as the
#                          unprivileged user in a private copy of the tree;
#                          as that user: builds with -Wall -Wextra -Werror and
#                          installs into a private copy of the server
#   bench_start_cluster [CONF_LINE]...
#                          initdb + start a throwaway server on a free port
#                          with the given postgresql.conf lines; stopped and
#                          removed on exit
#   bench_psql ARGS...     psql against it (-X -q -v ON_ERROR_STOP=1)
#   bench_time SQL         seconds (3 decimals) that one statement takes
# Figures are printed by the script; nothing here asserts a speed.

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../lib/common.sh
. "$ROOT_DIR/test/lib/common.sh"

bench_setup()
{
	mt_find_pg_config
	mt_ensure_packages
	if [ "$(id -u)" -eq 0 ]; then
		mt_ensure_user
		mt_new_workdir pg_metronome_bench
		local rc=0
		mt_run_as_user "$MT_SRC/$BENCH_SCRIPT" "$@" || rc=$?
		rm -rf "$MT_WORKDIR"
		exit $rc
	fi
	if [ -n "${MT_WORKDIR:-}" ] && [ "$ROOT_DIR" = "$MT_WORKDIR/src" ]; then
		MT_SRC=$ROOT_DIR
		BENCH_OWN_WORKDIR=0
	else
		mt_new_workdir pg_metronome_bench
		BENCH_OWN_WORKDIR=1
	fi
	trap bench_cleanup EXIT
	mt_log "building"
	mt_build >/dev/null || mt_die "build failed"
	mt_install_tmp || mt_die "private install failed"
}

bench_cleanup()
{
	if [ -n "${BENCH_PGDATA:-}" ] && [ -f "$BENCH_PGDATA/postmaster.pid" ]; then
		pg_ctl -D "$BENCH_PGDATA" -m immediate stop >/dev/null 2>&1
	fi
	if [ -n "${BENCH_MOCK_PID:-}" ]; then
		kill "$BENCH_MOCK_PID" 2>/dev/null
		wait "$BENCH_MOCK_PID" 2>/dev/null
	fi
	if [ "${BENCH_OWN_WORKDIR:-0}" -eq 1 ]; then
		rm -rf "$MT_WORKDIR"
	elif [ -n "${BENCH_PGDATA:-}" ]; then
		rm -rf "$BENCH_PGDATA"
	fi
}

# A free TCP port on 127.0.0.1.
bench_free_port()
{
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

bench_start_cluster()
{
	BENCH_PGDATA=$MT_WORKDIR/bench_data
	BENCH_PORT=$(bench_free_port)
	rm -rf "$BENCH_PGDATA"
	initdb -D "$BENCH_PGDATA" -A trust -U postgres --no-locale -E UTF8 >/dev/null \
		|| mt_die "initdb failed"
	{
		echo "port = $BENCH_PORT"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$MT_WORKDIR'"
		echo "shared_buffers = 512MB"
		echo "max_wal_size = 4GB"
		echo "checkpoint_timeout = 30min"
		echo "log_min_messages = warning"
		local line
		for line in "$@"; do echo "$line"; done
	} >>"$BENCH_PGDATA/postgresql.conf"
	pg_ctl -D "$BENCH_PGDATA" -l "$MT_WORKDIR/bench_server.log" -w start >/dev/null \
		|| { tail -20 "$MT_WORKDIR/bench_server.log" >&2; mt_die "server start failed"; }
	export PGHOST=$MT_WORKDIR PGPORT=$BENCH_PORT PGUSER=postgres PGDATABASE=postgres
}

bench_psql()
{
	psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# bench_time SQL: wall-clock seconds of one statement, run in its own psql.
bench_time()
{
	local t0 t1
	t0=$(date +%s.%N)
	bench_psql -c "$1" >/dev/null || mt_die "failed: $1"
	t1=$(date +%s.%N)
	echo "$t0 $t1" | awk '{ printf "%.3f", $2 - $1 }'
}

# ratio A B: A/B with two decimals.
bench_ratio()
{
	echo "$1 $2" | awk '{ if ($2 > 0) printf "%.2f", $1 / $2; else print "n/a" }'
}
