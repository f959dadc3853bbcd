# test/t/702_update_paths.pl: ALTER EXTENSION metronome UPDATE from every
# released version to the current one leaves the same extension as a new
# installation.
#
# The versions come from the scripts (test/lib/MetronomeVersions.pm): each
# version with a base script or an update script is installed in a database
# of its own with CREATE EXTENSION ... VERSION, used through the current
# library, updated, and its objects compared with a new installation's:
# the next release is covered by adding its update script.  What happens to
# the rows on the way is the data-level upgrade test's business.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;
use MetronomeVersions;

my $src = source_dir();
my $v = MetronomeVersions::versions($src);
my $default = $v->{default};
note("default version $default; released: @{ $v->{released} }; update scripts: "
	  . join(' ', map { "$_->[0]->$_->[1]" } @{ $v->{updates} }));

ok(scalar(grep { $_ eq '0.1.0' } @{ $v->{released} }),
	'the released versions found from the scripts include the first release, 0.1.0');

# the library preloaded (as users run it), shipping paused: no request leaves
my $node = new_node(conf => { 'metronome.enabled' => 'off' });

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION metronome');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'metronome'"),
	$default, "a new installation is version $default");
my $fresh = MetronomeVersions::schema($node, 'fresh');
ok(length($fresh) > 0, 'a new installation has member objects');

for my $from (@{ $v->{released} })
{
	(my $db = "from_$from") =~ s/[^A-Za-z0-9_]/_/g;
	$node->safe_psql('postgres', "CREATE DATABASE $db");

	is($node->safe_psql('postgres',
			"SELECT count(*) FROM pg_extension_update_paths('metronome') "
			  . "WHERE source = '$from' AND target = '$default' AND path IS NOT NULL"),
		'1', "$from: an update path leads to $default");

	my ($ret, $out, $err) = $node->psql($db, "CREATE EXTENSION metronome VERSION '$from'");
	is($ret, 0, "$from: CREATE EXTENSION metronome VERSION '$from'") or diag($err);
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'metronome'"),
		$from, "$from: installed at $from");

	# the current library serves the objects of the older version
	($ret, $out, $err) = $node->psql($db,
		"SELECT count(*) FROM metronome_map('{\"type\": \"track\", \"event\": \"x\"}'::jsonb)");
	is($ret, 0, "$from: the current library runs a function of $from") or diag($err);

	($ret, $out, $err) = $node->psql($db, 'ALTER EXTENSION metronome UPDATE');
	is($ret, 0, "$from: ALTER EXTENSION metronome UPDATE") or diag($err);
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'metronome'"),
		$default, "$from: updated to $default");

	my $updated = MetronomeVersions::schema($node, $db);
	ok($updated eq $fresh, "$from: the updated extension's objects are a new installation's")
	  or diag('first difference: ' . MetronomeVersions::first_difference($updated, $fresh));

	($ret, $out, $err) = $node->psql($db, 'ALTER EXTENSION metronome UPDATE');
	is($ret, 0, "$from: a second UPDATE is a no-op") or diag($err);
}

$node->stop;
done_testing();
