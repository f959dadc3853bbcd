# test/t/103_bad_event.pl: a bad event is isolated, the others are sent.
#
# One event that Metronome refuses (400) in a batch of 100: the batch is
# split in halves until the bad event is alone; it is marked failed with
# Metronome's message, the 99 others are sent, in a bounded number of
# requests.  Two bad events (timestamps too far in the future, refused by
# the mock's own validation) in a batch of 50 likewise.  A timestamp that
# RFC 3339 cannot express fails without a request.  metronome_retry() sends
# a failed row again once Metronome takes it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(mock => $mock, extension => 1);

# status counts of the rows whose transaction_id starts with a prefix
sub queue { return outbox_counts($node, @_); }

# 1. One rejected event among 100.
$mock->faults({ reject_transaction_ids => ['one-57'] });
$node->safe_psql('postgres',
	"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
	  . "SELECT 'one-' || g, 'cust', 'api_call', now() FROM generate_series(1, 100) g");
ok(wait_for(sub { queue('one') eq '0/99/1' }, 30),
	'99 events sent, 1 failed, none pending');
is( $node->safe_psql(
		'postgres',
		"SELECT transaction_id FROM metronome_outbox WHERE status = 'failed'"),
	'one-57',
	'the failed one is the bad one');
like( $node->safe_psql(
		'postgres',
		"SELECT last_error FROM metronome_outbox WHERE transaction_id = 'one-57'"),
	qr/^HTTP 400: Event with transaction_id "one-57" was rejected/,
	"last_error holds Metronome's message");
my $stats = $mock->stats;
is($stats->{unique_events}, 99, 'the mock has the 99 good events');
# 1 request of 100, then 2 per level of halving: 50, 25, 13, 7, 4, 2, 1
cmp_ok($stats->{requests}, '<=', 15,
	"bounded number of requests ($stats->{requests})");
my $sizes = join(',', map { $_->{events} } @{ $mock->requests });
{
	local $::TODO = timing_todo();
	like($sizes, qr/^100,50,/, "halving sizes: $sizes");
}
like(
	$node->safe_psql('postgres', 'SELECT failed || last_error FROM metronome_status()'),
	qr/^1Metronome refused the event with transaction_id "one-57": HTTP 400/,
	'metronome_status() counts it and says why');
like(slurp_file($node->logfile), qr/WARNING:  metronome refused outbox row \d+/,
	'the worker logs a warning for it');

# metronome_retry: refused again while Metronome refuses it, sent once not.
my $id = $node->safe_psql('postgres',
	"SELECT id FROM metronome_outbox WHERE transaction_id = 'one-57'");
$mock->faults({ reject_transaction_ids => [] });
is($node->safe_psql('postgres', "SELECT metronome_retry(ARRAY[$id]::bigint[])"),
	'1', 'metronome_retry(ids) revives it');
ok(wait_for(sub { queue('one') eq '0/100/0' }, 30), 'and it is sent');

# 2. Two events refused by the mock's own validation, in a batch of 50.
$mock->reset;
$node->safe_psql('postgres',
	"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
	  . "SELECT 'two-' || g, 'cust', 'api_call', CASE WHEN g IN (3, 41) THEN now() + interval '3 days' ELSE now() END "
	  . "FROM generate_series(1, 50) g");
ok(wait_for(sub { queue('two') eq '0/48/2' }, 30), '48 sent, 2 failed');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(transaction_id, ',' ORDER BY id) FROM metronome_outbox WHERE transaction_id LIKE 'two-%' AND status = 'failed'"),
	'two-3,two-41',
	'the two future timestamps failed');
like( $node->safe_psql(
		'postgres',
		"SELECT last_error FROM metronome_outbox WHERE transaction_id = 'two-3'"),
	qr/^HTTP 400: .*more than 24 hours in the future/,
	'with the validation message');
cmp_ok($mock->stats->{requests}, '<=', 2 * 2 * 6 + 1,
	'bounded number of requests (' . $mock->stats->{requests} . ')');

# 3. A timestamp outside RFC 3339's years fails at once, without a request.
$mock->reset;
$node->safe_psql('postgres',
	"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") VALUES "
	  . "('inf-1', 'cust', 'api_call', 'infinity'), ('inf-2', 'cust', 'api_call', '10000-01-01'), ('inf-3', 'cust', 'api_call', now())"
);
ok(wait_for(sub { queue('inf') eq '0/1/2' }, 30),
	'infinite and year-10000 timestamps failed, the other sent');
like( $node->safe_psql(
		'postgres',
		"SELECT DISTINCT last_error FROM metronome_outbox WHERE transaction_id IN ('inf-1', 'inf-2')"),
	qr/outside the range Metronome accepts/,
	'last_error says why');
is($mock->stats->{events}, 1, 'only the good event went out');

$node->stop;
done_testing();
