# test/t/304_backfill.pl: a long backfill, watched, cancelled, resumed.
#
# 200,000 stored events are backfilled through a new mapping in batches of
# 2,000.  While it runs, metronome_backfill_progress shows it running with
# committed progress, and a second CALL of the same backfill is refused.
# pg_cancel_backend stops it: the view says stopped, the committed batches
# stay.  The same CALL resumes after the last committed batch and ends with
# every event mapped exactly once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use MetronomeTest;

my $total = 200_000;
my $node = new_node(preload => 0, extension => 1);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# the events arrive before the mapping exists: nothing maps them yet
sql("INSERT INTO segment_events (event) "
	  . "SELECT jsonb_build_object('type', 'track', 'event', 'Seat Added', 'messageId', 'm-' || g, "
	  . " 'timestamp', to_json(now())#>>'{}', 'context', jsonb_build_object('groupId', 'c' || (g % 50)), "
	  . " 'properties', jsonb_build_object('seats', g)) FROM generate_series(1, $total) g");
is(sql('SELECT count(*) FROM metronome_outbox'), '0', "$total events, none mapped");
sql(q{INSERT INTO metronome_mappings (name, subscription, event_type)
      VALUES ('seats', 'event = "Seat Added"', '"seat_added"')});

my $call = "CALL metronome_backfill('seats', batch_size => 2000)";
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $call ],
	'>', \$out, '2>', \$err);

ok( wait_for(
		sub {
			sql("SELECT state = 'running' AND scanned >= 20000 FROM metronome_backfill_progress") eq 't';
		},
		60, 0.05),
	'the progress view shows it running, with committed batches');
my ($ret, $o2, $e2) = $node->psql('postgres', $call);
isnt($ret, 0, 'a second CALL of the same backfill is refused');
like($e2, qr/backfill \d+ is already running \(process \d+\)/, 'saying it runs already');

my $pid = sql('SELECT pid FROM metronome_backfills');
sql("SELECT pg_cancel_backend($pid)");
$h->finish;
like($err, qr/canceling statement due to user request/, 'pg_cancel_backend stops it');
like($err, qr/NOTICE:  backfill 1: \d+ events: \d+ mapped/, 'after NOTICEs of its progress');
my ($scanned, $mapped, $state) = split /\|/,
  sql('SELECT scanned, mapped, state FROM metronome_backfill_progress');
is($state, 'stopped', 'the view says stopped');
cmp_ok($scanned, '<', $total, "its committed progress stays ($scanned of $total)");
is(sql('SELECT count(*) FROM metronome_outbox'), $mapped,
	'the outbox holds what the committed batches mapped');

($ret, $o2, $e2) = $node->psql('postgres', $call);
is($ret, 0, 'the same CALL again');
like($e2, qr/NOTICE:  backfill 1: resuming after id \d+ \($scanned events done\)/,
	'resumes after the last committed batch');
like($e2, qr/NOTICE:  backfill 1 done: $total events scanned, $total mapped, 0 rejected, 0 skipped as duplicates/,
	'and ends with the summary: every event once');
is(sql("SELECT count(*) || '/' || count(DISTINCT transaction_id) FROM metronome_outbox"),
	"$total/$total", 'the outbox has each event exactly once');
is(sql('SELECT state FROM metronome_backfill_progress'), 'done', 'the view says done');

$node->stop;
done_testing();
