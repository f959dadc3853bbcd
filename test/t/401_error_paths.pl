# test/t/401_error_paths.pl: errors in the middle of shipping lose nothing
# and leave the process able to ship.
#
# The error paths that free libcurl handles, request bodies and json-c
# objects when an ERROR unwinds a shipping cycle; test/run.sh --valgrind
# runs this under memcheck, which reports any of them lost or used after
# being freed.  Triggers (a superuser's) on the tables under
# metronome_outbox raise an ERROR when the cycle acknowledges or marks rows
# of a chosen prefix:
#   1. in the delivery worker, marking rows sent while other requests of
#      the cycle are still in flight; marking rows for a retry after a 500;
#      marking a refused event failed after a 400.  Each time the worker
#      logs the error, shows it in metronome_status(), keeps running (same
#      pid) and, once the trigger lets it, ships every row.
#   2. in a session, metronome_ship() with requests in flight: the ERROR
#      reaches the caller, the rows stay pending, and the next call ships.
# Then cancels in a session, mid-request: metronome_ship() and
# metronome_check_connection() stopped by statement_timeout, after which
# both work again in a new session.
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
	conf => {
		'metronome.batch_size' => '100',
		'metronome.max_inflight' => '8',
		'metronome.max_backoff' => '200ms',
		'metronome.request_timeout' => '60s',
	});

# the triggers: raise while boom_target holds a prefix.  Since 0.2.0 the
# acknowledgement of sent rows is one UPDATE of metronome_delivery (the
# cursor; it releases the lease), and only a retried or failed row is
# written on its own, into metronome_outbox_state.  So for the prefixes
# 'sent-' and 'session-' the cursor's acknowledgement raises; for the
# others the write of a row whose transaction_id starts with the prefix.
my $trigger = <<'SQL';
CREATE TABLE boom_target (prefix text);
INSERT INTO boom_target VALUES ('(none)');
CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	p text := (SELECT prefix FROM boom_target);
BEGIN
	IF TG_TABLE_NAME = 'metronome_delivery' THEN
		IF p IN ('sent-', 'session-') AND OLD.lease_pid IS NOT NULL AND NEW.lease_pid IS NULL THEN
			RAISE EXCEPTION 'boom: % of %', TG_OP, p;
		END IF;
	ELSIF starts_with(NEW.transaction_id, p) THEN
		RAISE EXCEPTION 'boom: % of %', TG_OP, NEW.transaction_id;
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER boom BEFORE UPDATE ON metronome_delivery
	FOR EACH ROW EXECUTE FUNCTION boom();
CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON metronome_outbox_state
	FOR EACH ROW EXECUTE FUNCTION boom();
SQL
$node->safe_psql('postgres', $trigger);

sub arm
{
	my ($db, $prefix) = @_;
	$node->safe_psql($db, "UPDATE boom_target SET prefix = '$prefix'");
}

sub insert
{
	my ($db, $prefix, $n) = @_;
	$node->safe_psql($db,
		"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
		  . "SELECT '$prefix' || g, 'cust', 'api_call', now() FROM generate_series(1, $n) g"
	);
}

# pending/sent/failed counts of the rows with this prefix
sub queue
{
	my ($db, $prefix) = @_;
	return $node->safe_psql($db,
		"SELECT count(*) FILTER (WHERE status = 'pending') || '/' || count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FILTER (WHERE status = 'failed') "
		  . "FROM metronome_outbox WHERE starts_with(transaction_id, '$prefix')");
}

sub worker_pid { return delivery_worker_pid($node); }

# how many times the server log says this
sub log_count
{
	my ($re) = @_;
	my @hits = slurp_file($node->logfile) =~ /$re/g;
	return scalar @hits;
}

my $pid = worker_pid();
ok($pid, "the delivery worker runs (pid $pid)");

# 1a. ERROR marking rows sent, four requests still in flight: 1,000 rows in
# batches of 100, eight at once; the first four answered at once, the
# other four late.  Marking the first 400 rows sent raises.
$mock->faults({ script => ['ok', 'ok', 'ok', 'ok', { delay => 2 }, { delay => 2 }, { delay => 2 }, { delay => 2 }] });
arm('postgres', 'sent-');
insert('postgres', 'sent-', 1000);
ok(wait_for(sub { log_count(qr/ERROR:  boom: UPDATE of sent-/) >= 2 }, 60),
	'marking rows sent raised, more than once');
like($node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()'),
	qr/^boom: UPDATE of sent-/, 'metronome_status() shows the error');
is(worker_pid(), $pid, 'the worker did not die');
arm('postgres', '(none)');
ok(wait_for(sub { queue('postgres', 'sent-') eq '0/1000/0' }, 60),
	'then every row is sent');

# 1b. ERROR marking rows for a retry after a 500.
$mock->faults({ script => [500, 500, 500] });
arm('postgres', 'retry-');
insert('postgres', 'retry-', 5);
ok(wait_for(sub { log_count(qr/ERROR:  boom: (?:INSERT|UPDATE) of retry-/) >= 2 }, 60),
	'marking rows for a retry raised, more than once');
arm('postgres', '(none)');
ok(wait_for(sub { queue('postgres', 'retry-') eq '0/5/0' }, 60),
	'then every row is sent');

# 1c. ERROR marking a refused event failed, after the 400 and the halving.
$mock->faults({ reject_transaction_ids => ['refused-3'] });
# only the refused row's UPDATE raises: marking its neighbours sent must not
# pre-empt it
arm('postgres', 'refused-3');
insert('postgres', 'refused-', 4);
ok(wait_for(sub { log_count(qr/ERROR:  boom: (?:INSERT|UPDATE) of refused-3/) >= 2 }, 60),
	'marking the refused row failed raised, more than once');
arm('postgres', '(none)');
ok(wait_for(sub { queue('postgres', 'refused-') eq '0/3/1' }, 60),
	'then three rows are sent and the refused one failed');
$mock->clear_faults;
is(worker_pid(), $pid, 'the same worker ran all along');
is($mock->stats->{unique_events}, 1008, 'the mock has every event');

# 2. metronome_ship() in a session (database "other", which the worker does
# not serve), the ERROR raised with requests in flight.
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', "CREATE EXTENSION metronome; $trigger");
arm('other', 'session-');
insert('other', 'session-', 1000);
$mock->faults({ script => ['ok', 'ok', 'ok', 'ok', { delay => 2 }, { delay => 2 }, { delay => 2 }, { delay => 2 }] });
my ($ret, $out, $err) = $node->psql('other', 'CALL metronome_ship()');
like($err, qr/ERROR:  boom: UPDATE of session-/,
	'metronome_ship(): the ERROR reaches the caller');
is(queue('other', 'session-'), '1000/0/0', 'and every row is still pending');
arm('other', '(none)');
is($node->safe_psql('other', 'CALL metronome_ship()'), '1000',
	'the next metronome_ship() ships them all');

# 3. Cancels mid-request: statement_timeout while the mock holds the answer.
$mock->faults({ delay => 30 });
insert('other', 'cancel-', 10);
($ret, $out, $err) = $node->psql('other',
	"SET statement_timeout = '2s'; CALL metronome_ship()");
like($err, qr/ERROR:  canceling statement due to statement timeout/,
	'metronome_ship() is cancelled mid-request');
is(queue('other', 'cancel-'), '10/0/0', 'its rows stay pending');
($ret, $out, $err) = $node->psql('other',
	"SET statement_timeout = '2s'; SELECT metronome_check_connection()");
like($err, qr/ERROR:  canceling statement due to statement timeout/,
	'metronome_check_connection() is cancelled mid-request');
$mock->faults({ delay => 0 });
is($node->safe_psql('other', 'SELECT metronome_check_connection()'), 'ok',
	'metronome_check_connection() works again');
is($node->safe_psql('other', 'CALL metronome_ship()'), '10',
	'metronome_ship() ships the rows left pending');

$node->stop;
done_testing();
