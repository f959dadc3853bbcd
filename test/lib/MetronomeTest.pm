# test/lib/MetronomeTest.pm: helpers shared by pg_metronome's TAP tests.
#
#   use PostgreSQL::Test::Cluster;
#   use PostgreSQL::Test::Utils;
#   use Test::More;
#   use MetronomeTest;
#
#   my $mock = start_mock(token => 'tok-1');         # test/mock_metronome.py
#   my $node = new_node(mock => $mock, extension => 1);
#   $node->safe_psql('postgres', "INSERT INTO metronome_mappings (name) VALUES ('tracks')");
#   ok(wait_for(sub { $mock->stats->{unique_events} >= 3 }), 'shipped');
#   is_deeply($mock->events, [...]);
#   $mock->faults({ script => [500, 503] });
#
# test/run.sh runs the TAP tests with PERL5LIB holding this directory and the
# server's src/test/perl, and sets METRONOME_SRC to the source tree.  Mocks
# are stopped when their handle goes out of scope or at exit; nodes are
# stopped by PostgreSQL::Test::Cluster at exit.
package MetronomeTest;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Scalar::Util ();
use Test::More ();
use Time::HiRes qw(time usleep);

our @EXPORT = qw(start_mock new_node wait_for insert_outbox outbox_counts source_dir conf_quote time_scale
  timing_todo have_extension delivery_worker_pid);

my @mocks;    # weak references to the mocks started, for END

# source_dir(): the top of the source tree (METRONOME_SRC, else two levels
# above this file).
sub source_dir
{
	return $ENV{METRONOME_SRC}
	  if $ENV{METRONOME_SRC};
	return File::Spec->rel2abs(dirname(__FILE__) . '/../..');
}

# conf_quote($value): a value quoted for postgresql.conf.
sub conf_quote
{
	my ($v) = @_;
	$v =~ s/\\/\\\\/g;
	$v =~ s/'/''/g;
	return "'$v'";
}

# time_scale(): how many times slower the servers are than usual: 1, or
# METRONOME_TEST_TIME_SCALE (test/run.sh --valgrind sets it).
sub time_scale
{
	return $ENV{METRONOME_TEST_TIME_SCALE} || 1;
}

# timing_todo(): a reason for $::TODO around assertions about timing (how
# soon something happens, how many requests in a while) under test/run.sh
# --valgrind, where every server process is 10 to 50 times slower and such
# assertions say nothing; undef otherwise.  Usage:
#   { local $::TODO = timing_todo(); cmp_ok($elapsed, '<', 2, 'promptly'); }
sub timing_todo
{
	return $ENV{METRONOME_VALGRIND} ? 'timing is not checked under valgrind' : undef;
}

# have_extension($node, $ext, $part): is the extension $ext (e.g. pg_cron,
# pg_partman: Debian packages them for its own PostgreSQL 15 only) in
# $node's server?  The node may be stopped (it looks for the control file).
# When it is missing, $part (what the test leaves out, e.g. "the pg_partman
# part") is not run:
#   - on Debian's server (test/run.sh sets METRONOME_DEBIAN_SERVER=1 and has
#     installed postgresql-NN-cron / -partman) that is a failed assertion:
#     never skipped where the package exists;
#   - on any other server (one built from source) it is said loudly, on
#     stderr and in METRONOME_SKIPPED_LOG, which test/run.sh prints as
#     SKIPPED (not counted) after the TAP suite, like the Citus files.
# Usage: if (have_extension($node, 'pg_partman', 'the pg_partman part')) { ... }
sub have_extension
{
	my ($node, $ext, $part) = @_;
	my $sharedir = $node->config_data('--sharedir');
	chomp $sharedir;
	return 1 if -f "$sharedir/extension/$ext.control";

	my $test = File::Basename::basename($0, '.pl');
	if ($ENV{METRONOME_DEBIAN_SERVER})
	{
		Test::More::fail("$ext is installed in Debian's server (test/run.sh installs its package): needed by $part");
		return 0;
	}
	my $line = "$test: $part: $ext is not installed in this server (no extension/$ext.control; "
	  . "Debian packages it for its own PostgreSQL 15 only)";
	Test::More::diag("SKIPPED (not counted) $line");
	if (my $log = $ENV{METRONOME_SKIPPED_LOG})
	{
		open(my $fh, '>>', $log) or die "$log: $!";
		print $fh "$line\n";
		close $fh;
	}
	return 0;
}

# insert_outbox(NODE, PREFIX, N): N rows straight into metronome_outbox of
# database postgres, transaction ids "PREFIX-1" .. "PREFIX-N".
sub insert_outbox
{
	my ($node, $prefix, $n) = @_;
	$node->safe_psql('postgres',
		"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
		  . "SELECT '$prefix-' || g, 'cust', 'api_call', now() FROM generate_series(1, $n) g");
	return;
}

# outbox_counts(NODE, PREFIX): "pending/sent/failed", the outbox rows of
# database postgres whose transaction id starts with "PREFIX-".
sub outbox_counts
{
	my ($node, $prefix) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'pending') || '/' || count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FILTER (WHERE status = 'failed') "
		  . "FROM metronome_outbox WHERE transaction_id LIKE '$prefix-%'");
}

# wait_for(sub, timeout_seconds = 30, interval_seconds = 0.1): call sub until
# it returns a true value; returns that value, or undef after the timeout.
# Exceptions thrown by sub count as "not yet".  The timeout is multiplied by
# METRONOME_TEST_TIME_SCALE when set (test/run.sh --valgrind sets it: every
# server process is then many times slower).
sub wait_for
{
	my ($cond, $timeout, $interval) = @_;
	$timeout  //= 30;
	$interval //= 0.1;
	$timeout *= $ENV{METRONOME_TEST_TIME_SCALE}
	  if $ENV{METRONOME_TEST_TIME_SCALE};
	my $deadline = time() + $timeout;
	while (1)
	{
		my $r = eval { $cond->() };
		return $r if $r;
		return undef if time() >= $deadline;
		usleep(int($interval * 1_000_000));
	}
}

# delivery_worker_pid(NODE): the pid of the delivery worker of NODE once it
# runs (waits up to 60 s, scaled), else undef or ''.
sub delivery_worker_pid
{
	my ($node) = @_;
	my $pid;
	wait_for(
		sub {
			$pid = $node->safe_psql('postgres',
				"SELECT pid FROM pg_stat_activity WHERE backend_type = 'metronome delivery'");
			return $pid =~ /^\d+$/;
		},
		60);
	return $pid;
}

# start_mock(%opts): start test/mock_metronome.py on 127.0.0.1, a free port.
#   token   => bearer token it requires (default 'test-token')
#   faults  => hashref in the /_faults format, applied at start
#   args    => arrayref of extra command-line arguments
#   name    => used in the names of its files (default 'mock')
# Its request log (JSON lines) is tmp_check/log/<test>_<name>.jsonl, its
# stderr <test>_<name>.log next to it.  Returns a MetronomeTest::Mock.
sub start_mock
{
	my (%opts) = @_;
	my $token = $opts{token} // 'test-token';
	my $name  = $opts{name}  // 'mock';
	my $script = source_dir() . '/test/mock_metronome.py';
	croak "mock not found: $script" unless -f $script;

	my $test = $PostgreSQL::Test::Utils::test_logfile // 'test';
	$test =~ s{.*/regress_log_}{};
	my $base = "$PostgreSQL::Test::Utils::log_path/${test}_$name";
	my @cmd = ('python3', $script, '--port', '0', '--token', $token,
		'--log', "$base.jsonl");
	push @cmd, '--faults', encode_json($opts{faults}) if $opts{faults};
	push @cmd, @{ $opts{args} } if $opts{args};

	my $out = '';
	my $h = IPC::Run::start(\@cmd, '<', '/dev/null', '>', \$out, '2>>', "$base.log");
	my $port;
	my $deadline = time() + 30;
	while (!defined $port)
	{
		$h->pump_nb;
		($port) = $out =~ /^PORT (\d+)$/m;
		last if defined $port;
		if (!$h->pumpable || time() > $deadline)
		{
			$h->kill_kill;
			croak "mock did not start (see $base.log): @cmd";
		}
		usleep(20_000);
	}
	my $mock = bless {
		handle => $h,
		port => $port,
		token => $token,
		base => "http://127.0.0.1:$port",
		log => "$base.jsonl",
		http => HTTP::Tiny->new(timeout => 30, keep_alive => 0),
	}, 'MetronomeTest::Mock';
	push @mocks, $mock;
	Scalar::Util::weaken($mocks[-1]);
	Test::More::note("mock Metronome on port $port (log $base.jsonl)");
	return $mock;
}

# Every mock still running is stopped when the test ends, however it ends.
# Under test/run.sh --valgrind (METRONOME_VALGRIND set), every node still
# running is first stopped in fast mode, not the immediate mode of
# PostgreSQL::Test::Cluster's own END (this END runs before it): its
# processes then exit normally, and valgrind checks them for leaks.
END
{
	local $?;
	if ($ENV{METRONOME_VALGRIND})
	{
		for my $node (@PostgreSQL::Test::Cluster::all_nodes)
		{
			$node->stop('fast', fail_ok => 1) if defined $node->{_pid};
		}
	}
	for my $m (@mocks)
	{
		$m->stop if $m;
	}
}

# new_node(%opts): a PostgreSQL::Test::Cluster node, initialized and started,
# with the library preloaded:
#   name      => node name (default 'main')
#   mock      => a MetronomeTest::Mock: ingest_url and token point at it
#   ingest_url, token => explicit values (without a mock the URL defaults to
#                a closed local port, so nothing ever leaves the machine)
#   conf      => hashref of more settings (values are quoted for you)
#   preload   => 0 to not preload the library (default 1)
#   extension => 1 to CREATE EXTENSION metronome in database postgres
#   start     => 0 to leave it stopped (default 1)
sub new_node
{
	my (%opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($opts{name} // 'main');
	$node->init;

	my $mock = $opts{mock};
	my $url = $opts{ingest_url}
	  // ($mock ? $mock->url : 'http://127.0.0.1:9/v1/ingest');
	my $token = $opts{token} // ($mock ? $mock->token : 'test-token');
	my %conf = (
		'metronome.database' => 'postgres',
		'metronome.ingest_url' => $url,
		'metronome.api_token' => $token,
		%{ $opts{conf} // {} });
	my $text = '';
	$text .= "shared_preload_libraries = 'metronome'\n"
	  unless defined $opts{preload} && !$opts{preload};
	for my $k (sort keys %conf)
	{
		$text .= "$k = " . conf_quote($conf{$k}) . "\n";
	}
	$node->append_conf('postgresql.conf', $text);
	return $node if defined $opts{start} && !$opts{start};

	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION metronome')
	  if $opts{extension};
	return $node;
}

package MetronomeTest::Mock;

use strict;
use warnings;

use Carp;
use JSON::PP;

# The ingest URL to give metronome.ingest_url.
sub url   { return $_[0]{base} . '/v1/ingest'; }
sub port  { return $_[0]{port}; }
sub token { return $_[0]{token}; }
sub base  { return $_[0]{base}; }
# The JSON-lines request log it appends to.
sub log_file { return $_[0]{log}; }

# _call(method, path, body?): a control request; the decoded JSON answer.
sub _call
{
	my ($self, $method, $path, $body) = @_;
	my %o;
	if (defined $body)
	{
		$o{content} = ref $body ? encode_json($body) : $body;
		$o{headers} = { 'Content-Type' => 'application/json' };
	}
	my $r = $self->{http}->request($method, $self->{base} . $path, \%o);
	croak "mock $method $path: $r->{status} $r->{reason} $r->{content}"
	  unless $r->{success};
	return length($r->{content}) ? decode_json($r->{content}) : undef;
}

# GET /_stats: requests, events, unique_events, duplicates, by_status, ...
sub stats { return $_[0]->_call('GET', '/_stats'); }

# GET /_requests (since => seq): the ingest requests it received.
sub requests
{
	my ($self, %o) = @_;
	my $q = defined $o{since} ? "?since=$o{since}" : '';
	return $self->_call('GET', "/_requests$q");
}

# GET /_rates (since => Unix time, window => seconds): arrival rates.
sub rates
{
	my ($self, %o) = @_;
	my @q;
	push @q, "since=$o{since}"   if defined $o{since};
	push @q, "window=$o{window}" if defined $o{window};
	return $self->_call('GET', '/_rates' . (@q ? '?' . join('&', @q) : ''));
}

# GET /_events: the accepted unique events in arrival order.
sub events { return $_[0]->_call('GET', '/_events'); }

# POST /_faults with a hashref in the /_faults format.
sub faults { my ($self, $f) = @_; return $self->_call('POST', '/_faults', $f); }

# DELETE /_faults.
sub clear_faults { return $_[0]->_call('DELETE', '/_faults'); }

# POST /_reset: counters, dedup and records back to the start.
sub reset { return $_[0]->_call('POST', '/_reset', {}); }

# Stop it (SIGTERM, then SIGKILL after 10 s) and reap it.
sub stop
{
	my ($self) = @_;
	my $h = delete $self->{handle};
	return unless $h;
	eval { $h->kill_kill(grace => 10); 1 };
	return;
}

sub DESTROY { my ($self) = @_; local ($@, $?); $self->stop; }

1;
