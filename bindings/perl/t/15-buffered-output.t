# Issue 19 item 11 and the checklist's "buffered output at fork": output
# Perl had buffered when a template forks is written once, as with Perl's
# own fork (which flushes every handle first), not once per child.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use TestUtil;

my $lib = "$FindBin::Bin/../lib";

# An eval's print with no newline in a Perl template, then n children.
for my $n (0, 4) {
    my $code = 'use AnyFork; my $t = AnyFork->new->eval(q{print "HELLO"});'
      . " \$t->fork->run('CORE::exit', sub {}) for 1 .. $n;"
      . ' AnyFork::wait(20); undef $t; AnyFork::wait(20);';
    my $out = `$^X -I$lib -e '$code'`;
    # The template exits when we do: give it a moment to write.
    is $out, 'HELLO', "an eval's buffered print in the template, $n children: written once";
}

# The program's own handles when it forks itself as a template: a file
# with buffered lines, written to by no one afterwards.
my $tmp = tmpdir();
my $prog = <<'PERL';
open my $log, '>', $ARGV[0] or die "$ARGV[0]: $!";
print $log "before the template\n";
our $LOG = $log;
sub child { exit 0 }
require AnyFork::Template;
$AnyFork::Template::TEMPLATE->fork->run('child', sub {}) for 1 .. 3;
AnyFork::wait(20);
PERL
system $^X, "-I$lib", '-e', $prog, "$tmp/log";
is slurp("$tmp/log"), "before the template\n", 'a file buffered before the template: written once, not by every child';

done_testing;
