# test/t/501_citus_ingest.pl: pg_metronome on a Citus cluster (a coordinator
# and two workers, test/lib/CitusCluster.pm): distributed ingestion, mappings
# defined once, each node shipping its own outbox, cluster-wide views.
#
# 1. A mapping inserted on the coordinator reaches every worker; a change on
#    a worker is refused with a hint.
# 2. segment_events distributed by id, and a user table distributed by its
#    customer column and attached after distribution (metronome_attach on a
#    distributed table): a multi-row INSERT and a COPY through the
#    coordinator map every row once, on the node that stores it; the
#    coordinator's outbox stays empty.
# 3. Each worker's delivery worker ships its own rows: the mock gets every
#    event once, the coordinator ships none; metronome_cluster_status() and
#    metronome_cluster_summary() report every node and the totals;
#    metronome_cluster_outbox() and metronome_cluster_rejected() read every
#    node.
# 4. A mapping changed while events are loaded through the coordinator
#    applies to the same events on every node: no INSERT statement (whose
#    rows span both workers) gets the old mapping on one node and the new
#    one on the other, and the change splits the load into before and after.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use CitusCluster;
use MetronomeTest;

CitusCluster::skip_unless_available();

my $mock = start_mock();
my $c = CitusCluster->new(mock => $mock);
my $coord = $c->coordinator;
my @workers = $c->workers;
my $started = time();

# 1. mappings defined once
$coord->safe_psql('postgres', q{
	INSERT INTO metronome_mappings (name, subscription)
	VALUES ('tracks', 'type = "track" and event != "Acme"')});
$coord->safe_psql('postgres', q{
	INSERT INTO metronome_mappings (name, subscription, customer_id)
	VALUES ('acme', 'type = "track" and event = "Acme"', '{"@path": "$.customer"}')});
for my $w (@workers)
{
	is($w->safe_psql('postgres',
			'SELECT string_agg(name, \',\' ORDER BY name) FROM metronome_mappings'),
		'acme,tracks', 'worker ' . $w->name . ' has the coordinator\'s mappings');
}
my ($rc, $out, $err) = $workers[0]->psql('postgres',
	"UPDATE metronome_mappings SET enabled = false WHERE name = 'tracks'");
isnt($rc, 0, 'a change of metronome_mappings on a worker fails');
like($err, qr/can only be changed on the Citus coordinator.*HINT:  Change metronome_mappings on the coordinator/s,
	'and says where to change it');
is($workers[0]->safe_psql('postgres',
		"SELECT enabled FROM metronome_mappings WHERE name = 'tracks'"),
	't', 'the worker\'s copy is unchanged');

# 2. distributed ingestion
$coord->safe_psql('postgres', q{
	SET citus.enable_unsafe_triggers = on;
	SELECT create_distributed_table('segment_events', 'id');
	CREATE TABLE acme_events (customer text NOT NULL, id bigserial,
	                          payload jsonb NOT NULL, PRIMARY KEY (customer, id));
	SELECT create_distributed_table('acme_events', 'customer');
	RESET citus.enable_unsafe_triggers;
	SELECT metronome_attach('acme_events', 'payload');
});
is($c->sum_workers(q{SELECT count(*) FROM pg_trigger
	WHERE tgname LIKE 'metronome_map_%' AND tgrelid::regclass::text LIKE 'acme_events_%'}),
	8, 'metronome_attach on a distributed table puts the trigger on its 8 shards');

my $n_multi = 10_000;
$coord->safe_psql('postgres', qq{
	INSERT INTO segment_events (event)
	SELECT jsonb_build_object('type', 'track', 'event', 'API Call',
	         'messageId', 'm-' || g, 'timestamp', '2024-03-01T10:00:00Z',
	         'context', jsonb_build_object('groupId', 'cust-' || (g % 50)),
	         'properties', jsonb_build_object('n', g))
	  FROM generate_series(1, $n_multi) g});

my $n_copy = 5_000;
my $copy = "COPY acme_events (customer, payload) FROM STDIN;\n";
for my $g (1 .. $n_copy)
{
	my $cust = 'acme-' . ($g % 40);
	$copy .= "$cust\t{\"type\": \"track\", \"event\": \"Acme\", \"messageId\": \"a-$g\", "
	  . "\"customer\": \"$cust\", \"timestamp\": \"2024-03-01T10:00:00Z\"}\n";
}
$copy .= "\\.\n";
$coord->safe_psql('postgres', $copy);

# 10 events without a customer: rejected on the node that stores them
$coord->safe_psql('postgres', q{
	INSERT INTO segment_events (event)
	SELECT jsonb_build_object('type', 'track', 'event', 'x', 'messageId', 'r-' || g,
	         'timestamp', '2024-03-01T10:00:00Z')
	  FROM generate_series(1, 10) g});

my $total = $n_multi + $n_copy;
is($coord->safe_psql('postgres', 'SELECT count(*) FROM metronome_outbox'),
	0, 'the coordinator maps nothing into its own outbox');
my @per = map { $_->safe_psql('postgres', 'SELECT count(*) FROM metronome_outbox') } @workers;
is($per[0] + $per[1], $total, "the workers' outboxes hold every event once ($per[0] + $per[1])");
ok($per[0] > 0 && $per[1] > 0, 'both workers map events');
is($c->sum_workers('SELECT count(DISTINCT transaction_id) FROM metronome_outbox'),
	$total, 'no event is mapped on two nodes');

# every event is mapped on the node that stores its row
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM metronome_cluster_outbox(NULL, NULL) o
	  JOIN segment_events e ON e.event->>'messageId' = o.transaction_id
	  JOIN pg_dist_placement p
	    ON p.shardid = get_shard_id_for_distribution_column('segment_events', e.id)
	  JOIN pg_dist_node n ON n.groupid = p.groupid
	 WHERE n.nodeport = o.nodeport}),
	$n_multi, 'each segment_events row is mapped on the node storing its shard');
is($coord->safe_psql('postgres', q{
	SELECT count(*) FROM metronome_cluster_outbox(NULL, NULL) o
	  JOIN pg_dist_placement p
	    ON p.shardid = get_shard_id_for_distribution_column('acme_events', o.customer_id)
	  JOIN pg_dist_node n ON n.groupid = p.groupid
	 WHERE o.mapping = 'acme' AND n.nodeport = o.nodeport}),
	$n_copy, 'each COPYed acme_events row is mapped on the node storing its customer');
is($coord->safe_psql('postgres',
		'SELECT count(*), count(DISTINCT nodeport) FROM metronome_cluster_rejected()'),
	'10|2', 'metronome_cluster_rejected() reads the rejected events of both workers');

# 3. each node ships its own outbox
ok(wait_for(sub { $mock->stats->{unique_events} >= $total }, 120),
	'the mock receives every event');
my $st = $mock->stats;
is($st->{unique_events}, $total, 'exactly the mapped events');
is($st->{duplicates}, 0, 'none of them twice');
ok(wait_for(sub {
	$coord->safe_psql('postgres',
		'SELECT pending = 0 AND failed = 0 FROM metronome_cluster_summary()') eq 't' }),
	'metronome_cluster_summary() reports nothing pending or failed');

my $status = $coord->safe_psql('postgres', q{
	SELECT string_agg(format('%s:%s:%s:%s', nodeport, is_coordinator,
	                         worker_pid IS NOT NULL, sent_total), ',' ORDER BY nodeid)
	  FROM metronome_cluster_status()});
my @rows = split /,/, $status;
is(scalar @rows, 3, 'metronome_cluster_status() has a row per node');
like($rows[0], qr/^\d+:t:t:0$/, 'the coordinator runs a worker and ships nothing');
my $sent = 0;
for my $i (1, 2)
{
	my ($port, $isc, $pid, $s) = split /:/, $rows[$i];
	is("$isc:$pid", 'f:t', "worker node $port runs its delivery worker");
	is($s, $per[ $i - 1 ], "worker node $port shipped its own outbox ($s)");
	$sent += $s;
}
is($coord->safe_psql('postgres',
		'SELECT nodes, workers_running, sent_total FROM metronome_cluster_summary()'),
	"3|3|$total", 'metronome_cluster_summary() has the totals');
is($coord->safe_psql('postgres',
		"SELECT count(*) FROM metronome_cluster_outbox('sent', 10)"),
	20, 'metronome_cluster_outbox(status, max_rows_per_node) limits each node');

# 4. a mapping changed mid-load
$mock->reset;
my $batches = 40;
my $load = '';
for my $b (1 .. $batches)
{
	$load .= qq{INSERT INTO segment_events (event)
	  SELECT jsonb_build_object('type', 'track', 'event', 'v1', 'messageId', 'b$b-' || g,
	           'timestamp', '2024-03-01T10:00:00Z',
	           'context', jsonb_build_object('groupId', 'c' || g))
	    FROM generate_series(1, 200) g;
	SELECT pg_sleep(0.05);
};
}
my $load_file = "$PostgreSQL::Test::Utils::tmp_check/501_load.sql";
append_to_file($load_file, $load);
my ($lout, $lerr) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $load_file,
	  '-d', $coord->connstr('postgres') ],
	'<', '/dev/null', '>', \$lout, '2>', \$lerr);
ok(wait_for(sub {
	$c->sum_workers(q{SELECT count(*) FROM metronome_outbox WHERE transaction_id LIKE 'b%'}) >= 1000 }),
	'the load is under way');
$coord->safe_psql('postgres',
	q{UPDATE metronome_mappings SET event_type = '"v2"' WHERE name = 'tracks'});
ok($h->finish, 'the load ran without error') or diag($lerr);
my $split = $coord->safe_psql('postgres', q{
	SELECT split_part(transaction_id, '-', 1) AS batch,
	       string_agg(DISTINCT event_type, '+' ORDER BY event_type) AS types,
	       count(DISTINCT nodeport) AS nodes
	  FROM metronome_cluster_outbox(NULL, NULL)
	 WHERE transaction_id LIKE 'b%'
	 GROUP BY 1 ORDER BY substr(split_part(transaction_id, '-', 1), 2)::int});
my @b = map { [ split /\|/ ] } split /\n/, $split;
is(scalar @b, $batches, 'every batch was mapped');
is(scalar(grep { $_->[2] != 2 } @b), 0, 'every batch spans both workers');
is(scalar(grep { $_->[1] !~ /^v[12]$/ } @b), 0,
	'no batch has the old mapping on one node and the new one on the other');
my $seq = join '', map { $_->[1] eq 'v1' ? '1' : '2' } @b;
like($seq, qr/^1+2+$/, "the change splits the load into before and after ($seq)");
ok(wait_for(sub { $mock->stats->{unique_events} >= $batches * 200 }, 120),
	'the load is shipped');

note(sprintf('501_citus_ingest: %d events mapped and shipped in %.1f s', $total + $batches * 200,
	time() - $started));
$c->teardown;
done_testing();
