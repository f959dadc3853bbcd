# test/t/106_lifecycle.pl: the worker through its database's and the
# extension's life, and through reloads.
#
# metronome.database does not exist at start: one log line, no FATAL, and
# metronome_status() says so; CREATE DATABASE starts the worker within
# seconds; it waits (one line) for CREATE EXTENSION, then ships.  A reload
# moves it to another ingest_url and batch_size.  DROP EXTENSION while it
# runs (even mid-request) neither hangs nor breaks it; a new CREATE
# EXTENSION ships again.  metronome.enabled = off pauses shipping;
# metronome.retain_sent deletes old sent rows only; the worker's writes
# reach the statistics that drive autovacuum.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MetronomeTest;

my $mock = start_mock();
my $mock2 = start_mock(name => 'mock2');
my $node = new_node(
	mock => $mock,
	conf => { 'metronome.database' => 'billing' });

sub billing { return $node->safe_psql('billing', $_[0]); }

sub insert
{
	my ($prefix, $n) = @_;
	billing("INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
		  . "SELECT '$prefix-' || g, 'cust', 'api_call', now() FROM generate_series(1, $n) g");
}

sub queue
{
	my ($prefix) = @_;
	return billing("SELECT count(*) FILTER (WHERE status = 'pending') || '/' || count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FILTER (WHERE status = 'failed') "
		  . "FROM metronome_outbox WHERE transaction_id LIKE '$prefix-%'");
}

sub count_lines
{
	my ($re) = @_;
	return scalar(grep { /$re/ } split /\n/, slurp_file($node->logfile));
}

# 1. The database does not exist yet.
$node->safe_psql('postgres', 'CREATE EXTENSION metronome');    # for metronome_status()
sleep(3);
is(count_lines(qr/database "billing" does not exist; waiting for it to be created/),
	1, 'one log line while the database is missing');
is(count_lines(qr/FATAL/), 0, 'no FATAL (no worker dying at each restart)');
is($node->safe_psql('postgres', 'SELECT coalesce(worker_pid, 0) || state FROM metronome_status()'),
	'0waiting for database', 'metronome_status(): waiting for database');

my $t0 = time();
$node->safe_psql('postgres', 'CREATE DATABASE billing');
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'metronome delivery' AND datname = 'billing'") eq '1';
		},
		15),
	'CREATE DATABASE: the worker starts on it');
{
	local $::TODO = timing_todo();
	cmp_ok(time() - $t0, '<', 5, 'within seconds');
}
ok(wait_for(sub { count_lines(qr/extension "metronome" is not installed in database "billing"; waiting for it/) == 1 }, 10),
	'it waits for the extension, one log line');
sleep(2.5);
is(count_lines(qr/extension "metronome" is not installed in database "billing"/),
	1, 'still one line after a few polls');

billing('CREATE EXTENSION metronome');
insert('first', 20);
ok(wait_for(sub { queue('first') eq '0/20/0' }, 10), 'CREATE EXTENSION: it ships');

# 2. A reload changes ingest_url and batch_size.
$node->append_conf('postgresql.conf',
	"metronome.ingest_url = '" . $mock2->url . "'\nmetronome.batch_size = 10\n");
$node->reload;
sleep(0.5);
$mock->reset;
insert('moved', 35);
ok(wait_for(sub { queue('moved') eq '0/35/0' }, 10), 'sent after the reload');
is($mock2->stats->{unique_events}, 35, 'to the new ingest_url');
is(join(',', sort { $b <=> $a } map { $_->{events} } @{ $mock2->requests }),
	'10,10,10,5', 'in batches of the new batch_size');
is($mock->stats->{requests}, 0, 'nothing to the old URL');

# 3. DROP EXTENSION while the worker runs, mid-request.
$mock2->faults({ delay => 2 });
insert('dropped', 10);
ok(wait_for(sub { $mock2->stats->{inflight} >= 1 }, 10, 0.02), 'a request in flight');
$t0 = time();
my ($ret, $out, $err) =
  $node->psql('billing', 'DROP EXTENSION metronome', timeout => 30);
is($ret, 0, 'DROP EXTENSION succeeds while the worker is mid-request');
cmp_ok(time() - $t0, '<', 10, sprintf('without hanging (%.1f s)', time() - $t0));
ok(wait_for(sub { count_lines(qr/extension "metronome" is not installed in database "billing"; waiting for it/) == 2 }, 10),
	'the worker waits for the extension again');
is(count_lines(qr/ERROR|FATAL/), 0, 'no error in the server log');
my $pid = $node->safe_psql('postgres', 'SELECT worker_pid FROM metronome_status()');
like($pid, qr/^\d+$/, 'the worker is still alive');
$mock2->faults({ delay => 0 });

billing('CREATE EXTENSION metronome');
insert('again', 5);
ok(wait_for(sub { queue('again') eq '0/5/0' }, 10), 'a new CREATE EXTENSION ships again');
is($node->safe_psql('postgres', 'SELECT worker_pid FROM metronome_status()'),
	$pid, 'the same worker');

# 4. enabled = off pauses shipping.
$node->append_conf('postgresql.conf', "metronome.enabled = off\n");
$node->reload;
ok(wait_for(sub { $node->safe_psql('postgres', 'SELECT state FROM metronome_status()') eq 'paused' }, 10),
	'enabled = off: paused');
insert('paused', 5);
sleep(1.5);
is(queue('paused'), '5/0/0', 'nothing shipped while paused');
($ret, $out, $err) = $node->psql('billing', 'CALL metronome_ship()');
is($out, '0', 'metronome_ship() ships nothing either');
like($err, qr/NOTICE:  shipping is paused/, 'and says why');
$node->append_conf('postgresql.conf', "metronome.enabled = on\n");
$node->reload;
ok(wait_for(sub { queue('paused') eq '0/5/0' }, 10), 'enabled = on: shipped');

# 5. The worker's writes reach the statistics (autovacuum's input).
ok( wait_for(
		sub {
			billing("SELECT n_tup_upd >= 1 FROM pg_stat_user_tables WHERE relname = 'metronome_delivery'") eq 't';
		},
		15),
	'pg_stat_user_tables counts the worker\'s acknowledgements (updates of the cursor row)');

# 6. retain_sent: old sent rows are deleted, nothing else.
$mock2->faults({ reject_transaction_ids => ['keep-1'] });
insert('keep', 3);
ok(wait_for(sub { queue('keep') eq '0/2/1' }, 10), 'a failed row to keep');
billing("INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\", next_attempt_at) VALUES ('later-1', 'c', 'e', now(), now() + interval '1 day')");
my $sent = billing("SELECT count(*) FROM metronome_outbox WHERE status = 'sent'");
cmp_ok($sent, '>', 5, "$sent sent rows");
$node->append_conf('postgresql.conf', "metronome.retain_sent = '2s'\n");
$node->reload;
ok( wait_for(
		sub { billing("SELECT count(*) FROM metronome_outbox WHERE status = 'sent'") eq '0' }, 20),
	'retain_sent = 2s: the sent rows are deleted');
is( billing("SELECT string_agg(transaction_id || ':' || status, ',' ORDER BY id) FROM metronome_outbox"),
	'keep-1:failed,later-1:pending',
	'failed and pending rows stay');

$node->stop;
done_testing();
