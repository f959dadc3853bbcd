#!/usr/bin/env bash
# test/conformance/run.sh: the differential suite, Segment's own Metronome
# (Actions) destination against pg_metronome on the same corpus.
#
# Usage: bash test/conformance/run.sh OUTDIR
#
# test/run.sh runs it (suite "conformance") with the extension built and
# installed in its private server copy (first in PATH) and PERL5LIB,
# PG_REGRESS set as for the TAP tests.  Steps:
#   1. npm ci in test/conformance (the versions of package-lock.json;
#      needs node, npm and the npm registry);
#   2. node segment.js: every case of corpus.js through Segment's
#      Destination.onEvent, the request to Metronome intercepted;
#   3. perl ours.pl: every case through our mapping preview, our trigger
#      and our worker (to the mock Metronome);
#   4. node compare.js: the two against each other and allowlist.json.
# Ends with the line "CONFORMANCE-SUMMARY passed=P failed=F" (P cases with
# no difference or an allowed one, F cases with a difference not allowed or
# a step that failed) and exits 1 when F > 0.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:?usage: run.sh OUTDIR}
mkdir -p "$OUT"

fail_all()
{
	echo "conformance: $*"
	echo "CONFORMANCE-SUMMARY passed=0 failed=1"
	exit 1
}

for tool in node npm; do
	command -v "$tool" >/dev/null 2>&1 ||
		fail_all "********** $tool is not installed: the differential suite against Segment's code CANNOT RUN (install Node.js 18 or later with npm) **********"
done

cd "$HERE" || fail_all "cannot cd to $HERE"
# npm's cache and logs stay in the output directory, not in $HOME
export npm_config_cache=${npm_config_cache:-$OUT/npm-cache}
if [ ! -d node_modules/@segment/action-destinations ] || [ node_modules/.package-lock.json -ot package-lock.json ]; then
	echo "conformance: npm ci (Segment's packages, pinned by package-lock.json)"
	if ! npm ci --no-audit --no-fund --loglevel=error >"$OUT/npm.log" 2>&1; then
		cat "$OUT/npm.log"
		fail_all "********** npm ci failed (is the npm registry reachable?): the suite CANNOT RUN **********"
	fi
fi

node corpus.js --sql "$OUT/cases.sql" || fail_all "corpus.js failed"
node segment.js "$OUT/segment.json" || fail_all "segment.js (Segment's side) failed"
if ! perl ours.pl "$OUT/cases.sql" "$OUT/ours.json" >"$OUT/ours.log" 2>&1; then
	cat "$OUT/ours.log"
	fail_all "ours.pl (our side) failed"
fi
grep -E '^# our side' "$OUT/ours.log"
node compare.js "$OUT/segment.json" "$OUT/ours.json" allowlist.json
