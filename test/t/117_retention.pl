# test/t/117_retention.pl: sent rows leave by TRUNCATE of whole segments,
# never by DELETE.
#
# With retain_sent = 1s the queue's three segments rotate every second; a
# segment whose rows are all acknowledged and older than retain_sent is
# truncated.  After a few rounds of rows shipped, every sent row is gone,
# the segments' heaps are empty, and not one row of the queue was deleted
# (pg_stat_user_tables.n_tup_del is 0 on every segment), while a failed row
# (an exception row) stays.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => { 'metronome.retain_sent' => '1s', 'autovacuum' => 'off' });

$mock->faults({ reject_transaction_ids => ['keep-1'] });
for my $round (1 .. 3)
{
	$node->safe_psql('postgres',
		"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
		  . "SELECT 'r$round-' || g, 'cust', 'api_call', now() FROM generate_series(1, 2000) g");
	sleep(1);
}
$node->safe_psql('postgres',
	"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") VALUES ('keep-1', 'c', 'e', now())");
ok(wait_for(sub { $mock->stats->{unique_events} >= 6000 }, 30), 'every row was shipped');
ok( wait_for(sub { $node->safe_psql('postgres', "SELECT count(*) FROM metronome_outbox WHERE status = 'sent'") eq '0' }, 30),
	'retain_sent = 1s: every sent row is gone');
is($node->safe_psql('postgres', "SELECT string_agg(transaction_id || ':' || status, ',') FROM metronome_outbox"),
	'keep-1:failed', 'the failed row stays');
ok( wait_for(sub { $node->safe_psql('postgres', "SELECT sum(pg_relation_size(c.oid)) FROM pg_class c WHERE c.relname ~ '^metronome_queue_[0-9]\$'") eq '0' }, 30),
	'the segments were truncated: their heaps are empty');
# the statistics collector sees the worker's writes
sleep(1);
is( $node->safe_psql('postgres',
		"SELECT coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables WHERE relname ~ '^metronome_queue_[0-9]\$'"),
	'0', 'not one queue row was deleted');

$node->stop;
done_testing();
