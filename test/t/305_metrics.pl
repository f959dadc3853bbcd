# test/t/305_metrics.pl: metronome_metrics() after real traffic, and the real
# prometheus-postgres-exporter scraping it with metronome-exporter-queries.yaml.
#
# Traffic against the mock: accepted events, a batch with one event Metronome
# refuses (bisected: 2 splits, 3 answers 400, 1 failed row), a 503, a 429
# with retry-after-ms, a request timed out, a 401, and an event rejected by
# its mapping.  The counters equal what the mock saw, exactly; the histogram
# counts every acknowledged event once, its buckets are cumulative, and the
# events that waited for a retry are in the buckets their wait allows.  The
# gauges follow the outbox (shipping paused: pending rows and their age).
# Every line of the output is valid text exposition format 0.0.4.  Without
# preloading, a session's CALL metronome_ship() counts in that session only.
# Then the Debian exporter, run as the unprivileged test user with a role
# that has only EXECUTE on metronome_metrics_table(), serves the same values
# on 127.0.0.1.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HTTP::Tiny;
use IPC::Run;
use Time::HiRes qw(time sleep);
use MetronomeTest;

my $t_start = time();
my $mock = start_mock();
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => {
		'metronome.max_backoff' => '2s',
		'metronome.request_timeout' => '1s',
	});
$node->safe_psql('postgres', "INSERT INTO metronome_mappings (name) VALUES ('tracks')");

# parse(text): { "name{labels}" => value }, after checking every line; the
# checks are reported as one test each per call (name given).
sub parse
{
	my ($text, $what) = @_;
	my (%v, %type, %help, @bad, $fam, %seen_fam);
	my $lv = qr/"(?:[^"\\\n]|\\[\\"n])*"/;
	my $labels = qr/\{[a-zA-Z_][a-zA-Z0-9_]*=$lv(?:,[a-zA-Z_][a-zA-Z0-9_]*=$lv)*\}/;
	ok($text =~ /\n\z/, "$what: ends with a newline");
	for my $line (split /\n/, $text)
	{
		if ($line =~ /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/)
		{
			push @bad, "two HELP for $1: $line" if $help{$1}++;
		}
		elsif ($line =~ /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/)
		{
			my ($n, $t) = ($1, $2);
			push @bad, "two TYPE for $n" if $type{$n};
			$type{$n} = $t;
			$fam = $n;
			push @bad, "counter without _total: $n"
			  if $t eq 'counter' && $n =~ /^metronome_/ && $n !~ /_total$/;
		}
		elsif ($line =~ /^#/)
		{
			next;    # other comments are allowed
		}
		elsif ($line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)($labels)? (\S+)$/)
		{
			my ($name, $l, $val) = ($1, $2 // '', $3);
			push @bad, "bad value: $line"
			  unless $val =~ /^(?:[-+]?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|\+Inf|-Inf|NaN)$/;
			my $base = $name;
			$base =~ s/_(bucket|sum|count)$//
			  if !$type{$name} && $type{ $name =~ s/_(bucket|sum|count)$//r };
			push @bad, "sample of $name outside its family ($fam)"
			  if defined $type{$base} && (!defined $fam || $fam ne $base);
			push @bad, "sample without TYPE: $line"
			  if $name =~ /^metronome_/ && !defined $type{$base};
			push @bad, "duplicate sample: $name$l" if exists $v{"$name$l"};
			$v{"$name$l"} = $val eq '+Inf' ? 9**9**9 : $val;
		}
		else
		{
			push @bad, "not exposition format: $line";
		}
	}
	is(join("\n", @bad), '', "$what: every line is valid text exposition format");
	return \%v;
}

sub metrics
{
	return parse($node->safe_psql('postgres', 'SELECT metronome_metrics()') . "\n",
		'metronome_metrics()');
}

# psql's -A output drops the final newline: metrics() gives it back.

# val($samples, name, label => value, ...): the value of the one sample of
# that name having those labels (others, such as the exporter's server, may
# be there too); undef if there is none or more than one.
sub val
{
	my ($v, $name, %l) = @_;
	my @k = grep {
		my $k = $_;
		$k =~ /^\Q$name\E(?:\{|$)/
		  && !grep { index($k, "$_=\"$l{$_}\"") < 0 } keys %l
	} keys %$v;
	return @k == 1 ? $v->{ $k[0] } : undef;
}

sub queue { return outbox_counts($node, @_); }

sub insert { insert_outbox($node, @_); }

my $db = 'database="postgres"';

# 1. Accepted events, through the mapping.
$node->safe_psql('postgres',
	"INSERT INTO segment_events (event) SELECT jsonb_build_object('type', 'track', 'event', 'API Call', "
	  . "'messageId', 'ok-' || g, 'timestamp', now()::text, 'context', '{\"groupId\": \"acme\"}'::jsonb) "
	  . "FROM generate_series(1, 20) g");
ok(wait_for(sub { queue('ok') eq '0/20/0' }), '20 events accepted');

# 2. One event refused in a batch of 4: 4 -> 2 + 2 -> the bad half 1 + 1.
$mock->faults({ reject_transaction_ids => ['bad-3'] });
insert('bad', 4);
ok(wait_for(sub { queue('bad') eq '0/3/1' }), 'the bad event failed, 3 sent');
$mock->faults({ reject_transaction_ids => [] });

# 3. Transient failures: 503, 429 with retry-after-ms, a timeout (the mock
# answers after 3 s, request_timeout is 1 s: no answer, class network);
# then a 401.  Each is followed by success.
for my $case ([ 'tr', 3, 503 ],
	[ 'rl', 2, { status => 429, retry_after_ms => '1200' } ],
	[ 'nw', 2, { status => 500, delay => 3 } ], [ 'au', 2, 401 ])
{
	my ($prefix, $n, $fault) = @$case;
	$mock->faults({ script => [$fault] });
	insert($prefix, $n);
	ok(wait_for(sub { queue($prefix) eq "0/$n/0" }), "$prefix: sent after the fault");
	is($mock->stats->{script_remaining}, 0, "$prefix: the fault was used");
}

# 4. An event its mapping rejects.
$node->safe_psql('postgres',
	"INSERT INTO segment_events (event) VALUES ('{\"type\": \"track\", \"event\": \"API Call\", \"messageId\": \"rej-1\", \"timestamp\": \"2024-03-01T00:00:00Z\"}')");

# The counters against the mock's own record.
my $st = $mock->stats;
my $m = metrics();
my %by = %{ $st->{by_status} };
my $ok2xx = 0;
$ok2xx += $by{$_} for grep { /^2/ } keys %by;
is($m->{"metronome_requests_total{$db,class=\"2xx\"}"}, $ok2xx, "2xx requests: the mock's ($ok2xx)");
is($m->{"metronome_requests_total{$db,class=\"bad_batch\"}"}, 3, 'bad_batch: 3 (the batch of 4, its bad half, the bad event)');
is($by{400}, 3, 'the mock answered 400 three times');
is($m->{"metronome_requests_total{$db,class=\"transient\"}"}, 1, 'transient: the 503');
is($m->{"metronome_requests_total{$db,class=\"rate_limited\"}"}, 1, 'rate_limited: the 429');
is($m->{"metronome_requests_total{$db,class=\"network\"}"}, 1, 'network: the request that timed out');
is($by{500}, 1, 'the mock answered it (500) after the timeout');
is($m->{"metronome_requests_total{$db,class=\"auth\"}"}, 1, 'auth: the 401');
is($m->{"metronome_requests_total{$db,class=\"config\"}"}, 0, 'config: none');
my $nreq = 0;
$nreq += $m->{$_} for grep { /^metronome_requests_total\{/ } keys %$m;
is($nreq, $st->{requests}, "requests by class add up to the mock's requests ($st->{requests})");
is($m->{"metronome_batch_splits_total{$db}"}, 2, 'two batch splits');
is($m->{"metronome_events_sent_total{$db}"}, 32, 'events sent: 32');
is($st->{unique_events}, 32, 'the mock accepted 32');
is($m->{"metronome_mapping_events_sent_total{$db,mapping=\"tracks\"}"}, 20, 'sent by mapping: tracks 20');
is($m->{"metronome_mapping_events_sent_total{$db,mapping=\"\"}"}, 12, 'sent by mapping: direct rows 12');
is(scalar(grep { /^metronome_mapping_events_sent_total\{/ } keys %$m), 2, 'no other mapping');
is($m->{"metronome_events_failed_total{$db}"}, 1, 'events failed: 1');
is($m->{"metronome_events_retried_total{$db}"}, 7, 'events retried: 3 + 2 + 2 (the 401 changes no row)');
cmp_ok($m->{"metronome_cycles_total{$db}"}, '>=', 7, 'cycles: at least one per phase and retry');
cmp_ok($m->{"metronome_cycles_total{$db}"}, '<=', $st->{requests}, 'cycles: at most one per request');

# The histogram: every accepted event once, cumulative buckets.
my @b;
@b = map { [ (/le="([^"]+)"/)[0], $m->{$_} ] } grep { /^metronome_ack_latency_seconds_bucket\{/ } keys %$m;
@b = sort { ($a->[0] eq '+Inf' ? 9**9**9 : $a->[0]) <=> ($b->[0] eq '+Inf' ? 9**9**9 : $b->[0]) } @b;
is(scalar(@b), 17, '17 buckets');
is($b[-1][0], '+Inf', 'the last is +Inf');
my $mono = 1;
$mono &&= $b[$_][1] >= $b[ $_ - 1 ][1] for 1 .. $#b;
ok($mono, 'buckets are cumulative (never decreasing): ' . join(' ', map { "$_->[0]:$_->[1]" } @b));
my $count = $m->{"metronome_ack_latency_seconds_count{$db}"};
is($count, 32, 'histogram count = events acknowledged as accepted');
is($b[-1][1], $count, 'bucket +Inf = count');
my %le = map { $_->[0] => $_->[1] } @b;
cmp_ok($le{'1'}, '<=', $count - 2,
	'the 2 events behind a 1.2 s retry-after-ms are above 1 s');
cmp_ok($le{'0.25'}, '<=', $count - 7,
	'the 7 retried events (backoff >= 375 ms) are above 0.25 s');
my $sum = $m->{"metronome_ack_latency_seconds_sum{$db}"};
cmp_ok($sum, '>=', 5 * 0.375 + 2 * 1.2, "sum ($sum s) holds at least the retries' waits");
cmp_ok($sum, '<=', $count * (time() - $t_start), 'sum is no more than every event waiting the whole test');

# The gauges.
is($m->{"metronome_failed_events{$db}"}, 1, 'failed_events 1');
is($m->{"metronome_mapping_events{$db,mapping=\"\",status=\"failed\"}"}, 1, 'the failed row has no mapping (inserted directly)');
is($m->{"metronome_mapping_events{$db,mapping=\"tracks\",status=\"failed\"}"}, 0, 'tracks has no failed row');
is($m->{"metronome_mapping_events{$db,mapping=\"tracks\",status=\"pending\"}"}, 0, 'nor a pending one');
is($m->{"metronome_rejected_events{$db,mapping=\"tracks\",reason=\"missing_customer_id\"}"}, 1, 'rejected: tracks, missing_customer_id');
is($m->{"metronome_pending_events{$db}"}, 0, 'nothing pending');
is($m->{"metronome_oldest_pending_age_seconds{$db}"}, 0, 'no pending age');
is($m->{"metronome_worker_up{$db}"}, 1, 'worker up');
is($m->{"metronome_counters_shared{$db}"}, 1, 'counters in shared memory');
is(scalar(grep { /^metronome_worker_in_state\{/ && $m->{$_} == 1 } keys %$m), 1, 'exactly one state is current');

# Shipping paused: pending rows, their age, the state.
$node->append_conf('postgresql.conf', "metronome.enabled = off\n");
$node->reload;
ok(wait_for(sub { metrics()->{"metronome_worker_in_state{$db,state=\"paused\"}"} == 1 }), 'state paused');
insert('pa', 5);
sleep(1.2);
$m = metrics();
is($m->{"metronome_pending_events{$db}"}, 5, 'pending_events 5');
is($m->{"metronome_mapping_events{$db,mapping=\"\",status=\"pending\"}"}, 5, 'by mapping: the 5 direct rows');
cmp_ok($m->{"metronome_oldest_pending_age_seconds{$db}"}, '>=', 1.0, 'the oldest is over a second old');
cmp_ok($m->{"metronome_oldest_pending_age_seconds{$db}"}, '<', 600, 'and not absurd');
$node->append_conf('postgresql.conf', "metronome.enabled = on\n");
$node->reload;
ok(wait_for(sub { queue('pa') eq '0/5/0' }), 'sent once resumed');
ok(wait_for(sub { metrics()->{"metronome_events_sent_total{$db}"} == 37 }), 'events sent 37');
$m = metrics();
is($m->{"metronome_ack_latency_seconds_count{$db}"}, 37, 'histogram count 37');
cmp_ok($m->{"metronome_ack_latency_seconds_bucket{$db,le=\"1\"}"}, '<=', 37 - 7,
	'the 5 that waited over a second are above 1 s');
is($m->{"metronome_pending_events{$db}"}, 0, 'nothing pending any more');

# The table form gives the same samples.
my $rows = $node->safe_psql('postgres',
	"SELECT count(*) FROM metronome_metrics_table()");
is($rows, scalar(grep { /^metronome_/ } keys %$m), 'metronome_metrics_table(): one row per sample');

# 5. Without preloading: the counters of the session that ships.
my $mock2 = start_mock(name => 'mock2');
my $plain = new_node(name => 'plain', mock => $mock2, extension => 1, preload => 0);
$plain->safe_psql('postgres',
	"INSERT INTO metronome_outbox (transaction_id, customer_id, event_type, \"timestamp\") "
	  . "SELECT 'pl-' || g, 'cust', 'api_call', now() FROM generate_series(1, 3) g");
my $out = $plain->safe_psql('postgres',
	"CALL metronome_ship();\nSELECT line FROM regexp_split_to_table(metronome_metrics(), E'\\n') line WHERE line ~ '^metronome_(events_sent_total|counters_shared|ack_latency_seconds_count|worker_up)';");
like($out, qr/^metronome_events_sent_total\{$db\} 3$/m, 'the shipping session counts its 3 events');
like($out, qr/^metronome_ack_latency_seconds_count\{$db\} 3$/m, 'and their latencies');
like($out, qr/^metronome_counters_shared\{$db\} 0$/m, 'counters_shared 0: the session\'s own');
like($out, qr/^metronome_worker_up\{$db\} 0$/m, 'no worker');
like($plain->safe_psql('postgres', 'SELECT metronome_metrics()'),
	qr/^metronome_events_sent_total\{$db\} 0$/m, 'another session has counted nothing');
$plain->stop;

# 6. The real prometheus-postgres-exporter, as the unprivileged test user,
# with a role that may only execute metronome_metrics_table().
my $exporter = '/usr/bin/prometheus-postgres-exporter';
SKIP:
{
	ok(-x $exporter, "$exporter is installed (Debian package prometheus-postgres-exporter)")
	  or skip 'no exporter', 1;
	isnt($>, 0, 'the test runs as an unprivileged user');
	$node->safe_psql('postgres',
		"CREATE ROLE metronome_exporter LOGIN; GRANT EXECUTE ON FUNCTION metronome_metrics_table() TO metronome_exporter");
	my $queries = source_dir() . '/metronome-exporter-queries.yaml';
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $log = "$PostgreSQL::Test::Utils::log_path/305_metrics_exporter.log";
	local $ENV{DATA_SOURCE_NAME} =
	  'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=metronome_exporter sslmode=disable';
	my @cmd = ($exporter, "--web.listen-address=127.0.0.1:$port",
		"--extend.query-path=$queries", '--disable-default-metrics',
		'--disable-settings-metrics', '--log.level=info');
	note("@cmd");
	my $h = IPC::Run::start(\@cmd, '<', '/dev/null', '>>', $log, '2>>', $log);
	my $http = HTTP::Tiny->new(timeout => 10);
	my $body;
	ok( wait_for(
			sub {
				my $r = $http->get("http://127.0.0.1:$port/metrics");
				$body = $r->{content} if $r->{success};
				return $r->{success} && $body =~ /^metronome_events_sent_total/m;
			},
			60),
		"the exporter serves our metrics on 127.0.0.1:$port");
	$body //= '';
	note("scrape:\n" . join("\n", grep { /^metronome_|^pg_exporter_|^pg_up/ } split /\n/, $body));
	my $e = parse($body, 'the exporter\'s /metrics');
	is($e->{'pg_up'}, 1, 'the exporter reached the server');
	my ($load) = grep { /^pg_exporter_user_queries_load_error\{/ } keys %$e;
	is($e->{$load // 'none'}, 0, 'the queries file loaded without error');
	is($e->{'pg_exporter_last_scrape_error'}, 0, 'the scrape had no error');
	is(val($e, 'metronome_events_sent_total'), 37, 'exporter: events sent 37');
	is(val($e, 'metronome_events_failed_total'), 1, 'exporter: events failed 1');
	is(val($e, 'metronome_events_retried_total'), 7, 'exporter: events retried 7');
	is(val($e, 'metronome_batch_splits_total'), 2, 'exporter: 2 splits');
	is(val($e, 'metronome_mapping_events_sent_total', mapping => 'tracks'), 20, 'exporter: sent by tracks 20');
	is(val($e, 'metronome_mapping_events_sent_total', mapping => ''), 17, 'exporter: sent directly 17');
	for my $class (qw(2xx bad_batch auth config rate_limited transient network))
	{
		is(val($e, 'metronome_requests_total', class => $class, database => 'postgres'),
			$m->{"metronome_requests_total{$db,class=\"$class\"}"}, "exporter: requests $class as ours");
	}
	is(val($e, 'metronome_ack_latency_seconds_count'), 37, 'exporter: histogram count 37');
	is(val($e, 'metronome_ack_latency_seconds_bucket', le => '+Inf'), 37, 'exporter: bucket +Inf 37');
	is(val($e, 'metronome_ack_latency_seconds_bucket', le => '1'),
		$m->{"metronome_ack_latency_seconds_bucket{$db,le=\"1\"}"}, 'exporter: bucket le=1 as ours');
	is(val($e, 'metronome_failed_events'), 1, 'exporter: failed_events 1');
	is(val($e, 'metronome_pending_events'), 0, 'exporter: pending_events 0');
	is(val($e, 'metronome_worker_up'), 1, 'exporter: worker up');
	is(val($e, 'metronome_counters_shared'), 1, 'exporter: shared counters');
	is(val($e, 'metronome_rejected_events', mapping => 'tracks', reason => 'missing_customer_id'),
		1, 'exporter: rejected tracks/missing_customer_id 1');
	is(val($e, 'metronome_mapping_events', mapping => '', status => 'failed'),
		1, 'exporter: mapping_events of direct rows, failed 1');
	my @states = grep { /^metronome_worker_in_state\{/ && $e->{$_} == 1 } keys %$e;
	is(scalar(@states), 1, 'exporter: one current worker state');
	$h->kill_kill(grace => 5);
	ok(!$h->pumpable, 'the exporter is stopped');
}

$node->stop;
done_testing();
