# test/t/101_wire.pl: what the delivery worker puts on the wire.
#
# Rows inserted directly into metronome_outbox reach the mock Metronome as
# the contract's wire format says: POST to the ingest URL, the exact body (a
# JSON array, keys in order transaction_id, customer_id, timestamp,
# event_type, properties; timestamps UTC with milliseconds; properties
# verbatim, big numbers included), the headers (Authorization: Bearer,
# Content-Type, User-Agent: pg_metronome/<version>, no Idempotency-Key).
# 250 events committed together go out as 3 requests of 100, 100 and 50.
# With poll_interval = 1h an event still arrives within a second or so: the
# commit wakes the worker.  The worker shows in pg_stat_activity and
# metronome_status().
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time);
use MetronomeTest;

my $token = 'tok-wire-' . int(rand(1e9));
my $mock = start_mock(token => $token);
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => { 'metronome.poll_interval' => '1h' });

# the version the User-Agent must carry, from the control file
my $control = slurp_file(source_dir() . '/metronome.control');
my ($version) = $control =~ /^default_version\s*=\s*'([^']+)'/m;
ok($version, "extension version $version read from metronome.control");

# 1. Exact body and headers of one request.
$node->safe_psql(
	'postgres', q{
	BEGIN;
	INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp", properties)
	VALUES ('wire-1', 'cust-1', 'api_call', '2021-07-10 05:37:11+00',
			'{"tokens": 12345678901234567890.123456789, "model": "gpt/4 \"o\"", "nested": {"a": [1, true, null]}}'),
		   ('wire-2', 'cust-é', 'ça_marche', '2021-07-10 07:37:11.123987+02', '{}');
	INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp")
	VALUES ('wire-3', 'cust-3', 'storage', '1999-12-31 23:59:59.9999+00');
	COMMIT;});

ok(wait_for(sub { $mock->stats->{unique_events} >= 3 }, 10),
	'3 events reach the mock');
my $reqs = $mock->requests;
is(scalar(@$reqs), 1, 'one request carried them');
my $r = $reqs->[0];
is($r->{method}, 'POST', 'method POST');
is($r->{path}, '/v1/ingest', 'path of metronome.ingest_url');
is($r->{status}, 200, 'the mock accepted the batch');
is($r->{auth}, 'ok', 'Authorization: Bearer <token> matched');
is($r->{headers}{authorization}, 'Bearer ****', 'bearer scheme');
is($r->{headers}{'content-type'}, 'application/json', 'Content-Type');
is($r->{headers}{'user-agent'}, "pg_metronome/$version", 'User-Agent');
ok(!exists $r->{headers}{'idempotency-key'}, 'no Idempotency-Key header');
ok(!exists $r->{headers}{expect}, 'no Expect: 100-continue round trip');

my $expected =
	'[{"transaction_id":"wire-1","customer_id":"cust-1","timestamp":"2021-07-10T05:37:11.000Z",'
  . '"event_type":"api_call","properties":{"model": "gpt/4 \"o\"", "nested": {"a": [1, true, null]}, '
  . '"tokens": 12345678901234567890.123456789}},'
  . '{"transaction_id":"wire-2","customer_id":"cust-é","timestamp":"2021-07-10T05:37:11.123Z",'
  . '"event_type":"ça_marche","properties":{}},'
  . '{"transaction_id":"wire-3","customer_id":"cust-3","timestamp":"1999-12-31T23:59:59.999Z",'
  . '"event_type":"storage","properties":{}}]';
# the mock records the body as text; compare it byte for byte (as UTF-8)
my $body = $r->{body};
utf8::encode($body) if utf8::is_utf8($body);
is($body, $expected,
	'exact body: key order, UTC milliseconds (truncated), properties verbatim');

my @keys = $body =~ /\{"transaction_id":"[^"]*","customer_id":"[^"]*","timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","event_type":"[^"]*","properties":/g;
is(scalar(@keys), 3, 'every event has the five keys in the contract order');

is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(status || ':' || attempts || ':' || (sent_at IS NOT NULL) || ':' || coalesce(last_error, '-'), ',' ORDER BY id) FROM metronome_outbox"),
	'sent:1:true:-,sent:1:true:-,sent:1:true:-',
	'rows marked sent after the 2xx, one attempt each');

# 2. 250 events in one transaction: 3 requests of 100, 100 and 50.
$mock->reset;
$node->safe_psql(
	'postgres', q{
	INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, "timestamp", properties)
	SELECT 'batch-' || g, 'cust-' || (g % 7), 'api_call', now(), jsonb_build_object('n', g)
	  FROM generate_series(1, 250) g;});
ok(wait_for(sub { $mock->stats->{unique_events} >= 250 }, 10),
	'250 events reach the mock');
$reqs = $mock->requests;
is(scalar(@$reqs), 3, '250 events in 3 requests');
is(join(',', sort { $b <=> $a } map { $_->{events} } @$reqs),
	'100,100,50', 'batches of 100, 100 and 50');
my %seen;
$seen{ $_->{transaction_id} }++
  for map { @{ decode_json($_->{body}) } } @$reqs;
is(scalar(keys %seen), 250, 'each of the 250 events sent exactly once');
is((grep { $_ != 1 } values %seen), 0, 'no event sent twice');

# 3. Woken at commit: poll_interval is an hour, yet a single event arrives
# at once.
$mock->reset;
my $t0 = time();
$node->safe_psql('postgres',
	"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") VALUES ('wake-1', 'c', 'e', now())"
);
ok(wait_for(sub { $mock->stats->{unique_events} >= 1 }, 10, 0.01),
	'a single event arrives');
my $latency = time() - $t0;
{
	local $::TODO = timing_todo();
	cmp_ok($latency, '<', 2,
		sprintf('within 2 s of the commit with poll_interval = 1h (%.3f s)', $latency));
}

# COPY into the outbox, and an event mapped by the trigger on
# segment_events, wake the worker too.
$mock->reset;
$node->safe_psql('postgres',
	"COPY metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") FROM PROGRAM 'printf \"copy-1\\tc\\te\\t2024-03-01 00:00:00+00\\n\"'"
);
ok(wait_for(sub { $mock->stats->{unique_events} >= 1 }, 2, 0.01),
	'COPY into the outbox wakes the worker');
$mock->reset;
$node->safe_psql('postgres', q{
	INSERT INTO metronome_mappings (name) VALUES ('wake-preset');
	INSERT INTO segment_events (event) VALUES ('{"type": "track", "event": "API Call",
		"messageId": "mapped-wake-1", "timestamp": "2024-03-01T00:00:00Z",
		"context": {"groupId": "acme"}}');
	DELETE FROM metronome_mappings WHERE name = 'wake-preset';});
ok(wait_for(sub { $mock->stats->{unique_events} >= 1 }, 2, 0.01),
	'an event mapped into the outbox wakes the worker');

# A rolled-back insert sends nothing.
$mock->reset;
$node->safe_psql('postgres',
	"BEGIN; INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") VALUES ('rolled-back', 'c', 'e', now()); ROLLBACK;"
);
sleep(1);
is($mock->stats->{requests}, 0, 'a rolled-back insert sends nothing');

# 4. The worker in pg_stat_activity and metronome_status().
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'metronome delivery'");
like($pid, qr/^\d+$/, 'the delivery worker shows in pg_stat_activity');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'metronome launcher'"),
	'1',
	'the launcher shows in pg_stat_activity');
is( $node->safe_psql(
		'postgres',
		"SELECT datname || ' ' || state || ' ' || query FROM pg_stat_activity WHERE pid = $pid"),
	'postgres idle idle',
	'it serves database postgres and says what it is doing');
my $status = $node->safe_psql('postgres',
	"SELECT worker_pid, state, pending, failed, oldest_pending IS NULL, last_success_at IS NOT NULL, last_error IS NULL, sent_total, requests_total FROM metronome_status()"
);
is($status, "$pid|idle|0|0|t|t|t|256|7",
	'metronome_status(): worker pid, idle, empty queue, totals');

$node->stop;
done_testing();
