# test/lib/CitusCluster.pm: a local Citus cluster for pg_metronome's TAP tests.
#
#   use CitusCluster;
#
#   CitusCluster::skip_unless_available();          # skip_all when no Citus
#   my $mock = start_mock(token => 'tok-1');
#   my $c = CitusCluster->new(mock => $mock);       # coordinator + 2 workers
#   $c->coordinator->safe_psql('postgres', "SELECT ...");
#   for my $w ($c->workers) { ... }
#   $c->teardown;                                   # also done at exit
#
# Each node is a PostgreSQL::Test::Cluster node (made by MetronomeTest's
# new_node, so the metronome.* settings point at the mock) on its own port,
# with shared_preload_libraries = 'citus,metronome', listening on 127.0.0.1
# with trust authentication for the other nodes.  new() creates the citus
# extension on every node, makes the first node the coordinator
# (citus_set_coordinator_host) and adds the others with citus_add_node;
# with metronome => 1 (the default) it then runs CREATE EXTENSION metronome on
# the coordinator (Citus propagates it to the workers) and
# metronome_citus_setup().
#
# Citus is not packaged by Debian: test/build-citus.sh builds and installs it
# into the server that pg_config names.  available() says whether the
# server first in PATH (test/run.sh's private copy) has it.
package CitusCluster;

use strict;
use warnings;

use Carp;
use MetronomeTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More ();

# available(): true when the server in PATH has the citus extension.
sub available
{
	my $share = `pg_config --sharedir 2>/dev/null`;
	chomp $share;
	return $share ne '' && -f "$share/extension/citus.control";
}

# skip_unless_available(): plan skip_all, saying why, without Citus.
sub skip_unless_available
{
	return if available();
	Test::More::plan(skip_all =>
		  'Citus is not installed in this server: build it with test/build-citus.sh TARBALL [PATCH...]');
}

# new(%opts): start and wire up the cluster.
#   workers   => number of worker nodes (default 2)
#   mock      => a MetronomeTest::Mock every node ships to
#   conf      => hashref of more settings for every node
#   metronome => 0 to leave the metronome extension uncreated (default 1)
sub new
{
	my ($class, %opts) = @_;
	my $nworkers = $opts{workers} // 2;
	my %conf = (
		'citus.enable_unsafe_triggers' => 'on',
		'citus.shard_count' => '8',
		'max_prepared_transactions' => '50',
		'wal_level' => 'logical',
		'max_wal_senders' => '10',
		'max_replication_slots' => '10',
		'metronome.poll_interval' => '200ms',
		%{ $opts{conf} // {} });
	my @nodes;
	for my $i (0 .. $nworkers)
	{
		my $name = $i == 0 ? 'coordinator' : "worker$i";
		my $node = new_node(
			name => $name,
			preload => 0,
			start => 0,
			($opts{mock} ? (mock => $opts{mock}) : ()),
			conf => \%conf);
		$node->append_conf('postgresql.conf',
			"shared_preload_libraries = 'citus,metronome'\n"
			  . "listen_addresses = '127.0.0.1'\n");
		$node->append_conf('pg_hba.conf',
			"host all all 127.0.0.1/32 trust\n");
		$node->start;
		$node->safe_psql('postgres', 'CREATE EXTENSION citus');
		push @nodes, $node;
	}
	my $self = bless { nodes => \@nodes }, $class;
	my $coord = $nodes[0];
	$coord->safe_psql('postgres',
		"SELECT citus_set_coordinator_host('127.0.0.1', " . $coord->port . ')');
	for my $w (@nodes[ 1 .. $#nodes ])
	{
		$coord->safe_psql('postgres',
			"SELECT citus_add_node('127.0.0.1', " . $w->port . ')');
	}
	if (!defined $opts{metronome} || $opts{metronome})
	{
		$coord->safe_psql('postgres', 'CREATE EXTENSION metronome');
		$coord->safe_psql('postgres', 'SELECT metronome_citus_setup()');
	}
	Test::More::note('Citus cluster: coordinator on port ' . $coord->port
		  . ', workers on ' . join(', ', map { $_->port } $self->workers));
	return $self;
}

# The coordinator, the workers, all nodes (coordinator first).
sub coordinator { return $_[0]{nodes}[0]; }
sub workers { my $n = $_[0]{nodes}; return @{$n}[ 1 .. $#$n ]; }
sub nodes { return @{ $_[0]{nodes} }; }

# node_by_port($port): the node listening on that port.
sub node_by_port
{
	my ($self, $port) = @_;
	for my $n ($self->nodes)
	{
		return $n if $n->port == $port;
	}
	croak "no node on port $port";
}

# sum_workers($sql): the sum over the workers of a query returning a number.
sub sum_workers
{
	my ($self, $sql) = @_;
	my $sum = 0;
	$sum += $_->safe_psql('postgres', $sql) for $self->workers;
	return $sum;
}

# teardown(): stop every node (fast mode); their data directories go with
# the test's temporary files.
sub teardown
{
	my ($self) = @_;
	for my $n (reverse $self->nodes)
	{
		$n->stop('fast', fail_ok => 1) if defined $n->{_pid};
	}
	return;
}

1;
