# test/t/302_pg_cron.pl: shipping from the real pg_cron, pg_metronome not
# preloaded.
#
# Debian's postgresql-15-cron is preloaded instead; the job is exactly the
# recipe of README's "Operating" section: cron.schedule runs the session
# shipping path every minute (pg_cron 1.4 schedules by the minute, so the
# test waits up to about a minute and a half for the first run), and the
# events reach Metronome (the mock).  The job's run is recorded as
# succeeded in cron.job_run_details.
#
# On a server without pg_cron (one built from source: Debian packages it for
# its own 15 only) the pg_cron part is SKIPPED, loudly
# (MetronomeTest::have_extension), never on Debian's server; the job's
# command is then run from a session instead, the rest of the test as is.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(mock => $mock, preload => 0, start => 0);
my $cron = have_extension($node, 'pg_cron',
	'the job scheduled by pg_cron (its command is run from a session instead)');
if ($cron)
{
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n"
		  # pg_cron connects to the server to run a job: through the socket directory
		  . 'cron.host = ' . conf_quote($node->host) . "\n");
}
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron') if $cron;
$node->safe_psql('postgres', 'CREATE EXTENSION metronome');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type ~ 'metronome'"),
	'0', 'pg_metronome is not preloaded: no worker');
note('pg_cron ' . $node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"))
  if $cron;

$node->safe_psql('postgres', q{
	INSERT INTO metronome_mappings (name) VALUES ('tracks');
	INSERT INTO segment_events (event)
	SELECT jsonb_build_object('type', 'track', 'event', 'API Call', 'messageId', 'cron-' || g,
	                          'timestamp', to_json(now())#>>'{}', 'context', '{"groupId": "acme"}'::jsonb,
	                          'properties', jsonb_build_object('n', g))
	  FROM generate_series(1, 5) g;
});
is($node->safe_psql('postgres', "SELECT count(*) FROM metronome_outbox WHERE status = 'pending'"),
	'5', 'five events pending');

# The recipe: CALL metronome_ship() (SELECT metronome_ship() where it is
# still the function of 0.1).
my $kind = $node->safe_psql('postgres',
	"SELECT prokind FROM pg_proc WHERE proname = 'metronome_ship'");
my $command = $kind eq 'p' ? 'CALL metronome_ship()' : 'SELECT metronome_ship()';
note("job: $command");
my $jobid;
if ($cron)
{
	$jobid = $node->safe_psql('postgres',
		"SELECT cron.schedule('metronome-ship', '* * * * *', '$command')");
	like($jobid, qr/^\d+$/, 'cron.schedule created the job');

	ok(wait_for(sub { $mock->stats->{unique_events} == 5 }, 90, 0.5),
		'the job shipped the events within a minute and a half');
}
else
{
	$node->safe_psql('postgres', $command);
	is($mock->stats->{unique_events}, 5, "the job's command, from a session, shipped the events");
}
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				"SELECT count(*) FROM metronome_outbox WHERE status = 'sent'") eq '5';
		},
		30),
	'the outbox rows are sent');
if ($cron)
{
	ok( wait_for(
			sub {
				$node->safe_psql('postgres',
					"SELECT count(*) FROM cron.job_run_details WHERE jobid = $jobid AND status = 'succeeded'") ne '0';
			},
			30),
		'cron.job_run_details records a succeeded run');
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM cron.job_run_details WHERE jobid = $jobid AND status = 'failed'"),
		'0', 'and no failed one');
}
is_deeply([ sort map { $_->{transaction_id} } @{ $mock->events } ],
	[ map { "cron-$_" } 1 .. 5 ], 'Metronome has exactly those events');

$node->safe_psql('postgres', "SELECT cron.unschedule('metronome-ship')") if $cron;
$node->stop;
done_testing();
