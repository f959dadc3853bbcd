#!/usr/bin/env bash
# test/fuzz/run.sh: build and run pg_metronome's libFuzzer targets.
#
# Usage: test/fuzz/run.sh [--smoke | --seconds N | --replay | --coverage] [TARGET]...
#
#   --smoke      what test/run.sh runs: replay every regression input and
#                every seed, then fuzz each target for FUZZ_SMOKE_SECONDS
#                (default 2) from its seeds; in a temporary directory.
#   --seconds N  fuzz each target for N seconds (default 60), growing the
#                working corpus in test/fuzz/out/corpus/TARGET (kept between
#                runs); the regressions and seeds are replayed first.
#   --replay     only replay the regression inputs and the seeds.
#   --coverage   build with source coverage instead of sanitizers, replay the
#                regressions, the seeds and the working corpus, and print
#                llvm-cov's report for the project's files (the lines never
#                reached are in OUT/coverage/TARGET.txt).
#   TARGET       fql, mapkit, http_parse, http_answer (default: all)
#
# Exit status: 0 when every target ran and found nothing; 1 otherwise.  A
# finding's input is kept in OUT/artifacts/TARGET/ (crash-*, timeout-*,
# oom-*) and its path printed; once fixed, copy it into
# test/fuzz/regressions/TARGET/ so that --smoke replays it forever.
#
# Environment: FUZZ_OUT (work directory; default test/fuzz/out, a fresh
# temporary one for --smoke), FUZZ_OPT (default -O1 for --seconds, -O0
# otherwise), FUZZ_SANITIZE (default address,undefined;
# "none" builds without sanitizers), FUZZ_NICE (default 19 for --seconds),
# PG_CONFIG, CC (default clang), FUZZ_JOBS (parallel compiles, default 2),
# FUZZ_ARGS (more libFuzzer options for every run).
#
# Targets (see each harness's banner):
#   fql, mapkit   the mapping engine, which calls the server's own functions
#                 (palloc, jsonb, numeric, ereport): fuzz_pg.c and the
#                 engine's sources make a fuzz-only shared library whose SQL
#                 function metronome_fuzz() runs libFuzzer
#                 (LLVMFuzzerRunDriver) inside `postgres --single` on a
#                 throwaway cluster, with AddressSanitizer's runtime preloaded
#                 (and asan_preload.so, see its banner).  No install is
#                 needed: the library is loaded by its absolute path.  As
#                 root, the server runs as the OS user MT_USER (default
#                 pgmetronome), created if missing.
#   http_parse    the pure helpers of src/http.c (fuzz_http_parse.c)
#   http_answer   whole HTTP answers through libcurl and src/http.c
#                 (fuzz_http_answer.c)
#
# Needs clang and its runtime libraries (Debian: clang libclang-rt-dev),
# the PostgreSQL server and its headers, libcurl and json-c headers.

set -uo pipefail

# The whole script is one block, read before it runs: editing the file
# during a long run cannot change what the run does.
{
FUZZ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$FUZZ_DIR/../.." && pwd)
# shellcheck source=../lib/common.sh
. "$ROOT_DIR/test/lib/common.sh"

ALL_TARGETS="fql mapkit http_parse http_answer"
MODE=seconds
SECS=60
TARGETS=()

while [ $# -gt 0 ]; do
	case "$1" in
		--smoke) MODE=smoke; shift ;;
		--replay) MODE=replay; shift ;;
		--coverage) MODE=coverage; shift ;;
		--seconds)
			[ $# -ge 2 ] || mt_die "--seconds needs a number"
			MODE=seconds; SECS=$2; shift 2 ;;
		--seconds=*) MODE=seconds; SECS=${1#--seconds=}; shift ;;
		-h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
		-*) mt_die "unknown option $1 (see $0 --help)" ;;
		*)
			case " $ALL_TARGETS " in
				*" $1 "*) TARGETS+=("$1") ;;
				*) mt_die "unknown target '$1' (one of: $ALL_TARGETS)" ;;
			esac
			shift ;;
	esac
done
[ ${#TARGETS[@]} -gt 0 ] || read -r -a TARGETS <<<"$ALL_TARGETS"
case "$SECS" in ''|*[!0-9]*) mt_die "--seconds needs a whole number of seconds" ;; esac

SMOKE_SECONDS=${FUZZ_SMOKE_SECONDS:-2}
SANITIZE=${FUZZ_SANITIZE:-address,undefined}
[ "$MODE" = coverage ] && SANITIZE=none
CC=${CC:-clang}
JOBS=${FUZZ_JOBS:-2}
read -r -a EXTRA_ARGS <<<"${FUZZ_ARGS:-}"
if [ "$MODE" = seconds ]; then NICE=${FUZZ_NICE:-19}; else NICE=${FUZZ_NICE:-0}; fi

if [ "$MODE" = smoke ] && [ -z "${FUZZ_OUT:-}" ]; then
	OUT=$(mktemp -d "${TMPDIR:-/tmp}/metronome_fuzz.XXXXXX") || mt_die "mktemp failed"
	trap 'rm -rf "$OUT"' EXIT
else
	OUT=${FUZZ_OUT:-$FUZZ_DIR/out}
	mkdir -p "$OUT" || mt_die "cannot create $OUT"
	OUT=$(cd "$OUT" && pwd)
fi
BUILD=$OUT/build
[ "$MODE" = coverage ] && BUILD=$OUT/build-coverage
mkdir -p "$BUILD"

######################################################################
# Tools
######################################################################
command -v "$CC" >/dev/null 2>&1 ||
	mt_die "$CC not found: install clang and its runtime (Debian: apt-get install clang libclang-rt-dev)"
RT=$("$CC" -print-resource-dir)/lib/linux
for lib in libclang_rt.fuzzer_no_main-x86_64.a libclang_rt.fuzzer-x86_64.a; do
	[ -f "$RT/$lib" ] ||
		mt_die "$RT/$lib not found: install clang's runtime libraries (Debian: apt-get install libclang-rt-dev)"
done
ASAN_RT=$RT/libclang_rt.asan-x86_64.so
case ",$SANITIZE," in
	*,address,*) [ -f "$ASAN_RT" ] || mt_die "$ASAN_RT not found (Debian: apt-get install libclang-rt-dev), or set FUZZ_SANITIZE=none" ;;
esac
mt_find_pg_config
PG_INC=$("$PGC" --includedir-server)
[ -f "$PG_INC/postgres.h" ] || mt_die "server headers not found in $PG_INC (Debian: postgresql-server-dev-$PG_MAJOR)"
for t in initdb postgres; do
	[ -x "$PG_BINDIR/$t" ] || mt_die "$PG_BINDIR/$t not found (Debian: postgresql-$PG_MAJOR)"
done
CURL_JSON="$(pkg-config --cflags --libs libcurl json-c) -pthread" ||
	mt_die "libcurl or json-c headers not found (Debian: libcurl4-openssl-dev libjson-c-dev)"

if [ "$SANITIZE" = none ]; then
	SAN_FLAGS=()
	SAN_LINK=()
else
	SAN_FLAGS=(-fsanitize="$SANITIZE" -fno-sanitize-recover=all)
	SAN_LINK=(-fsanitize="$SANITIZE")
fi
# -O1 to fuzz for long; -O0 (three times quicker to build) for --smoke and
# --replay, whose time goes mostly into the build
if [ "$MODE" = seconds ]; then OPT=${FUZZ_OPT:--O1}; else OPT=${FUZZ_OPT:--O0}; fi
CFLAGS=(-g "$OPT" -fno-omit-frame-pointer -Wall -Wno-ignored-attributes
	-Wno-unused-command-line-argument)
if [ "$MODE" = coverage ]; then
	CFLAGS+=(-fprofile-instr-generate -fcoverage-mapping)
	SAN_LINK=(-fprofile-instr-generate)
	LLVM_BIN=$(dirname "$(readlink -f "$(command -v "$CC")")")
	for t in llvm-profdata llvm-cov; do
		[ -x "$LLVM_BIN/$t" ] || mt_die "$LLVM_BIN/$t not found (Debian: llvm)"
	done
	mkdir -p "$OUT/coverage"
	rm -f "$OUT"/coverage/*.profraw
fi

# the server runs as an unprivileged user when we are root
RUNAS=()
if [ "$(id -u)" -eq 0 ]; then
	mt_ensure_user
	RUNAS=(runuser -u "$MT_USER" --)
fi

######################################################################
# Build
######################################################################
# compile SRC OBJ FLAGS...: compile unless OBJ is newer than every source
# (a harness includes http.c) and was built with the same flags
compile()
{
	local src=$1 obj=$2
	shift 2
	if [ -f "$obj" ] && [ "$obj" -nt "$src" ] &&
	   [ -z "$(find "$ROOT_DIR/src" "$FUZZ_DIR" -maxdepth 1 \( -name '*.[ch]' \) -newer "$obj" 2>/dev/null)" ] &&
	   [ "$(cat "$obj.flags" 2>/dev/null)" = "$*" ]; then
		return 0
	fi
	"$CC" "$@" -c "$src" -o "$obj" && echo "$*" >"$obj.flags"
}

build_pg()
{
	local f src obj objs=() pids=() bad=0
	local flags=("${CFLAGS[@]}" "${SAN_FLAGS[@]}" -fsanitize=fuzzer-no-link -fPIC
		-isystem "$PG_INC" -I"$ROOT_DIR/src")
	for f in fql.c path.c mapkit.c mapkit_compile.c mapkit_eval.c mapkit_js.c fields.c jsnum.c jsonbval.c fuzz_pg.c; do
		src=$ROOT_DIR/src/$f
		[ "$f" = fuzz_pg.c ] && src=$FUZZ_DIR/$f
		obj=$BUILD/pg_${f%.c}.o
		objs+=("$obj")
		compile "$src" "$obj" "${flags[@]}" &
		pids+=($!)
		if [ ${#pids[@]} -ge "$JOBS" ]; then
			wait "${pids[0]}" || bad=1
			pids=("${pids[@]:1}")
		fi
	done
	for f in "${pids[@]}"; do wait "$f" || bad=1; done
	[ "$bad" -eq 0 ] || return 1
	"$CC" -shared "${SAN_LINK[@]}" -shared-libasan -Wl,-Bsymbolic -o "$BUILD/metronome_fuzz.so" "${objs[@]}" \
		-Wl,--whole-archive "$RT/libclang_rt.fuzzer_no_main-x86_64.a" -Wl,--no-whole-archive \
		-lstdc++ -lm || return 1
	"$CC" -shared -fPIC -O1 -o "$BUILD/asan_preload.so" "$FUZZ_DIR/asan_preload.c" || return 1
}

build_http()
{
	local t=$1
	local flags=("${CFLAGS[@]}" "${SAN_FLAGS[@]}" -fsanitize=fuzzer -I"$ROOT_DIR/src" -I"$ROOT_DIR/test/unit")
	# shellcheck disable=SC2086
	if [ "$t" = http_parse ]; then
		compile "$ROOT_DIR/src/http.c" "$BUILD/http_parse_http.o" "${flags[@]}" $CURL_JSON &&
		compile "$FUZZ_DIR/fuzz_http_parse.c" "$BUILD/http_parse_main.o" "${flags[@]}" $CURL_JSON &&
		"$CC" "${flags[@]}" -o "$BUILD/http_parse" "$BUILD/http_parse_main.o" \
			"$BUILD/http_parse_http.o" $CURL_JSON
	else
		compile "$FUZZ_DIR/fuzz_http_answer.c" "$BUILD/http_answer_main.o" "${flags[@]}" $CURL_JSON &&
		"$CC" "${flags[@]}" -o "$BUILD/http_answer" "$BUILD/http_answer_main.o" $CURL_JSON
	fi
}

want() { case " ${TARGETS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

T0=$(date +%s)
mt_log "fuzz: build ($SANITIZE) in $BUILD"
if want fql || want mapkit; then
	build_pg || mt_die "building the in-backend fuzz library failed"
fi
for t in http_parse http_answer; do
	if want "$t"; then build_http "$t" || mt_die "building $t failed"; fi
done
mt_log "fuzz: built in $(( $(date +%s) - T0 )) s"

######################################################################
# Run
######################################################################
FAILED=()
PGDATA_DIR=$OUT/pgdata

# the work directory belongs to the user that runs the targets
own_out()
{
	[ ${#RUNAS[@]} -eq 0 ] || chown -R "$MT_USER:" "$OUT"
}

# make sure the throwaway cluster exists
ensure_cluster()
{
	[ -f "$PGDATA_DIR/PG_VERSION" ] && return 0
	rm -rf "$PGDATA_DIR"
	own_out
	(cd "$OUT" && "${RUNAS[@]}" "$PG_BINDIR/initdb" -D "$PGDATA_DIR" -A trust \
		--no-locale -E UTF8 --no-sync >"$OUT/initdb.log" 2>&1) ||
		{ cat "$OUT/initdb.log"; return 1; }
}

# sanitizer settings shared by every run
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1:handle_abort=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
SYMBOLIZER=$(command -v llvm-symbolizer || true)
[ -n "$SYMBOLIZER" ] && export ASAN_SYMBOLIZER_PATH=$SYMBOLIZER

# run_target TARGET LOG ARGS...: run libFuzzer on TARGET with ARGS
run_target()
{
	local t=$1 log=$2
	shift 2
	case "$t" in
		fql|mapkit)
			local arr="" a
			for a in "$@"; do
				arr="$arr${arr:+, }'${a//\'/\'\'}'"
			done
			local preload=""
			[ "$SANITIZE" = none ] || case ",$SANITIZE," in
				*,address,*) preload="$ASAN_RT $BUILD/asan_preload.so" ;;
			esac
			ensure_cluster || return 1
			own_out
			printf '%s\n%s\n' \
				"CREATE OR REPLACE FUNCTION metronome_fuzz(text, text[]) RETURNS int AS '$BUILD/metronome_fuzz.so' LANGUAGE C STRICT;" \
				"SELECT metronome_fuzz('$t', ARRAY[$arr]::text[]);" |
			(cd "$OUT" && nice -n "$NICE" "${RUNAS[@]}" env LD_PRELOAD="$preload" \
				ASAN_OPTIONS="$ASAN_OPTIONS" UBSAN_OPTIONS="$UBSAN_OPTIONS" \
				LLVM_PROFILE_FILE="$OUT/coverage/$t-%p.profraw" \
				${ASAN_SYMBOLIZER_PATH:+ASAN_SYMBOLIZER_PATH="$ASAN_SYMBOLIZER_PATH"} \
				"$PG_BINDIR/postgres" --single -D "$PGDATA_DIR" -c fsync=off \
				-c max_stack_depth=2MB -c log_min_messages=warning postgres) >"$log" 2>&1
			;;
		*)
			(cd "$OUT" && LLVM_PROFILE_FILE="$OUT/coverage/$t-%p.profraw" \
				nice -n "$NICE" "$BUILD/$t" "$@") >"$log" 2>&1
			;;
	esac
}

# common libFuzzer options of a target
target_opts()
{
	local t=$1 opts=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1)
	# a hang is a hang at any limit; the limit is wall time, and a long run
	# at nice 19 on a busy machine may wait seconds for the processor
	if [ "$MODE" = seconds ]; then opts+=(-timeout=60); else opts+=(-timeout=30); fi
	[ -f "$FUZZ_DIR/dict/$t.dict" ] && opts+=(-dict="$FUZZ_DIR/dict/$t.dict")
	case "$t" in
		fql|mapkit) opts+=(-max_len=8192 -handle_usr1=0 -handle_usr2=0) ;;
		http_parse) opts+=(-max_len=4096) ;;
		http_answer) opts+=(-max_len=16384) ;;
	esac
	printf '%s\n' "${opts[@]}" "${EXTRA_ARGS[@]}"
}

# report a failed run of TARGET (log LOG)
report()
{
	local t=$1 log=$2 what=$3
	echo "fuzz $t: $what; log: $log"
	grep -E 'FINDING|ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer|LeakSanitizer)|runtime error|SUMMARY|Test unit written to|^ERROR|^FATAL|^PANIC|deadly signal|Timeout|out-of-memory' \
		"$log" | head -n 20
	tail -n 30 "$log" | sed 's/^/    /'
	FAILED+=("$t")
}

for t in "${TARGETS[@]}"; do
	mkdir -p "$OUT/artifacts/$t" "$OUT/corpus/$t" "$OUT/logs"
	mapfile -t opts < <(target_opts "$t")
	opts+=(-artifact_prefix="$OUT/artifacts/$t/")

	# 1. replay: regressions, then seeds (files, so each one runs once)
	inputs=()
	while IFS= read -r -d '' f; do inputs+=("$f"); done < <(
		find "$FUZZ_DIR/regressions/$t" "$FUZZ_DIR/corpus/$t" -type f ! -name '.*' ! -name '*.md' -print0 2>/dev/null | sort -z)
	if [ ${#inputs[@]} -gt 0 ]; then
		# as root, the server user reads copies of the inputs
		stage=$OUT/inputs/$t
		rm -rf "$stage"; mkdir -p "$stage"
		i=0; staged=()
		for f in "${inputs[@]}"; do
			i=$((i + 1)); cp "$f" "$stage/$i-$(basename "$f")"; staged+=("$stage/$i-$(basename "$f")")
		done
		own_out
		log=$OUT/logs/$t-replay.log
		t1=$(date +%s)
		run_target "$t" "$log" "${opts[@]}" "${staged[@]}"
		rc=$?
		ran=$(grep -c '^Executed ' "$log")
		if [ "$rc" -ne 0 ] || [ "$ran" -ne ${#staged[@]} ]; then
			report "$t" "$log" "replay failed (exit $rc, $ran of ${#staged[@]} inputs ran)"
			continue
		fi
		mt_log "fuzz $t: replayed ${#staged[@]} inputs in $(( $(date +%s) - t1 )) s"
	fi
	[ "$MODE" = replay ] && continue
	if [ "$MODE" = coverage ]; then
		if [ -n "$(ls -A "$OUT/corpus/$t" 2>/dev/null)" ]; then
			log=$OUT/logs/$t-coverage.log
			own_out
			run_target "$t" "$log" "${opts[@]}" -runs=0 "$OUT/corpus/$t" ||
				report "$t" "$log" "replaying the working corpus failed"
		fi
		continue
	fi

	# 2. fuzz for a while, from the seeds (and, for long runs, the corpus so far)
	secs=$SECS
	[ "$MODE" = smoke ] && secs=$SMOKE_SECONDS
	log=$OUT/logs/$t-fuzz.log
	dirs=("$OUT/corpus/$t")
	[ -d "$FUZZ_DIR/corpus/$t" ] && dirs+=("$OUT/inputs/$t")
	extra=()
	[ "$MODE" = seconds ] && extra+=(-use_value_profile=1)
	own_out
	run_target "$t" "$log" "${opts[@]}" "${extra[@]}" -max_total_time="$secs" "${dirs[@]}"
	rc=$?
	if [ "$rc" -ne 0 ] || ! grep -q '^Done [0-9]* runs' "$log"; then
		report "$t" "$log" "fuzzing failed (exit $rc)"
		continue
	fi
	runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -n1)
	cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' "$log" | tail -n1)
	mt_log "fuzz $t: $runs ($cov)"
done

# coverage: one report per target, over the project's sources
if [ "$MODE" = coverage ]; then
	for t in "${TARGETS[@]}"; do
		case "$t" in
			fql|mapkit) obj=$BUILD/metronome_fuzz.so ;;
			*) obj=$BUILD/$t ;;
		esac
		compgen -G "$OUT/coverage/$t-*.profraw" >/dev/null || { echo "coverage $t: no profile written"; continue; }
		"$LLVM_BIN/llvm-profdata" merge -sparse -o "$OUT/coverage/$t.profdata" "$OUT"/coverage/"$t"-*.profraw || continue
		echo "== coverage of $t (regions, functions, lines):"
		"$LLVM_BIN/llvm-cov" report "$obj" -instr-profile="$OUT/coverage/$t.profdata" \
			"$ROOT_DIR/src" | sed "s|$ROOT_DIR/||"
		"$LLVM_BIN/llvm-cov" show "$obj" -instr-profile="$OUT/coverage/$t.profdata" \
			-show-line-counts-or-regions "$ROOT_DIR/src" >"$OUT/coverage/$t.txt"
	done
fi

if [ ${#FAILED[@]} -gt 0 ]; then
	echo "fuzz: findings or failures in: ${FAILED[*]} (inputs kept in $OUT/artifacts/)"
	if [ "$MODE" = smoke ] && [ -z "${FUZZ_OUT:-}" ]; then
		keep=${TMPDIR:-/tmp}/metronome_fuzz_failed.$$
		cp -r "$OUT/artifacts" "$keep" 2>/dev/null && echo "fuzz: artifacts copied to $keep"
		for t in "${FAILED[@]}"; do cp "$OUT"/logs/"$t"-*.log "$keep/" 2>/dev/null; done
	fi
	exit 1
fi
mt_log "fuzz: ${TARGETS[*]}: nothing found ($(( $(date +%s) - T0 )) s)"
exit 0
}
