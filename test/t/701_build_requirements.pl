# test/t/701_build_requirements.pl: the build refuses libraries older than
# the code needs, with a message that names the library and the versions.
#
# The Makefile asks pkg-config (PKG_CONFIG) for libcurl >= 7.85.0 and
# json-c >= 0.15 before compiling anything.  Here PKG_CONFIG is a stand-in
# that reports chosen versions (and passes every other question to the real
# pkg-config); `make -n` then shows whether the build would start.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;

my $src = source_dir();
my $dir = PostgreSQL::Test::Utils::tempdir();
my $real = `sh -c 'command -v pkg-config'`;
chomp $real;

# fake_pkg_config CURL JSONC: a pkg-config reporting these versions
sub fake_pkg_config
{
	my ($curl, $jsonc) = @_;
	my $path = "$dir/pkg-config-$curl-$jsonc";
	open(my $fh, '>', $path) or die "$path: $!";
	print $fh <<"SH";
#!/bin/sh
ver() { case "\$1" in libcurl) echo $curl ;; json-c) echo $jsonc ;; *) $real --modversion "\$1" ;; esac; }
case "\$1" in
--modversion) ver "\$2" ;;
--atleast-version=*)
	want=\${1#--atleast-version=}; have=\$(ver "\$2")
	[ "\$(printf '%s\\n%s\\n' "\$want" "\$have" | sort -V | head -n1)" = "\$want" ] ;;
*) exec $real "\$@" ;;
esac
SH
	close $fh;
	chmod 0755, $path;
	return $path;
}

# make_n CURL JSONC: (exit status, stdout and stderr) of make -n with them
sub make_n
{
	my ($curl, $jsonc) = @_;
	my $pc = fake_pkg_config($curl, $jsonc);
	my ($out, $err) = run_command(
		[ 'make', '-n', '-B', '-C', $src, "PKG_CONFIG=$pc", "PG_CONFIG=$ENV{PG_CONFIG}" ]);
	my $ok = ($err !~ /\*\*\*/);
	return ($ok, "$out$err");
}

my ($ok, $out) = make_n('7.88.1', '0.16');
ok($ok, 'libcurl 7.88.1 and json-c 0.16: the build starts') or diag($out);
like($out, qr/metronome\.so/, 'libcurl 7.88.1 and json-c 0.16: it would link metronome.so');

($ok, $out) = make_n('7.85.0', '0.15');
ok($ok, 'the minimum versions (7.85.0, 0.15) are accepted') or diag($out);

($ok, $out) = make_n('7.81.0', '0.16');
ok(!$ok, 'libcurl 7.81.0 (Ubuntu 22.04): the build stops');
like($out, qr/libcurl 7\.85\.0 or later is needed, found 7\.81\.0/,
	'libcurl 7.81.0: the message names the library and both versions');

($ok, $out) = make_n('7.88.1', '0.14');
ok(!$ok, 'json-c 0.14 (Ubuntu 20.04): the build stops');
like($out, qr/json-c 0\.15 or later is needed, found 0\.14/,
	'json-c 0.14: the message names the library and both versions');

($ok, $out) = make_n('7.88.1', '0.13.1');
ok(!$ok, 'json-c 0.13.1 (RHEL 9): the build stops');

# clean and dist never need the libraries
my $pc = fake_pkg_config('7.0.0', '0.10');
my ($cout, $cerr) = run_command([ 'make', '-n', '-C', $src, "PKG_CONFIG=$pc", 'clean' ]);
unlike("$cout$cerr", qr/\*\*\*/, 'make clean works whatever the libraries');

done_testing();
