#!/usr/bin/env bash
# test/build-postgres.sh: build a PostgreSQL source tree into a prefix, with
# everything test/run.sh --pg-config needs (PGXS, pg_regress, the isolation
# tester, the TAP modules, contrib).
#
# Usage: test/build-postgres.sh [-j N] TARBALL-or-DIR PREFIX
#
#   TARBALL-or-DIR  a PostgreSQL source tarball (.tar.gz/.tar.bz2, a release
#                   tarball or a `git archive`) or an unpacked source tree
#   PREFIX          where to install (created; it must not hold another build)
#   -j N            parallel make jobs (default 2)
#
# It configures with --without-icu --enable-tap-tests (a git archive needs
# bison and flex; the build needs libreadline-dev and zlib1g-dev; the TAP
# tests need libipc-run-perl: as root the missing Debian packages are
# installed with apt-get), builds niced (nice -n 10), installs the server
# and contrib, and then installs the pieces PGXS leaves out of a plain
# `make install`: the TAP modules (src/test/perl) and the isolation tester.
# PREFIX is made readable by every user: test/run.sh started as root runs
# the suites as the unprivileged user pgmetronome.
#
# The build happens in PREFIX/.build (removed at the end unless KEEP_BUILD=1).
# PREFIX/BUILT-BY says what was built, from which file, when (test/matrix.sh
# reads it).  Ends with the installed version, e.g. "built PostgreSQL
# 17beta2 into P".

set -euo pipefail

JOBS=2
while [ $# -gt 0 ]; do
	case "$1" in
		-j) JOBS=$2; shift 2 ;;
		-j*) JOBS=${1#-j}; shift ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		--) shift; break ;;
		-*) echo "build-postgres.sh: unknown option $1" >&2; exit 2 ;;
		*) break ;;
	esac
done
if [ $# -ne 2 ]; then
	echo "usage: test/build-postgres.sh [-j N] TARBALL-or-DIR PREFIX" >&2
	exit 2
fi
SRC=$1
PREFIX=$2

# Debian packages a build from a git archive needs.
need=""
for pair in bison:bison flex:flex; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || need="$need ${pair#*:}"
done
for pkg in libreadline-dev zlib1g-dev libipc-run-perl build-essential; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
		need="$need $pkg"
done
if [ -n "$need" ]; then
	if [ "$(id -u)" -eq 0 ]; then
		echo "build-postgres.sh: installing$need"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >/dev/null
	else
		echo "build-postgres.sh: missing Debian packages:$need (apt-get install$need)" >&2
		exit 1
	fi
fi

mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)
if [ -e "$PREFIX/bin/postgres" ]; then
	echo "build-postgres.sh: $PREFIX already holds a PostgreSQL (remove it first)" >&2
	exit 1
fi
BUILD=$PREFIX/.build
rm -rf "$BUILD"
mkdir -p "$BUILD"

if [ -d "$SRC" ]; then
	cp -a "$SRC/." "$BUILD/"
else
	tar -xf "$SRC" -C "$BUILD"
	# A tarball holds one top-level directory: build inside it.
	top=$(find "$BUILD" -mindepth 1 -maxdepth 1 -type d)
	if [ "$(printf '%s\n' "$top" | wc -l)" -eq 1 ] && [ -x "$top/configure" ]; then
		BUILD=$top
	fi
fi
if [ ! -x "$BUILD/configure" ]; then
	echo "build-postgres.sh: no configure script in $SRC" >&2
	exit 1
fi

cd "$BUILD"
N="nice -n 10"
$N ./configure --prefix="$PREFIX" --without-icu --enable-tap-tests >configure.log 2>&1 ||
	{ tail -30 configure.log >&2; exit 1; }
$N make -j"$JOBS" >make.log 2>&1 || { tail -40 make.log >&2; exit 1; }
$N make install >install.log 2>&1 || { tail -40 install.log >&2; exit 1; }
$N make -C contrib -j"$JOBS" install >contrib.log 2>&1 || { tail -40 contrib.log >&2; exit 1; }
# The TAP modules and the isolation tester are not part of `make install`.
$N make -C src/test/perl install >>install.log 2>&1 || { tail -20 install.log >&2; exit 1; }
$N make -C src/test/isolation install >>install.log 2>&1 || { tail -20 install.log >&2; exit 1; }

# what this installation is, for test/matrix.sh's "built by" column
{
	echo "built by: test/build-postgres.sh"
	echo "source: $(basename "$SRC")"
	[ -f "$SRC" ] && echo "sha256: $(sha256sum "$SRC" | cut -d' ' -f1)"
	echo "configure: --prefix=$PREFIX --without-icu --enable-tap-tests"
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
} >"$PREFIX/BUILT-BY"

chmod -R a+rX "$PREFIX"
d=$PREFIX
while [ "$d" != / ]; do chmod a+x "$d" 2>/dev/null || true; d=$(dirname "$d"); done

cd /
if [ "${KEEP_BUILD:-0}" != 1 ]; then
	rm -rf "$PREFIX/.build"
fi
echo "built PostgreSQL $("$PREFIX/bin/pg_config" --version | sed 's/^PostgreSQL //') into $PREFIX"
