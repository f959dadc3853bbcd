# test/t/102_transient.pl: transient failures, backoff and Retry-After.
#
# 500, 503, a timeout, a dropped connection and a reset, then success: every
# event arrives, none failed, none pending, each row counted six attempts.
# 429 with Retry-After (seconds, HTTP date) or retry-after-ms: no request at
# all before it elapses, even when new rows are committed meanwhile, and no
# transaction is held open by the worker while it waits.  max_attempts fails
# rows after that many transient failures; metronome_retry() revives them.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use Time::Local qw(timegm);
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => {
		'metronome.max_backoff' => '200ms',
		'metronome.request_timeout' => '1s',
	});

# insert($prefix, $n): $n outbox rows in one transaction
sub insert { insert_outbox($node, @_); }

# queue($prefix): "pending/sent/failed" counts of the rows with that prefix
sub queue { return outbox_counts($node, @_); }

# epoch seconds of the mock's ISO time stamps
sub epoch
{
	my ($iso) = @_;
	my ($y, $mo, $d, $h, $mi, $s) =
	  $iso =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):([\d.]+)Z$/
	  or die "bad time $iso";
	return timegm(0, $mi, $h, $d, $mo - 1, $y) + $s;
}

# 1. Every kind of transient failure, then success.
$mock->faults({ script => [ 500, 503, { delay => 3 }, 'drop', 'reset' ] });
insert('tr', 10);
ok(wait_for(sub { queue('tr') eq '0/10/0' }, 60),
	'after 500, 503, a timeout, a drop and a reset: all 10 rows sent');
my $stats = $mock->stats;
is($stats->{unique_events}, 10, 'the mock has every event');
is($stats->{by_status}{500}, 1, 'it answered one 500');
is($stats->{by_status}{503}, 1, 'and one 503');
is($stats->{dropped}, 2, 'and dropped two connections');
is( $node->safe_psql(
		'postgres',
		"SELECT min(attempts) || ' ' || max(attempts) || ' ' || count(last_error) FROM metronome_outbox WHERE transaction_id LIKE 'tr-%'"),
	'6 6 0',
	'each row counts six attempts; last_error cleared by the success');
my $reqs = $mock->requests;
is(scalar(@$reqs), 6, 'six requests in all (one per attempt)');

# 2. 429 with Retry-After in seconds: no request before it elapses.
$node->append_conf('postgresql.conf', "metronome.max_backoff = '30s'");
$node->reload;
$mock->reset;
$mock->faults({ script => [ { status => 429, retry_after => '3' } ] });
insert('ra', 5);
ok(wait_for(sub { $mock->stats->{requests} >= 1 }, 10), 'first request answered 429');
sleep(0.5);
insert('ra2', 5);    # new rows wake the worker while it must wait
{
	local $::TODO = timing_todo();
	is($node->safe_psql('postgres',
		"SELECT state FROM metronome_status()"), 'backoff',
		'metronome_status() says backoff');
}
# the worker sleeps on its latch with no transaction and no snapshot
my $waiting =
  "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'metronome delivery' AND wait_event_type = 'Extension'";
ok( $node->poll_query_until('postgres',
		"$waiting AND xact_start IS NULL AND backend_xid IS NULL AND backend_xmin IS NULL", '1'),
	'no transaction or snapshot held by the worker during the wait');
is($node->safe_psql('postgres',
	"$waiting AND (xact_start IS NOT NULL OR backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)"),
	'0', 'never asleep inside a transaction');
ok(wait_for(sub { queue('ra') eq '0/5/0' && queue('ra2') eq '0/5/0' }, 20),
	'all rows sent after the wait');
$reqs = $mock->requests;
cmp_ok(scalar(@$reqs), '>=', 2, 'a request after the 429');
my $gap = epoch($reqs->[1]{time}) - epoch($reqs->[0]{time});
cmp_ok($gap, '>=', 2.99, sprintf('Retry-After: 3 honoured (next request %.3f s later)', $gap));
is( $node->safe_psql(
		'postgres',
		"SELECT min(attempts) FROM metronome_outbox WHERE transaction_id LIKE 'ra-%'"),
	'2',
	'the 429 counted as an attempt');

# 3. Retry-After as an HTTP date.
$mock->reset;
my $when = strftime('%a, %d %b %Y %H:%M:%S GMT', gmtime(int(time()) + 4));
$mock->faults({ script => [ { status => 503, retry_after => $when } ] });
insert('date', 3);
ok(wait_for(sub { queue('date') eq '0/3/0' }, 20), 'sent after an HTTP-date Retry-After');
$reqs = $mock->requests;
$gap = epoch($reqs->[1]{time}) - epoch($reqs->[0]{time});
{
	local $::TODO = timing_todo();
	cmp_ok($gap, '>=', 2.0, sprintf('Retry-After: <date 4 s ahead> honoured (%.3f s)', $gap));
}

# 4. retry-after-ms.
$mock->reset;
$mock->faults({ script => [ { status => 429, retry_after_ms => '1500' } ] });
insert('ms', 3);
ok(wait_for(sub { queue('ms') eq '0/3/0' }, 20), 'sent after retry-after-ms');
$reqs = $mock->requests;
$gap = epoch($reqs->[1]{time}) - epoch($reqs->[0]{time});
cmp_ok($gap, '>=', 1.49, sprintf('retry-after-ms: 1500 honoured (%.3f s)', $gap));

# 5. Retry-After is capped by max_backoff.
$node->append_conf('postgresql.conf', "metronome.max_backoff = '500ms'");
$node->reload;
$mock->reset;
$mock->faults({ script => [ { status => 429, retry_after => '3600' } ] });
my $t0 = time();
insert('cap', 2);
ok(wait_for(sub { queue('cap') eq '0/2/0' }, 20), 'sent although Retry-After said an hour');
cmp_ok(time() - $t0, '<', 10, 'Retry-After capped by metronome.max_backoff');

# 6. max_attempts: failed after three transient failures, then retried.
$node->append_conf('postgresql.conf',
	"metronome.max_attempts = 3\nmetronome.max_backoff = '100ms'");
$node->reload;
$mock->reset;
$mock->faults({ script => [ 500, 502, 504, 500, 500, 500 ] });
insert('max', 4);
ok(wait_for(sub { queue('max') eq '0/0/4' }, 20),
	'rows failed after max_attempts transient failures');
like( $node->safe_psql(
		'postgres',
		"SELECT DISTINCT attempts || ' ' || last_error FROM metronome_outbox WHERE transaction_id LIKE 'max-%'"),
	qr/^3 HTTP 504: Gateway Timeout$/,
	'three attempts, last_error says why');
is($mock->stats->{unique_events}, 0, 'nothing was accepted');
$mock->clear_faults;
is($node->safe_psql('postgres', 'SELECT metronome_retry()'), '4',
	'metronome_retry() puts them back');
ok(wait_for(sub { queue('max') eq '0/4/0' }, 20), 'and they are sent');

is($node->safe_psql('postgres',
	"SELECT count(*) FROM metronome_outbox WHERE status <> 'sent'"), '0',
	'nothing left pending or failed');

$node->stop;
done_testing();
