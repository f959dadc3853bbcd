# test/t/110_cycle_error.pl: an ERROR inside a shipping cycle.
#
# A user's trigger on metronome_delivery refuses the worker's
# acknowledgement (the UPDATE of the cursor that releases its lease: since
# 0.2.0 rows are not updated one by one).  The ERROR is caught: logged, the
# acknowledgement rolled back (the rows stay pending, nothing is lost), shown by metronome_status(), and the
# worker backs off instead of dying and restarting in a loop: same pid, a
# bounded number of errors, even while commits keep waking it.  Once the trigger is gone the rows are marked
# sent (Metronome got them again: duplicates are harmless).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => { 'metronome.max_backoff' => '1s' });

$node->safe_psql(
	'postgres', q{
	CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF OLD.lease_pid IS NOT NULL AND NEW.lease_pid IS NULL THEN
			RAISE EXCEPTION 'boom: no sent rows today';
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER boom BEFORE UPDATE ON metronome_delivery
		FOR EACH ROW EXECUTE FUNCTION boom();});

my $pid = $node->safe_psql('postgres', 'SELECT worker_pid FROM metronome_status()');
like($pid, qr/^\d+$/, 'the worker runs');

$node->safe_psql('postgres',
	"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
	  . "SELECT 'err-' || g, 'cust', 'api_call', now() FROM generate_series(1, 10) g");
ok(wait_for(sub { $mock->stats->{unique_events} >= 10 }, 10), 'the events reach the mock');
ok( wait_for(
		sub {
			$node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()') eq
			  'boom: no sent rows today';
		},
		10),
	'metronome_status() shows the error');
# commits wake the worker meanwhile: it still waits out its backoff
for my $i (1 .. 30)
{
	$node->safe_psql('postgres',
		"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") VALUES ('wake-$i', 'cust', 'api_call', now())");
	sleep(0.1);
}
my @errors = grep { /ERROR:  boom: no sent rows today/ } split /\n/, slurp_file($node->logfile);
cmp_ok(scalar(@errors), '>=', 2, 'the error is logged');
{
	local $::TODO = timing_todo();
	cmp_ok(scalar(@errors), '<=', 8, 'with backoff, not in a tight loop, even when commits wake it (' . scalar(@errors) . ' times in ~4 s)');
}
is($node->safe_psql('postgres', 'SELECT worker_pid FROM metronome_status()'),
	$pid, 'the same worker: it did not die');
is($node->safe_psql('postgres', "SELECT count(*) FROM metronome_outbox WHERE status = 'pending'"),
	'40', 'the rows are still pending (the cycles were rolled back)');

$node->safe_psql('postgres', 'DROP TRIGGER boom ON metronome_delivery');
ok( wait_for(
		sub {
			$node->safe_psql('postgres', "SELECT count(*) FROM metronome_outbox WHERE status = 'sent'") eq '40';
		},
		10),
	'without the trigger, the rows are marked sent');
cmp_ok($mock->stats->{duplicates}, '>', 0, 'Metronome got them again (harmless)');
is($mock->stats->{unique_events}, 40, 'every event once (40 unique)');
is($node->safe_psql('postgres', 'SELECT worker_pid || state FROM metronome_status()'),
	"${pid}idle", 'the worker is idle again');

$node->stop;
done_testing();
