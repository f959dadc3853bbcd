# test/t/119_claim_ahead.pl: the claim made ahead while a claim's last
# requests are out.
#
# With batch_size 100 and max_inflight 2 a claim holds 1,600 rows (16
# requests).  Once all 16 are handed to the HTTP client, the worker claims
# the next 1,600 in a short transaction and sends them behind.  What a user
# relies on:
#   1. the claim ahead really goes out while the first claim waits for an
#      answer, but is acknowledged only after it: no row of the second claim
#      is 'sent' while a row of the first has no answer, and with no fault
#      nothing is sent twice;
#   2. kill -9 of the worker while both claims are out loses nothing;
#   3. when the first claim ends with a gap (rows with no answer: here a
#      400 answered after the cycle's time is up, so its halves are never
#      sent), the claim ahead is not acknowledged even though Metronome
#      accepted it: its rows are sent again, and every row arrives.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;
use MetronomeVersions;

my $scale = time_scale();
my $mock = start_mock();
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => {
		'metronome.batch_size' => '100',
		'metronome.max_inflight' => '2',
		'metronome.request_timeout' => '120s',
		'metronome.max_backoff' => '200ms',
		restart_after_crash => 'on',
	});

my $claim = 1600;    # batch_size * max_inflight * 8 rounds

sub insert { insert_outbox($node, @_); }
sub queue  { return outbox_counts($node, @_); }

# sent rows with transaction ids PREFIX-FROM .. PREFIX-TO
sub sent_between
{
	my ($prefix, $from, $to) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM metronome_outbox WHERE status = 'sent' AND transaction_id LIKE '$prefix-%'"
		  . " AND split_part(transaction_id, '-', 2)::int BETWEEN $from AND $to");
}

# how many requests carried the event PREFIX-N
sub times_sent
{
	my ($id) = @_;
	my $n = 0;
	for my $r (@{ $mock->requests })
	{
		next unless defined $r->{body} && $r->{body} =~ /"transaction_id":\s*"\Q$id\E"/;
		$n++;
	}
	return $n;
}

sub worker_pid { return delivery_worker_pid($node); }

# 1. In order: the 16th request (the first claim's last ones) is answered
# late; the second claim goes out and is answered meanwhile.
my $late = 4 * $scale;
$mock->faults({ script => [ ('ok') x 15, { delay => $late } ] });
insert('ord', 3 * $claim);
ok(wait_for(sub { $mock->stats->{unique_events} >= 2 * $claim }, 60, 0.02),
	'both claims reached the mock');
my $first = sent_between('ord', 1, $claim);
my $second = sent_between('ord', $claim + 1, 2 * $claim);
my $still = $mock->stats->{inflight};
ok($still >= 1,
	'the second claim reached the mock while the first still waited for an answer');
is($first, 0, 'the first claim is not acknowledged before its last answer');
is($second, 0, 'nor is the claim made ahead of it, though Metronome has it');
ok(wait_for(sub { queue('ord') eq '0/4800/0' }, 120), 'then all 4800 rows are sent');
my $s = $mock->stats;
is($s->{unique_events}, 3 * $claim, 'the mock has every event');
is($s->{duplicates}, 0, 'and none twice: a claim ahead with no gap is not sent again');

# 2. kill -9 while both claims are out.
my $no_bgw_restart = !MetronomeVersions::restarts_crashed_bgworkers($node);
$mock->reset;
$mock->faults({ script => [ ('ok') x 15, { delay => 30 } ] });
insert('kill', 3 * $claim);
my $pid = worker_pid();
ok(wait_for(sub { $mock->stats->{unique_events} >= 2 * $claim }, 60, 0.02),
	'kill -9: both claims are out');
is(sent_between('kill', 1, 2 * $claim), 0, 'kill -9: neither is acknowledged yet');
kill 'KILL', $pid;
if ($no_bgw_restart)
{
	# PostgreSQL 18beta1 never restarts a crashed worker: a new postmaster does
	$node->stop('immediate');
	$node->start;
}
ok(wait_for(sub { queue('kill') eq '0/4800/0' }, 120),
	'kill -9: after the restart all 4800 rows are sent');
is($mock->stats->{unique_events}, 3 * $claim, 'kill -9: the mock has every event');

# 3. A gap in the first claim: its first request is refused with a 400 only
# after the cycle's time for a claim made ahead (2 s) is up, so the halves bisection would send
# are not sent in this cycle.  The claim ahead went out meanwhile.
$mock->reset;
$mock->faults({ script => [ { status => 400, delay => 3 * $scale } ] });
insert('gap', 3 * $claim);
ok(wait_for(sub { queue('gap') eq '0/4800/0' }, 120), 'gap: all 4800 rows are sent in the end');
$s = $mock->stats;
is($s->{unique_events}, 3 * $claim, 'gap: the mock has every event');
ok($s->{by_status}{400} >= 1, 'gap: the late 400 was answered');
cmp_ok(times_sent('gap-' . ($claim + 1)), '>=', 2,
	'gap: the claim made ahead was sent, not acknowledged, and sent again');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM metronome_outbox WHERE transaction_id LIKE 'gap-%' AND (sent_at IS NULL OR last_error IS NOT NULL)"),
	'0',
	'gap: every row has sent_at and no error left');

$node->stop;
done_testing();
