# test/t/118_concurrent_commits.pl: transactions that commit while a claim
# is being taken are never acknowledged unsent.
#
# The claim takes the batch's upper bound (a snapshot) in one statement and
# reads the batch's rows in the next: if the read ran under an older
# snapshot than the bound, the rows of a transaction that committed between
# the two were inside the batch but invisible to the read, and the cursor
# moved past them (0.2.0 before the fix: 1-2% of the events of four
# concurrent loaders, whole transactions, acknowledged and never sent).
# Four pgbench clients commit 500-event transactions while the worker
# ships; at the end every committed event has reached the mock, nothing is
# pending, and the mock has nothing else.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => { max_connections => '20' });

$node->safe_psql('postgres',
	q{INSERT INTO metronome_mappings (name) VALUES ('tracks')});

my $dir = PostgreSQL::Test::Utils::tempdir();
append_to_file(
	"$dir/load.sql", q{INSERT INTO segment_events (event) SELECT jsonb_build_object(}
	  . q{'type', 'track', 'event', 'api_call', 'messageId', 'c' || :client_id || '-' || gen_random_uuid() || '-' || g, }
	  . q{'timestamp', '2026-01-02T03:04:05.678Z', 'context', jsonb_build_object('groupId', 'cust-' || :client_id), }
	  . q{'properties', jsonb_build_object('g', g)) FROM generate_series(1, 500) g;}
	  . "\n");

my $clients = 4;
my $tx = 20;
my $total = $clients * $tx * 500;
my ($out, $err) = ('', '');
{
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	IPC::Run::run(
		[ 'pgbench', '-n', '-c', $clients, '-j', '2', '-t', $tx, '-f', "$dir/load.sql", 'postgres' ],
		'<', '/dev/null', '>', \$out, '2>', \$err);
}
is($?, 0, "four loaders committed $tx transactions of 500 events each") or diag($err);

is($node->safe_psql('postgres', 'SELECT count(*) FROM metronome_outbox'),
	$total, 'every event has its outbox row');

# wait until nothing is pending (the worker ships on its own)
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				"SELECT count(*) FROM metronome_outbox WHERE status <> 'sent'") eq '0';
		},
		120),
	'every outbox row is acknowledged');

my $stats = $mock->stats;
is($stats->{unique_events}, $total,
	'the mock received every committed event (none acknowledged unsent)');

# and the acknowledged rows are exactly those that arrived
my %arrived = map { $_->{transaction_id} => 1 } @{ $mock->events };
my @ids = split /\n/, $node->safe_psql('postgres',
	"SELECT transaction_id FROM metronome_outbox WHERE status = 'sent'");
my @missing = grep { !$arrived{$_} } @ids;
is(scalar(@missing), 0, 'no sent row is missing at the mock')
  or diag("first missing: @missing[0 .. ($#missing < 4 ? $#missing : 4)]");

done_testing();
