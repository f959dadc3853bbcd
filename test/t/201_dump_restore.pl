# test/t/201_dump_restore.pl: pg_dump and restore into a fresh cluster.
#
# A database using the extension holds mappings (one disabled), sent,
# failed and pending outbox rows, sent rows deleted as the retention would,
# rejected rows, events in segment_events and in a user table attached with
# metronome_attach().  It is dumped as a plain script and in the custom
# format, and restored into fresh clusters: with psql -f (ON_ERROR_STOP) and
# with pg_restore --exit-on-error, also with -j 2 and with
# --enable-row-security.  Each restore ends without an error or a warning
# and gives back exactly the same rows (sent ones included: the extension's
# tables are dumped whole) and sequence positions: the restored events are
# not mapped a second time (the deleted sent rows do not come back, no
# rejected row is doubled), and new inserts get fresh ids.  The restored
# clusters' workers then ship exactly the pending rows, and leave the
# failed ones failed.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use MetronomeTest;

my $mock = start_mock();
my $src = new_node(
	name => 'source',
	mock => $mock,
	extension => 1,
	conf => { 'metronome.max_backoff' => '100ms' });

# run_cmd($node, @cmd): run a client program against $node; (rc, out, err)
sub run_cmd
{
	my ($node, @cmd) = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	IPC::Run::run(\@cmd, '<', '/dev/null', '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

# a Segment track event as SQL, from SQL expressions for its parts
sub track_sql
{
	my ($message_id, $group) = @_;
	my $ctx = defined $group ? "jsonb_build_object('groupId', $group)" : "'{}'::jsonb";
	return "jsonb_build_object('type', 'track', 'messageId', $message_id, "
	  . "'event', 'api_call', 'timestamp', '2026-01-02T03:04:05.678Z', "
	  . "'context', $ctx, 'properties', jsonb_build_object('n', g, 'unit', 'ms'))";
}

sub insert_events
{
	my ($node, $prefix, $n, %o) = @_;
	my $group = exists $o{group} ? $o{group} : "'cust-' || (g % 3)";
	$node->safe_psql('postgres',
		"INSERT INTO segment_events (event) SELECT "
		  . track_sql("'$prefix-' || g", $group)
		  . " FROM generate_series(1, $n) g");
}

sub queue
{
	my ($node, $prefix) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'pending') || '/' || count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FILTER (WHERE status = 'failed') "
		  . "FROM metronome_outbox WHERE transaction_id LIKE '$prefix-%'");
}

# Everything the restore must keep, as text: every row of every table of
# the extension and of the attached table, and the sequences' positions.
sub snapshot
{
	my ($node, $db) = @_;
	my $out = '';
	for my $t (qw(metronome_mappings metronome_outbox metronome_rejected segment_events usage_log))
	{
		$out .= "-- $t\n"
		  . $node->safe_psql($db // 'postgres',
			"SET TimeZone = 'UTC'; SELECT row_to_json(t) FROM $t t ORDER BY id") . "\n";
	}
	for my $s (qw(metronome_mappings_id_seq metronome_outbox_id_seq metronome_rejected_id_seq segment_events_id_seq usage_log_id_seq))
	{
		$out .= "$s "
		  . $node->safe_psql($db // 'postgres', "SELECT last_value || ' ' || is_called FROM $s") . "\n";
	}
	return $out;
}

###########################################################################
# 1. The source database.
###########################################################################
$src->safe_psql(
	'postgres', q{
	INSERT INTO metronome_mappings (name) VALUES ('tracks');
	INSERT INTO metronome_mappings (name, subscription, enabled, event_type)
	VALUES ('pages', 'type = "page"', false, '{"@template": "page {{name}}"}');
	CREATE TABLE usage_log (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
	SELECT metronome_attach('usage_log', 'payload');
});

# sent rows, half of them then deleted (as the retention does)
insert_events($src, 'sent', 10);
ok(wait_for(sub { queue($src, 'sent') eq '0/10/0' }), 'source: 10 rows sent');
$src->safe_psql('postgres',
	"DELETE FROM metronome_outbox WHERE transaction_id IN ('sent-1', 'sent-2', 'sent-3', 'sent-4', 'sent-5')");

# failed rows: refused by Metronome
$mock->faults({ reject_transaction_ids => [ 'failed-1', 'failed-2' ] });
insert_events($src, 'failed', 2);
ok(wait_for(sub { queue($src, 'failed') eq '0/0/2' }), 'source: 2 rows failed');
$mock->clear_faults;

# pending rows: shipping paused
$src->safe_psql('postgres', 'ALTER SYSTEM SET metronome.enabled = off');
$src->reload;
ok( $src->poll_query_until('postgres',
		"SELECT state = 'paused' FROM metronome_status()"),
	'source: shipping paused');
insert_events($src, 'pending', 8);
$src->safe_psql('postgres',
	"INSERT INTO usage_log (payload) SELECT " . track_sql("'usage-' || g", "'cust-u'")
	  . " FROM generate_series(1, 4) g");
# rejected rows: no context.groupId; and an event no subscription matches
insert_events($src, 'rejected', 2, group => undef);
$src->safe_psql('postgres',
	q{INSERT INTO segment_events (event) VALUES ('{"type": "identify", "userId": "u1", "messageId": "identify-1"}')});

is(queue($src, 'pending') . ' ' . queue($src, 'usage'), '8/0/0 4/0/0',
	'source: 12 rows pending (8 from segment_events, 4 from usage_log)');
is($src->safe_psql('postgres', 'SELECT count(*) FROM metronome_rejected'),
	'2', 'source: 2 rejected rows');
is($mock->stats->{unique_events}, 10, 'source: the mock has the 10 sent events only');

my $before = snapshot($src);
my @pending = split /\n/,
  $src->safe_psql('postgres',
	"SELECT transaction_id FROM metronome_outbox WHERE status = 'pending' ORDER BY 1");
my $max_ids = $src->safe_psql('postgres',
	"SELECT (SELECT max(id) FROM metronome_outbox) || ' ' || (SELECT max(id) FROM metronome_rejected) || ' ' || (SELECT max(id) FROM segment_events)");

###########################################################################
# 2. The dumps.
###########################################################################
my $dir = PostgreSQL::Test::Utils::tempdir();
my ($rc, $out, $err) = run_cmd($src, 'pg_dump', '-d', 'postgres', '-f', "$dir/plain.sql");
is($rc . $err, '0', 'pg_dump (plain) succeeds without a message');
($rc, $out, $err) = run_cmd($src, 'pg_dump', '-Fc', '-d', 'postgres', '-f', "$dir/custom.dump");
is($rc . $err, '0', 'pg_dump -Fc succeeds without a message');

my $plain = slurp_file("$dir/plain.sql");
like($plain, qr/^CREATE EXTENSION IF NOT EXISTS metronome /m, 'the dump creates the extension');
# (since 0.2.0 the outbox's rows are in the queue's segments, and in
# metronome_outbox_state for rows with a history)
like($plain, qr/^COPY public\.metronome_(?:queue_\d|outbox_state) .*\n(?:.*\n)*?\d+\t(?:\d\t\d+\t)?sent-6\t/m,
	"the dump holds the outbox's sent rows");
unlike($plain, qr/^CREATE TRIGGER metronome_map AFTER INSERT ON public\.segment_events/m,
	"segment_events' trigger is the extension's, not dumped");
like($plain, qr/^CREATE TRIGGER metronome_map AFTER INSERT ON public\.usage_log /m,
	"usage_log's trigger is dumped");
$src->stop;

# a fresh cluster to restore into: shipping off until its rows are compared
sub fresh_node
{
	my ($name, $m) = @_;
	return new_node(
		name => $name,
		mock => $m,
		conf => {
			'metronome.enabled' => 'off',
			'metronome.max_backoff' => '100ms',
		});
}

# check_restored($node, $db, $label): the restore kept every row and
# sequence, and mapped nothing again
sub check_restored
{
	my ($node, $db, $label) = @_;
	my $after = snapshot($node, $db);
	is($after, $before, "$label: every row and sequence position is kept");
	# (the same, said the way a failure would show it)
	is( $node->safe_psql($db,
			"SELECT count(*) FROM metronome_outbox WHERE transaction_id IN ('sent-1', 'sent-2', 'sent-3', 'sent-4', 'sent-5')"),
		'0',
		"$label: the restored events were not mapped again (deleted sent rows stay deleted)");
	is($node->safe_psql($db, 'SELECT count(*) FROM metronome_rejected'),
		'2', "$label: no rejected row doubled");
	is( $node->safe_psql($db,
			"SELECT count(*) FROM pg_trigger WHERE tgname = 'metronome_map' AND tgrelid IN ('segment_events'::regclass, 'usage_log'::regclass)"),
		'2',
		"$label: both tables have their mapping trigger, once");
}

# check_new_rows($node, $db, $label, $tag): new events get fresh ids, after
# the restored ones, and are mapped
sub check_new_rows
{
	my ($node, $db, $label, $tag) = @_;
	my ($ret, $o, $e) = $node->psql(
		$db, "INSERT INTO segment_events (event) SELECT "
		  . track_sql("'$tag-' || g", "'cust-n'")
		  . " FROM generate_series(1, 3) g;"
		  . "INSERT INTO segment_events (event) SELECT "
		  . track_sql("'$tag-rej-' || g", undef)
		  . " FROM generate_series(1, 1) g;"
		  . "INSERT INTO usage_log (payload) SELECT "
		  . track_sql("'$tag-usage-' || g", "'cust-n'")
		  . " FROM generate_series(1, 2) g;"
		  . "INSERT INTO metronome_mappings (name, subscription) VALUES ('$tag-mapping', 'event = \"never\"')"
	);
	is($ret . $e, '0', "$label: new events and a new mapping insert without error");
	my ($o_max, $r_max, $e_max) = split / /, $max_ids;
	is( $node->safe_psql($db,
			"SELECT count(*) || ' ' || bool_and(id > $o_max) FROM metronome_outbox WHERE transaction_id LIKE '$tag-%'"),
		'5 true',
		"$label: new events are mapped (both tables) with outbox ids after the restored ones");
	is( $node->safe_psql($db,
			"SELECT count(*) || ' ' || bool_and(id > $r_max) FROM metronome_rejected WHERE event->>'messageId' LIKE '$tag-%'"),
		'1 true',
		"$label: a new rejected row gets a fresh id");
	is( $node->safe_psql($db,
			"SELECT count(*) || ' ' || bool_and(id > $e_max) FROM segment_events WHERE event->>'messageId' LIKE '$tag-%'"),
		'4 true',
		"$label: new events get fresh ids");
}

# check_shipping($node, $mock, $label, $tag): once enabled, the worker
# ships the restored pending rows and the new ones, and nothing else
sub check_shipping
{
	my ($node, $m, $label, $tag) = @_;
	$node->safe_psql('postgres', 'ALTER SYSTEM SET metronome.enabled = on');
	$node->reload;
	ok( wait_for(
			sub {
				$node->safe_psql('postgres',
					"SELECT count(*) FROM metronome_outbox WHERE status = 'pending'") eq '0';
			}),
		"$label: the worker ships every pending row");
	my @got = sort map { $_->{transaction_id} } @{ $m->events };
	my @want = sort(@pending, map("$tag-$_", 1 .. 3), map("$tag-usage-$_", 1 .. 2));
	is_deeply(\@got, \@want,
		"$label: the mock received exactly the restored pending rows and the new ones");
	is($m->stats->{duplicates}, 0, "$label: none of them twice");
	is(queue($node, 'failed'), '0/0/2', "$label: the failed rows stay failed");
	is(queue($node, 'sent'), '0/5/0', "$label: the sent rows stay sent, not re-sent");
}

# no_errors($node, $label): nothing went wrong in the server log
sub no_errors
{
	my ($node, $label) = @_;
	my @bad = grep { /\b(?:ERROR|WARNING|FATAL|PANIC):/ && !/terminating background worker ".*" due to administrator command/ }
	  split /\n/, slurp_file($node->logfile);
	is_deeply(\@bad, [], "$label: no error or warning in the server log");
}

###########################################################################
# 3. Plain script, psql -f, into a fresh cluster.
###########################################################################
my $mock_b = start_mock(name => 'mock_b');
my $pb = fresh_node('plain', $mock_b);
($rc, $out, $err) = run_cmd($pb, 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
	'-d', 'postgres', '-f', "$dir/plain.sql");
is($rc, 0, 'psql -f plain.sql: exit status 0');
is($err, '', 'psql -f plain.sql: no error, warning or notice');
check_restored($pb, 'postgres', 'psql -f');
check_new_rows($pb, 'postgres', 'psql -f', 'newb');
check_shipping($pb, $mock_b, 'psql -f', 'newb');
$pb->stop;
no_errors($pb, 'psql -f');

###########################################################################
# 4. Custom format, pg_restore, into another fresh cluster; also with -j 2
#    and --enable-row-security into other databases there.
###########################################################################
my $mock_c = start_mock(name => 'mock_c');
my $pc = fresh_node('custom', $mock_c);
($rc, $out, $err) = run_cmd($pc, 'pg_restore', '--exit-on-error', '-d', 'postgres',
	"$dir/custom.dump");
is($rc . $err, '0', 'pg_restore --exit-on-error: exit status 0, no message');
check_restored($pc, 'postgres', 'pg_restore');

$pc->safe_psql('postgres', 'CREATE DATABASE par');
($rc, $out, $err) = run_cmd($pc, 'pg_restore', '--exit-on-error', '-j', '2', '-d', 'par',
	"$dir/custom.dump");
is($rc . $err, '0', 'pg_restore -j 2: exit status 0, no message');
check_restored($pc, 'par', 'pg_restore -j 2');

$pc->safe_psql('postgres', 'CREATE DATABASE rls');
($rc, $out, $err) = run_cmd($pc, 'pg_restore', '--exit-on-error', '--enable-row-security',
	'-d', 'rls', "$dir/custom.dump");
is($rc . $err, '0', 'pg_restore --enable-row-security: exit status 0, no message');
check_restored($pc, 'rls', 'pg_restore --enable-row-security');

check_new_rows($pc, 'postgres', 'pg_restore', 'newc');
check_shipping($pc, $mock_c, 'pg_restore', 'newc');
$pc->stop;
no_errors($pc, 'pg_restore');

done_testing();
