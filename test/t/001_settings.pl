# test/t/001_settings.pl: the metronome.* settings with the library preloaded.
#
# The API token is a secret: set through ALTER SYSTEM and a reload, a
# superuser sees it, a plain role cannot read it at all, a member of
# pg_read_all_settings sees only "********", and it never reaches the server
# log, even at log_min_messages = debug5 while it changes.  An ingest_url
# that is not http(s) is refused.  No mock is needed: nothing is shipped (the
# extension is not created and the URL points at a closed local port).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::MD5 qw(md5_hex);
use MetronomeTest;

my $node = new_node(token => '');

# lines_with($text, $needle): the lines of $text that hold $needle
sub lines_with
{
	my ($text, $needle) = @_;
	return grep { index($_, $needle) >= 0 } split /\n/, $text;
}

# metronome.database is a postmaster setting when preloaded.
is( $node->safe_psql(
		'postgres',
		"SELECT setting || ' ' || context FROM pg_settings WHERE name = 'metronome.database'"),
	'postgres postmaster',
	'metronome.database defaults to postgres and needs a restart');
my ($ret, $out, $err) =
  $node->psql('postgres', "SET metronome.database = 'other'");
like($err, qr/cannot be changed without restarting the server/,
	'SET metronome.database is refused');

# A token nobody else would print, so that finding it in the log means a leak.
my $token = sprintf('mtk_%08x%08x%08x', rand(2**32), rand(2**32), rand(2**32));

# Set it through ALTER SYSTEM with the most verbose logging, and reload.
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER SYSTEM SET log_min_messages = debug5');
$node->reload;
$node->safe_psql('postgres',
	"ALTER SYSTEM SET metronome.api_token = '$token'");
$node->reload;
# (the token itself appears in no statement but the ALTER SYSTEM: the
# cluster logs every statement, log_statement = all)
my $token_md5 = md5_hex($token);
ok( $node->poll_query_until(
		'postgres',
		"SELECT md5(current_setting('metronome.api_token')) = '$token_md5'"),
	'the reloaded token reaches new sessions');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET log_min_messages');
$node->reload;

# A superuser sees it everywhere.
is($node->safe_psql('postgres', 'SHOW metronome.api_token'),
	$token, 'superuser: SHOW shows the token');
is( $node->safe_psql(
		'postgres',
		"SELECT setting FROM pg_settings WHERE name = 'metronome.api_token'"),
	$token,
	'superuser: pg_settings shows the token');

$node->safe_psql(
	'postgres', q{
	CREATE ROLE plain LOGIN;
	CREATE ROLE reader LOGIN IN ROLE pg_read_all_settings;
});

# A plain role cannot read it by any means.
($ret, $out, $err) =
  $node->psql('postgres', 'SHOW metronome.api_token', extra_params => [ '-U', 'plain' ]);
isnt($ret, 0, 'plain role: SHOW fails');
# (PostgreSQL 16 words it "permission denied to examine", with a DETAIL)
like($err, qr/must be superuser or have privileges of pg_read_all_settings|permission denied to examine "metronome.api_token"/,
	'plain role: SHOW says why');
($ret, $out, $err) = $node->psql(
	'postgres',
	"SELECT current_setting('metronome.api_token')",
	extra_params => [ '-U', 'plain' ]);
isnt($ret, 0, 'plain role: current_setting() fails');
unlike($out . $err, qr/\Q$token\E/, 'plain role: the error does not quote the token');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_settings WHERE name = 'metronome.api_token'",
		extra_params => [ '-U', 'plain' ]),
	'0',
	'plain role: no pg_settings row');
my $all = $node->safe_psql('postgres', 'SHOW ALL', extra_params => [ '-U', 'plain' ]);
unlike($all, qr/\Q$token\E/, 'plain role: SHOW ALL does not hold the token');

# A member of pg_read_all_settings sees it masked, in every column.
is($node->safe_psql('postgres', 'SHOW metronome.api_token', extra_params => [ '-U', 'reader' ]),
	'********', 'pg_read_all_settings: SHOW masks the token');
is( $node->safe_psql(
		'postgres',
		"SELECT current_setting('metronome.api_token')",
		extra_params => [ '-U', 'reader' ]),
	'********',
	'pg_read_all_settings: current_setting() masks the token');
my $row = $node->safe_psql(
	'postgres',
	"SELECT row_to_json(s) FROM pg_settings s WHERE name = 'metronome.api_token'",
	extra_params => [ '-U', 'reader' ]);
unlike($row, qr/\Q$token\E/,
	'pg_read_all_settings: no column of pg_settings holds the token');
$all = $node->safe_psql('postgres', 'SHOW ALL', extra_params => [ '-U', 'reader' ]);
unlike($all, qr/\Q$token\E/, 'pg_read_all_settings: SHOW ALL does not hold the token');

# A refused token (control character) is not quoted by the error, nor
# logged with the failing statement.
my $bad = sprintf('mtk_bad_%08x%08x', rand(2**32), rand(2**32));
($ret, $out, $err) = $node->psql('postgres',
	"ALTER SYSTEM SET metronome.api_token = E'$bad\\x01'");
isnt($ret, 0, 'a token with a control character is refused');
like($err, qr/must not contain control characters/, 'the error says why');
unlike($err, qr/\Q$bad\E/, 'the error does not quote the refused token');
is($node->safe_psql('postgres', "SELECT md5(current_setting('metronome.api_token'))"),
	$token_md5, 'the previous token stays in force');

# The log: the ALTER SYSTEM statement was logged (log_statement = all), so
# there was something to leak ...
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/statement: ALTER SYSTEM SET metronome\.api_token/,
	'the statement setting the token was logged');
# ... and the token itself never was.
is_deeply([ lines_with($log, $token) ],
	[], 'the server log never holds the token');
is_deeply([ lines_with($log, $bad) ],
	[], 'nor the refused one');

# ingest_url: http and https only, through ALTER SYSTEM and the config file.
($ret, $out, $err) = $node->psql('postgres',
	"ALTER SYSTEM SET metronome.ingest_url = 'ftp://127.0.0.1/v1/ingest'");
isnt($ret, 0, 'ALTER SYSTEM refuses an ftp:// ingest_url');
like($err, qr/metronome\.ingest_url must start with http:\/\/ or https:\/\//,
	'the error says what is accepted');
my $url_before = $node->safe_psql('postgres', 'SHOW metronome.ingest_url');
$log_offset = -s $node->logfile;
$node->append_conf('postgresql.conf',
	"metronome.ingest_url = 'ftp://127.0.0.1/v1/ingest'\n");
$node->reload;
ok( wait_for(
		sub {
			slurp_file($node->logfile, $log_offset) =~ /metronome\.ingest_url/;
		}),
	'a bad ingest_url in the configuration file is reported in the log');
is($node->safe_psql('postgres', 'SHOW metronome.ingest_url'),
	$url_before, 'and the previous ingest_url stays in force');

# ingest_url is superuser-only too.
($ret, $out, $err) =
  $node->psql('postgres', 'SHOW metronome.ingest_url', extra_params => [ '-U', 'plain' ]);
isnt($ret, 0, 'plain role: SHOW metronome.ingest_url fails');

$node->stop;
# The whole log, from the start, once more.
is_deeply([ lines_with(slurp_file($node->logfile), $token) ],
	[], 'the token is nowhere in the server log');

done_testing();
