# test/t/502_citus_faults.pl: faults on a Citus cluster while events flow,
# with nothing lost.
#
# Events are loaded through the coordinator by a client that retries a
# failed INSERT (as an application would), in three phases of 8,000 events:
#   A. the delivery worker of worker 1 is killed with SIGKILL (the node
#      restarts, as after any crash);
#   B. worker 2 is stopped in immediate mode, then started again;
#   C. a shard of segment_events is moved from worker 1 to worker 2 with
#      citus_move_shard_placement.
# After each phase every event of the phase has reached the mock at least
# once; at the end no outbox row on any node is pending or failed.  How many
# events reached the mock twice (harmless: Metronome deduplicates on
# transaction_id) is printed.
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

my $mock = start_mock(args => [ '--max-recorded', '100000' ]);
my $c = CitusCluster->new(
	mock => $mock,
	conf => { 'metronome.max_backoff' => '200ms', 'restart_after_crash' => 'on' });
my $coord = $c->coordinator;
my ($w1, $w2) = $c->workers;

$coord->safe_psql('postgres', q{
	INSERT INTO metronome_mappings (name) VALUES ('tracks');
	SET citus.enable_unsafe_triggers = on;
	SELECT create_distributed_table('segment_events', 'id');
});

my $batches = 40;
my $per_batch = 200;
my $phase_events = $batches * $per_batch;

# start_load($tag): a client inserting $batches batches through the
# coordinator, each retried until it succeeds.
sub start_load
{
	my ($tag) = @_;
	my $script = "$PostgreSQL::Test::Utils::tmp_check/502_load_$tag.sh";
	my $connstr = $coord->connstr('postgres');
	open my $fh, '>', $script or die "$script: $!";
	print $fh <<"EOS";
for b in \$(seq 1 $batches); do
  tries=0
  until psql -X -q -v ON_ERROR_STOP=1 -d "$connstr" -c "INSERT INTO segment_events (event)
      SELECT jsonb_build_object('type', 'track', 'event', 'Load', 'messageId', '$tag-' || \$b || '-' || g,
               'timestamp', '2024-03-01T10:00:00Z', 'context', jsonb_build_object('groupId', 'c' || g))
        FROM generate_series(1, $per_batch) g" >/dev/null 2>&1; do
    tries=\$((tries + 1))
    [ \$tries -gt 600 ] && { echo "batch \$b failed 600 times"; exit 1; }
    sleep 0.1
  done
  sleep 0.05
done
EOS
	close $fh;
	my $out = '';
	my $h = IPC::Run::start([ 'bash', $script ], '<', '/dev/null', '>&', \$out);
	return { h => $h, out => \$out, tag => $tag };
}

# loaded($tag): how many events of the phase the cluster stores
sub loaded
{
	my ($tag) = @_;
	return $coord->safe_psql('postgres',
		"SELECT count(*) FROM segment_events WHERE event->>'messageId' LIKE '$tag-%'");
}

# finish_phase($load): wait for the client, then for the mock to have every
# event of the phase.
sub finish_phase
{
	my ($load) = @_;
	my $tag = $load->{tag};
	ok($load->{h}->finish, "phase $tag: the client inserted every batch")
	  or diag(${ $load->{out} });
	is($coord->safe_psql('postgres', qq{
		SELECT count(DISTINCT event->>'messageId') FROM segment_events
		 WHERE event->>'messageId' LIKE '$tag-%'}),
		$phase_events, "phase $tag: $phase_events events stored");
	my $have = sub {
		scalar grep { $_->{transaction_id} =~ /^$tag-/ } @{ $mock->events } };
	ok(wait_for(sub { $have->() >= $phase_events }, 180),
		"phase $tag: every event reaches the mock")
	  or diag('the mock has ' . $have->() . "; per node (port|outbox rows|by status|rejected):\n"
		  . $coord->safe_psql('postgres', qq{
			SELECT s.nodeport, s.rows, s.statuses, coalesce(r.n, 0)
			  FROM (SELECT nodeport, count(*) AS rows,
			               string_agg(DISTINCT status, ',') AS statuses
			          FROM metronome_cluster_outbox(NULL, NULL)
			         WHERE transaction_id LIKE '$tag-%' GROUP BY 1) s
			  LEFT JOIN (SELECT nodeport, count(*) AS n FROM metronome_cluster_rejected(NULL)
			              WHERE event->>'messageId' LIKE '$tag-%' GROUP BY 1) r USING (nodeport)}));
	return;
}

# A. the delivery worker of worker 1 killed with SIGKILL
my $load = start_load('A');
ok(wait_for(sub { $w1->safe_psql('postgres',
	"SELECT count(*) FROM metronome_outbox WHERE status = 'sent'") >= 500 }, 60),
	'phase A: worker 1 ships');
my $pid = $w1->safe_psql('postgres', 'SELECT worker_pid FROM metronome_status()');
ok($pid =~ /^\d+$/, "phase A: worker 1's delivery worker runs (pid $pid)");
kill 'KILL', $pid;
ok(wait_for(sub {
	my $p = $w1->safe_psql('postgres', 'SELECT worker_pid FROM metronome_status()');
	$p =~ /^\d+$/ && $p != $pid }, 60),
	'phase A: worker 1 is back with a new delivery worker');
finish_phase($load);

# B. worker 2 stopped in immediate mode while events flow, then started
$load = start_load('B');
ok(wait_for(sub { loaded('B') >= 1000 }, 60), 'phase B: the load is under way');
$w2->stop('immediate');
sleep(2);
$w2->start;
finish_phase($load);

# C. a shard moved from worker 1 to worker 2 while events are inserted
my $shard = $coord->safe_psql('postgres', qq{
	SELECT s.shardid FROM pg_dist_shard s JOIN pg_dist_shard_placement p USING (shardid)
	 WHERE s.logicalrelid = 'segment_events'::regclass AND p.nodeport = @{[ $w1->port ]}
	 ORDER BY 1 LIMIT 1});
$load = start_load('C');
ok(wait_for(sub { loaded('C') >= 1000 }, 60), 'phase C: the load is under way');
my ($rc, $out, $err) = $coord->psql('postgres', qq{
	SELECT citus_move_shard_placement($shard, '127.0.0.1', @{[ $w1->port ]},
	                                  '127.0.0.1', @{[ $w2->port ]})});
is($rc, 0, "phase C: shard $shard moved to worker 2") or diag($err);
is($coord->safe_psql('postgres',
		"SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $shard"),
	$w2->port, 'phase C: the shard is on worker 2');
finish_phase($load);

ok(wait_for(sub {
	$coord->safe_psql('postgres',
		'SELECT pending = 0 AND failed = 0 FROM metronome_cluster_summary()') eq 't' }, 120),
	'no outbox row on any node is pending or failed');
is($coord->safe_psql('postgres',
		"SELECT count(*) FROM metronome_cluster_outbox('failed', NULL)"),
	0, 'metronome_cluster_outbox() has no failed row');
my $st = $mock->stats;
is($st->{unique_events}, 3 * $phase_events, 'the mock has exactly the events loaded');
note(sprintf('502_citus_faults: %d events, %d unique at the mock, %d sent twice',
	$st->{events}, $st->{unique_events}, $st->{duplicates}));

$c->teardown;
done_testing();
