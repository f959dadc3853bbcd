#!/usr/bin/env bash
# test/matrix.sh: the whole suite against several PostgreSQL installations,
# one after the other, and a table of the results.
#
# Usage: test/matrix.sh [-o DIR] INSTALL... [-- RUN.SH-ARGS...]
#
#   INSTALL   a prefix (PREFIX/bin/pg_config), a bindir, or a pg_config;
#             e.g. /usr/lib/postgresql/15 /work/pg/16 /work/pg/17
#   -o DIR    keep each run's output as DIR/pgNN.log (default: a temporary
#             directory, printed at the end)
#   -- ARGS   passed to every test/run.sh (e.g. -- --only regress)
#
# Each installation is tested by `test/run.sh --pg-config PATH ARGS` (niced),
# exactly as one would by hand.  Two tables follow, one row per
# installation: a plain one (major, full version, result, passed, failed,
# what was skipped and not counted, minutes, failed suites), and the same
# as the Markdown rows of README's "PostgreSQL versions and packages" table,
# ready to paste (who built the server: Debian for /usr/lib/postgresql/N,
# else PREFIX/BUILT-BY written by test/build-postgres.sh).
# Exit status: 0 when every installation passed.

set -uo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=""
INSTALLS=()
ARGS=()
while [ $# -gt 0 ]; do
	case "$1" in
		-o) OUT=$2; shift 2 ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		--) shift; ARGS=("$@"); break ;;
		*) INSTALLS+=("$1"); shift ;;
	esac
done
[ ${#INSTALLS[@]} -gt 0 ] || { echo "usage: test/matrix.sh [-o DIR] INSTALL... [-- RUN.SH-ARGS...]" >&2; exit 2; }
[ -n "$OUT" ] || OUT=$(mktemp -d "${TMPDIR:-/tmp}/pg_metronome_matrix.XXXXXX")
mkdir -p "$OUT"

# pg_config_of INSTALL: the pg_config an installation argument names
pg_config_of()
{
	local p=$1
	if [ -f "$p" ] && [ -x "$p" ]; then echo "$p"
	elif [ -x "$p/pg_config" ]; then echo "$p/pg_config"
	elif [ -x "$p/bin/pg_config" ]; then echo "$p/bin/pg_config"
	else return 1
	fi
}

# built_by PG_CONFIG: who built the installation, for the README's table
built_by()
{
	local bindir
	bindir=$("$1" --bindir)
	case "$bindir" in
		/usr/lib/postgresql/*) echo "Debian ($(dpkg-query -W -f='${Version}' "postgresql-$2" 2>/dev/null || echo package))"; return ;;
	esac
	if [ -f "$bindir/../BUILT-BY" ] && grep -q '^built by: test/build-postgres.sh' "$bindir/../BUILT-BY"; then
		echo "\`test/build-postgres.sh\` $(sed -n 's/^source: //p' "$bindir/../BUILT-BY")"
	else
		echo "unknown ($bindir)"
	fi
}

rows=()
md=()
percounts=()
status=0
for inst in "${INSTALLS[@]}"; do
	if ! pgc=$(pg_config_of "$inst"); then
		rows+=("$(printf '%-6s %-34s %-6s %7s %7s  %s' '?' "$inst" 'absent' '-' '-' 'no pg_config')")
		status=1
		continue
	fi
	full=$("$pgc" --version)
	major=$(sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p' <<<"$full")
	log=$OUT/pg$major.log
	echo "== PostgreSQL $major ($pgc): test/run.sh --pg-config $pgc ${ARGS[*]:-} > $log" >&2
	start=$(date +%s)
	nice -n 10 "$ROOT_DIR/test/run.sh" --pg-config "$pgc" "${ARGS[@]}" >"$log" 2>&1
	rc=$?
	mins=$(awk -v s="$(( $(date +%s) - start ))" 'BEGIN { printf "%.1f", s / 60 }')
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n1)
	passed=$(sed -n 's/^\([0-9]*\) passed.*/\1/p' <<<"$line")
	failed=$(sed -n 's/.* \([0-9]*\) failed$/\1/p' <<<"$line")
	suites=$(sed -n 's/^failed: *//p' "$log" | tail -n1)
	# what test/run.sh left out, loudly, and did not count
	citus=$(sed -n 's/^# SKIPPED (not counted): \([0-9]*\) Citus TAP file.*/\1/p' "$log" | tail -n1)
	parts=$(sed -n 's/^# SKIPPED (not counted): \([0-9]*\) part(s) of TAP files.*/\1/p' "$log" | tail -n1)
	skipped=""
	[ -n "$citus" ] && skipped="$citus Citus files"
	[ -n "$parts" ] && skipped="${skipped:+$skipped, }$parts parts (pg_cron/pg_partman)"
	counts=$(sed -n 's/^counts (passed\/failed): *//p' "$log" | tail -n1)
	percounts+=("$major: ${counts:-?}")
	if [ "$rc" -eq 0 ]; then result=pass; else result=FAIL; status=1; fi
	rows+=("$(printf '%-6s %-34s %-6s %7s %7s  %-34s %-5s %s' "$major" "${full#PostgreSQL }" "$result" "${passed:--}" "${failed:--}" "${skipped:-none}" "$mins" "${suites:-}")")
	echo "${rows[-1]}" >&2
	if [ "$rc" -eq 0 ]; then mdres="all suites pass"; else mdres="FAILED:${suites:- (see the log)}"; fi
	md+=("| $major | ${full#PostgreSQL } | $(built_by "$pgc" "$major") | $mdres | ${passed:--} / ${failed:--} | ${skipped:-none} |")
done

echo
echo "pg_metronome test matrix, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT_DIR" rev-parse --short HEAD 2>/dev/null || echo 'no git')"
printf '%-6s %-34s %-6s %7s %7s  %-34s %-5s %s\n' major version result passed failed 'skipped, not counted' min 'failed suites'
printf '%s\n' "${rows[@]}"
echo
echo "README (PostgreSQL versions and packages):"
echo "| PostgreSQL | server tested | built by | result, $(date -u '+%Y-%m-%d') | passed / failed | skipped, not counted |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${md[@]}"
echo
echo "per suite (passed/failed):"
printf '  %s\n' "${percounts[@]}"
echo "logs: $OUT"
exit $status
