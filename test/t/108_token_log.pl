# test/t/108_token_log.pl: the API token never reaches the server log.
#
# With log_min_messages = debug5 from the start, the worker ships, meets a
# refused event, a 401 and a 503 whose messages quote the token (a server
# may echo what it was sent), metronome_check_connection() fails the same
# way, and the token is changed by a reload.  Neither token appears in the
# server log, in last_error (of the outbox or of metronome_status()), nor
# in an error sent to the client: they hold asterisks instead.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;

my $token = sprintf('mtk_%08x%08x', rand(2**32), rand(2**32));
my $token2 = sprintf('mtk_%08x%08x', rand(2**32), rand(2**32));
my $mock = start_mock(token => $token);
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => {
		log_min_messages => 'debug5',
		'metronome.max_backoff' => '100ms',
	});

sub queue { return outbox_counts($node, @_); }

sub insert { insert_outbox($node, @_); }

# 1. Plain shipping.
insert('plain', 5);
ok(wait_for(sub { queue('plain') eq '0/5/0' }, 10), 'shipped');

# 2. A refused event whose message quotes the token.
$mock->faults({ script => [ { status => 400, message => "event refused for key $token" } ] });
insert('bad', 1);
ok(wait_for(sub { queue('bad') eq '0/0/1' }, 10), 'the refused event failed');
my $last = $node->safe_psql('postgres',
	"SELECT last_error FROM metronome_outbox WHERE transaction_id = 'bad-1'");
like($last, qr/^HTTP 400: event refused for key \*{8,}$/,
	"the outbox's last_error has the token masked");

# 3. A 401 and a 503 that quote it.
$mock->faults({ script => [ { status => 401, message => "key $token revoked" }, { status => 503, message => "busy, $token" } ] });
insert('auth', 3);
ok(wait_for(sub { queue('auth') eq '0/3/0' }, 20), 'sent after the 401 and the 503');
my ($ret, $out, $err);

# 4. metronome_check_connection() failing with the token in the answer.
$mock->faults({ script => [ { status => 401, message => "key $token revoked" } ] });
($ret, $out, $err) = $node->psql('postgres', 'SELECT metronome_check_connection()');
like($err, qr/DETAIL:  HTTP 401: key \*+ revoked/, 'the client sees the token masked');
unlike($err, qr/\Q$token\E/, 'and not the token');

# 5. A new token by reload.
$mock->stop;
my $mock2 = start_mock(token => $token2, name => 'mock2');
$node->append_conf('postgresql.conf',
	"metronome.api_token = '$token2'\nmetronome.ingest_url = '" . $mock2->url . "'\n");
$node->reload;
insert('new', 4);
ok(wait_for(sub { queue('new') eq '0/4/0' }, 20), 'shipped with the new token');
$mock2->faults({ script => [ { status => 503, message => "busy, $token2" } ] });
insert('new2', 2);
ok(wait_for(sub { queue('new2') eq '0/2/0' }, 20), 'and after a 503 quoting it');

unlike($node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()'),
	qr/\Q$token2\E/, 'metronome_status().last_error does not show it');

$node->stop;
my $log = slurp_file($node->logfile);
my $debug = () = $log =~ /^.*DEBUG:  /mg;
cmp_ok($debug, '>', 200, "the log is at debug level ($debug DEBUG lines)");
like($log, qr/metronome refused outbox row/, 'it holds the refusal');
is(index($log, $token), -1, 'the first token appears nowhere in the server log');
is(index($log, $token2), -1, 'nor the second');

done_testing();
