# test/t/202_secrets.pl: the API token leaks by no route; who may change
# where events go and whom to trust.
#
# Completes 001_settings (SHOW, current_setting, pg_settings, the log while
# the token is set) and 108_token_log (answers quoting the token, at
# debug5).  Here, with log_min_messages = debug5 from the start:
#   - non-superusers (plain, pg_read_all_settings, pg_read_all_stats) cannot
#     read the token through pg_file_settings, pg_read_file() of the
#     configuration files, current_setting(..., true), nor a superuser's
#     statement text in pg_stat_activity; nobody can store a token in the
#     world-readable pg_db_role_setting (ALTER ROLE/DATABASE ... SET);
#   - non-superusers cannot change metronome.ingest_url, metronome.api_token
#     or metronome.ca_file (SET, set_config, ALTER ROLE SET on themselves);
#   - every libcurl error (closed port, TLS spoken to a plain HTTP server,
#     timeout, connection closed or reset) and every answer quoting the
#     token (a redirect, a Retry-After, a raw body and a {"message"} that
#     are cut off in the middle of the token) reach the client of
#     metronome_check_connection() and metronome_ship() (client_min_messages
#     = debug5), metronome_status(), the outbox's last_error and the server
#     log without the token or any 8-character piece of its start;
#   - metronome.ca_file: with the default authorities a server certified by
#     a private CA is refused (config error, no row failed); naming the CA's
#     PEM file (and a reload) makes the worker ship over https.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use JSON::PP;
use MetronomeTest;

# Random letters that no log line holds by chance, so that finding even the
# first 8 of them means a leak.
sub random_secret
{
	my @l = ('g' .. 'z', 'G' .. 'Z');
	return join '', map { $l[ int(rand(@l)) ] } 1 .. 32;
}
my $token = random_secret();
my $head = substr($token, 0, 8);
my @attempted = map { random_secret() } 1 .. 6;    # tokens someone tries to set

my $mock = start_mock(token => $token);
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => {
		log_min_messages => 'debug5',
		'metronome.max_backoff' => '100ms',
		'metronome.request_timeout' => '1s',
	});
$node->safe_psql(
	'postgres', q{
	CREATE ROLE plain LOGIN;
	CREATE ROLE reader LOGIN IN ROLE pg_read_all_settings;
	CREATE ROLE monitor LOGIN IN ROLE pg_read_all_stats;
	GRANT CREATE ON DATABASE postgres TO plain;
});

# as($role, $sql): (exit status, stdout, stderr) of psql as that role
sub as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $role ]);
	return ($ret, $out // '', $err // '');
}

# secret_free($text): no token, no piece of its start, no attempted token
sub secret_free
{
	my ($text) = @_;
	return 0 if index($text, $head) >= 0;
	for my $t (@attempted)
	{
		return 0 if index($text, substr($t, 0, 8)) >= 0;
	}
	return 1;
}

###########################################################################
# 1. Reading the token: every route a non-superuser could try.
###########################################################################
ok( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_file_settings WHERE name = 'metronome.api_token' AND setting <> ''") >= 1,
	'superuser: pg_file_settings has the token of postgresql.conf (the route exists)');
for my $role (qw(plain reader monitor))
{
	my ($ret, $out, $err) = as($role, 'SELECT setting FROM pg_file_settings');
	like($err, qr/permission denied/, "$role: pg_file_settings is refused");
	($ret, $out, $err) = as($role, 'SELECT * FROM pg_show_all_file_settings()');
	like($err, qr/permission denied/, "$role: pg_show_all_file_settings() is refused");
	($ret, $out, $err) = as($role,
		"SELECT pg_read_file('postgresql.conf') UNION ALL SELECT pg_read_file('postgresql.auto.conf')");
	like($err, qr/permission denied/, "$role: pg_read_file() of the configuration is refused");
	($ret, $out, $err) = as($role, "SELECT current_setting('metronome.api_token', true)");
	ok(secret_free($out . $err), "$role: current_setting(name, missing_ok) does not give it");
}
my ($ret, $out, $err);

# pg_db_role_setting is readable by everyone: no token may be stored there,
# not even by a superuser.
my $i = 0;
for my $sql (
	"ALTER ROLE plain SET metronome.api_token = '$attempted[0]'",
	"ALTER ROLE ALL SET metronome.api_token TO '$attempted[0]'",
	"ALTER DATABASE postgres SET \"metronome.api_token\" = '$attempted[0]'",
	"ALTER ROLE plain IN DATABASE postgres SET metronome.api_token = '$attempted[0]'")
{
	$i++;
	($ret, $out, $err) = $node->psql('postgres', $sql);
	isnt($ret, 0, "superuser: ALTER ROLE/DATABASE SET metronome.api_token is refused ($i)");
	ok(secret_free($err), "superuser: the error does not quote the value ($i)");
}

# A non-superuser can change none of the settings that say where events go,
# with which token, and whom to trust.
for my $name (qw(metronome.ingest_url metronome.api_token metronome.ca_file))
{
	my $v =
	    $name eq 'metronome.ingest_url' ? 'http://127.0.0.1:1/v1/ingest'
	  : $name eq 'metronome.ca_file'    ? '/tmp/attacker-ca.pem'
	  :                                   $attempted[1];
	for my $sql (
		"SET $name = '$v'",
		"SELECT set_config('$name', '$v', false)",
		"ALTER ROLE plain SET $name = '$v'",
		"ALTER DATABASE postgres SET $name = '$v'")
	{
		($ret, $out, $err) = as('plain', $sql);
		isnt($ret, 0, "plain: refused: $sql");
		ok(secret_free($err), "plain: the error does not quote the value: $sql");
	}
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_db_role_setting'),
	'0', 'pg_db_role_setting holds nothing');
is($node->safe_psql('postgres', "SELECT md5(current_setting('metronome.api_token'))"),
	$node->safe_psql('postgres', "SELECT md5('$token')"),
	'the token is still the configured one');

# The text of a superuser's statement that sets the token is not shown to
# pg_read_all_stats members by pg_stat_activity, while it runs or after.
my $bg = $node->background_psql('postgres');
my $bg_pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe('\\set ON_ERROR_STOP 0');
for my $sql (
	"ALTER SYSTEM SET metronome.api_token = '$token'",
	"SET metronome.api_token TO '$attempted[2]'",
	"SELECT set_config('metronome.api_token', '$attempted[3]', false)",
	"ALTER ROLE plain SET metronome.api_token = '$attempted[4]'")
{
	$bg->query($sql);
	my $seen = $node->safe_psql('postgres',
		"SELECT query FROM pg_stat_activity WHERE pid = $bg_pid",
		extra_params => [ '-U', 'monitor' ]);
	ok($seen ne '' && secret_free($seen) && index($seen, $token) < 0,
		"pg_stat_activity shows pg_read_all_stats \"$seen\", not the token");
}
$bg->quit;

###########################################################################
# 2. libcurl's errors and answers quoting the token, seen by the client, in
#    metronome_status() and in the outbox.
###########################################################################
sub set_url
{
	my ($url) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET metronome.ingest_url = '$url'");
	$node->reload;
	$node->poll_query_until('postgres',
		"SELECT current_setting('metronome.ingest_url') = '$url'")
	  or die "ingest_url not reloaded";
}

# check($label, $error_re): metronome_check_connection() fails as expected
# and quotes no secret, even at client_min_messages = debug5
sub check
{
	my ($label, $re) = @_;
	my ($r, $o, $e) = $node->psql('postgres',
		'SET client_min_messages = debug5; SELECT metronome_check_connection()');
	like($e, $re, "$label: metronome_check_connection() fails as expected");
	ok(secret_free($o . $e), "$label: its messages hold no piece of the token")
	  or diag($e);
}

my $closed = PostgreSQL::Test::Cluster::get_free_port();
set_url("http://127.0.0.1:$closed/v1/ingest");
check('closed port', qr/could not connect to Metronome\nDETAIL:  .*(?:connect|Connection refused)/);
set_url('https://127.0.0.1:' . $mock->port . '/v1/ingest');
# (the mock waits for a request line that the TLS hello never completes)
check('TLS to an HTTP server', qr/could not connect to Metronome\nDETAIL:  .*(?:SSL|TLS|timed out)/i);
set_url($mock->url);
$mock->faults({ delay => 3 });
check('timeout', qr/DETAIL:  .*timed out/i);
$mock->faults({ clear => JSON::PP::true, script => ['drop'] });
check('connection closed', qr/DETAIL:  .*(?:Empty reply|closed)/i);
$mock->faults({ script => ['reset'] });
check('connection reset', qr/DETAIL:  .*(?:reset|Recv failure)/i);
$mock->faults({ script => [ { status => 302, headers => { Location => "http://127.0.0.1:1/?token=$token" }, body => "Moved: $token" } ] });
check('redirect quoting the token', qr/DETAIL:  HTTP 302/);
$mock->faults({ script => [ { status => 429, retry_after => $token, message => 'slow down' } ] });
check('Retry-After quoting the token', qr/DETAIL:  HTTP 429: slow down/);
# the raw body of an answer is quoted up to 200 bytes, a message up to the
# error buffer's 512: the token straddles each cut
$mock->faults({ script => [ { status => 500, body => ('x' x 190) . $token } ] });
check('raw body cut inside the token', qr/DETAIL:  HTTP 500: x{190}/);
$mock->faults({ script => [ { status => 503, message => ('y' x 490) . $token } ] });
check('message cut inside the token', qr/DETAIL:  HTTP 503: y{490}/);

# The same through the worker and metronome_ship(): a batch refused with a
# message cut inside the token fails its row; transient answers and a
# closed port leave rows pending; metronome_ship() reports at debug5.
sub queue_of
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'pending') || '/' || count(*) FILTER (WHERE status = 'sent') || '/' || count(*) FILTER (WHERE status = 'failed') "
		  . "FROM metronome_outbox WHERE transaction_id LIKE '$prefix-%'");
}

sub insert { insert_outbox($node, @_); }
$mock->faults({ script => [ { status => 400, message => ('z' x 490) . $token } ] });
insert('bad', 1);
ok( $node->poll_query_until('postgres',
		"SELECT status = 'failed' FROM metronome_outbox WHERE transaction_id = 'bad-1'"),
	'worker: the refused row failed');
my $last = $node->safe_psql('postgres',
	"SELECT last_error FROM metronome_outbox WHERE transaction_id = 'bad-1'");
like($last, qr/^HTTP 400: z{490}/, "worker: the outbox's last_error quotes the message");
ok(secret_free($last), "worker: the outbox's last_error holds no piece of the token")
  or diag($last);

$mock->faults({ script => [ { status => 500, body => ('x' x 190) . $token }, { status => 503, message => ('y' x 490) . $token } ] });
insert('transient', 3);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 3 FROM metronome_outbox WHERE transaction_id LIKE 'transient-%' AND status = 'sent'"),
	'worker: sent after two transient answers quoting the token');
my $status = $node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()');
like($status, qr/^HTTP 50[03]/, 'metronome_status() keeps the last error');
ok(secret_free($status), 'metronome_status().last_error holds no piece of the token')
  or diag($status);

$mock->faults({ delay => 3 });
set_url("http://127.0.0.1:$closed/v1/ingest");
insert('closed', 2);
($ret, $out, $err) = $node->psql('postgres',
	'SET client_min_messages = debug5; CALL metronome_ship()');
ok(secret_free($out . $err), 'metronome_ship() at debug5: no piece of the token')
  or diag($err);
ok( wait_for(
		sub {
			$node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()') =~
			  /connect/i;
		}),
	'metronome_status() shows the connection error');
ok(secret_free($node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()')),
	'which holds no piece of the token');
$mock->clear_faults;
set_url($mock->url);
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM metronome_outbox WHERE status = 'pending'"),
	'everything pending is sent once the URL is right again');

###########################################################################
# 3. metronome.ca_file: trusting a private certificate authority.
###########################################################################
my $dir = PostgreSQL::Test::Utils::tempdir();

sub openssl
{
	my @cmd = ('openssl', @_);
	my ($o, $e) = ('', '');
	IPC::Run::run(\@cmd, '<', '/dev/null', '>', \$o, '2>', \$e)
	  or die "@cmd: $e";
}
for my $ca (qw(ca other_ca))
{
	openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
		'-nodes', '-keyout', "$dir/$ca.key", '-out', "$dir/$ca.pem", '-days', '2',
		'-subj', "/CN=pg_metronome test $ca");
}
openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
	'-keyout', "$dir/server.key", '-out', "$dir/server.csr", '-subj', '/CN=127.0.0.1');
append_to_file("$dir/server.ext",
	"subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n");
openssl('x509', '-req', '-in', "$dir/server.csr", '-CA', "$dir/ca.pem", '-CAkey',
	"$dir/ca.key", '-CAcreateserial', '-out', "$dir/server.pem", '-days', '2',
	'-extfile', "$dir/server.ext");

# A TLS front for the mock: decrypts and forwards each connection to it.
append_to_file("$dir/tls_proxy.py", <<'PY');
import socket, ssl, sys, threading
cert, key, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(64)
print("PORT", ls.getsockname()[1], flush=True)
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def handle(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (ssl.SSLError, OSError):
        c.close()
        return
    u = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pipe, args=(t, u), daemon=True).start()
    pipe(u, t)
while True:
    c, _ = ls.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
PY
my $proxy_out = '';
my $proxy = IPC::Run::start(
	[ 'python3', "$dir/tls_proxy.py", "$dir/server.pem", "$dir/server.key", $mock->port ],
	'<', '/dev/null', '>', \$proxy_out, '2>', "$dir/tls_proxy.log");
ok(wait_for(sub { $proxy->pump_nb; $proxy_out =~ /^PORT \d+$/m }), 'the TLS front started');
my ($tls_port) = $proxy_out =~ /^PORT (\d+)$/m;

sub set_ca_file
{
	my ($path) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET metronome.ca_file = '$path'");
	$node->reload;
	$node->poll_query_until('postgres',
		"SELECT current_setting('metronome.ca_file') = '$path'")
	  or die "ca_file not reloaded";
}

is($node->safe_psql('postgres', "SELECT setting || ' ' || context FROM pg_settings WHERE name = 'metronome.ca_file'"),
	' sighup', 'metronome.ca_file: empty by default, set by reload');
($ret, $out, $err) = as('plain', 'SHOW metronome.ca_file');
like($err, qr/must be superuser|permission denied to examine/, 'plain: metronome.ca_file is superuser-only');

set_url("https://127.0.0.1:$tls_port/v1/ingest");
check('private CA, default authorities', qr/could not connect to Metronome\nDETAIL:  .*certificate/i);
insert('tls', 5);
ok( $node->poll_query_until('postgres',
		"SELECT state = 'config error' AND last_error ~* 'certificate' FROM metronome_status()"),
	'worker: a certificate it cannot verify is a configuration error');
is(queue_of('tls'), '5/0/0', 'worker: the rows wait, none failed');

set_ca_file("$dir/other_ca.pem");
check('private CA, another CA file', qr/could not connect to Metronome\nDETAIL:  .*certificate/i);
set_ca_file("$dir/missing.pem");
check('private CA, missing CA file', qr/could not connect to Metronome\nDETAIL:  /);

set_ca_file("$dir/ca.pem");
($ret, $out, $err) = $node->psql('postgres', 'SELECT metronome_check_connection()');
is($out, 'ok', 'ca_file naming the CA: metronome_check_connection() is ok over https');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 5 FROM metronome_outbox WHERE transaction_id LIKE 'tls-%' AND status = 'sent'"),
	'worker: the rows are shipped over https once ca_file is reloaded');
is(scalar(grep { $_->{transaction_id} =~ /^tls-/ } @{ $mock->events }), 5,
	'the mock has them');
$proxy->kill_kill;

###########################################################################
# 4. The server log, from the start.
###########################################################################
$node->stop;
my $log = slurp_file($node->logfile);
my $debug = () = $log =~ /^.*DEBUG:  /mg;
cmp_ok($debug, '>', 200, "the log is at debug level ($debug DEBUG lines)");
like($log, qr/statement: ALTER SYSTEM SET metronome\.api_token/,
	'the statements setting the token were logged');
is(index($log, $head), -1, 'the server log holds no piece of the token');
for my $t (@attempted)
{
	is(index($log, substr($t, 0, 8)), -1, 'nor of a token someone tried to set');
}

done_testing();
