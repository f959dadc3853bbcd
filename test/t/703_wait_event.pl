# test/t/703_wait_event.pl: what pg_stat_activity shows while the launcher
# and the delivery worker sleep: from PostgreSQL 17 the extension's own
# wait event MetronomeIdle (src/pg_compat.h, PgCompatWaitEvent), before it
# the generic "Extension".
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;
use MetronomeVersions;

my $node = new_node(extension => 1);
my $num = MetronomeVersions::server_version_num($node);
my $want = MetronomeVersions::has_custom_wait_events($node) ? 'MetronomeIdle' : 'Extension';

for my $type ('metronome launcher', 'metronome delivery')
{
	my $got;
	ok( wait_for(
			sub {
				$got = $node->safe_psql('postgres',
					"SELECT wait_event_type || '/' || wait_event FROM pg_stat_activity "
					  . "WHERE backend_type = '$type'");
				return $got eq "Extension/$want";
			},
			30),
		"$type: sleeps with wait event Extension/$want (server $num)")
	  or diag("got '$got'");
}

$node->stop;
done_testing();
