# test/t/114_update_trust.pl: ALTER EXTENSION metronome UPDATE from 0.1.0
# closes the trust-boundary holes of 0.1.0 in an existing database.
#
# A 0.1.0 database has a partitioned table attached (0.1.0 gave it a
# statement-level trigger on the parent, so rows inserted straight into a
# partition were not mapped) and the SECURITY DEFINER mapping trigger.
# After the update the trigger function runs as the invoker, the
# partitioned table is attached again with the same event column, and rows
# inserted into the parent, into an existing partition and into a new one
# are all mapped, once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;

my $node = new_node(preload => 0);

# ev($id): a Segment track event as a JSON text
sub ev
{
	my ($id) = @_;
	return qq({"type": "track", "event": "API Call", "messageId": "$id", )
	  . qq("timestamp": "2026-01-02T03:04:05Z", "context": {"groupId": "acme"}});
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION metronome VERSION '0.1.0';
	INSERT INTO metronome_mappings (name) VALUES ('tracks');
	CREATE TABLE "Part Events" (id bigserial, "pay load" jsonb, day date) PARTITION BY RANGE (day);
	CREATE TABLE part_2024 PARTITION OF "Part Events" FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
	SELECT metronome_attach('"Part Events"', 'pay load');
});
is($node->safe_psql('postgres',
		"SELECT prosecdef FROM pg_proc WHERE oid = 'metronome_map_trigger()'::regprocedure"),
	't', '0.1.0: the trigger function is SECURITY DEFINER');

$node->safe_psql('postgres', 'ALTER EXTENSION metronome UPDATE');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'metronome'"),
	'0.2.0', 'updated to 0.2.0');
is($node->safe_psql('postgres',
		"SELECT prosecdef FROM pg_proc WHERE oid = 'metronome_map_trigger()'::regprocedure"),
	'f', '0.2.0: the trigger function runs as the invoker');
is( $node->safe_psql('postgres',
		q{SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = '"Part Events"'::regclass AND tgname = 'metronome_map'}),
	q{CREATE TRIGGER metronome_map AFTER INSERT ON public."Part Events" FOR EACH ROW EXECUTE FUNCTION metronome_map_trigger('pay load')},
	'the partitioned table is attached again, row-level, with the same event column');

$node->safe_psql('postgres', q{CREATE TABLE part_2025 PARTITION OF "Part Events" FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')});
$node->safe_psql('postgres', q{INSERT INTO "Part Events" ("pay load", day) VALUES ('} . ev('u-parent') . q{', '2024-05-01')});
$node->safe_psql('postgres', q{INSERT INTO part_2024 ("pay load", day) VALUES ('} . ev('u-old') . q{', '2024-05-01')});
$node->safe_psql('postgres', q{INSERT INTO part_2025 ("pay load", day) VALUES ('} . ev('u-new') . q{', '2025-05-01')});
is($node->safe_psql('postgres', q{SELECT string_agg(transaction_id, ' ' ORDER BY transaction_id) FROM metronome_outbox}),
	'u-new u-old u-parent', 'rows into the parent, an old partition and a new one are mapped, once each');

done_testing();
