# test/lib/common.sh: shell functions shared by test/run.sh and test/demo.sh.
#
# Sourced, not run.  It finds pg_config, installs (as root) or names (as a
# plain user) the packages the build and the tests need, drops from root to
# an unprivileged OS user (PostgreSQL refuses to run as root), copies the
# source tree into a private work directory, builds the extension with
# -Wall -Wextra -Werror and installs it into a private, relocated copy of
# the server (never into the system's directories).
#
# Variables it sets (after mt_find_pg_config / mt_install_tmp):
#   PGC            absolute path of the real pg_config
#   PG_MAJOR       server major version (15, 16, ...)
#   PG_BINDIR, PG_PKGLIBDIR, PG_SHAREDIR, PG_PGXSDIR   as pg_config reports
#   MT_WORKDIR     private work directory (owned by the unprivileged user)
#   MT_SRC         the copy of the source tree inside it ($MT_WORKDIR/src)
#   MT_TI          the private install ($MT_WORKDIR/tmp_install)
#   MT_TI_BIN      bindir inside it, first in PATH after mt_install_tmp

MT_USER=${MT_USER:-pgmetronome}

mt_log() { printf '%s\n' "== $*" >&2; }
mt_die() { printf '%s\n' "error: $*" >&2; exit 1; }

# mt_find_pg_config: PG_CONFIG from the environment, else pg_config in PATH,
# else the newest /usr/lib/postgresql/*/bin/pg_config.  Debian's
# /usr/bin/pg_config is a wrapper script: resolve it to the real binary so
# that copies of it relocate.
mt_find_pg_config()
{
	local cand=${PG_CONFIG:-}
	if [ -z "$cand" ]; then
		cand=$(command -v pg_config 2>/dev/null || true)
	fi
	if [ -z "$cand" ]; then
		cand=$(ls -v /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | tail -n1 || true)
	fi
	[ -n "$cand" ] || mt_die "pg_config not found: set PG_CONFIG or install the PostgreSQL server development package (Debian: postgresql-server-dev-15)"
	if [ "${cand#/}" = "$cand" ]; then
		cand=$(command -v "$cand") || mt_die "PG_CONFIG=$PG_CONFIG not found"
	fi
	PG_BINDIR=$("$cand" --bindir) || mt_die "$cand --bindir failed"
	if [ -x "$PG_BINDIR/pg_config" ]; then
		PGC=$PG_BINDIR/pg_config
	else
		PGC=$cand
	fi
	PG_PKGLIBDIR=$("$PGC" --pkglibdir)
	PG_SHAREDIR=$("$PGC" --sharedir)
	PG_PGXSDIR=$(dirname "$(dirname "$("$PGC" --pgxs)")")	# .../lib/pgxs/src
	PG_MAJOR=$("$PGC" --version | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p')
	[ -n "$PG_MAJOR" ] || mt_die "cannot read the major version from '$("$PGC" --version)'"
	export PG_CONFIG=$PGC
}

# mt_debian_server: is the server Debian's (/usr/lib/postgresql/N)?
mt_debian_server() { case "$PG_BINDIR" in /usr/lib/postgresql/*) return 0 ;; esac; return 1; }

# mt_source_server_complete: does a server not packaged by Debian have what
# the suites need (headers, initdb and postgres, pg_regress, the isolation
# tester, the TAP modules)?  If not, MT_INCOMPLETE says what is missing.
mt_source_server_complete()
{
	local f
	for f in "$("$PGC" --includedir-server)/postgres.h" "$PG_BINDIR/initdb" "$PG_BINDIR/postgres" 		"$PG_PGXSDIR/test/regress/pg_regress" "$PG_PGXSDIR/test/isolation/pg_isolation_regress" 		"$PG_PGXSDIR/test/perl/PostgreSQL/Test/Cluster.pm"; do
		if [ ! -e "$f" ]; then
			MT_INCOMPLETE="$f is missing"
			return 1
		fi
	done
	return 0
}

# mt_missing_packages: print the Debian packages the build and the tests
# need that are not installed (one line, space separated; empty when none).
# Without dpkg, checks the tools themselves and prints what is missing.
mt_missing_packages()
{
	local want p missing=""
	want="libcurl4-openssl-dev libjson-c-dev libipc-run-perl pkg-config python3 make gcc perl ${MT_EXTRA_PACKAGES:-}"
	# the real exporter that test/t/305_metrics.pl scrapes
	want="$want prometheus-postgres-exporter"
	# a server Debian packaged, or one built from source (test/build-postgres.sh);
	# for Debian's, the real pg_cron and pg_partman too: test/t/3xx
	# (operations), 112_partitions
	mt_debian_server && want="postgresql-server-dev-$PG_MAJOR postgresql-$PG_MAJOR-cron postgresql-$PG_MAJOR-partman $want"
	if command -v dpkg-query >/dev/null 2>&1; then
		for p in $want; do
			if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
				missing="$missing $p"
			fi
		done
		# the server itself (initdb, postgres) for the tests
		if mt_debian_server; then
			[ -x "$PG_BINDIR/initdb" ] && [ -x "$PG_BINDIR/postgres" ] || missing="$missing postgresql-$PG_MAJOR"
		fi
	else
		[ -f "$("$PGC" --includedir-server)/postgres.h" ] || missing="$missing server-headers(postgresql-server-dev-$PG_MAJOR)"
		command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
		pkg-config --exists libcurl 2>/dev/null || missing="$missing libcurl-dev"
		pkg-config --exists json-c 2>/dev/null || missing="$missing json-c-dev"
		perl -MIPC::Run -e1 2>/dev/null || missing="$missing perl-IPC-Run"
		command -v prove >/dev/null 2>&1 || missing="$missing perl(prove)"
		command -v python3 >/dev/null 2>&1 || missing="$missing python3"
		command -v prometheus-postgres-exporter >/dev/null 2>&1 || missing="$missing prometheus-postgres-exporter"
		command -v make >/dev/null 2>&1 || missing="$missing make"
		for p in ${MT_EXTRA_PACKAGES:-}; do
			[ "$p" = clang ] && ! command -v clang >/dev/null 2>&1 && missing="$missing clang"
		done
	fi
	echo $missing
}

# mt_ensure_packages: as root, apt-get install what is missing (one
# apt-get update first); as a plain user, say what to install and exit 1.
mt_ensure_packages()
{
	local missing
	if ! mt_debian_server && ! mt_source_server_complete; then
		mt_die "the server of $PGC is incomplete: $MT_INCOMPLETE (build one with test/build-postgres.sh)"
	fi
	missing=$(mt_missing_packages)
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		mt_log "installing: $missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq || mt_die "apt-get update failed"
		apt-get install -y -qq --no-install-recommends $missing >/dev/null \
			|| mt_die "apt-get install $missing failed"
		missing=$(mt_missing_packages)
		[ -z "$missing" ] || mt_die "still missing after apt-get install: $missing"
		return 0
	fi
	{
		echo "error: missing packages: $missing"
		if command -v apt-get >/dev/null 2>&1; then
			echo "install them with:"
			echo "    sudo apt-get install -y $missing"
		fi
		echo "or run this script as root, which installs them."
	} >&2
	exit 1
}

# mt_copy_tree SRC DEST: copy the source tree without .git and build products.
mt_copy_tree()
{
	local src=$1 dest=$2
	mkdir -p "$dest"
	tar -C "$src" -cf - \
		--exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
		--exclude=./tmp_install --exclude=./tmp_check --exclude=./tmp_check_iso \
		--exclude=./results --exclude=./output_iso --exclude=./log \
		--exclude=./regression.diffs --exclude=./regression.out \
		--exclude=__pycache__ --exclude='*.pyc' --exclude=./test/fuzz/out \
		--exclude=node_modules \
		. | tar -C "$dest" -xf - || mt_die "copying $src to $dest failed"
}

# mt_ensure_user: create the unprivileged OS user the servers run as.
mt_ensure_user()
{
	if ! id -u "$MT_USER" >/dev/null 2>&1; then
		mt_log "creating OS user $MT_USER"
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin "$MT_USER" \
			|| mt_die "useradd $MT_USER failed"
	fi
}

# mt_new_workdir PREFIX: create a private work directory holding a copy of
# the source tree (MT_WORKDIR, MT_SRC).  ROOT_DIR is the checkout.
mt_new_workdir()
{
	MT_WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || mt_die "mktemp failed"
	chmod 755 "$MT_WORKDIR"
	MT_SRC=$MT_WORKDIR/src
	mt_copy_tree "$ROOT_DIR" "$MT_SRC"
}

# mt_run_as_user SCRIPT ARGS...: as root, run SCRIPT (a path inside
# MT_WORKDIR) as the unprivileged user with a clean environment; returns its
# exit status.  MT_WORKDIR tells the child that its tree is already copied.
mt_run_as_user()
{
	local script=$1
	shift
	chown -R "$MT_USER:" "$MT_WORKDIR" || mt_die "chown $MT_WORKDIR failed"
	cd "$MT_WORKDIR" || mt_die "cannot cd to $MT_WORKDIR"
	runuser -u "$MT_USER" -- env -i \
		HOME="$MT_WORKDIR" \
		PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
		LANG=C.UTF-8 \
		TERM="${TERM:-dumb}" \
		TMPDIR=/tmp \
		PG_CONFIG="$PGC" \
		MT_WORKDIR="$MT_WORKDIR" \
		${MT_VALGRIND_OPTS:+"MT_VALGRIND_OPTS=$MT_VALGRIND_OPTS"} \
		${MT_EXTRA_ENV:-} \
		bash "$script" "$@"
}

# mt_build: clean build in MT_SRC with warnings as errors.
mt_build()
{
	(
		cd "$MT_SRC" || exit 1
		make -s PG_CONFIG="$PGC" clean >/dev/null 2>&1
		make -s -j2 PG_CONFIG="$PGC" PG_CFLAGS='-Wall -Wextra -Werror'
	)
}

# mt_install_tmp: copy the server's bindir, pkglibdir and sharedir into
# MT_TI (same absolute layout below it), make install there, check that the
# copy relocates (its pg_config reports paths inside MT_TI), and put its
# bindir first in PATH.
mt_install_tmp()
{
	local d
	MT_TI=$MT_WORKDIR/tmp_install
	rm -rf "$MT_TI"
	for d in "$PG_BINDIR" "$PG_PKGLIBDIR" "$PG_SHAREDIR"; do
		mkdir -p "$MT_TI$(dirname "$d")"
		[ -d "$MT_TI$d" ] || cp -a "$d" "$MT_TI$d" || { echo "error: copying $d failed" >&2; return 1; }
	done
	(cd "$MT_SRC" && make -s PG_CONFIG="$PGC" install DESTDIR="$MT_TI" >/dev/null) \
		|| { echo "error: make install DESTDIR=$MT_TI failed" >&2; return 1; }
	MT_TI_BIN=$MT_TI$PG_BINDIR
	if [ "$("$MT_TI_BIN/pg_config" --sharedir)" != "$MT_TI$PG_SHAREDIR" ] ||
	   [ "$("$MT_TI_BIN/pg_config" --pkglibdir)" != "$MT_TI$PG_PKGLIBDIR" ]; then
		echo "error: the copied server in $MT_TI does not relocate:" \
			"its pg_config reports $("$MT_TI_BIN/pg_config" --sharedir)" >&2
		return 1
	fi
	[ -f "$MT_TI$PG_PKGLIBDIR/metronome.so" ] \
		|| { echo "error: metronome.so not installed in $MT_TI$PG_PKGLIBDIR" >&2; return 1; }
	export PATH="$MT_TI_BIN:$PATH"
}
