# test/lib/MetronomeVersions.pm: the versions of the extension, found from
# its files, and a description of its installed objects, for tests of
# ALTER EXTENSION metronome UPDATE from every released version.
#
# A version is "released" when a script can install it or update from it:
# metronome--V.sql (a base script) or metronome--V--W.sql (an update
# script from V), other than the control file's default_version.  So the
# next release is covered by adding its update script, nothing else.
#
#   my $v = MetronomeVersions::versions($src);
#   $v->{default}    default_version of metronome.control
#   $v->{base}       [ versions with a base script ]
#   $v->{updates}    [ [from, to], ... ] of the update scripts
#   $v->{released}   [ released versions, oldest first ]
#
#   MetronomeVersions::server_version_num($node)   e.g. 170000
#   MetronomeVersions::has_custom_wait_events($node)   17 and later
#   MetronomeVersions::restarts_crashed_bgworkers($node)   not 18beta1
#   the PostgreSQL version behind a test's expectations: the one place
#   where TAP tests ask which server they run on (src/pg_compat.h is the
#   one for C).
#
#   MetronomeVersions::schema($node, $db): one sorted line per fact about
#   the extension's member objects in $db (identity, columns and defaults,
#   indexes, constraints, triggers, policies, functions' definitions,
#   privileges, comments, dump configuration), to compare an updated
#   database with a new installation.
package MetronomeVersions;

use strict;
use warnings;

use File::Basename qw(basename);

# split a version into numbers for sorting ("0.10.0" after "0.9.1")
sub _key { return join '.', map { sprintf '%08d', $_ } ($_[0] =~ /(\d+)/g); }

sub versions
{
	my ($src) = @_;
	open(my $fh, '<', "$src/metronome.control") or die "$src/metronome.control: $!";
	my ($default) = map { /^\s*default_version\s*=\s*'([^']+)'/ ? $1 : () } <$fh>;
	close $fh;
	die "no default_version in $src/metronome.control" unless defined $default;

	my (@base, @updates);
	for my $f (map { basename($_) } glob("$src/metronome--*.sql"))
	{
		if ($f =~ /^metronome--([^-]+)--([^-]+)\.sql$/)
		{
			push @updates, [ $1, $2 ];
		}
		elsif ($f =~ /^metronome--([^-]+)\.sql$/)
		{
			push @base, $1;
		}
	}
	my %rel = map { $_ => 1 } (@base, map { $_->[0] } @updates);
	delete $rel{$default};
	return {
		default => $default,
		base => [ sort { _key($a) cmp _key($b) } @base ],
		updates => [ sort { _key($a->[0]) cmp _key($b->[0]) } @updates ],
		released => [ sort { _key($a) cmp _key($b) } keys %rel ],
	};
}

# The server's PostgreSQL version: server_version_num, server_version.
sub server_version_num { return $_[0]->safe_psql('postgres', 'SHOW server_version_num'); }
sub server_version     { return $_[0]->safe_psql('postgres', 'SHOW server_version'); }

# From 17 an extension names its own wait events (WaitEventExtensionNew);
# before, they all show as "Extension".
sub has_custom_wait_events { return server_version_num($_[0]) >= 170000; }

# PostgreSQL 18beta1 never restarts a background worker after a crash
# (bgworker.c: ResetBackgroundWorkerCrashTimes leaves rw_pid set; fixed in
# the 18 release line).
sub restarts_crashed_bgworkers { return server_version($_[0]) !~ /^18beta1\b/; }

my $SCHEMA_SQL = <<'SQL';
WITH m AS (
	SELECT classid, objid, objsubid FROM pg_depend
	WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
	  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'metronome')),
rel AS (SELECT c.* FROM m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid)
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
	SELECT 'member ' || pg_describe_object(classid, objid, objsubid) FROM m
	UNION ALL
	SELECT 'relation ' || rel.oid::regclass || ' kind ' || rel.relkind::text
		|| ' persistence ' || rel.relpersistence::text || ' rls ' || rel.relrowsecurity
		|| ' acl ' || coalesce(rel.relacl::text, 'default')
		|| ' options ' || coalesce(rel.reloptions::text, '{}') FROM rel
	UNION ALL
	SELECT 'column ' || a.attrelid::regclass || '.' || quote_ident(a.attname) || ' '
		|| format_type(a.atttypid, a.atttypmod)
		|| CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
		|| coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
		|| CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END
		|| CASE WHEN a.attgenerated <> '' THEN ' generated ' || a.attgenerated::text ELSE '' END
		|| ' acl ' || coalesce(a.attacl::text, 'default')
	FROM rel JOIN pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
	LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
	UNION ALL
	SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM rel JOIN pg_index i ON i.indrelid = rel.oid
	UNION ALL
	SELECT 'constraint ' || c.conrelid::regclass || ' ' || quote_ident(c.conname) || ' '
		|| pg_get_constraintdef(c.oid) FROM rel JOIN pg_constraint c ON c.conrelid = rel.oid
	UNION ALL
	SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text
	FROM rel JOIN pg_trigger t ON t.tgrelid = rel.oid AND NOT t.tgisinternal
	UNION ALL
	SELECT 'policy ' || p.polrelid::regclass || ' ' || quote_ident(p.polname) || ' ' || p.polcmd::text
		|| ' permissive ' || p.polpermissive || ' roles ' || p.polroles::regrole[]::text
		|| ' using ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '-')
		|| ' check ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-')
	FROM rel JOIN pg_policy p ON p.polrelid = rel.oid
	UNION ALL
	SELECT 'view ' || rel.oid::regclass || ' ' || pg_get_viewdef(rel.oid) FROM rel WHERE rel.relkind IN ('v', 'm')
	UNION ALL
	SELECT 'function ' || p.oid::regprocedure || ' acl ' || coalesce(p.proacl::text, 'default') || E'\n'
		|| CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) END
	FROM m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
	UNION ALL
	SELECT 'comment ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description
	FROM m JOIN pg_description d ON d.classoid = m.classid AND d.objoid = m.objid
	UNION ALL
	SELECT 'dump config ' || coalesce(extconfig::regclass[]::text, '{}') || ' '
		|| coalesce(extcondition::text, '{}') || ' schema ' || extnamespace::regnamespace
		|| ' relocatable ' || extrelocatable
	FROM pg_extension WHERE extname = 'metronome'
) s(line)
SQL

sub schema
{
	my ($node, $db) = @_;
	return $node->safe_psql($db, $SCHEMA_SQL);
}

# The first line where two schema descriptions differ, for diagnostics.
sub first_difference
{
	my ($a, $b) = @_;
	my @a = split /\n/, $a;
	my @b = split /\n/, $b;
	for my $i (0 .. ($#a > $#b ? $#a : $#b))
	{
		my ($x, $y) = ($a[$i] // '(nothing)', $b[$i] // '(nothing)');
		return "line $i:\n  updated: $x\n  new:     $y" if $x ne $y;
	}
	return 'none';
}

1;
