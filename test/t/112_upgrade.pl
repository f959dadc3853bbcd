# test/t/112_upgrade.pl: ALTER EXTENSION metronome UPDATE from 0.1.0.
#
# A database created with 0.1.0's script (still installed, and the 0.2
# library still provides every C symbol it names) holds pending, sent and
# failed outbox rows with their attempts, errors and times, rejected rows,
# mappings and sequence positions.  After ALTER EXTENSION metronome UPDATE
# every row is there with the same status, attempts, last_error, created_at
# and sent_at; ids go on from the old sequence; the pending rows are shipped
# by CALL metronome_ship() (the failed ones not), and metronome_retry()
# brings a failed one back.  The 0.1.0 function metronome_ship() says to
# update rather than misbehave.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(mock => $mock, preload => 0);

$node->safe_psql('postgres', "CREATE EXTENSION metronome VERSION '0.1.0'");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'metronome'"),
	'0.1.0', 'installed at 0.1.0');

my ($ret, $out, $err) = $node->psql('postgres', 'SELECT metronome_ship()');
like($err, qr/ALTER EXTENSION metronome UPDATE/,
	'0.1.0\'s metronome_ship() with the 0.2 library: asks for the update');

$node->safe_psql('postgres', q{
INSERT INTO metronome_mappings (name) VALUES ('tracks');
INSERT INTO segment_events (event) VALUES
 ('{"type": "track", "event": "API Call", "messageId": "mapped-1", "timestamp": "2024-03-01T00:00:00Z", "context": {"groupId": "acme"}}'),
 ('{"type": "track", "event": "API Call", "messageId": "rejected-1", "timestamp": "2024-03-01T00:00:00Z"}');
INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp", status, attempts, last_error, sent_at, created_at)
VALUES ('sent-1', 'acme', 'api', '2024-03-01', 'sent', 1, NULL, '2024-03-02 10:00:00+00', '2024-03-01 09:00:00+00'),
       ('failed-1', 'acme', 'api', '2024-03-01', 'failed', 3, 'customer not found', NULL, '2024-03-01 09:00:00+00'),
       ('retrying-1', 'acme', 'api', '2024-03-01', 'pending', 2, 'HTTP 503: Service Unavailable', NULL, '2024-03-01 09:00:00+00');
INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
SELECT 'pending-' || g, 'acme', 'api', '2024-03-01' FROM generate_series(1, 250) g;
});

my $before = $node->safe_psql('postgres',
	"SELECT string_agg(concat_ws(',', id, transaction_id, status, attempts, last_error, created_at, sent_at, mapping), ';' ORDER BY id) FROM metronome_outbox");
my $rejected = $node->safe_psql('postgres', 'SELECT count(*) FROM metronome_rejected');
my $seq = $node->safe_psql('postgres', 'SELECT last_value FROM metronome_outbox_id_seq');
is($rejected, '1', 'one rejected row before');

$node->safe_psql('postgres', 'ALTER EXTENSION metronome UPDATE');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'metronome'"),
	'0.2.0', 'updated to 0.2.0');

is( $node->safe_psql('postgres',
		"SELECT string_agg(concat_ws(',', id, transaction_id, status, attempts, last_error, created_at, sent_at, mapping), ';' ORDER BY id) FROM metronome_outbox"),
	$before, 'every outbox row kept with its status, attempts, error and times');
is($node->safe_psql('postgres', 'SELECT count(*) FROM metronome_rejected'), $rejected,
	'rejected rows kept');
is($node->safe_psql('postgres', 'SELECT count(*) FROM metronome_mappings'), '1', 'mappings kept');
is($node->safe_psql('postgres', 'SELECT last_value FROM metronome_outbox_id_seq'), $seq,
	'the id sequence keeps its position');
is($node->safe_psql('postgres', 'SELECT pending || \'/\' || failed FROM metronome_status()'),
	'252/1', 'metronome_status() counts the converted rows');

# New rows after the update: ids continue, duplicates of old rows skipped.
$node->safe_psql('postgres', q{
INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
VALUES ('sent-1', 'acme', 'api', '2024-03-01'), ('new-1', 'acme', 'api', '2024-03-01');
});
is($node->safe_psql('postgres', "SELECT count(*) FROM metronome_outbox WHERE transaction_id = 'sent-1'"),
	'1', 'a duplicate of a converted row is skipped');
cmp_ok($node->safe_psql('postgres', "SELECT id FROM metronome_outbox WHERE transaction_id = 'new-1'"),
	'>', $seq, 'a new row gets an id after the old ones');

# Ship: the pending rows (converted and new) go, the failed one does not.
$node->safe_psql('postgres', "UPDATE metronome_outbox_state SET next_attempt_at = now() WHERE transaction_id = 'retrying-1'");
my $accepted = 0;
for (1 .. 20)
{
	my $n = $node->safe_psql('postgres', 'CALL metronome_ship()');
	$accepted += $n;
	last if $n == 0 && $accepted > 0;
}
is($accepted, 253, 'CALL metronome_ship() ships the 252 converted pending rows and the new one');
my %seen = map { $_->{transaction_id} => 1 } @{ $mock->events };
ok($seen{'pending-1'} && $seen{'pending-250'} && $seen{'retrying-1'} && $seen{'new-1'},
	'the mock has the converted pending rows and the new one');
ok(!$seen{'failed-1'} && !$seen{'sent-1'}, 'but not the failed or already sent ones');
is( $node->safe_psql('postgres',
		"SELECT status || ' ' || attempts FROM metronome_outbox WHERE transaction_id = 'retrying-1'"),
	'sent 3', 'the retried row: sent, its attempts counted on');
is( $node->safe_psql('postgres',
		"SELECT status || ' ' || attempts || ' ' || last_error FROM metronome_outbox WHERE transaction_id = 'failed-1'"),
	'failed 3 customer not found', 'the failed row is untouched');

is($node->safe_psql('postgres', "SELECT metronome_retry(ARRAY[(SELECT id FROM metronome_outbox WHERE transaction_id = 'failed-1')])"),
	'1', 'metronome_retry() puts the failed row back');
is($node->safe_psql('postgres', 'CALL metronome_ship()'), '1', 'and it is shipped');
is($node->safe_psql('postgres', "SELECT count(*) FROM metronome_outbox WHERE status <> 'sent'"),
	'0', 'every row sent');

$node->stop;
done_testing();
