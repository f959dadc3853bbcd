# test/t/112_partitions.pl: a partitioned events table, its partitions made
# by hand and by pg_partman.
#
# metronome_attach() on a partitioned table creates a row-level trigger,
# which PostgreSQL clones to every partition: rows inserted or copied into
# the parent, straight into an existing partition, and straight into a
# partition created (CREATE TABLE ... PARTITION OF, ATTACH PARTITION, or
# pg_partman's run_maintenance) after the attach are all mapped, each
# exactly once.
#
# 1. Partitions made by hand: runs on every server.
# 2. pg_partman: Debian's postgresql-15-partman; on a server without
#    pg_partman (one built from source) this part is SKIPPED, loudly
#    (MetronomeTest::have_extension), never on Debian's server.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;

my $node = new_node(preload => 0, extension => 1);

$node->safe_psql('postgres', "INSERT INTO metronome_mappings (name) VALUES ('tracks')");

# ev($id): a Segment track event as a JSON text
sub ev
{
	my ($id) = @_;
	return qq({"type": "track", "event": "API Call", "messageId": "$id", )
	  . qq("timestamp": "2026-01-02T03:04:05Z", "context": {"groupId": "acme"}});
}

# mapped($prefix): the transaction ids of the outbox that start with $prefix
sub mapped
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(transaction_id, ' ' ORDER BY transaction_id) FROM metronome_outbox "
		  . "WHERE transaction_id LIKE '$prefix%'");
}

# 1. Partitions made by hand.
# day($n): the start of the day now() + $n days, as a literal
sub day
{
	my ($n) = @_;
	return $node->safe_psql('postgres', "SELECT quote_literal(date_trunc('day', now()) + interval '$n days')");
}
my ($d0, $d1, $d5, $d6, $d7) = map { day($_) } (0, 1, 5, 6, 7);
$node->safe_psql('postgres', qq{
	CREATE TABLE public.hand_events (
		id          bigserial,
		event       jsonb NOT NULL,
		received_at timestamptz NOT NULL DEFAULT now()
	) PARTITION BY RANGE (received_at);
	CREATE TABLE public.hand_events_today PARTITION OF public.hand_events FOR VALUES FROM ($d0) TO ($d1);
	SELECT metronome_attach('hand_events', 'event');
});
$node->safe_psql('postgres',
	"INSERT INTO hand_events (event) VALUES ('" . ev('hand-parent-1') . "')");
$node->safe_psql('postgres',
	"COPY hand_events (event) FROM stdin;\n" . ev('hand-parent-copy-1') . "\n\\.\n");
$node->safe_psql('postgres', "INSERT INTO hand_events_today (event) VALUES ('" . ev('hand-direct-1') . "')");
$node->safe_psql('postgres', "COPY hand_events_today (event) FROM stdin;\n" . ev('hand-direct-copy-1') . "\n\\.\n");
# after the attach: a partition created as one, and a table attached as one
$node->safe_psql('postgres', qq{
	CREATE TABLE public.hand_events_later PARTITION OF public.hand_events FOR VALUES FROM ($d5) TO ($d6);
	CREATE TABLE public.hand_events_attached (LIKE public.hand_events INCLUDING DEFAULTS);
	ALTER TABLE public.hand_events ATTACH PARTITION public.hand_events_attached FOR VALUES FROM ($d6) TO ($d7);
});
is( $node->safe_psql('postgres',
		"SELECT string_agg(tgrelid::regclass::text, ' ' ORDER BY tgrelid::regclass::text) FROM pg_trigger "
		  . "WHERE tgname = 'metronome_map' AND tgrelid::regclass::text LIKE 'hand_events_%'"),
	'hand_events_attached hand_events_later hand_events_today',
	'every partition has the mapping trigger, also those made after the attach');
$node->safe_psql('postgres', qq{
	INSERT INTO hand_events_later (event, received_at) VALUES ('@{[ ev('hand-later-1') ]}', $d5);
	INSERT INTO hand_events (event, received_at) VALUES ('@{[ ev('hand-later-routed-1') ]}', $d5);
	INSERT INTO hand_events_attached (event, received_at) VALUES ('@{[ ev('hand-attached-1') ]}', $d6);
	INSERT INTO hand_events (event, received_at) VALUES ('@{[ ev('hand-attached-routed-1') ]}', $d6);
});
is(mapped('hand-'),
	join(' ', sort map { "hand-$_" } qw(parent-1 parent-copy-1 direct-1 direct-copy-1 later-1
		  later-routed-1 attached-1 attached-routed-1)),
	'hand-made partitions: every row is mapped, into the parent, a partition, a partition made after the attach');
is( $node->safe_psql('postgres',
		'SELECT (SELECT count(*) FROM hand_events) || \' \' || (SELECT count(*) FROM metronome_rejected)'),
	'8 0', 'each once, and no rejected row');

# 2. pg_partman.
if (have_extension($node, 'pg_partman', 'part 2, partitions made by pg_partman'))
{
	$node->safe_psql('postgres', q{
		CREATE SCHEMA partman;
		CREATE EXTENSION pg_partman SCHEMA partman;
		CREATE TABLE public.usage_events (
			id          bigserial,
			event       jsonb NOT NULL,
			received_at timestamptz NOT NULL DEFAULT now()
		) PARTITION BY RANGE (received_at);
		SELECT partman.create_parent('public.usage_events', 'received_at', 'native', 'daily', p_premake => 2);
		SELECT metronome_attach('usage_events', 'event');
	});

	# partition($offset_days): the partition pg_partman made for now() + offset
	sub partition
	{
		my ($days) = @_;
		return $node->safe_psql('postgres',
			"SELECT partition_schema || '.' || partition_table FROM partman.show_partition_name("
			  . "'public.usage_events', (now() + interval '$days days')::text)");
	}

	my $today = partition(0);
	like($today, qr/^public\.usage_events_p/, "pg_partman made today's partition ($today)");

	# into the parent: INSERT and COPY
	$node->safe_psql('postgres',
		"INSERT INTO usage_events (event) VALUES ('" . ev('parent-1') . "'), ('" . ev('parent-2') . "')");
	$node->safe_psql('postgres',
		"COPY usage_events (event) FROM stdin;\n" . ev('parent-copy-1') . "\n" . ev('parent-copy-2') . "\n\\.\n");
	# straight into an existing partition
	$node->safe_psql('postgres', "INSERT INTO $today (event) VALUES ('" . ev('direct-1') . "')");
	$node->safe_psql('postgres', "COPY $today (event) FROM stdin;\n" . ev('direct-copy-1') . "\n\\.\n");

	# a partition created after the attach
	my $before = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.usage_events'::regclass");
	$node->safe_psql('postgres', q{
		UPDATE partman.part_config SET premake = 6 WHERE parent_table = 'public.usage_events';
		SELECT partman.run_maintenance('public.usage_events');
	});
	my $after = $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.usage_events'::regclass");
	cmp_ok($after, '>', $before, "run_maintenance created partitions ($before -> $after)");
	my $new = partition(5);
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM pg_trigger WHERE tgrelid = '$new'::regclass AND tgname = 'metronome_map'"),
		'1', "the new partition $new has the mapping trigger");
	$node->safe_psql('postgres',
		"INSERT INTO $new (event, received_at) VALUES ('" . ev('new-1') . "', now() + interval '5 days')");
	$node->safe_psql('postgres',
		"COPY $new (event, received_at) FROM stdin;\n" . ev('new-copy-1') . "\t" . $node->safe_psql('postgres', "SELECT now() + interval '5 days'") . "\n\\.\n");
	$node->safe_psql('postgres',
		"INSERT INTO usage_events (event, received_at) VALUES ('" . ev('new-routed-1') . "', now() + interval '5 days')");

	is( $node->safe_psql('postgres', 'SELECT string_agg(transaction_id, \' \' ORDER BY transaction_id) FROM metronome_outbox WHERE transaction_id NOT LIKE \'hand-%\''),
		join(' ', sort qw(parent-1 parent-2 parent-copy-1 parent-copy-2 direct-1 direct-copy-1 new-1 new-copy-1 new-routed-1)),
		'every row is mapped: into the parent, into a partition, into a partition made after the attach');
	is( $node->safe_psql('postgres',
			'SELECT (SELECT count(*) FROM usage_events) || \' \' || (SELECT count(*) FROM metronome_rejected)'),
		'9 0', 'each once, and no rejected row');
}

done_testing();
