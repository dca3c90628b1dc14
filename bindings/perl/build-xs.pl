#!/usr/bin/perl
# Builds AnyFork::XS (lib/AnyFork/XS.xs) into a directory of its own,
# without MakeMaker, for running AnyFork from the source tree:
#
#   perl bindings/perl/build-xs.pl target/perl-xs
#   perl -I target/perl-xs -I bindings/perl/lib program.pl
#
# The directory gets AnyFork/XS.pm and auto/AnyFork/XS/XS.so, so it must
# come before bindings/perl/lib on @INC. `perl Makefile.PL && make` builds
# the same module the CPAN way. Needs a C compiler and perl's headers
# (Debian: libperl-dev); dies saying which step failed.

use strict;
use warnings;

use Config;
use File::Basename qw(dirname);
use File::Copy qw(copy);
use File::Path qw(make_path);
use File::Spec;
use ExtUtils::ParseXS;

my $out = shift or die "usage: $0 OUTDIR\n";
my $here = File::Spec->rel2abs(dirname(__FILE__));
my $xs   = "$here/lib/AnyFork/XS.xs";
my $pm   = "$here/lib/AnyFork/XS.pm";
my $inc  = File::Spec->rel2abs("$here/../../include");
my $core = "$Config{archlibexp}/CORE";
-f "$core/perl.h" or die "$0: $core/perl.h is missing: install perl's headers (Debian: libperl-dev)\n";
-f "$inc/anyfork.h" or die "$0: $inc/anyfork.h is missing\n";

my ($version) = do { open my $f, '<', $pm or die "$0: $pm: $!\n"; join('', <$f>) =~ /\$VERSION = '([^']+)'/ }
  or die "$0: no \$VERSION in $pm\n";

make_path("$out/AnyFork", "$out/auto/AnyFork/XS");
my $c = "$out/auto/AnyFork/XS/XS.c";
my $o = "$out/auto/AnyFork/XS/XS.o";
my $so = "$out/auto/AnyFork/XS/XS.$Config{dlext}";

ExtUtils::ParseXS->new->process_file(filename => $xs, output => $c, prototypes => 0)
  or die "$0: xsubpp failed on $xs\n";
die "$0: xsubpp reported errors on $xs\n" if ExtUtils::ParseXS::report_error_count();

sub run {
    my @cmd = map { split ' ' } grep { defined && length } @_;
    system(@cmd) == 0 or die "$0: failed: @cmd\n";
}

run($Config{cc}, '-c', $Config{ccflags}, $Config{optimize}, $Config{cccdlflags},
    "-I$core", "-I$inc", '-Wall', qq{-DVERSION="$version"}, qq{-DXS_VERSION="$version"},
    '-o', $o, $c);
run($Config{ld}, $Config{lddlflags}, '-o', $so, $o);
copy($pm, "$out/AnyFork/XS.pm") or die "$0: copying $pm: $!\n";
print "$so\n";
