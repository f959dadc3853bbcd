#!/usr/bin/env bash
# test/packages.sh: build and install the two packages of pg_metronome, the
# PGXN zip and the Debian .deb, and check that what they install works.
#
# Usage: sudo test/packages.sh [--keep]     (from a git checkout, as root)
#
#   --keep   keep the work directory (zip, .deb, logs) and print it
#
# What it does:
#   1. as root, installs what is missing with apt-get (git, unzip,
#      dpkg-dev, debhelper, fakeroot, postgresql-server-dev-all, the
#      libraries' -dev packages, python3 for the mock);
#   2. PGXN: `make dist` (git archive of HEAD: commit first), checks the
#      zip's layout and META.json (the PGXN meta spec's mandatory keys, the
#      version against metronome.control, the provided extension's file),
#      then unpacks it, builds it with -Wall -Wextra -Werror and installs
#      it (DESTDIR) for each Debian-packaged server;
#   3. Debian: the unpacked zip with an orig tarball beside it,
#      `dpkg-buildpackage -us -uc`, one postgresql-NN-metronome .deb per
#      PostgreSQL major pg_buildext supports here;
#   4. installs each .deb with dpkg (--instdir, --admindir: a clean root
#      holding a copy of the system's server of that major, which
#      relocates, so nothing outside the work directory changes and a
#      metronome.so that a `make install` left in the system is not used),
#      starts a throwaway server from there (as the OS user pgmetronome)
#      with the library preloaded and the mock Metronome as ingest URL,
#      runs CREATE EXTENSION and the preset mapping, inserts one Segment
#      track event and waits until the worker has shipped it and the mock
#      has it; then stops everything and removes the package (dpkg --purge).
#
# It is not part of test/run.sh: it installs Debian's packaging tools as
# root, needs git history (make dist archives HEAD) and builds the
# extension three more times; test/run.sh tests the working tree.  It
# takes about a minute.
#
# Ends with "N passed, N failed"; exit status 0 when nothing failed.

set -uo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
. "$ROOT_DIR/test/lib/common.sh"

KEEP=0
case "${1:-}" in
	--keep) KEEP=1 ;;
	"") ;;
	*) mt_die "usage: test/packages.sh [--keep]" ;;
esac
[ "$(id -u)" -eq 0 ] || mt_die "test/packages.sh installs a .deb with dpkg: run it as root"
git -C "$ROOT_DIR" rev-parse HEAD >/dev/null 2>&1 || mt_die "$ROOT_DIR is not a git checkout (make dist archives HEAD)"

PASSED=0
FAILED=0
check()		# check DESCRIPTION COMMAND...: one test
{
	local what=$1
	shift
	if "$@" >>"$W/checks.log" 2>&1; then
		echo "ok - $what"
		PASSED=$((PASSED + 1))
	else
		echo "not ok - $what"
		FAILED=$((FAILED + 1))
		return 1
	fi
}
finish()
{
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
	exit $?
}

# 1. packages
need=""
for p in git unzip dpkg-dev debhelper fakeroot postgresql-server-dev-all \
	libcurl4-openssl-dev libjson-c-dev pkg-config python3 make gcc; do
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || need="$need $p"
done
if [ -n "$need" ]; then
	mt_log "installing:$need"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || mt_die "apt-get update failed"
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $need >/dev/null || mt_die "apt-get install$need failed"
fi
mt_ensure_user

W=$(mktemp -d "${TMPDIR:-/tmp}/pg_metronome_packages.XXXXXX") || mt_die "mktemp failed"
chmod 755 "$W"
MOCK_PID=""
DATA=""
PG_BIN=""
cleanup()
{
	if [ -n "$DATA" ] && [ -n "$PG_BIN" ]; then
		runuser -u "$MT_USER" -- "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1
	fi
	[ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
	if [ "$KEEP" -eq 1 ]; then
		echo "kept: $W" >&2
	else
		rm -rf "$W"
	fi
}
trap cleanup EXIT

EXTVERSION=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$ROOT_DIR/metronome.control")
DIST=pg_metronome-$EXTVERSION
mt_log "work directory $W, version $EXTVERSION"

# 2. PGXN
mt_log "PGXN: make dist"
check "make dist builds $DIST.zip from git HEAD" \
	make -s -C "$ROOT_DIR" dist DIST="$W/$DIST.zip" || finish
check "the zip unpacks into $DIST/" unzip -q "$W/$DIST.zip" -d "$W/pgxn" || finish
check "the zip holds META.json, the control file, the Makefile and the LICENSE" \
	test -f "$W/pgxn/$DIST/META.json" -a -f "$W/pgxn/$DIST/metronome.control" \
	-a -f "$W/pgxn/$DIST/Makefile" -a -f "$W/pgxn/$DIST/LICENSE"
check "the zip holds nothing but committed files (no build products)" \
	bash -c "! find '$W/pgxn/$DIST' -name '*.o' -o -name '*.so' | grep -q ."
check "the zip leaves out the CI files (.ci, .github: export-ignore)" \
	test ! -e "$W/pgxn/$DIST/.ci" -a ! -e "$W/pgxn/$DIST/.github"
check "META.json follows the PGXN meta spec 1.0.0 and says version $EXTVERSION" \
	python3 - "$W/pgxn/$DIST" "$EXTVERSION" <<'EOF'
import json, os, re, sys
root, version = sys.argv[1], sys.argv[2]
m = json.load(open(os.path.join(root, "META.json")))
semver = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z-]+)?$")
errors = []
for key in ("name", "abstract", "maintainer", "license", "provides", "version", "meta-spec"):
    if key not in m:
        errors.append("missing mandatory key " + key)
if m.get("meta-spec", {}).get("version") != "1.0.0":
    errors.append("meta-spec.version is not 1.0.0")
if not re.match(r"^[A-Za-z0-9_-]{2,}$", m.get("name", "")):
    errors.append("bad name")
if m.get("version") != version or not semver.match(version):
    errors.append("version %r is not the control file's %r" % (m.get("version"), version))
if m.get("license") not in ("postgresql", "bsd", "mit", "gpl_3", "apache_2_0") and not isinstance(m.get("license"), dict):
    errors.append("license is not one of the spec's names")
if not isinstance(m.get("maintainer"), (str, list)):
    errors.append("maintainer is not a string or a list")
for ext, p in m.get("provides", {}).items():
    for key in ("file", "version"):
        if key not in p:
            errors.append("provides.%s has no %s" % (ext, key))
    if not semver.match(p.get("version", "")):
        errors.append("provides.%s.version is not semver" % ext)
    if not os.path.exists(os.path.join(root, p.get("file", "/nonexistent"))):
        errors.append("provides.%s.file %s is not in the zip" % (ext, p.get("file")))
    if p.get("docfile") and not os.path.exists(os.path.join(root, p["docfile"])):
        errors.append("provides.%s.docfile is not in the zip" % ext)
for phase, rels in m.get("prereqs", {}).items():
    if phase not in ("configure", "build", "test", "runtime", "develop"):
        errors.append("unknown prereqs phase " + phase)
    for rel, reqs in rels.items():
        if rel not in ("requires", "recommends", "suggests", "conflicts"):
            errors.append("unknown prereqs relationship " + rel)
        for name, v in reqs.items():
            if v != 0 and not semver.match(str(v)):
                errors.append("prereq %s version %r is not semver" % (name, v))
if m.get("prereqs", {}).get("runtime", {}).get("requires", {}).get("PostgreSQL") is None:
    errors.append("no PostgreSQL runtime prereq")
# resources (optional): the spec's keys only, each a URI (or mailto address)
uri = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
res = m.get("resources", {})
if not isinstance(res, dict):
    errors.append("resources is not an object")
    res = {}
for key, v in res.items():
    if key.lower().startswith("x_"):
        continue
    if key == "homepage":
        if not isinstance(v, str) or not uri.match(v):
            errors.append("resources.homepage is not a URI")
    elif key in ("bugtracker", "repository"):
        allowed = {"bugtracker": ("web", "mailto"), "repository": ("url", "web", "type")}[key]
        if not isinstance(v, dict) or not v:
            errors.append("resources.%s is not a non-empty object" % key)
            continue
        for sub, sv in v.items():
            if sub.lower().startswith("x_"):
                continue
            if sub not in allowed:
                errors.append("resources.%s.%s is not in the spec" % (key, sub))
            elif sub == "mailto" and not re.match(r"^[^@\s]+@[^@\s]+$", str(sv)):
                errors.append("resources.bugtracker.mailto is not an address")
            elif sub == "type" and not re.match(r"^[a-z]+$", str(sv)):
                errors.append("resources.repository.type is not a lower-case word")
            elif sub in ("web", "url") and not (isinstance(sv, str) and uri.match(sv)):
                errors.append("resources.%s.%s is not a URI" % (key, sub))
    else:
        errors.append("resources.%s is not in the spec" % key)
for key in ("tags",):
    if key in m and not (isinstance(m[key], list) and all(isinstance(t, str) and 0 < len(t) < 256 for t in m[key])):
        errors.append("tags is not a list of strings")
if m.get("release_status", "stable") not in ("stable", "testing", "unstable"):
    errors.append("bad release_status")
for key in m:
    if key not in ("name", "abstract", "description", "version", "maintainer", "license",
                   "provides", "prereqs", "resources", "generated_by", "release_status",
                   "no_index", "tags", "meta-spec") and not key.lower().startswith("x_"):
        errors.append("unknown key " + key)
print("\n".join(errors) or "META.json is OK")
sys.exit(1 if errors else 0)
EOF

mapfile -t MAJORS < <(cd "$W/pgxn/$DIST" && pg_buildext supported-versions 2>/dev/null)
[ ${#MAJORS[@]} -gt 0 ] || { echo "not ok - pg_buildext names no PostgreSQL major"; FAILED=$((FAILED + 1)); finish; }
mt_log "PostgreSQL majors packaged here: ${MAJORS[*]}"
for v in "${MAJORS[@]}"; do
	pgc=/usr/lib/postgresql/$v/bin/pg_config
	rm -rf "$W/pgxn-build"
	cp -a "$W/pgxn/$DIST" "$W/pgxn-build"
	check "PGXN zip: builds against PostgreSQL $v with -Wall -Wextra -Werror" \
		nice -n 10 make -s -j2 -C "$W/pgxn-build" PG_CONFIG="$pgc" PG_CFLAGS='-Wall -Wextra -Werror' || continue
	check "PGXN zip: make install puts the library, control file and scripts in place (PostgreSQL $v)" \
		bash -c "make -s -C '$W/pgxn-build' PG_CONFIG='$pgc' install DESTDIR='$W/pgxn-root-$v' >/dev/null &&
			test -f '$W/pgxn-root-$v$("$pgc" --pkglibdir)/metronome.so' &&
			test -f '$W/pgxn-root-$v$("$pgc" --sharedir)/extension/metronome.control' &&
			test -f '$W/pgxn-root-$v$("$pgc" --sharedir)/extension/metronome--0.1.0.sql'"
done

# 3. Debian
mt_log "Debian: dpkg-buildpackage -us -uc"
DEB_SRC=$W/deb/pg-metronome-$EXTVERSION
mkdir -p "$W/deb"
cp -a "$W/pgxn/$DIST" "$DEB_SRC"
tar -C "$W/deb" -czf "$W/deb/pg-metronome_$EXTVERSION.orig.tar.gz" \
	--exclude="pg-metronome-$EXTVERSION/debian" "pg-metronome-$EXTVERSION"
check "debian/changelog's version is the control file's ($EXTVERSION)" \
	bash -c "cd '$DEB_SRC' && dpkg-parsechangelog -S Version | grep -qx '$EXTVERSION-[0-9][0-9]*'"
check "dpkg-buildpackage -us -uc succeeds" \
	bash -c "cd '$DEB_SRC' && nice -n 10 dpkg-buildpackage -us -uc >'$W/dpkg-buildpackage.log' 2>&1" \
	|| { tail -n 30 "$W/dpkg-buildpackage.log"; finish; }
DEBVERSION=$(cd "$DEB_SRC" && dpkg-parsechangelog -S Version)
ARCH=$(dpkg --print-architecture)

# 4. install each .deb and ship one event through it
PGPORT_TEST=$((50000 + RANDOM % 10000))
for v in "${MAJORS[@]}"; do
	deb=$W/deb/postgresql-$v-metronome_${DEBVERSION}_$ARCH.deb
	check "postgresql-$v-metronome_${DEBVERSION}_$ARCH.deb was built" test -f "$deb" || continue
	check "the .deb holds metronome.so and the extension's files for PostgreSQL $v" \
		bash -c "dpkg -c '$deb' | grep -q ' ./usr/lib/postgresql/$v/lib/metronome.so\$' &&
			dpkg -c '$deb' | grep -q ' ./usr/share/postgresql/$v/extension/metronome.control\$' &&
			dpkg -c '$deb' | grep -q ' ./usr/share/postgresql/$v/extension/metronome--0.1.0--0.2.0.sql\$'"
	check "its dependencies are satisfiable on this system (apt-get -s install)" \
		apt-get -s -qq install "$deb"

	# A clean root: a copy of the system's server (bindir, pkglibdir,
	# sharedir, same layout: it relocates), without any metronome file, and
	# an empty dpkg database; dpkg installs the .deb there.
	R=$W/root-$v
	PG_BIN=$R/usr/lib/postgresql/$v/bin
	pgc=/usr/lib/postgresql/$v/bin/pg_config
	for d in "$("$pgc" --bindir)" "$("$pgc" --pkglibdir)" "$("$pgc" --sharedir)"; do
		mkdir -p "$R$(dirname "$d")"
		[ -d "$R$d" ] || cp -a "$d" "$R$d"
	done
	rm -f "$R$("$pgc" --pkglibdir)"/metronome* "$R$("$pgc" --sharedir)"/extension/metronome*
	rm -rf "$R$("$pgc" --pkglibdir)/bitcode/metronome"
	mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates"
	: >"$R/var/lib/dpkg/status"
	dpkg_() { dpkg --instdir="$R" --admindir="$R/var/lib/dpkg" --force-depends --force-script-chrootless "$@"; }
	check "dpkg -i installs postgresql-$v-metronome into a clean root" dpkg_ -i "$deb" || continue
	mkdir -p "$W/x-$v" && dpkg-deb -x "$deb" "$W/x-$v"
	check "the installed library is the .deb's, where the server looks for it" \
		cmp "$W/x-$v$("$pgc" --pkglibdir)/metronome.so" "$R$("$pgc" --pkglibdir)/metronome.so"
	check "the relocated server finds its pkglibdir in the clean root" \
		test "$("$PG_BIN/pg_config" --pkglibdir)" = "$R$("$pgc" --pkglibdir)"
	chown -R "$MT_USER:" "$R"

	# the mock Metronome and a throwaway server, as the unprivileged user
	D=$W/run-$v
	mkdir -p "$D"
	cp "$ROOT_DIR/test/mock_metronome.py" "$D/"
	chown -R "$MT_USER:" "$D"
	runuser -u "$MT_USER" -- setsid python3 "$D/mock_metronome.py" --port 0 --token pkg-token \
		>"$D/mock.out" 2>"$D/mock.log" </dev/null &
	MOCK_PID=$!
	port=""
	for _ in $(seq 1 100); do
		port=$(sed -n 's/^PORT \([0-9][0-9]*\)$/\1/p' "$D/mock.out" 2>/dev/null | head -n1)
		[ -n "$port" ] && break
		sleep 0.1
	done
	check "the mock Metronome listens" test -n "$port" || continue
	DATA=$D/data
	runuser -u "$MT_USER" -- "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust --no-locale -E UTF8 \
		>"$D/initdb.log" 2>&1
	cat >>"$DATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$D'
port = $PGPORT_TEST
shared_preload_libraries = 'metronome'
metronome.database = 'postgres'
metronome.ingest_url = 'http://127.0.0.1:$port/v1/ingest'
metronome.api_token = 'pkg-token'
EOF
	check "PostgreSQL $v starts with the packaged library preloaded" \
		runuser -u "$MT_USER" -- "$PG_BIN/pg_ctl" -D "$DATA" -l "$D/server.log" -w start \
		|| { tail -n 20 "$D/server.log"; continue; }
	psql_() { runuser -u "$MT_USER" -- "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$D" -p "$PGPORT_TEST" -U postgres -d postgres "$@"; }
	create_and_map()
	{
		psql_ -c 'CREATE EXTENSION metronome' &&
			psql_ -c "INSERT INTO metronome_mappings (name) VALUES ('tracks')" &&
			test "$(psql_ -c "SELECT extversion FROM pg_extension WHERE extname = 'metronome'")" = "$EXTVERSION"
	}
	check "CREATE EXTENSION metronome (version $EXTVERSION) and the preset mapping" create_and_map
	check "a Segment track event is inserted into segment_events" \
		psql_ -c "INSERT INTO segment_events (event) VALUES ('{\"type\": \"track\", \"event\": \"API Call\", \"messageId\": \"pkg-$v-1\", \"timestamp\": \"2024-03-01T10:15:30Z\", \"context\": {\"groupId\": \"acme\"}, \"properties\": {\"tokens\": 1200}}')"
	check "the event is mapped into the outbox" \
		test "$(psql_ -c "SELECT count(*) FROM metronome_outbox WHERE transaction_id = 'pkg-$v-1'")" = 1
	sent=""
	for _ in $(seq 1 300); do
		sent=$(psql_ -c "SELECT status FROM metronome_outbox WHERE transaction_id = 'pkg-$v-1'")
		[ "$sent" = sent ] && break
		sleep 0.1
	done
	check "the worker ships it (status sent)" test "$sent" = sent
	check "the mock has it: transaction_id, customer_id, event_type, properties" \
		python3 -c "
import json, sys, urllib.request
evs = json.load(urllib.request.urlopen('http://127.0.0.1:$port/_events'))
e = [e for e in evs if e.get('transaction_id') == 'pkg-$v-1']
ok = len(e) == 1 and e[0]['customer_id'] == 'acme' and e[0]['event_type'] == 'API Call' \
	and e[0]['properties'] == {'tokens': 1200} and e[0]['timestamp'] == '2024-03-01T10:15:30.000Z'
print(e)
sys.exit(0 if ok else 1)"

	runuser -u "$MT_USER" -- "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1
	DATA=""
	kill "$MOCK_PID" 2>/dev/null
	MOCK_PID=""
	check "dpkg --purge removes postgresql-$v-metronome" dpkg_ --purge "postgresql-$v-metronome"
	check "nothing of it is left in the root" \
		test ! -e "$R$("$pgc" --pkglibdir)/metronome.so" -a ! -e "$R$("$pgc" --sharedir)/extension/metronome.control"
done

[ "$FAILED" -eq 0 ] || { echo "----- $W/checks.log"; tail -n 40 "$W/checks.log"; }
finish
