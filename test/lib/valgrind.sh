# test/lib/valgrind.sh: test/run.sh --valgrind, every server process under
# valgrind memcheck.
#
# Sourced by test/run.sh after mt_install_tmp.  The private install's
# postgres binary is renamed postgres.real and replaced by a small script
# that execs valgrind on it, so every server the suites start (pg_regress
# --temp-instance, PostgreSQL::Test::Cluster through pg_ctl, the isolation
# tester) runs its postmaster under memcheck, and with it every process
# the postmaster forks: backends, the launcher and the delivery worker,
# autovacuum, the checkpointer...  (valgrind follows fork() by itself; the
# server never exec()s itself on Linux.)  Each process writes its own log,
# <MT_VALGRIND_LOG_DIR>/<data directory's parent>.<pid>.log.
#
# Not under valgrind: initdb's bootstrap and single-user runs (--boot,
# --single: they never load metronome.so) and the quick queries pg_ctl
# and initdb make (-V, -C, --describe-config).
#
# What memcheck checks here, with a server built without USE_VALGRIND (the
# distribution's): reads and writes outside malloc'd blocks and of freed
# ones (libcurl, json-c, libc and our own malloc'd memory: the HTTP client,
# its requests, bodies and answers); uses of uninitialised values in
# conditions, addresses and system calls (palloc'd memory included, until
# it is first written); bad frees and overlapping copies; and memory lost
# from malloc (definite leaks: an HttpRequest, a body, a curl handle or
# a json-c object no pointer reaches any more) at each process's exit.
# Not seen: overruns inside palloc'd chunks, or use of pfree'd palloc
# memory (PostgreSQL's arenas are opaque to memcheck unless the server is
# built with USE_VALGRIND); leaks still reachable at exit (the worker's
# HTTP client lives until the process ends, on purpose).
#
# Memcheck runs without --track-origins (it doubles the time): to learn
# where an uninitialised value comes from, run again with
# MT_VALGRIND_OPTS=--track-origins=yes in the environment.
#
# Functions:
#   mt_valgrind_check        exit 1 with a message when valgrind is missing
#   mt_valgrind_install      wrap MT_TI_BIN/postgres (after mt_install_tmp)
#   mt_valgrind_report DIR   print every error found in DIR's logs; prints
#                            "VALGRIND-SUMMARY processes=N errors=E
#                            bad_processes=B" last; returns 1 when E > 0

# mt_valgrind_check: valgrind must be there (Debian: apt-get install valgrind)
mt_valgrind_check()
{
	if ! command -v valgrind >/dev/null 2>&1; then
		if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
			mt_log "installing: valgrind"
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null \
				|| mt_die "apt-get install valgrind failed"
		else
			mt_die "--valgrind needs valgrind (Debian: sudo apt-get install -y valgrind)"
		fi
	fi
}

# mt_valgrind_install: replace the private install's postgres by a script
# that runs it under memcheck.  MT_VALGRIND_LOG_DIR (in the environment of
# the server) says where the logs go; the default is MT_WORKDIR/valgrind.
mt_valgrind_install()
{
	local bin=$MT_TI_BIN real supp
	real=$bin/postgres.real
	supp=$MT_SRC/test/valgrind.supp
	[ -f "$supp" ] || { echo "error: $supp is missing" >&2; return 1; }
	if [ ! -f "$real" ]; then
		mv "$bin/postgres" "$real" || return 1
	fi
	mkdir -p "$MT_WORKDIR/valgrind"
	cat >"$bin/postgres" <<EOF
#!/bin/sh
# postgres under valgrind memcheck: written by test/lib/valgrind.sh.
real='$real'
datadir=\${PGDATA:-}
prev=
for a in "\$@"; do
	case "\$a" in
		--boot|--single|-V|--version|-C|--describe-config|--check)
			exec "\$real" "\$@" ;;
		-D*)
			[ "\$a" = -D ] || datadir=\${a#-D} ;;
	esac
	[ "\$prev" = -D ] && datadir=\$a
	prev=\$a
done
tag=\$(basename "\$(dirname "\${datadir:-/unknown/server}")")
logdir=\${MT_VALGRIND_LOG_DIR:-'$MT_WORKDIR/valgrind'}
mkdir -p "\$logdir"
exec valgrind --tool=memcheck --trace-children=no \\
	--log-file="\$logdir/\$tag.%p.log" \\
	--suppressions='$supp' \\
	--error-markers=VALGRIND-ERROR-BEGIN,VALGRIND-ERROR-END \\
	--num-callers=30 --error-limit=no \\
	--leak-check=full --show-leak-kinds=definite \\
	--errors-for-leak-kinds=definite --gen-suppressions=all \\
	--read-inline-info=yes \\
	\${MT_VALGRIND_OPTS:-} \\
	"\$real" "\$@"
EOF
	chmod 755 "$bin/postgres"
}

# mt_valgrind_report DIR: read every DIR/*.log, print the errors (with the
# process they come from), and one summary line.  Returns 1 when any log
# holds an error or a process died of a signal under valgrind.
mt_valgrind_report()
{
	local dir=$1
	[ -d "$dir" ] || { echo "VALGRIND-SUMMARY processes=0 errors=0 bad_processes=0"; return 1; }
	perl -e '
		use strict;
		use warnings;
		my ($procs, $errors, $bad) = (0, 0, 0);
		my $shown = 0;
		for my $f (sort glob("$ARGV[0]/*.log"))
		{
			open(my $fh, "<", $f) or next;
			$procs++;
			my ($in, @block, @found) = (0);
			my $died = "";
			while (my $l = <$fh>)
			{
				$l =~ s/^==\d+== ?//;
				if ($l =~ /^VALGRIND-ERROR-BEGIN/) { $in = 1; @block = (); next; }
				if ($l =~ /^VALGRIND-ERROR-END/) { $in = 0; push @found, join("", @block); next; }
				if ($in) { push @block, $l; next; }
				$died = $1 if $l =~ /^(Process terminating with default action of signal \d+ \((?:SIGSEGV|SIGBUS|SIGILL|SIGFPE|SIGABRT)\))/;
			}
			close $fh;
			# a process killed while writing an error: count what is there
			push @found, join("", @block) . "(log cut short)\n" if $in;
			push @found, "$died\n" if $died;
			next unless @found;
			$bad++;
			$errors += @found;
			my $name = $f; $name =~ s{.*/}{};
			print "----- valgrind: ", scalar(@found), " error(s) in $name\n";
			for my $b (@found)
			{
				# the suppression block that --gen-suppressions printed is
				# noise in a report: keep the error and its stack
				$b =~ s/\{\n.*?\n\}\n//s;
				if ($shown++ < 40) { print $b, "\n"; }
			}
		}
		print "----- (", $shown - 40, " more errors not shown)\n" if $shown > 40;
		print "VALGRIND-SUMMARY processes=$procs errors=$errors bad_processes=$bad\n";
		exit($errors ? 1 : 0);
	' "$dir"
}
