# test/t/116_blanket_400.pl: a proxy or firewall that answers 400 to every
# request is a configuration error, not a batch of bad events.
#
# Bisection of a refused batch would otherwise fail every row.  Two signs
# tell a blanket refusal from a bad event: the 400 does not have
# Metronome's {"message": ...} body (an HTML page), or both halves of a
# refused batch are refused with the very answer the whole got.  Either
# way no row is failed, the worker pauses in "config error" with the
# reason in metronome_status(), metronome_check_connection() reports the
# problem instead of "ok", and once the answers are Metronome's again every
# row is sent.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;

my $mock = start_mock();
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => { 'metronome.max_backoff' => '1s' });

sub queue { return outbox_counts($node, @_); }

sub insert { insert_outbox($node, @_); }

# 1. 400 with an HTML body, to every request.
$mock->faults({ script => [ map { { status => 400, body => '<html>Request blocked by policy</html>' } } 1 .. 200 ] });
my ($ret, $out, $err) = $node->psql('postgres', 'SELECT metronome_check_connection()');
like($err, qr/does not answer as Metronome's ingest endpoint/,
	'metronome_check_connection(): a 400 that is not Metronome\'s is not "ok"');
insert('html', 200);
ok( wait_for(sub { $node->safe_psql('postgres', 'SELECT state FROM metronome_status()') eq 'config error' }, 20),
	'the worker pauses in "config error"');
like($node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()'),
	qr/not Metronome's .*Request blocked/, 'metronome_status() says why');
sleep(2);
is(queue('html'), '200/0/0', 'no row is failed: all still pending');

# 2. 400 with Metronome's shape, the same answer to every request.
$mock->faults({ script => [ map { { status => 400, message => 'Bad Request' } } 1 .. 200 ] });
$node->safe_psql('postgres', "UPDATE metronome_outbox_state SET next_attempt_at = now()");
insert('shaped', 100);
ok( wait_for(sub { $node->safe_psql('postgres', 'SELECT last_error FROM metronome_status()') =~ /both halves/ }, 20),
	'both halves refused alike: taken as a blanket refusal');
is($node->safe_psql('postgres', 'SELECT state FROM metronome_status()'), 'config error',
	'the worker is in "config error"');
is(queue('shaped'), '100/0/0', 'no row is failed');

# 3. Metronome answers again: every row is sent.
$mock->clear_faults;
ok(wait_for(sub { queue('html') eq '0/200/0' && queue('shaped') eq '0/100/0' }, 30),
	'then every row is sent');
is($node->safe_psql('postgres', 'SELECT metronome_check_connection()'), 'ok',
	'metronome_check_connection() is ok again');

$node->stop;
done_testing();
