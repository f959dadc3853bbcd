# test/t/113_encodings.pl: databases in LATIN1 and EUC_JP, end to end.
#
# Metronome speaks UTF-8; a database may not.  In each database an event
# with non-ASCII text (customer, event type, properties) is mapped, shipped
# by metronome_ship() through the mock, and arrives as the same characters
# in valid UTF-8 (the mock refuses invalid UTF-8 with a 400, so a row sent
# unconverted would fail instead).  Then the mock refuses an event with a
# non-ASCII message that mixes characters the database encoding has and
# characters it lacks: the row's last_error holds the message converted to
# the server encoding, the missing characters as '?', and the database is
# dumped and restored (psql -f, ON_ERROR_STOP) with that text intact.  In
# EUC_JP, a row holding a character that has no UTF-8 form is failed with
# the reason while the rest of its batch is sent.
use strict;
use warnings;
use utf8;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Encode qw(encode_utf8 decode_utf8);
use MetronomeTest;


my $mock = start_mock();
my $node = new_node(mock => $mock,
	conf => { 'metronome.max_backoff' => '100ms' });

$ENV{PGCLIENTENCODING} = 'UTF8';

# sql($db, $text): run SQL (a character string) in $db; the output decoded
sub sql
{
	my ($db, $text) = @_;
	return decode_utf8($node->safe_psql($db, encode_utf8($text)));
}

# run_cmd(@cmd): run a client program against the node; (rc, out, err)
sub run_cmd
{
	my (@cmd) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	IPC::Run::run(\@cmd, '<', '/dev/null', '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

my %cases = (
	latin1 => {
		encoding => 'LATIN1',
		customer => 'Müller GmbH',
		event => 'Größe',
		city => 'Zürich',
		message => 'abgelehnt: Müller 😀 東京',
		stored => 'HTTP 400: abgelehnt: Müller ? ??',
	},
	eucjp => {
		encoding => 'EUC_JP',
		customer => '東京商事',
		event => 'ＡＰＩ呼び出し',
		city => '大阪',
		message => '拒否されました 😀',
		stored => 'HTTP 400: 拒否されました ?',
	},
);

my $dir = PostgreSQL::Test::Utils::tempdir();
for my $db (sort keys %cases)
{
	my $c = $cases{$db};
	$node->safe_psql('postgres',
		"CREATE DATABASE $db TEMPLATE template0 ENCODING '$c->{encoding}' LC_COLLATE 'C' LC_CTYPE 'C'");
	sql($db, "CREATE EXTENSION metronome; INSERT INTO metronome_mappings (name) VALUES ('tracks')");
	is(sql($db, 'SHOW server_encoding'), $c->{encoding}, "$db: server encoding $c->{encoding}");

	$mock->reset;
	sql($db, qq{INSERT INTO segment_events (event) VALUES (jsonb_build_object(
		'type', 'track', 'messageId', '$db-1', 'event', '$c->{event}',
		'timestamp', '2026-01-02T03:04:05Z', 'context', jsonb_build_object('groupId', '$c->{customer}'),
		'properties', jsonb_build_object('city', '$c->{city}')))});
	is(sql($db, 'CALL metronome_ship()'), '1', "$db: CALL metronome_ship() ships the event");
	is(sql($db, "SELECT status || coalesce(' ' || last_error, '') FROM metronome_outbox WHERE transaction_id = '$db-1'"),
		'sent', "$db: the row is sent");
	my $got = $mock->events;
	is_deeply(
		[ map { [ $_->{customer_id}, $_->{event_type}, $_->{properties}{city} ] } @$got ],
		[ [ $c->{customer}, $c->{event}, $c->{city} ] ],
		"$db: Metronome received the text as UTF-8, character for character");

	# a refusal with a non-ASCII message
	$mock->faults({ script => [ { status => 400, message => $c->{message} } ] });
	sql($db, qq{INSERT INTO segment_events (event) VALUES (jsonb_build_object(
		'type', 'track', 'messageId', '$db-2', 'event', '$c->{event}',
		'timestamp', '2026-01-02T03:04:05Z', 'context', jsonb_build_object('groupId', '$c->{customer}')))});
	is(sql($db, 'CALL metronome_ship()'), '0', "$db: the refused event is not accepted");
	is(sql($db, "SELECT status || ': ' || last_error FROM metronome_outbox WHERE transaction_id = '$db-2'"),
		"failed: $c->{stored}",
		"$db: last_error holds Metronome's message in $c->{encoding} ('?' where it has no such character)");
	$mock->clear_faults;

	# a character without a UTF-8 form (EUC_JP's user-defined area) fails
	# its row with the reason, and the others of the batch still go
	if ($db eq 'eucjp')
	{
		$mock->reset;
		sql($db, q{INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
			VALUES ('eucjp-3', pg_catalog.convert_from('\xf5a1'::bytea, 'EUC_JP'), 'api_call', now()),
			       ('eucjp-4', 'acme', 'api_call', now())});
		is(sql($db, 'CALL metronome_ship()'), '1', "$db: the convertible row of the batch is sent");
		is(sql($db, "SELECT string_agg(transaction_id || ' ' || status || coalesce(': ' || last_error, ''), ', ' ORDER BY id) FROM metronome_outbox WHERE transaction_id IN ('eucjp-3', 'eucjp-4')"),
			'eucjp-3 failed: the event has text that cannot be converted from EUC_JP to UTF-8, eucjp-4 sent',
			"$db: the row whose text has no UTF-8 form is failed with the reason");
	}

	# dump and restore into a new database of the same encoding
	my ($rc, $out, $err) = run_cmd('pg_dump', '-E', $c->{encoding}, '-d', $db, '-f', "$dir/$db.sql");
	is($rc . $err, '0', "$db: pg_dump succeeds");
	$node->safe_psql('postgres',
		"CREATE DATABASE ${db}_restored TEMPLATE template0 ENCODING '$c->{encoding}' LC_COLLATE 'C' LC_CTYPE 'C'");
	{
		local $ENV{PGOPTIONS} = '-c metronome.skip_mapping=on';
		($rc, $out, $err) = run_cmd('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
			'-d', "${db}_restored", '-f', "$dir/$db.sql");
	}
	is($rc . $err, '0', "$db: the dump restores without an error");
	is(sql("${db}_restored", "SELECT status || ': ' || last_error FROM metronome_outbox WHERE transaction_id = '$db-2'"),
		"failed: $c->{stored}", "$db: the restored last_error is the same text");
}

done_testing();
