# pg_metronome: PGXS build.
#
#   make                      build metronome.so
#   make install              install into the server that PG_CONFIG names
#   make installcheck         pg_regress suite against a running server
#   make dist                 the PGXN zip, pg_metronome-VERSION.zip, from git HEAD
#
# Needs PostgreSQL 15 or later (src/pg_compat.h), libcurl 7.85.0 or later
# (CURLOPT_PROTOCOLS_STR; curl_easy_header is 7.84) and json-c 0.15 or later
# (the oldest supported: json-c only parses answers now, with calls older
# than that, but nothing older has been built and tested): the build stops
# with a message saying which is too old.
#
# The full suite (regression, TAP, isolation, fuzz smoke) is test/run.sh.

EXTENSION   = metronome
EXTVERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" metronome.control)
MODULE_big  = metronome
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA        = $(wildcard metronome--*.sql)
# prometheus-postgres-exporter's queries file: $(pg_config --docdir)/extension/
DOCS        = metronome-exporter-queries.yaml
PGFILEDESC  = "metronome - Segment events to Metronome usage billing"

REGRESS      = $(basename $(notdir $(sort $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=metronome

PG_CONFIG  ?= pg_config
PKG_CONFIG ?= pkg-config

# Library versions: checked before anything is compiled (not for clean, dist).
CURL_MIN  = 7.85.0
JSONC_MIN = 0.15
ifeq ($(filter-out clean distclean dist,$(or $(MAKECMDGOALS),all)),)
else
ifneq ($(shell $(PKG_CONFIG) --atleast-version=$(CURL_MIN) libcurl && echo ok),ok)
$(error libcurl $(CURL_MIN) or later is needed, found $(or $(shell $(PKG_CONFIG) --modversion libcurl 2>/dev/null),none) (pg_metronome uses CURLOPT_PROTOCOLS_STR and curl_easy_header; Debian/Ubuntu: libcurl4-openssl-dev))
endif
ifneq ($(shell $(PKG_CONFIG) --atleast-version=$(JSONC_MIN) json-c && echo ok),ok)
$(error json-c $(JSONC_MIN) or later is needed, found $(or $(shell $(PKG_CONFIG) --modversion json-c 2>/dev/null),none) (the oldest pg_metronome supports; Debian/Ubuntu: libjson-c-dev))
endif
endif

# The server's headers are included as system headers: -Wextra then checks
# our code without tripping over unused parameters in PostgreSQL's inlines.
PG_CPPFLAGS += -isystem $(shell $(PG_CONFIG) --includedir-server) -Isrc -DMETRONOME_VERSION='"$(EXTVERSION)"' \
               $(shell $(PKG_CONFIG) --cflags libcurl json-c)
SHLIB_LINK  += $(shell $(PKG_CONFIG) --libs libcurl json-c) -pthread

EXTRA_CLEAN = results regression.diffs regression.out tmp_check tmp_check_iso \
              output_iso log

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every object depends on every header: small project, correct rebuilds.
$(OBJS): $(wildcard src/*.h)

# The PGXN distribution: git archive of HEAD (what is committed, less the
# export-ignore paths of .gitattributes), named for the control file's version.
DISTNAME = pg_metronome
DIST = $(DISTNAME)-$(EXTVERSION).zip
.PHONY: dist
dist:
	git archive --format zip --prefix=$(DISTNAME)-$(EXTVERSION)/ --output $(DIST) HEAD
	@echo "$(DIST)"
