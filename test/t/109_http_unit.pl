# test/t/109_http_unit.pl: unit tests of the HTTP layer (src/http.c).
#
# http.c holds no backend state, so test/unit/http_test.c links it with
# libcurl and json-c alone, under AddressSanitizer and UBSan when the
# compiler has them, and checks the pure helpers with exact values and the
# client on loopback (closed port, timeout, refused protocol, cancel).  Its
# TAP lines are passed on one by one.
use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use MetronomeTest;

my $src = source_dir();
my $bin = "$PostgreSQL::Test::Utils::tmp_check/http_test";
my $flags = `pkg-config --cflags --libs libcurl json-c`;
chomp $flags;
my $cc = $ENV{CC} // 'cc';
my $base = "$cc -std=gnu99 -Wall -Wextra -Werror -g -I$src/src -I$src/test/unit $src/test/unit/http_test.c $src/src/http.c $flags -lm -pthread -o $bin";

# with sanitizers if they link, else without
my $built = system("$base -fsanitize=address,undefined -fno-sanitize-recover=undefined 2>/dev/null") == 0;
$built = system($base) == 0 unless $built;
ok($built, 'test/unit/http_test.c builds against src/http.c alone');

my ($stdout, $stderr) = run_command([$bin]);
my $seen = 0;
for my $line (split /\n/, $stdout)
{
	if ($line =~ /^(not ok|ok) \d+ - (.*)$/)
	{
		ok($1 eq 'ok', "http.c: $2");
		$seen++;
	}
	elsif ($line =~ /^#/)
	{
		diag($line);
	}
}
cmp_ok($seen, '>', 50, "the unit test ran ($seen assertions)");
is($stderr, '', 'no sanitizer report');

done_testing();
