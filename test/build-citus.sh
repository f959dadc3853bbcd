#!/bin/bash
#
# test/build-citus.sh - build Citus from a source tarball and install it
#
# Usage (as root):  test/build-citus.sh TARBALL [PATCH...]
#
# Debian packages no Citus, so the Citus tests (test/t/5xx_citus_*.pl) need
# it built from source.  This script installs Citus's Debian build
# dependencies with apt-get, unpacks TARBALL into a temporary directory,
# applies each PATCH with patch -p1 in the order given, and builds and
# installs Citus into the PostgreSQL server that pg_config names (set
# PG_CONFIG to choose another).  The project keeps no copy of Citus: the
# tarball and any patch are arguments, wherever they live.
#
# The build runs niced (nice -n 10) with make -j$(nproc); set JOBS to change
# the parallelism.  The temporary directory is removed on exit.  Prints the
# installed version at the end.
#
set -euo pipefail

usage()
{
	echo "usage: $0 TARBALL [PATCH...]" >&2
	exit 2
}

[ $# -ge 1 ] || usage
TARBALL=$(readlink -f "$1"); shift
[ -f "$TARBALL" ] || { echo "$0: no such tarball: $TARBALL" >&2; exit 2; }
PATCHES=()
for p in "$@"; do
	[ -f "$p" ] || { echo "$0: no such patch: $p" >&2; exit 2; }
	PATCHES+=("$(readlink -f "$p")")
done

if [ "$(id -u)" -ne 0 ]; then
	echo "$0: must run as root (it installs packages and writes into PostgreSQL's directories)" >&2
	exit 1
fi

PG_CONFIG=${PG_CONFIG:-pg_config}
command -v "$PG_CONFIG" >/dev/null || { echo "$0: $PG_CONFIG not found" >&2; exit 1; }
JOBS=${JOBS:-$(nproc)}

# Citus's configure links what the server was built with; these are the
# Debian names of those libraries' headers.
DEPS="build-essential autoconf flex bison liblz4-dev libzstd-dev libkrb5-dev
	libssl-dev libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev
	zlib1g-dev libicu-dev"
missing=""
for d in $DEPS; do
	dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "ok installed" || missing="$missing $d"
done
if [ -n "$missing" ]; then
	echo "== installing build dependencies:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q $missing >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null; }
fi

WORK=$(mktemp -d /tmp/build-citus.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
echo "== unpacking $(basename "$TARBALL") into $WORK"
tar xzf "$TARBALL" -C "$WORK"
SRC=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d | head -1)
[ -f "$SRC/configure" ] || { echo "$0: $TARBALL holds no Citus source tree" >&2; exit 1; }

cd "$SRC"
for p in "${PATCHES[@]}"; do
	echo "== applying $(basename "$p")"
	patch -p1 -s < "$p"
done

echo "== configure (PG_CONFIG=$PG_CONFIG)"
# Citus's optional libcurl use is only for its anonymous usage statistics.
nice -n 10 ./configure -q PG_CONFIG="$(command -v "$PG_CONFIG")" --without-libcurl
echo "== make -j$JOBS"
nice -n 10 make -j"$JOBS" -s
echo "== make install"
make install -s

libdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
[ -f "$libdir/citus.so" ] || { echo "$0: citus.so did not land in $libdir" >&2; exit 1; }
ver=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$sharedir/extension/citus.control")
echo "== Citus $ver installed into $libdir"
