#!/usr/bin/perl
# test/lib/tap_run.pl: run TAP test files and count their assertions.
#
#   perl test/lib/tap_run.pl [-v] t/001_x.pl t/002_y.pl ...
#
# Runs the files one after the other with TAP::Harness (what prove uses),
# prints the usual per-file report, then one machine-readable line:
#
#   TAP-SUMMARY passed=P failed=F skipped=S files_failed=a.pl,b.pl
#
# passed counts assertions that passed (todo ones included), failed counts
# failed assertions plus one for each file that failed without a failed
# assertion (died, wrong plan, non-zero exit, skip_all), skipped counts
# skipped assertions and skip_all files.  Skipped tests are a failure of
# the run for test/run.sh: a test that cannot run must say so loudly.
# Exit status: 0 when everything passed and nothing was skipped.
use strict;
use warnings;
use TAP::Harness;

my $verbose = 0;
if (@ARGV && $ARGV[0] eq '-v')
{
	$verbose = 1;
	shift @ARGV;
}
my @files = @ARGV;

my $harness = TAP::Harness->new(
	{
		verbosity => $verbose ? 1 : 0,
		lib => [],
		color => 0,
		timer => 1,
	});
my $agg = $harness->runtests(@files);

my ($passed, $failed, $skipped) = (0, 0, 0);
my @bad;
for my $file ($agg->descriptions)
{
	my ($parser) = $agg->parsers($file);
	my $p = scalar($parser->passed) - scalar($parser->skipped);
	my $f = scalar $parser->failed;
	my $s = scalar $parser->skipped;
	$passed += $p;
	$failed += $f;
	$skipped += $s;
	my $file_bad = $parser->has_problems || $parser->exit || $parser->wait;
	if ($parser->skip_all)
	{
		$skipped++;
		$file_bad = 1;
		print "# $file: skipped entirely: ", $parser->skip_all, "\n";
	}
	elsif ($s)
	{
		$file_bad = 1;
		print "# $file: $s assertion(s) skipped\n";
	}
	if ($file_bad)
	{
		push @bad, $file;
		$failed++ if $f == 0 && !$parser->skip_all && !$s;
	}
}
print "TAP-SUMMARY passed=$passed failed=", $failed + $skipped,
  " skipped=$skipped files_failed=", join(',', @bad), "\n";
exit((@bad || $failed || $skipped) ? 1 : 0);
