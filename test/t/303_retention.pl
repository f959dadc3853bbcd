# test/t/303_retention.pl: an inbox that does not grow forever.
#
# 1. metronome.retain_events: the delivery worker removes the events of
#    segment_events older than the setting, once mapped (their outbox rows
#    stay and ship), and keeps those an unfinished backfill has not reached.
# 2. The pg_partman setup of README's "Operating" section: an inbox
#    partitioned by day (Debian's postgresql-15-partman), attached with
#    metronome_attach; events inserted through it are mapped; partman's
#    retention drops whole partitions of old events (no row-by-row delete);
#    a backfill walks the partitioned inbox too.  On a server without
#    pg_partman (one built from source) the daily partitions are made by
#    hand and partman's retention is SKIPPED, loudly
#    (MetronomeTest::have_extension); never on Debian's server.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(mock => $mock, extension => 1);

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub events
{
	my ($table, $prefix, $n, $received) = @_;
	sql("INSERT INTO $table (event, received_at) "
		  . "SELECT jsonb_build_object('type', 'track', 'event', 'API Call', 'messageId', '$prefix-' || g, "
		  . " 'timestamp', to_json(now())#>>'{}', 'context', '{\"groupId\": \"acme\"}'::jsonb, 'properties', '{}'::jsonb), $received "
		  . "FROM generate_series(1, $n) g");
}

sql("INSERT INTO metronome_mappings (name) VALUES ('tracks')");

# 1. retain_events, by the worker.
events('segment_events', 'old', 20, "now() - interval '1 hour'");
events('segment_events', 'young', 5, 'now()');
ok(wait_for(sub { sql("SELECT count(*) FROM metronome_outbox WHERE status = 'sent'") eq '25' }, 20),
	'25 events mapped and shipped');
sleep(1.5);
is(sql('SELECT count(*) FROM segment_events'), '25', 'retain_events = -1 (the default): kept');

# an unfinished backfill that has done the first 10 old events
sql("INSERT INTO metronome_backfills (mapping, source, batch_size, last_key) "
	  . "SELECT 'tracks', 'segment_events', 10, (min(id) + 9)::text FROM segment_events");
$node->append_conf('postgresql.conf', "metronome.retain_events = '30min'\n");
$node->reload;
ok(wait_for(sub { sql('SELECT count(*) FROM segment_events') eq '15' }, 20),
	'retain_events = 30min: the old events the backfill has passed are removed');
sleep(1.5);
is(sql("SELECT count(*) FILTER (WHERE event->>'messageId' LIKE 'old-%') || '/' || count(*) FROM segment_events"),
	'10/15', 'the old ones it has not reached stay');
sql('UPDATE metronome_backfills SET finished_at = now()');
$node->reload;    # the worker's next clean-up, now rather than within the minute
ok(wait_for(sub { sql('SELECT count(*) FROM segment_events') eq '5' }, 20),
	'when it is finished, they go too; the young ones stay');
is(sql("SELECT count(*) FROM metronome_outbox WHERE status = 'sent'"), '25',
	'every outbox row stays');
$node->append_conf('postgresql.conf', "metronome.retain_events = -1\n");
$node->reload;

# 2. A partitioned inbox kept by pg_partman (by hand without it).
my $partman = have_extension($node, 'pg_partman',
	"part 2, pg_partman's daily partitions and its retention (the partitions are made by hand instead)");
sql(q{
	CREATE TABLE inbox (
	    id          bigint GENERATED ALWAYS AS IDENTITY,
	    event       jsonb NOT NULL,
	    received_at timestamptz NOT NULL DEFAULT now(),
	    PRIMARY KEY (id, received_at)
	) PARTITION BY RANGE (received_at);
});
if ($partman)
{
	sql(q{
		CREATE SCHEMA partman;
		CREATE EXTENSION pg_partman SCHEMA partman;
		SELECT partman.create_parent('public.inbox', 'received_at', 'native', 'daily',
		                             p_premake := 2,
		                             p_start_partition := (now() - interval '6 days')::date::text);
		UPDATE partman.part_config
		   SET retention = '3 days', retention_keep_table = false
		 WHERE parent_table = 'public.inbox';
	});
}
else
{
	# the same days as partman's: from 6 days ago to 2 days ahead
	for my $d (-6 .. 2)
	{
		my $n = $d < 0 ? 'm' . -$d : $d;
		sql("CREATE TABLE inbox_d$n PARTITION OF inbox FOR VALUES "
			  . "FROM (now()::date + $d) TO (now()::date + " . ($d + 1) . ')');
	}
}
sql("SELECT metronome_attach('inbox', 'event')");
my $parts_before = sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'inbox'::regclass");
cmp_ok($parts_before, '>=', 8, "the daily partitions are made ($parts_before)");

events('inbox', 'p-old', 30, "now() - interval '5 days'");
events('inbox', 'p-new', 10, 'now()');
is(sql("SELECT count(*) FROM metronome_outbox WHERE transaction_id LIKE 'p-%'"), '40',
	'events inserted through the partitioned inbox are mapped');
ok(wait_for(sub { sql("SELECT count(*) FROM metronome_outbox WHERE transaction_id LIKE 'p-%' AND status = 'sent'") eq '40' }, 20),
	'and shipped');

if ($partman)
{
	sql('CALL partman.run_maintenance_proc()');
	is(sql("SELECT count(*) FROM inbox WHERE event->>'messageId' LIKE 'p-old-%'"), '0',
		"partman's retention dropped the partitions of old events");
	is(sql('SELECT count(*) FROM inbox'), '10', 'the new events stay');
	my $parts_after = sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'inbox'::regclass");
	cmp_ok($parts_after, '<', $parts_before, "whole partitions went ($parts_before -> $parts_after)");
	is(sql("SELECT count(*) FROM metronome_outbox WHERE transaction_id LIKE 'p-%'"), '40',
		'their outbox rows stay');
}

# a backfill of a new mapping walks the partitioned inbox
sql(q{INSERT INTO metronome_mappings (name, transaction_id, event_type)
      VALUES ('calls', '{"@template": "{{messageId}}-call"}', '"api_call"')});
my ($ret, $out, $err) = $node->psql('postgres',
	"CALL metronome_backfill('calls', source => 'inbox', since => now() - interval '1 day', batch_size => 4)");
is($ret, 0, 'metronome_backfill over the partitioned inbox') or diag($err);
like($err, qr/NOTICE:  backfill \d+ done: 10 events scanned, 10 mapped, 0 rejected, 0 skipped as duplicates/,
	'its summary');
is(sql("SELECT count(*) FROM metronome_outbox WHERE transaction_id LIKE 'p-new-%-call'"), '10',
	'the new mapping has the events');

$node->stop;
done_testing();
