# test/t/111_claim_plan.pl: the claim's plan does not depend on statistics
# or history.
#
# auto_explain logs the plans of the statements CALL metronome_ship() runs,
# the claim of queue rows among them.  Its plan is taken in three states of
# the queue: right after TRUNCATE with no ANALYZE (statistics of an empty
# table, then a burst); with 200,000 acknowledged rows retained (ANALYZEd);
# and with 100,000 dead tuples left by a DELETE, not vacuumed.  Each time
# it is the same shape: a Limit over a Merge Append of index scans on
# (txid, id), no sequential scan, no bitmap scan, no sort.  And its cost
# does not depend on long transactions: with one kept open while 50,000
# rows are committed and acknowledged, the next claim walks none of them
# (auto_explain's ANALYZE: no row removed by a filter).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(mock => $mock, preload => 0, extension => 1,
	conf => { 'autovacuum' => 'off' });

sub insert { insert_outbox($node, @_); }

# The shape of the claim's plan in the log lines written by one CALL.
sub claim_plans
{
	my ($analyze, $call) = @_;
	$call //= 'CALL metronome_ship();';
	my $offset = -s $node->logfile;
	$node->safe_psql('postgres', q{
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET client_min_messages = warning;
} . ($analyze ? "SET auto_explain.log_analyze = on;\nSET auto_explain.log_buffers = on;\n" : '')
	  . $call);
	my $log = substr(slurp_file($node->logfile), $offset);
	return grep { /pg_visible_in_snapshot/ && /FROM \S*metronome_queue q\b/ }
	  split /(?=LOG:  duration:)/, $log;
}

sub claim_plan
{
	my @plans = claim_plans(0);
	return undef unless @plans;
	my $plan = $plans[0];
	$plan =~ s/^.*?Query Text:.*?\n(?=\s*Limit)//s;
	my @nodes = map { /^\s*(?:->\s*)?([A-Z][A-Za-z ]+?)(?: using| on|  \(|$)/ ? $1 : () }
	  grep { /^\s*(?:->\s*)?[A-Z]/ && !/^\s*(?:Index Cond|Filter|Sort Key|Query Text|Output)/ }
	  split /\n/, $plan;
	my $shape = join(' > ', @nodes);
	note("claim plan: $shape");
	return $shape;
}

# 1. A burst right after TRUNCATE, no ANALYZE.
$node->safe_psql('postgres', 'TRUNCATE metronome_queue, metronome_outbox_state');
insert('burst', 5000);
my $after_truncate = claim_plan();
ok(defined $after_truncate, 'the claim\'s plan was logged');
like($after_truncate, qr/^Limit > Merge Append > Index Scan > Index Scan > Index Scan$/,
	'after TRUNCATE: an index range on (txid, id) in each segment');
unlike($after_truncate, qr/Seq Scan|Bitmap|Sort/, 'no seq scan, bitmap scan or sort');

# 2. 200,000 acknowledged rows retained (and fresh statistics).
insert('acked', 200000);
$node->safe_psql('postgres',
	'UPDATE metronome_delivery SET last_snap = pg_current_snapshot(), cur_snap = NULL');
$node->safe_psql('postgres', 'ANALYZE metronome_queue');
insert('after-acked', 1000);
is(claim_plan(), $after_truncate, 'with 200,000 acknowledged rows: the same plan');

# 3. 100,000 dead tuples, not vacuumed.
insert('dead', 100000);
$node->safe_psql('postgres', "DELETE FROM metronome_queue WHERE transaction_id LIKE 'dead-%'");
insert('after-dead', 1000);
is(claim_plan(), $after_truncate, 'with 100,000 dead tuples: the same plan');

# 4. A transaction kept open (it has an xid, so every snapshot's xmin stays
#    at it) while 50,000 rows are committed and acknowledged.
my $bg = $node->background_psql('postgres');
$bg->query_safe('BEGIN');
$bg->query_safe('SELECT pg_current_xact_id()');
insert('under-old', 50000);
$node->safe_psql('postgres', 'CALL metronome_ship()');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM metronome_outbox WHERE status = 'pending'"),
	'0', 'the 50,000 rows committed under the open transaction were shipped');
insert('after-old', 10);
my @analyzed = claim_plans(1);
ok(@analyzed > 0, 'the claims of the next CALL were logged with ANALYZE');
my $removed = 0;
my $returned = 0;
for my $p (@analyzed)
{
	$removed += $1 while $p =~ /Rows Removed by Filter: (\d+)/g;
	$returned += $1 if $p =~ /^\s*Limit\s.*?actual time=\S+ rows=(\d+)/m;
}
is($removed, 0,
	'an open transaction: the claim walks none of the 50,000 rows acknowledged since it began');
is($returned, 10, 'and it claims the 10 new rows');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM metronome_outbox WHERE status = 'pending'"),
	'0', 'the 10 new rows were shipped');
$bg->query_safe('COMMIT');
$bg->quit;

# 5. One batch of 20,000 rows (one transaction) claimed 1,000 at a time:
#    each claim starts at the cursor, so the 15th reads about as many
#    buffers as the 2nd instead of walking the 13,000 rows before it (the
#    1st also finishes the previous, empty batch).
insert('one-batch', 20000);
my @buffers;
for my $i (1 .. 15)
{
	my @p = claim_plans(1, 'CALL metronome_ship(1000);');
	my $hit = 0;
	for my $q (@p)
	{
		$hit += $1 if $q =~ /^\s*Limit\s.*?\n\s*Buffers: shared hit=(\d+)/m;
	}
	push @buffers, $hit;
}
note("buffers of the claims: @buffers");
ok($buffers[1] > 0, 'the claims\' buffers were logged');
ok($buffers[14] <= 1.3 * $buffers[1] + 5,
	"the 15th claim of a batch reads about what the 2nd does ($buffers[14] vs $buffers[1] buffers)");

# 6. The cursor inside the rows of a transaction that was running at
#    last_snap, 30,000 acknowledged rows committed after it began: the
#    claim of the rows after them starts past the acknowledged ones, it
#    does not walk them from the cursor.
sub claim_buffers
{
	my $hit = 0;
	for my $q (claim_plans(1, $_[0]))
	{
		$hit += $1 if $q =~ /^\s*Limit\s.*?\n\s*Buffers: shared hit=(\d+)/m;
	}
	return $hit;
}
$node->safe_psql('postgres', 'CALL metronome_ship()');
my $slow = $node->background_psql('postgres');
$slow->query_safe('SET client_min_messages = error');
$slow->query_safe('BEGIN');
$slow->query_safe("INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
	  . "SELECT 'slow-' || g, 'cust', 'api_call', now() FROM generate_series(1, 2000) g");
insert('while-slow', 30000);
$node->safe_psql('postgres', 'CALL metronome_ship()');
$slow->query_safe('COMMIT');
$slow->quit;
insert('after-slow', 10);
$node->safe_psql('postgres', 'CALL metronome_ship(1000)');
$node->safe_psql('postgres', 'CALL metronome_ship(1000)');
my $past = claim_buffers('CALL metronome_ship(1000);');
note("buffers of the claim after the slow transaction's rows: $past");
cmp_ok($past, '<', 40,
	'the claim after a long transaction\'s rows reads a few buffers, not the 30,000 acknowledged rows before them');
# (a CALL stops starting requests after a second: under valgrind it may
# take a few to send the rest)
ok( wait_for(
		sub {
			$node->safe_psql('postgres', 'CALL metronome_ship()');
			$node->safe_psql('postgres',
				"SELECT count(*) FROM metronome_outbox WHERE status = 'pending'") eq '0';
		},
		60),
	'the long transaction\'s rows and those after them were all shipped');

$node->stop;
done_testing();
