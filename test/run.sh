#!/usr/bin/env bash
# test/run.sh: the test command of pg_metronome.  CI runs it through .ci/run.
#
# Usage: test/run.sh [--pg-config PATH] [--only SUITE]... [--keep] [-v] [--valgrind] [NAME]...
#
#   --pg-config PATH  test against the PostgreSQL installation whose pg_config
#                 this is (a Debian package's or a source build's, e.g. one made
#                 by test/build-postgres.sh); default PG_CONFIG, else pg_config
#                 in PATH.  test/matrix.sh runs this for several installations.
#   --only SUITE  run only this suite; repeatable.  SUITE is one of
#                 regress    pg_regress over sql/*.sql (expected/*.out)
#                 tap        TAP tests test/t/*.pl (PostgreSQL::Test::Cluster)
#                 isolation  isolation specs test/isolation/specs/*.spec
#                 python     Python unit tests test/test_*.py (unittest)
#                 fuzz       test/fuzz/run.sh --smoke, when that script exists
#                 conformance  test/conformance/run.sh: Segment's own code
#                            against ours on the same corpus (needs node,
#                            npm and the npm registry)
#   NAME          run only the tests whose name contains NAME (a regress
#                 test, a TAP file or spec without extension, a Python
#                 module); several NAMEs select the union.
#   --keep        keep the work directory (build, install, logs) and print it
#   -v            verbose TAP output (every assertion)
#   --valgrind    run every server process under valgrind memcheck (see
#                 test/lib/valgrind.sh): the suites regress, tap and
#                 isolation only (unless --only says otherwise), niced,
#                 with longer timeouts; then every error valgrind reported
#                 is printed and counted as a failure (suite "valgrind").
#                 Not part of the default run: about 20 minutes on 2 cores.
#                 MT_VALGRIND_OPTS adds valgrind options (e.g.
#                 --track-origins=yes to see where an uninitialised value
#                 comes from).
#
# Examples: test/run.sh --only regress          test/run.sh 001_settings
#           test/run.sh --only tap --only python --keep
#           test/run.sh --valgrind                test/run.sh --valgrind 104_auth
#
# What it does, started as root or as a plain user, from any checkout:
#   1. finds pg_config (PG_CONFIG, else pg_config in PATH) and the packages
#      the build and tests need; as root installs the missing ones with
#      apt-get, as a plain user prints what to install and exits 1;
#   2. as root: creates the OS user "pgmetronome" (PostgreSQL refuses to run
#      as root) and re-runs itself as that user;
#   3. copies the source tree (no .git, no build products) into a private
#      work directory, builds it with -Wall -Wextra -Werror, and installs it
#      into a relocated copy of the server under <workdir>/tmp_install,
#      whose bindir comes first in PATH (nothing is installed system-wide);
#   4. runs the suites, each against its own temporary server:
#      regress    pg_regress --temp-instance with the Makefile's REGRESS and
#                 REGRESS_OPTS, so it matches `make installcheck` on a plain
#                 server: the library is NOT preloaded and the extension is
#                 created by --load-extension=metronome before the tests
#                 (a test that drops it must re-create it before it ends).
#                 test/regress.conf, if present, is added to the server's
#                 configuration.  Run with --no-locale --encoding=UTF8.
#      tap        each test/t/*.pl with TAP::Harness; PERL5LIB holds the
#                 server's src/test/perl and test/lib (MetronomeTest.pm);
#                 PG_REGRESS, TESTDIR (logs in <src>/tmp_check/log) and
#                 METRONOME_SRC are set.  Citus's files (5xx_citus_*) need
#                 Citus in the server; a part of a file that needs pg_cron
#                 or pg_partman (Debian packages them for its 15 only) needs
#                 them there: without them, on a server not Debian's, they
#                 are left out, listed as "SKIPPED (not counted)" with the
#                 reason (MetronomeTest::have_extension); on Debian's
#                 server the packages are installed and a missing one fails.
#      isolation  pg_isolation_regress --temp-instance over every spec in
#                 test/isolation/specs (expected in test/isolation/expected),
#                 with --load-extension=metronome; test/isolation/isolation.conf,
#                 if present, is added to the server's configuration.
#      python     python3 -m unittest -v over test/test_*.py (from test/).
#      fuzz       bash test/fuzz/run.sh --smoke, if that file exists.
#   5. on failure prints regression.diffs, the failing TAP tests' regress_log
#      and server log tails, and the isolation diffs;
#   6. ends with exactly one line "N passed, N failed".
#
# What is counted: one per pg_regress test, one per TAP assertion (a TAP
# file that fails without a failing assertion, e.g. it died, counts one
# failure), one per isolation spec, one per Python test case, one for the
# fuzz smoke run, one failure for a build or install that fails; the line
# before it, "counts (passed/failed): regress P/F tap P/F ...", splits them
# by suite.  Skipped
# TAP assertions or Python tests count as failures: a test that cannot run
# must not pass silently.  A suite that has tests but ran none fails.
#
# Exit status: 0 when nothing failed, 1 otherwise.

set -uo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
. "$ROOT_DIR/test/lib/common.sh"

ALL_SUITES="regress tap isolation python fuzz conformance"
ONLY=""
KEEP=0
VERBOSE=0
VALGRIND=0
FILTERS=()
ORIG_ARGS=("$@")

while [ $# -gt 0 ]; do
	case "$1" in
		--only)
			[ $# -ge 2 ] || mt_die "--only needs a suite: $ALL_SUITES"
			case " $ALL_SUITES " in
				*" $2 "*) ONLY="$ONLY $2" ;;
				*) mt_die "unknown suite '$2' (one of: $ALL_SUITES)" ;;
			esac
			shift 2 ;;
		--only=*)
			set -- --only "${1#--only=}" "${@:2}" ;;
		--pg-config)
			[ $# -ge 2 ] || mt_die "--pg-config needs the path of a pg_config"
			[ -x "$2" ] || mt_die "--pg-config $2: not an executable"
			PG_CONFIG=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
			export PG_CONFIG
			shift 2 ;;
		--pg-config=*)
			set -- --pg-config "${1#--pg-config=}" "${@:2}" ;;
		--keep) KEEP=1; shift ;;
		-v|--verbose) VERBOSE=1; shift ;;
		--valgrind) VALGRIND=1; shift ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		-*) mt_die "unknown option $1 (see $0 --help)" ;;
		*) FILTERS+=("$1"); shift ;;
	esac
done
if [ -z "$ONLY" ]; then
	if [ "$VALGRIND" -eq 1 ]; then
		ONLY=" regress tap isolation"	# the suites that start servers
	else
		ONLY=" $ALL_SUITES"
	fi
fi

mt_find_pg_config
# the fuzz smoke run builds with clang and its libFuzzer/sanitizer runtimes
case "$ONLY " in
	*" fuzz "*) [ -f "$ROOT_DIR/test/fuzz/run.sh" ] && MT_EXTRA_PACKAGES="clang libclang-rt-dev" ;;
esac
# the conformance suite runs Segment's code on Node.js (Debian's packages
# only where there is no node at all: another install may bring its own npm)
case "$ONLY " in
	*" conformance "*) command -v node >/dev/null 2>&1 || MT_EXTRA_PACKAGES="${MT_EXTRA_PACKAGES:-} nodejs npm" ;;
esac
mt_ensure_packages
if [ "$VALGRIND" -eq 1 ]; then
	# shellcheck source=lib/valgrind.sh
	. "$ROOT_DIR/test/lib/valgrind.sh"
	mt_valgrind_check
	# others use the same cores: valgrind runs, and everything under it, niced
	renice -n 10 -p $$ >/dev/null 2>&1 || true
fi

# Root: hand over to the unprivileged user, in a private copy of the tree.
if [ "$(id -u)" -eq 0 ]; then
	mt_ensure_user
	mt_new_workdir pg_metronome_test
	mt_run_as_user "$MT_SRC/test/run.sh" "${ORIG_ARGS[@]}"
	rc=$?
	if [ "$KEEP" -eq 1 ]; then
		echo "kept: $MT_WORKDIR (owned by $MT_USER)" >&2
	else
		rm -rf "$MT_WORKDIR"
	fi
	exit $rc
fi

# Plain user: the work directory is the one root made for us, or our own.
if [ -n "${MT_WORKDIR:-}" ] && [ "$ROOT_DIR" = "$MT_WORKDIR/src" ]; then
	MT_SRC=$ROOT_DIR
	OWN_WORKDIR=0
else
	mt_new_workdir pg_metronome_test
	OWN_WORKDIR=1
fi
cleanup()
{
	if [ "$OWN_WORKDIR" -eq 1 ]; then
		if [ "$KEEP" -eq 1 ]; then
			echo "kept: $MT_WORKDIR" >&2
		else
			rm -rf "$MT_WORKDIR"
		fi
	fi
}
trap cleanup EXIT
cd "$MT_SRC" || mt_die "cannot cd to $MT_SRC"

PASSED=0
FAILED=0
FAILED_SUITES=""
RAN=0
# per suite, in the order they ran: "suite passed/failed" (the counts line)
declare -A S_PASS=() S_FAIL=()
S_ORDER=""
tally() { case " $S_ORDER " in *" $1 "*) ;; *) S_ORDER="$S_ORDER $1" ;; esac; }
pass() { PASSED=$((PASSED + $1)); tally "$2"; S_PASS[$2]=$(( ${S_PASS[$2]:-0} + $1 )); }
fail() { FAILED=$((FAILED + $1)); case " $FAILED_SUITES " in *" $2 "*) ;; *) FAILED_SUITES="$FAILED_SUITES $2" ;; esac; tally "$2"; S_FAIL[$2]=$(( ${S_FAIL[$2]:-0} + $1 )); }

summary()
{
	local c="" x
	for x in $S_ORDER; do c="$c $x ${S_PASS[$x]:-0}/${S_FAIL[$x]:-0}"; done
	[ -n "$c" ] && echo "counts (passed/failed):$c"
	if [ -n "$FAILED_SUITES" ]; then
		echo "failed:$FAILED_SUITES"
	fi
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ] && [ -z "$FAILED_SUITES" ]
	exit $?
}

want_suite() { case "$ONLY " in *" $1 "*) return 0 ;; esac; return 1; }

# select NAME...: print the names that match the filters (all without any)
select_names()
{
	local n f
	for n in "$@"; do
		if [ ${#FILTERS[@]} -eq 0 ]; then
			echo "$n"
			continue
		fi
		for f in "${FILTERS[@]}"; do
			case "$n" in *"$f"*) echo "$n"; break ;; esac
		done
	done
}

# print_tail FILE N: a titled tail of a log file
print_tail()
{
	[ -f "$1" ] || return 0
	echo "----- tail -n $2 $1"
	tail -n "$2" "$1"
	echo "-----"
}

# keep_expected SUITE DIR: keep in the array names only the tests that have
# DIR/NAME.out (or an alternative DIR/NAME_N.out); each one without is
# counted as a failure and said (pg_regress would stop at it, running none
# of the tests after it).
keep_expected()
{
	local suite=$1 dir=$2 n kept=() c=0
	for n in "${names[@]}"; do
		if [ -f "$dir/$n.out" ] || compgen -G "$dir/${n}_[0-9].out" >/dev/null; then
			kept+=("$n")
		else
			echo "$suite: $n has no expected output $dir/$n.out: counted as failed"
			c=$((c + 1))
		fi
	done
	names=("${kept[@]}")
	if [ "$c" -gt 0 ]; then
		fail "$c" "$suite"
		RAN=$((RAN + c))
	fi
}

# make_var NAME: the value of a variable of the Makefile (after PGXS)
make_var()
{
	make --no-print-directory -s PG_CONFIG="$PGC" -f Makefile -f - "print-$1" <<'EOF'
print-%:
	@echo '$($*)'
EOF
}

######################################################################
# Build and install
######################################################################
mt_log "build ($PGC, PostgreSQL $PG_MAJOR) in $MT_SRC"
if ! mt_build; then
	echo "build failed"
	fail 1 build
	summary
fi
mt_log "install into $MT_WORKDIR/tmp_install"
if ! mt_install_tmp; then
	fail 1 install
	summary
fi
if [ "$VALGRIND" -eq 1 ]; then
	mt_log "valgrind: every server process under memcheck, logs in $MT_WORKDIR/valgrind"
	if ! mt_valgrind_install; then
		fail 1 install
		summary
	fi
	# everything is 10 to 50 times slower: wait longer for it
	export PG_TEST_TIMEOUT_DEFAULT=900 PGCTLTIMEOUT=900
	export METRONOME_TEST_TIME_SCALE=${METRONOME_TEST_TIME_SCALE:-6}
	export METRONOME_VALGRIND=1
fi
# vg_logs SUITE: the servers of this suite write their valgrind logs apart
vg_logs() { export MT_VALGRIND_LOG_DIR=$MT_WORKDIR/valgrind/$1; }
PG_REGRESS=$PG_PGXSDIR/test/regress/pg_regress
PG_ISOLATION_REGRESS=$PG_PGXSDIR/test/isolation/pg_isolation_regress
export METRONOME_SRC=$MT_SRC
# TAP tests that need an extension Debian packages for its own 15 only
# (pg_cron, pg_partman) fail without it on Debian's server, and leave out
# just that part elsewhere, listed here (MetronomeTest::have_extension)
if mt_debian_server; then export METRONOME_DEBIAN_SERVER=1; else export METRONOME_DEBIAN_SERVER=0; fi
export METRONOME_SKIPPED_LOG=$MT_WORKDIR/skipped-parts.log
rm -f "$METRONOME_SKIPPED_LOG"

######################################################################
# (a) pg_regress: sql/*.sql against expected/*.out
######################################################################
# count_pg_regress OUTPUT: print "OK BAD", the tests pg_regress reported
# as ok and as failed (PostgreSQL 15's "test x ... ok" lines, or the TAP-like
# "ok 1 - x" lines of 16 and later)
count_pg_regress()
{
	local ok bad
	ok=$(grep -cE '^(test +|     *)[^ ]+ +\.\.\. ok|^ok [0-9]+ +[-+] ' "$1")
	bad=$(grep -cE '^(test +|     *)[^ ]+ +\.\.\. FAILED|^not ok [0-9]+ ' "$1")
	echo "$ok $bad"
}

if want_suite regress && [ -d sql ]; then
	mapfile -t all < <(make_var REGRESS | tr ' ' '\n' | sed '/^$/d')
	mapfile -t names < <(select_names "${all[@]}")
	keep_expected regress expected
	if [ ${#all[@]} -gt 0 ] && [ ${#names[@]} -gt 0 ]; then
		mt_log "regress: ${names[*]}"
		read -r -a opts <<<"$(make_var REGRESS_OPTS)"
		extra=()
		[ -f test/regress.conf ] && extra+=(--temp-config=test/regress.conf)
		rm -rf results regression.diffs regression.out tmp_check_regress
		vg_logs regress
		"$PG_REGRESS" --temp-instance=tmp_check_regress --bindir="$MT_TI_BIN" \
			--no-locale --encoding=UTF8 "${opts[@]}" "${extra[@]}" "${names[@]}" \
			2>&1 | tee "$MT_WORKDIR/regress.log"
		rc=${PIPESTATUS[0]}
		read -r ok bad < <(count_pg_regress "$MT_WORKDIR/regress.log" regress)
		pass "$ok" regress; [ "$bad" -gt 0 ] && fail "$bad" regress; RAN=$((RAN + ok + bad))
		if [ "$rc" -ne 0 ] || [ "$bad" -gt 0 ] || [ "$ok" -eq 0 ]; then
			[ "$bad" -gt 0 ] || fail 1 regress
			[ -f regression.diffs ] && { echo "----- regression.diffs"; cat regression.diffs; echo "-----"; }
			print_tail tmp_check_regress/log/postmaster.log 60
			print_tail tmp_check_regress/log/initdb.log 20
		fi
	elif [ ${#all[@]} -eq 0 ] && [ ${#FILTERS[@]} -eq 0 ] && [ -n "$(ls sql/*.sql 2>/dev/null)" ]; then
		echo "regress: sql/*.sql exist but the Makefile's REGRESS is empty"
		fail 1 regress
	fi
fi

######################################################################
# (b) TAP tests: test/t/*.pl
######################################################################
if want_suite tap && [ -d test/t ]; then
	mapfile -t all < <(cd test/t && ls -1 *.pl 2>/dev/null | sed 's/\.pl$//')
	mapfile -t names < <(select_names "${all[@]}")
	# Citus: test/t/5xx_citus_*.pl need Citus in the server, which Debian
	# does not package (test/build-citus.sh builds it).  Without it they are
	# left out, loudly, and not counted.
	if [ ! -f "$MT_TI$PG_SHAREDIR/extension/citus.control" ]; then
		kept=(); skipped=()
		for n in "${names[@]}"; do
			case "$n" in 5[0-9][0-9]_citus_*) skipped+=("$n") ;; *) kept+=("$n") ;; esac
		done
		if [ ${#skipped[@]} -gt 0 ]; then
			echo "######################################################################"
			echo "# SKIPPED (not counted): ${#skipped[@]} Citus TAP file(s): ${skipped[*]}"
			echo "# Citus is not installed in $PGC's server.  Build it with"
			echo "#     test/build-citus.sh citus-13.2.2.tar.gz [PATCH...]   (as root)"
			echo "######################################################################"
		fi
		names=("${kept[@]}")
	fi
	if [ ${#names[@]} -gt 0 ]; then
		mt_log "tap: ${names[*]}"
		files=()
		for n in "${names[@]}"; do files+=("test/t/$n.pl"); done
		rm -rf tmp_check
		vg_logs tap
		vflag=()
		[ "$VERBOSE" -eq 1 ] && vflag=(-v)
		PERL5LIB="$PG_PGXSDIR/test/perl:$MT_SRC/test/lib${PERL5LIB:+:$PERL5LIB}" \
		PG_REGRESS="$PG_REGRESS" TESTDIR="$MT_SRC" \
		TESTDATADIR="$MT_SRC/tmp_check" TESTLOGDIR="$MT_SRC/tmp_check/log" \
		PG_TEST_PORT_DIR="$MT_WORKDIR" \
			perl test/lib/tap_run.pl "${vflag[@]}" "${files[@]}" 2>&1 | tee "$MT_WORKDIR/tap.log"
		rc=${PIPESTATUS[0]}
		line=$(grep '^TAP-SUMMARY ' "$MT_WORKDIR/tap.log" | tail -n1)
		if [ -z "$line" ]; then
			echo "tap: the TAP runner did not report (see above)"
			fail 1 tap
		else
			ok=$(sed -n 's/.* passed=\([0-9]*\).*/\1/p' <<<"$line")
			bad=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$line")
			badfiles=$(sed -n 's/.* files_failed=\(.*\)$/\1/p' <<<"$line")
			pass "$ok" tap; RAN=$((RAN + ok + bad))
			[ "$bad" -gt 0 ] && fail "$bad" tap
			if [ "$rc" -ne 0 ] || [ "$ok" -eq 0 ]; then
				[ "$bad" -gt 0 ] || fail 1 tap
				for f in ${badfiles//,/ }; do
					t=$(basename "$f" .pl)
					print_tail "tmp_check/log/regress_log_$t" 150
					for l in tmp_check/log/"${t}"_*.log; do
						print_tail "$l" 40
					done
				done
			fi
		fi
	fi
	if [ -s "$METRONOME_SKIPPED_LOG" ]; then
		echo "######################################################################"
		echo "# SKIPPED (not counted): $(wc -l <"$METRONOME_SKIPPED_LOG") part(s) of TAP files, the rest of each file ran:"
		sed 's/^/#   /' "$METRONOME_SKIPPED_LOG"
		echo "# Debian's server (postgresql-15-cron, -15-partman) runs them all."
		echo "######################################################################"
	fi
fi

######################################################################
# (c) isolation specs: test/isolation/specs/*.spec
######################################################################
if want_suite isolation && [ -d test/isolation/specs ]; then
	mapfile -t all < <(cd test/isolation/specs && ls -1 *.spec 2>/dev/null | sed 's/\.spec$//')
	mapfile -t names < <(select_names "${all[@]}")
	keep_expected isolation test/isolation/expected
	if [ ${#names[@]} -gt 0 ]; then
		mt_log "isolation: ${names[*]}"
		extra=()
		[ -f test/isolation/isolation.conf ] && extra+=(--temp-config=test/isolation/isolation.conf)
		rm -rf output_iso tmp_check_iso
		vg_logs isolation
		mkdir -p output_iso
		"$PG_ISOLATION_REGRESS" --temp-instance=tmp_check_iso --bindir="$MT_TI_BIN" \
			--inputdir=test/isolation --outputdir=output_iso \
			--no-locale --encoding=UTF8 --dbname=isolation_regression \
			--load-extension=metronome "${extra[@]}" "${names[@]}" \
			2>&1 | tee "$MT_WORKDIR/isolation.log"
		rc=${PIPESTATUS[0]}
		read -r ok bad < <(count_pg_regress "$MT_WORKDIR/isolation.log")
		pass "$ok" isolation; RAN=$((RAN + ok + bad))
		[ "$bad" -gt 0 ] && fail "$bad" isolation
		if [ "$rc" -ne 0 ] || [ "$bad" -gt 0 ] || [ "$ok" -eq 0 ]; then
			[ "$bad" -gt 0 ] || fail 1 isolation
			[ -f output_iso/regression.diffs ] && { echo "----- output_iso/regression.diffs"; cat output_iso/regression.diffs; echo "-----"; }
			print_tail tmp_check_iso/log/postmaster.log 60
		fi
	fi
fi

######################################################################
# (d) Python unit tests: test/test_*.py
######################################################################
if want_suite python; then
	mapfile -t all < <(cd test && ls -1 test_*.py 2>/dev/null | sed 's/\.py$//')
	mapfile -t names < <(select_names "${all[@]}")
	if [ ${#names[@]} -gt 0 ]; then
		mt_log "python: ${names[*]}"
		(cd test && python3 -m unittest -v "${names[@]}") 2>&1 | tee "$MT_WORKDIR/python.log"
		rc=${PIPESTATUS[0]}
		ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$MT_WORKDIR/python.log" | tail -n1)
		ran=${ran:-0}
		st=$(grep -E '^(OK|FAILED)( \(|$)' "$MT_WORKDIR/python.log" | tail -n1)
		field() { sed -n "s/.*[(, ]$1=\([0-9]*\).*/\1/p" <<<"$st"; }
		nf=$(field failures); ne=$(field errors); ns=$(field skipped)
		nu=$(field 'unexpected successes'); nx=$(field 'expected failures')
		bad=$(( ${nf:-0} + ${ne:-0} + ${ns:-0} + ${nu:-0} ))
		ok=$(( ran - bad ))
		[ "$ok" -lt 0 ] && ok=0
		pass "$ok" python; RAN=$((RAN + ran))
		[ "${ns:-0}" -gt 0 ] && echo "python: ${ns} test(s) skipped: counted as failed"
		[ "$bad" -gt 0 ] && fail "$bad" python
		if [ "$rc" -ne 0 ] || [ "$ran" -eq 0 ]; then
			[ "$bad" -gt 0 ] || fail 1 python
		fi
	fi
fi

######################################################################
# (e) fuzz smoke run: test/fuzz/run.sh --smoke
######################################################################
if want_suite fuzz && [ -f test/fuzz/run.sh ] && [ "$(select_names fuzz)" = fuzz ]; then
	mt_log "fuzz: test/fuzz/run.sh --smoke"
	if bash test/fuzz/run.sh --smoke; then
		pass 1 fuzz
	else
		echo "fuzz smoke run failed"
		fail 1 fuzz
	fi
	RAN=$((RAN + 1))
fi

######################################################################
# (e2) conformance: Segment's destination against ours, test/conformance
######################################################################
# one pass per case that agrees with Segment (or differs as the allow-list
# allows), one failure per other case; no node or npm is a failure
if want_suite conformance && [ -f test/conformance/run.sh ] && [ "$(select_names conformance)" = conformance ]; then
	mt_log "conformance: test/conformance/run.sh"
	PERL5LIB="$PG_PGXSDIR/test/perl:$MT_SRC/test/lib${PERL5LIB:+:$PERL5LIB}" \
	PG_REGRESS="$PG_REGRESS" TESTDIR="$MT_SRC/test/conformance" \
	PG_TEST_PORT_DIR="$MT_WORKDIR" \
		bash test/conformance/run.sh "$MT_WORKDIR/conformance" 2>&1 | tee "$MT_WORKDIR/conformance.log"
	line=$(grep '^CONFORMANCE-SUMMARY ' "$MT_WORKDIR/conformance.log" | tail -n1)
	ok=$(sed -n 's/.* passed=\([0-9]*\).*/\1/p' <<<"$line")
	bad=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$line")
	if [ -z "$line" ]; then
		echo "conformance: the suite did not report (see above)"
		fail 1 conformance
	else
		pass "$ok" conformance; [ "$bad" -gt 0 ] && fail "$bad" conformance
		[ "$ok" -eq 0 ] && [ "$bad" -eq 0 ] && fail 1 conformance
	fi
	RAN=$((RAN + 1))
fi

######################################################################
# (f) --valgrind: what memcheck found in the servers' processes
######################################################################
if [ "$VALGRIND" -eq 1 ]; then
	for d in "$MT_WORKDIR"/valgrind/*/; do
		[ -d "$d" ] || continue
		suite=$(basename "$d")
		mt_log "valgrind: $suite"
		mt_valgrind_report "$d" | tee "$MT_WORKDIR/valgrind-$suite.log"
		line=$(grep '^VALGRIND-SUMMARY ' "$MT_WORKDIR/valgrind-$suite.log" | tail -n1)
		procs=$(sed -n 's/.* processes=\([0-9]*\).*/\1/p' <<<"$line")
		bad=$(sed -n 's/.* bad_processes=\([0-9]*\).*/\1/p' <<<"$line")
		# one failure per process with errors; one pass per clean suite
		if [ "${procs:-0}" -eq 0 ]; then
			echo "valgrind: no log in $d: the servers did not run under valgrind"
			fail 1 valgrind
		elif [ "${bad:-0}" -gt 0 ]; then
			fail "$bad" valgrind
			echo "valgrind: the logs are in $d (kept with --keep); the server logs name each pid"
		else
			pass 1 valgrind
		fi
		RAN=$((RAN + 1))
	done
fi

if [ "$RAN" -eq 0 ] && [ -z "$FAILED_SUITES" ]; then
	if [ ${#FILTERS[@]} -gt 0 ]; then
		echo "no test matches: ${FILTERS[*]}"
	else
		echo "no test ran"
	fi
	fail 1 none
fi
summary
