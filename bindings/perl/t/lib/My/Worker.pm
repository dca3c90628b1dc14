package My::Worker;

# The manual's single worker: answers every line on the comm socket until
# EOF, then returns (and the process exits).

use strict;
use warnings;

sub worker {
    my ($slave_filehandle, @args) = @_;
    print $slave_filehandle "worker $$ ready (@args)\n";
    while (my $line = <$slave_filehandle>) {
        chomp $line;
        print $slave_filehandle "echo: $line\n";
    }
}

1;
