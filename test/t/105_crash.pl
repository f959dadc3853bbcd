# test/t/105_crash.pl: no row is lost when processes die mid-request.
#
# The mock answers every request late (a standing delay), so that requests
# are in flight when the delivery worker is killed with SIGKILL (three
# times; the server restarts after each) and when the postmaster is
# stopped in immediate mode.  The mock records a batch on receipt, so some
# batches reach it and are never acknowledged: they are sent again, and
# Metronome's dedup (the mock's) makes that harmless.  In the end every
# event has reached the mock, no row is failed and none is pending.
# SIGTERM ends the worker promptly even in the middle of a slow request.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MetronomeTest;
use MetronomeVersions;

# (under valgrind the server is slower: the answers are late in proportion)
my $mock = start_mock(faults => { delay => 1.5 * time_scale() });
# (PostgreSQL::Test::Cluster turns restart_after_crash off)
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => { restart_after_crash => 'on' });
my $total = 0;

sub insert
{
	my ($prefix, $n) = @_;
	$node->safe_psql('postgres',
		"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
		  . "SELECT '$prefix-' || g, 'cust', 'api_call', now() FROM generate_series(1, $n) g"
	);
	$total += $n;
}

# the delivery worker's pid, once it runs
sub worker_pid { return delivery_worker_pid($node); }

# wait until the mock holds a request of ours that it has not answered yet
sub wait_in_flight
{
	return wait_for(sub { $mock->stats->{inflight} >= 1 }, 30, 0.02);
}

# 1. kill -9 of the worker mid-request, three times.
# PostgreSQL 18beta1 never restarts a background worker after a crash
# (MetronomeVersions::restarts_crashed_bgworkers): there the crash rounds
# are TODO.
my $no_bgw_restart = !MetronomeVersions::restarts_crashed_bgworkers($node);
for my $round (1 .. 3)
{
	local $TODO = $no_bgw_restart
	  ? 'PostgreSQL 18beta1 does not restart background workers after a crash'
	  : undef;
	insert("k$round", 250);
	my $pid = worker_pid();
	ok(wait_in_flight(), "round $round: a request is in flight");
	kill 'KILL', $pid;
	# the postmaster restarts every process after a crash
	ok( wait_for(
			sub {
				my $new = worker_pid();
				return $new && $new != $pid;
			},
			60),
		"round $round: the server and a new worker are back");
	if ($no_bgw_restart)
	{
		# no worker will come back: a new postmaster starts one for what follows
		$node->stop('immediate');
		$node->start;
		last;
	}
}

# 2. Immediate stop of the postmaster mid-request.
insert('imm', 250);
ok(wait_in_flight(), 'immediate stop: a request is in flight');
$node->stop('immediate');
$node->start;

# 3. SIGTERM mid-request ends the worker promptly (and it comes back).
insert('term', 100);
my $pid = worker_pid();
ok(wait_in_flight(), 'SIGTERM: a request is in flight');
$mock->faults({ delay => 30 });
ok(wait_for(sub { $mock->stats->{inflight} >= 1 }, 10), 'a 30 s answer is pending');
my $t0 = time();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_for(sub { !kill(0, $pid) }, 10, 0.01), 'the worker exits on SIGTERM');
{
	local $::TODO = timing_todo();
	cmp_ok(time() - $t0, '<', 2.0,
		sprintf('promptly, mid-request (%.3f s)', time() - $t0));
}
$mock->faults({ delay => 0 });
my $new = worker_pid();
isnt($new, $pid, 'the launcher starts a new worker');

# 4. Everything arrives.
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				"SELECT count(*) FROM metronome_outbox WHERE status <> 'sent'") eq '0';
		},
		120),
	'no row is left pending or failed');
my $stats = $mock->stats;
is($stats->{unique_events}, $total, "every one of the $total events reached the mock");
cmp_ok($stats->{duplicates}, '>', 0,
	"unacknowledged batches were sent again ($stats->{duplicates} duplicates)");
is($node->safe_psql('postgres', 'SELECT count(*) FROM metronome_outbox'),
	$total, 'and every row is still in the outbox, sent');

$node->stop;
done_testing();
