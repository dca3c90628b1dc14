package Some::Stuff;

# Loaded into the template of the manual's examples; also defines the
# function of its "args before and after fork" example.

use strict;
use warnings;

our $LOADED_IN = $$;

# All parameters passed before fork and after are passed, in order, after
# the communications socket. Reports what it got on $fh2.
sub Some::function {
    my ($fh, $str1, $str2, $fh1, $fh2, $str3, @more) = @_;

    my $line = <$fh>;    # "hi #1\n" or "hi #2\n" from the parent
    chomp $line if defined $line;
    my $ino = (stat $fh1)[1];
    my $report = join ',',
      $str1, $str2, $str3,
      (ref $fh ? 'fh' : 'not-fh'), (ref $fh1 ? 'fh' : 'not-fh'), (ref $fh2 ? 'fh' : 'not-fh'),
      $ino, scalar(@more), (defined $line ? $line : 'no line'), $LOADED_IN;
    syswrite $fh2, "$report\n";
}

1;
