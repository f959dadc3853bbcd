# test/conformance/ours.pl: run the corpus through pg_metronome and record
# what it does with each case.
#
#   perl ours.pl CASES.sql OUT.json
#
# (test/run.sh runs it as the TAP tests run, with PERL5LIB, PG_REGRESS,
# TESTDIR and METRONOME_SRC set.)  CASES.sql is `node corpus.js --sql`: one
# conf_case(id, subscription, mapping, event) call per case.  A server with
# the library preloaded ships to the mock Metronome (test/mock_metronome.py).
# For each case, conf_case() disables the previous case's mapping row,
# inserts the case's row into metronome_mappings (an invalid subscription
# or mapping is refused there: "insert_error"), previews the event with
# metronome_map() ("preview") and inserts it into segment_events, whose
# trigger writes metronome_outbox or metronome_rejected ("outbox",
# "rejected", by mapping name).  Then the worker ships the outbox, and the
# bodies the mock received are kept as text ("bodies").  OUT.json holds
# {"cases": {id: {...}}, "bodies": [...]}; compare.js reads it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use MetronomeTest;

my ($cases_sql, $out) = @ARGV;
die "usage: perl ours.pl CASES.sql OUT.json\n" unless $cases_sql && $out;

my $mock = start_mock(token => 'tok-conformance');
my $node = new_node(
	mock => $mock,
	extension => 1,
	conf => { 'metronome.poll_interval' => '100ms', 'timezone' => 'UTC' });

$node->safe_psql(
	'postgres', q{
CREATE TABLE conf_result (
	id text PRIMARY KEY,
	insert_error text,
	trigger_error text,
	preview jsonb);

CREATE FUNCTION conf_case(cid text, sub text, m jsonb, ev jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	pv jsonb;
BEGIN
	UPDATE metronome_mappings SET enabled = false WHERE enabled;
	BEGIN
		INSERT INTO metronome_mappings (name, subscription, transaction_id,
				customer_id, "timestamp", event_type, properties)
		VALUES (cid, sub, m->'transaction_id', m->'customer_id',
				m->'timestamp', m->'event_type', m->'properties');
	EXCEPTION WHEN others THEN
		INSERT INTO conf_result (id, insert_error) VALUES (cid, SQLERRM);
		RETURN;
	END;
	SELECT jsonb_agg(jsonb_build_object(
			'mapping', p.mapping, 'transaction_id', p.transaction_id,
			'customer_id', p.customer_id,
			'timestamp', to_char(p."timestamp" AT TIME ZONE 'UTC',
								 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
			'event_type', p.event_type, 'properties', p.properties,
			'error', p.error))
	  INTO pv FROM metronome_map(ev) p;
	INSERT INTO conf_result (id, preview) VALUES (cid, pv);
	BEGIN
		INSERT INTO segment_events (event) VALUES (ev);
	EXCEPTION WHEN others THEN
		UPDATE conf_result SET trigger_error = SQLERRM WHERE id = cid;
	END;
END $$;
});

my $t0 = time();
my ($rc, $stdout, $stderr) = $node->psql('postgres', undef,
	extra_params => [ '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $cases_sql ]);
is($rc, 0, 'every case ran') or diag($stderr);
note(sprintf('our side: the corpus mapped in %.1f s', time() - $t0));

# ship: every outbox row is sent or failed (the mock refuses what Metronome would)
my $n = $node->safe_psql('postgres', 'SELECT count(*) FROM metronome_outbox');
ok( wait_for(
		sub {
			$node->safe_psql('postgres',
				"SELECT count(*) FROM metronome_outbox WHERE status = 'pending'") == 0;
		},
		60),
	"the worker shipped the $n outbox rows");

my $json = $node->safe_psql(
	'postgres', q{
SELECT jsonb_build_object('cases', coalesce(jsonb_object_agg(r.id, jsonb_build_object(
		'insert_error', r.insert_error,
		'trigger_error', r.trigger_error,
		'preview', r.preview,
		'outbox', (SELECT jsonb_agg(jsonb_build_object(
				'transaction_id', o.transaction_id, 'customer_id', o.customer_id,
				'timestamp', to_char(o."timestamp" AT TIME ZONE 'UTC',
									 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
				'event_type', o.event_type, 'properties', o.properties,
				'status', o.status, 'last_error', o.last_error))
			FROM metronome_outbox o WHERE o.mapping = r.id),
		'rejected', (SELECT jsonb_agg(j.error) FROM metronome_rejected j
			WHERE j.mapping = r.id))), '{}'))
FROM conf_result r});

my @bodies = map { $_->{body} } grep { ($_->{status} // 0) == 200 } @{ $mock->requests };
ok(scalar(@bodies) > 0, 'the mock received the bodies');

# splice the bodies (JSON strings) into the object text, keeping its digits
$json =~ s/\}\s*$//;
$json .= ', "bodies": ' . JSON::PP->new->ascii->encode(\@bodies) . '}';
open(my $fh, '>', $out) or die "cannot write $out: $!";
print $fh $json, "\n";
close($fh);
ok(-s $out, "results written to $out");

done_testing();
