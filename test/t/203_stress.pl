# test/t/203_stress.pl: concurrent inserts, mapping changes, metronome_ship()
# beside the worker, and the worker killed mid-run.
#
# First, two sessions insert the same 999 new events at the same moment in
# opposite orders (a barrier lock starts them together), three times: no
# deadlock, each event mapped once.  Then four pgbench clients insert
# Segment events (single events, some of them pages, and multi-row INSERTs
# whose messageIds are partly shared by every client for 50 ms, in random
# order: new duplicates inserted concurrently); a fifth keeps enabling,
# disabling and changing a second mapping; a sixth calls metronome_ship()
# while the worker ships.
# The mock answers a little late, and the worker is killed with SIGKILL
# while one of its requests is in flight (the server restarts, ending every
# session: the run goes on with a second round).  At the end every outbox
# row has reached the mock at least once and the mock has nothing else,
# every track event committed has its outbox row (duplicates once), no row
# is pending or failed, and the server log holds no deadlock and no ERROR.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);
use MetronomeTest;

my $mock = start_mock(faults => { delay => 0.03 });
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => {
		restart_after_crash => 'on',
		max_connections => '30',
		'metronome.batch_size' => '50',
		'metronome.max_backoff' => '200ms',
	});
my $started = time();

$node->safe_psql(
	'postgres', q{
	INSERT INTO metronome_mappings (name) VALUES ('tracks');
	INSERT INTO metronome_mappings (name, subscription, event_type)
	VALUES ('pages', 'type = "page"', '{"@template": "page {{name}}"}');
});

my $dir = PostgreSQL::Test::Utils::tempdir();
my $event = q{jsonb_build_object('type', %s, 'name', 'home', 'messageId', %s, 'event', 'api_call', }
  . q{'timestamp', '2026-01-02T03:04:05.678Z', 'context', jsonb_build_object('groupId', 'cust-' || :client_id), }
  . q{'properties', jsonb_build_object('r', :r))};
my %scripts = (
	# one event per transaction, one in ten a page
	insert_one => "\\set r random(1, 1000000000)\n\\set k random(1, 10)\n"
	  . 'INSERT INTO segment_events (event) VALUES ('
	  . sprintf($event, q{CASE WHEN :k = 1 THEN 'page' ELSE 'track' END},
		q{'one-' || :client_id || '-' || :r})
	  . ");\n",
	# five events in one INSERT, three of them with messageIds that every
	# client uses too during the same 50 ms (new duplicates), in any order
	insert_batch => "\\set r random(1, 1000000000)\n\\set a random(1, 4)\n\\set b random(1, 4)\n\\set c random(1, 4)\n"
	  . 'INSERT INTO segment_events (event) SELECT '
	  . sprintf($event, q{'track'}, 'id')
	  . q{ FROM (SELECT 'dup-' || floor(extract(epoch FROM clock_timestamp()) * 20) || '-' AS w) w, }
	  . q{unnest(ARRAY[w || :a, 'batch-' || :client_id || '-' || :r || '-1', }
	  . q{w || :b, w || :c, 'batch-' || :client_id || '-' || :r || '-2']) id;}
	  . "\n",
	churn => q{UPDATE metronome_mappings SET enabled = NOT enabled WHERE name = 'pages';} . "\n"
	  . q{UPDATE metronome_mappings SET event_type = CASE WHEN event_type ? '@template' }
	  . q{THEN '{"@path": "$.event"}'::jsonb ELSE '{"@template": "page {{name}}"}'::jsonb END, }
	  . q{updated_at = now() WHERE name = 'pages';} . "\n",
	ship => "CALL metronome_ship(100);\n",
);
for my $s (keys %scripts)
{
	append_to_file("$dir/$s.sql", $scripts{$s});
}

# pgbench($name, @args): start pgbench in the background
sub pgbench
{
	my ($name, @args) = @_;
	my %h = (out => '', err => '');
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	$h{handle} = IPC::Run::start(
		[ 'pgbench', '-n', @args, 'postgres' ],
		'<', '/dev/null', '>', \$h{out}, '2>', \$h{err});
	$h{name} = $name;
	return \%h;
}

# finish($h): wait for it; its exit status
sub finish
{
	my ($h) = @_;
	$h->{handle}->finish;
	return $h->{handle}->result(0);
}

# one round: inserting clients, mapping churn, session shipping
sub round
{
	my ($tx) = @_;
	return (
		pgbench('insert', '-c', '4', '-j', '2', '-t', $tx,
			'-f', "$dir/insert_one.sql\@2", '-f', "$dir/insert_batch.sql\@1"),
		pgbench('churn', '-c', '1', '-t', int($tx / 4), '-f', "$dir/churn.sql"),
		pgbench('ship', '-c', '1', '-t', int($tx / 4), '-f', "$dir/ship.sql"));
}

sub worker_pid { return delivery_worker_pid($node); }

# 0. Two loaders insert the same new events at the same moment, in
#    opposite orders (999 events each: one batch of the trigger's writer).
#    The outbox's unique transaction_id makes each wait for the other's
#    uncommitted rows; written in the order they came, they deadlocked.
my $ev = q{jsonb_build_object('type', 'track', 'messageId', 'same-%d-' || g, 'event', 'api_call', }
  . q{'timestamp', '2026-01-02T03:04:05.678Z', 'context', jsonb_build_object('groupId', 'c'))};
my $barrier = $node->background_psql('postgres');
for my $try (1 .. 3)
{
	$barrier->query_safe('SELECT pg_advisory_lock(4242)');
	my @loaders;
	for my $order ('g', '-g')
	{
		my %h = (err => '');
		local $ENV{PGHOST} = $node->host;
		local $ENV{PGPORT} = $node->port;
		$h{handle} = IPC::Run::start(
			[
				'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'postgres', '-c',
				'SELECT pg_advisory_xact_lock_shared(4242); '
				  . 'INSERT INTO segment_events (event) SELECT '
				  . sprintf($ev, $try)
				  . " FROM generate_series(1, 999) g ORDER BY $order"
			],
			'<', '/dev/null', '>', '/dev/null', '2>', \$h{err});
		push @loaders, \%h;
	}
	wait_for(
		sub {
			$node->safe_psql('postgres',
				"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") eq '2';
		});
	$barrier->query_safe('SELECT pg_advisory_unlock(4242)');
	$_->{handle}->finish for @loaders;
	is(join('', map { $_->{err} } @loaders), '',
		"same new events in opposite orders, at once ($try): no deadlock");
}
$barrier->quit;
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM metronome_outbox WHERE transaction_id LIKE 'same-%'"),
	'2997', 'each of them mapped once');

# 1. First round, killed: the worker is killed with a request in flight.
my $pid = worker_pid();
ok($pid, 'the worker runs');
# (answers slower, so that shipping is still under way when the kill comes)
$mock->faults({ delay => 0.3 });
my @round1 = round(400);
ok( wait_for(
		sub {
			$node->safe_psql('postgres', 'SELECT count(*) FROM metronome_outbox') >= 300
			  && $mock->stats->{inflight} >= 1;
		},
		60, 0.01),
	'round 1: events are inserted and shipped');
kill 'KILL', $pid;
note "killed the worker ($pid)";
finish($_) for @round1;    # the restart ended their sessions
# (not poll_query_until: it feeds its query to psql's standard input, and
# when the recovery in progress turns psql away before it reads it, the
# write dies of a broken pipe and takes the test with it)
ok( wait_for(
		sub {
			my ($ret) = $node->psql('postgres', 'SELECT true');
			return $ret == 0;
		},
		60),
	'the server is back after the crash');
$mock->faults({ delay => 0.03 });
my $pid2 = worker_pid();
isnt($pid2, $pid, 'a new worker runs');

# 2. Second round, to its end.
my @round2 = round(250);
for my $h (@round2)
{
	is(finish($h), 0, "round 2: pgbench $h->{name} completes")
	  or diag($h->{err});
}

# 3. The outcome.
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM metronome_outbox WHERE status <> 'sent'"),
	'no row is left pending or failed');
my @outbox = split /\n/,
  $node->safe_psql('postgres', 'SELECT transaction_id FROM metronome_outbox ORDER BY 1');
my %at_mock = map { $_->{transaction_id} => 1 } @{ $mock->events };
my @missing = grep { !$at_mock{$_} } @outbox;
cmp_ok(scalar(@outbox), '>', 1000, 'a few thousand events were mapped (' . scalar(@outbox) . ')');
is_deeply(\@missing, [], 'every outbox row reached the mock');
my %in_outbox = map { $_ => 1 } @outbox;
my @extra = grep { !$in_outbox{$_} } keys %at_mock;
is_deeply(\@extra, [], 'the mock has nothing that is not in the outbox');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM segment_events e WHERE event->>'type' = 'track' "
		  . "AND NOT EXISTS (SELECT 1 FROM metronome_outbox o WHERE o.transaction_id = e.event->>'messageId')"),
	'0',
	'every track event committed has its outbox row');
my $dups = $node->safe_psql('postgres',
	"SELECT count(*) - count(DISTINCT event->>'messageId') FROM segment_events");
cmp_ok($dups, '>', 0, "duplicate messageIds were inserted ($dups), and mapped once (unique outbox)");
is($node->safe_psql('postgres', 'SELECT count(*) FROM metronome_rejected'),
	'0', 'no event was rejected');
{
	local $::TODO = timing_todo();
	ok( $node->safe_psql('postgres',
			"SELECT count(*) FROM metronome_outbox WHERE mapping = 'pages'") > 0,
		'the churned mapping mapped pages while enabled');
}
note 'mock: ' . join(', ', map { "$_=" . $mock->stats->{$_} } qw(requests unique_events duplicates));

$node->stop;
my @log = split /\n/, slurp_file($node->logfile);
is_deeply([ grep { /deadlock/i } @log ], [], 'no deadlock in the server log');
is_deeply([ grep { /\b(?:ERROR|PANIC):/ } @log ], [], 'no ERROR in the server log');
is(scalar(grep { /terminated by signal 9/ } @log), 1, 'one crash: the kill');
note sprintf('run time %.1f s', time() - $started);

done_testing();
