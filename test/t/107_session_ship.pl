# test/t/107_session_ship.pl: metronome_ship() from sessions, without
# preloading (the pg_cron way).
#
# metronome_status() says no worker runs.  metronome_ship() ships due rows
# through the same cycle as the worker and returns how many Metronome
# accepted; max_events bounds it.  Two sessions running CALL metronome_ship() at
# the same time (requests slowed down by the mock so that they overlap;
# the delivery lease lets one ship while the other finds it busy)
# share the rows: the mock never receives a transaction_id twice, and the
# two counts add up.  A transient failure stops metronome_ship() with a
# notice and leaves the rows pending for later.  A session whose CALL
# failed mid-cycle and lives on blocks no other shipper.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(
	mock => $mock,
	preload => 0,
	extension => 1,
	conf => {
		'metronome.batch_size' => '10',
		'metronome.max_inflight' => '2',
		'metronome.max_backoff' => '100ms',
	});

sub insert { insert_outbox($node, @_); }

sub queue { return outbox_counts($node, @_); }

is($node->safe_psql('postgres', 'SELECT coalesce(worker_pid::text, \'-\') || \' \' || state FROM metronome_status()'),
	'- not preloaded', 'no worker without preloading');

# 1. metronome_ship() ships what is due and says how much.
insert('one', 25);
sleep(1);
is($mock->stats->{requests}, 0, 'nothing is shipped without a worker');
is($node->safe_psql('postgres', 'CALL metronome_ship(10)'), '10',
	'metronome_ship(10) ships 10 events');
is(queue('one'), '15/10/0', '10 rows marked sent');
is($node->safe_psql('postgres', 'CALL metronome_ship()'), '15',
	'metronome_ship() ships the rest');
is($mock->stats->{unique_events}, 25, 'the mock has all 25');
is($node->safe_psql('postgres', 'CALL metronome_ship()'), '0',
	'nothing left: 0');

# 2. Two sessions at once never send the same row.
$mock->reset;
$mock->faults({ delay => 0.05 });
insert('two', 400);
my @h;
my @out = ('', '');
for my $i (0, 1)
{
	$h[$i] = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c', 'CALL metronome_ship()' ],
		'>', \$out[$i], '2>', \my $err);
}
$_->finish for @h;
chomp @out;
note("session counts: $out[0] + $out[1]");
is($out[0] + $out[1], 400, 'the two counts add up to the 400 rows');
# (the lease serialises them: one ships while the other finds it busy)
my %seen;
$seen{ $_->{transaction_id} }++
  for map { @{ decode_json($_->{body}) } } @{ $mock->requests };
is(scalar(keys %seen), 400, 'the mock received every event');
is((grep { $_ > 1 } values %seen), 0, 'and none twice');
is($mock->stats->{duplicates}, 0, 'no duplicate at the mock');
is(queue('two'), '0/400/0', 'all marked sent');

# 3. A transient failure: the rows stay pending, with a notice.
$mock->reset;
$mock->faults({ delay => 0, script => [503] });
insert('three', 5);
my ($ret, $out, $err) = $node->psql('postgres', 'CALL metronome_ship()');
is($out, '0', 'a 503: nothing accepted');
like($err, qr/NOTICE:  shipping to Metronome is paused until/, 'with a notice');
is(queue('three'), '5/0/0', 'the rows stay pending');
is( $node->safe_psql(
		'postgres',
		"SELECT DISTINCT attempts || ' ' || last_error || ' ' || (next_attempt_at > created_at) FROM metronome_outbox WHERE transaction_id LIKE 'three-%'"),
	'1 HTTP 503: Service Unavailable true',
	'one attempt counted, the error kept, the next attempt moved later');
ok( wait_for(sub { $node->safe_psql('postgres', 'CALL metronome_ship()') eq '5' }, 10),
	'a later metronome_ship() sends them');
is(queue('three'), '0/5/0', 'sent');

# 4. A session whose CALL fails mid-cycle and lives on holds nothing: a
# trigger of its own refuses its acknowledgement (after the mock accepted
# the rows), it stays connected, and another session ships at once (the
# failed cycle released the shipper lock; its lease is taken over), well
# before the failed cycle's lease would have expired (more than 10 s).
$mock->reset;
$node->safe_psql(
	'postgres', q{
	CREATE FUNCTION refuse_ack() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF current_setting('test.refuse_ack', true) = 'on'
		   AND OLD.lease_pid IS NOT NULL AND NEW.lease_pid IS NULL THEN
			RAISE EXCEPTION 'acknowledgement refused';
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse_ack BEFORE UPDATE ON metronome_delivery
		FOR EACH ROW EXECUTE FUNCTION refuse_ack();});
insert('four', 30);
my ($a_out, $a_err) = ('', '');
my $a = IPC::Run::start(
	[
		'psql', '-XAtq', '-d', $node->connstr('postgres'),
		'-c', 'SET test.refuse_ack = on',
		'-c', 'CALL metronome_ship()',
		'-c', "SELECT 'still connected'",
		'-c', 'SELECT pg_sleep(30)'
	],
	'>', \$a_out, '2>', \$a_err);
ok(wait_for(sub { $a->pump_nb; $a_out =~ /still connected/ }, 10),
	'session A: its CALL failed and the session lives on');
like($a_err, qr/acknowledgement refused/, 'session A: the ERROR of its acknowledgement');
cmp_ok($mock->stats->{unique_events}, '>', 0, 'the mock had accepted rows of its cycle');
is(queue('four'), '30/0/0', 'the rows are still pending');
my $expiry = $node->safe_psql('postgres', 'SELECT lease_until FROM metronome_delivery');
isnt($expiry, '', 'session A\'s lease is still recorded');
is($node->safe_psql('postgres', 'CALL metronome_ship()'), '30',
	'session B ships them: not busy behind the failed cycle');
is( $node->safe_psql('postgres', "SELECT clock_timestamp() < '$expiry'::timestamptz"),
	't', 'before session A\'s lease would have expired');
is(queue('four'), '0/30/0', 'all marked sent');
$a->kill_kill;

$node->stop;
done_testing();
