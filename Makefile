# pg_metronome: PGXS build.
#
#   make                      build metronome.so
#   make install              install into the server that PG_CONFIG names
#   make installcheck         pg_regress suite against a running server
#
# The full suite (regression, TAP, isolation, fuzz smoke) is test/run.sh.

EXTENSION   = metronome
EXTVERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" metronome.control)
MODULE_big  = metronome
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
DATA        = $(wildcard metronome--*.sql)
PGFILEDESC  = "metronome - Segment events to Metronome usage billing"

REGRESS      = $(basename $(notdir $(sort $(wildcard sql/*.sql))))
REGRESS_OPTS = --inputdir=. --load-extension=metronome

PG_CONFIG  ?= pg_config
PKG_CONFIG ?= pkg-config

# The server's headers are included as system headers: -Wextra then checks
# our code without tripping over unused parameters in PostgreSQL's inlines.
PG_CPPFLAGS += -isystem $(shell $(PG_CONFIG) --includedir-server) -Isrc -DMETRONOME_VERSION='"$(EXTVERSION)"' \
               $(shell $(PKG_CONFIG) --cflags libcurl json-c)
SHLIB_LINK  += $(shell $(PKG_CONFIG) --libs libcurl json-c)

EXTRA_CLEAN = results regression.diffs regression.out tmp_check tmp_check_iso \
              output_iso log

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every object depends on every header: small project, correct rebuilds.
$(OBJS): $(wildcard src/*.h)
