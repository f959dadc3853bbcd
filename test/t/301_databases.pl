# test/t/301_databases.pl: one server, several application databases.
#
# metronome.database = '*': every database where the extension is installed
# gets its own delivery worker, and ships its own outbox.  Databases created
# after the start and CREATE / DROP EXTENSION are noticed without a restart;
# metronome_status() reports the worker of the database it runs in; DROP
# DATABASE of a served database is not blocked by its worker.  Then a list
# of three databases with too few background worker slots: a clear log line
# for each database left without a worker, and the others ship.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(mock => $mock, conf => { 'metronome.database' => '*' });
my @dbs = qw(app_a app_b app_c);

sub insert
{
	my ($db, $prefix, $n) = @_;
	$node->safe_psql($db,
		    "INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
		  . "SELECT '$db-$prefix-' || g, '$db', 'api_call', now() FROM generate_series(1, $n) g");
}

sub sent
{
	my ($db, $prefix) = @_;
	return $node->safe_psql($db,
		"SELECT count(*) FROM metronome_outbox WHERE status = 'sent' AND transaction_id LIKE '$db-$prefix-%'");
}

sub worker_of
{
	my ($db) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'metronome delivery' AND datname = '$db'");
}

sub count_lines
{
	my ($n, $re) = @_;
	return scalar(grep { /$re/ } split /\n/, slurp_file($n->logfile));
}

# 1. Three databases created after the start, each with the extension.
for my $db (@dbs)
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION metronome');
	insert($db, 'first', 10);
}
for my $db (@dbs)
{
	ok(wait_for(sub { sent($db, 'first') eq '10' }, 20), "$db: its outbox is shipped");
}
is($mock->stats->{unique_events}, 30, 'the mock has the 30 events');
my %customers;
$customers{ $_->{customer_id} }++ for @{ $mock->events };
is_deeply(\%customers, { app_a => 10, app_b => 10, app_c => 10 },
	'ten from each database');

my %pid;
for my $db (@dbs)
{
	$pid{$db} = worker_of($db);
	like($pid{$db}, qr/^\d+$/, "$db: one delivery worker");
	is($node->safe_psql($db, 'SELECT worker_pid FROM metronome_status()'),
		$pid{$db}, "$db: metronome_status() reports its own worker");
}
ok(wait_for(sub { (worker_of('postgres') // '') eq '' }, 10),
	'no worker stays in a database without the extension');

# 2. DROP EXTENSION: that worker goes, the others ship on; CREATE EXTENSION
# brings it back at once (not at the next periodic look).
$node->safe_psql('app_b', 'DROP EXTENSION metronome');
ok(wait_for(sub { worker_of('app_b') eq '' }, 10), 'DROP EXTENSION: its worker leaves');
insert('app_a', 'second', 5);
ok(wait_for(sub { sent('app_a', 'second') eq '5' }, 10), 'app_a still ships');
my $t0 = time();
$node->safe_psql('app_b', 'CREATE EXTENSION metronome');
insert('app_b', 'again', 5);
ok(wait_for(sub { sent('app_b', 'again') eq '5' }, 20), 'CREATE EXTENSION again: app_b ships');
{
	local $::TODO = timing_todo();
	cmp_ok(time() - $t0, '<', 10, sprintf('within seconds (%.1f s)', time() - $t0));
}
like($node->safe_psql('app_b', 'SELECT worker_pid FROM metronome_status()'),
	qr/^\d+$/, 'and metronome_status() there shows its worker');

# 3. DROP DATABASE of a served database is not blocked by its worker.
$t0 = time();
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE app_c', timeout => 60);
is($ret, 0, 'DROP DATABASE of a served database succeeds') or diag($err);
{
	local $::TODO = timing_todo();
	cmp_ok(time() - $t0, '<', 10, sprintf('promptly (%.1f s)', time() - $t0));
}
insert('app_a', 'after-drop', 3);
ok(wait_for(sub { sent('app_a', 'after-drop') eq '3' }, 10), 'the others ship on');
$node->safe_psql('postgres', 'CREATE DATABASE app_d');
$node->safe_psql('app_d', 'CREATE EXTENSION metronome');
insert('app_d', 'new', 4);
ok(wait_for(sub { sent('app_d', 'new') eq '4' }, 20),
	'a database created later, with the extension: shipped without a restart');
is(count_lines($node, qr/FATAL|PANIC|server process .* was terminated/)
	  - count_lines($node, qr/terminating background worker "metronome delivery" due to administrator command/),
	0, 'no crash, no FATAL but the worker asked to step aside');
$node->stop;

# 4. A list of three databases and room for the launcher and one worker
# (the third slot is the logical replication launcher's).
my $small = new_node(
	name => 'small',
	mock => $mock,
	conf => {
		'metronome.database' => 'one, two, three',
		'max_worker_processes' => '3',
		'max_parallel_workers' => '0' });
for my $db (qw(one two three))
{
	$small->safe_psql('postgres', "CREATE DATABASE $db");
	$small->safe_psql($db, 'CREATE EXTENSION metronome');
}
ok( wait_for(
		sub {
			count_lines($small,
				qr/could not start the delivery worker for database "(one|two|three)": no background worker slot is free/) >= 2;
		},
		20),
	'too few worker slots: a log line for each database left without a worker');
like(slurp_file($small->logfile), qr/HINT:  Raise max_worker_processes \(now 3\)/,
	'saying what to raise');
my $served = $small->safe_psql('postgres',
	"SELECT string_agg(datname, ',') FROM pg_stat_activity WHERE backend_type = 'metronome delivery'");
like($served, qr/^(one|two|three)$/, "one database is served ($served)");
$mock->reset;
$small->safe_psql($served,
	"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") VALUES ('small-1', 'c', 'e', now())");
ok(wait_for(sub { $mock->stats->{unique_events} == 1 }, 20), 'and it ships');
sleep(3);
is( count_lines($small,
		qr/could not start the delivery worker for database "(one|two|three)": no background worker slot is free/),
	2, 'one line per database, not one per attempt');
$small->stop;

done_testing();
