# test/t/104_auth.pl: auth and configuration errors fail no row.
#
# A wrong token (401): no row fails, no attempt is counted, the worker says
# "auth error" and backs off (few requests); the token fixed with ALTER
# SYSTEM and a reload: everything is sent at once, nothing failed.  An
# empty token: no request at all.  A URL that is not an ingest endpoint
# (404): "config error", no row fails, fixed by a reload.
# metronome_check_connection() tells each case apart.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MetronomeTest;

my $good = 'tok-good-' . int(rand(1e9));
my $mock = start_mock(token => $good);
my $node = new_node(mock => $mock, token => 'tok-wrong-0000', extension => 1);

sub queue { return outbox_counts($node, @_); }

sub insert { insert_outbox($node, @_); }

# 1. Wrong token.
my ($ret, $out, $err) =
  $node->psql('postgres', 'SELECT metronome_check_connection()');
like($err, qr/ERROR:  the API token was refused by Metronome\nDETAIL:  HTTP 401: Invalid API token/,
	'metronome_check_connection() reports the refused token');

insert('auth', 30);
ok(wait_for(sub { $mock->stats->{requests} >= 3 }, 30), '401 answered three times');
my $t_reload = time();
is($node->safe_psql('postgres', 'SELECT state FROM metronome_status()'),
	'auth error', 'metronome_status() says auth error');
like($node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()'),
	qr/^HTTP 401: Invalid API token$/, 'with the answer');
is(queue('auth'), '30/0/0', 'no row failed');
is( $node->safe_psql(
		'postgres',
		"SELECT max(attempts) FROM metronome_outbox WHERE transaction_id LIKE 'auth-%'"),
	'0',
	'and no attempt was counted');
sleep(1);
my $n401 = $mock->stats->{by_status}{401};
{
	local $::TODO = timing_todo();
	cmp_ok($n401, '<=', 4, "the worker backs off ($n401 requests in ~2 s)");
}

$node->safe_psql('postgres', "ALTER SYSTEM SET metronome.api_token = '$good'");
$node->reload;
ok(wait_for(sub { queue('auth') eq '0/30/0' }, 30, 0.02),
	'after ALTER SYSTEM and a reload: everything sent');
{
	local $::TODO = timing_todo();
	cmp_ok(time() - $t_reload, '<', 2.5,
		'at once, not after the backoff');
}
is($node->safe_psql('postgres',
	"SELECT count(*) FROM metronome_outbox WHERE status = 'failed'"), '0',
	'nothing failed');
ok(wait_for(sub { $node->safe_psql('postgres', 'SELECT state FROM metronome_status()') eq 'idle' }, 10),
	'the worker is idle again');
is($node->safe_psql('postgres', 'SELECT metronome_check_connection()'),
	'ok', 'metronome_check_connection() with the good token: ok');

# 2. No token at all: no request.
$node->safe_psql('postgres', "ALTER SYSTEM SET metronome.api_token = ''");
$node->reload;
$mock->reset;
sleep(0.5);
insert('none', 5);
ok(wait_for(sub {
	$node->safe_psql('postgres', 'SELECT state || last_error FROM metronome_status()')
	  eq 'auth errormetronome.api_token is not set' }, 10),
	'an empty token: auth error, "metronome.api_token is not set"');
sleep(1);
is($mock->stats->{requests}, 0, 'and no request');
($ret, $out, $err) =
  $node->psql('postgres', 'SELECT metronome_check_connection()');
like($err, qr/ERROR:  metronome.api_token is not set/,
	'metronome_check_connection() says so');
$node->safe_psql('postgres', "ALTER SYSTEM SET metronome.api_token = '$good'");
$node->reload;
ok(wait_for(sub { queue('none') eq '0/5/0' }, 10), 'sent once it is set');

# 3. Not an ingest endpoint: 404.
my $bad_url = $mock->base . '/v1/not-ingest';
$node->safe_psql('postgres', "ALTER SYSTEM SET metronome.ingest_url = '$bad_url'");
$node->reload;
sleep(0.5);
$mock->reset;
insert('url', 7);
ok(wait_for(sub { $node->safe_psql('postgres', 'SELECT state FROM metronome_status()') eq 'config error' }, 10),
	'404: config error');
like($node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()'),
	qr/^HTTP 404: Not found/, 'with the answer');
is(queue('url'), '7/0/0', 'no row failed');
($ret, $out, $err) =
  $node->psql('postgres', 'SELECT metronome_check_connection()');
like($err, qr/ERROR:  metronome.ingest_url does not answer as Metronome's ingest endpoint/,
	'metronome_check_connection() blames the URL');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET metronome.ingest_url');
$node->reload;
ok(wait_for(sub { queue('url') eq '0/7/0' }, 10), 'fixed by a reload');

# 4. Nobody listening: metronome_check_connection() says it cannot connect.
$node->safe_psql('postgres',
	"ALTER SYSTEM SET metronome.ingest_url = 'http://127.0.0.1:9/v1/ingest'");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT current_setting('metronome.ingest_url') LIKE '%:9/%'");
($ret, $out, $err) =
  $node->psql('postgres', 'SELECT metronome_check_connection()');
like($err, qr/ERROR:  could not connect to Metronome\nDETAIL:  .*127\.0\.0\.1/,
	'unreachable: could not connect');

is($node->safe_psql('postgres',
	"SELECT count(*) FROM metronome_outbox WHERE status <> 'sent'"), '0',
	'in the end every row is sent');

$node->stop;
done_testing();
