package My::Server;

# The manual's pool worker: every process accepts on the same listening
# socket. It answers "<id> <pid> <line>" per connection, and exits after a
# connection says "quit".

use strict;
use warnings;

sub run {
    my ($slave, $listener, $id) = @_;

    syswrite $slave, "ready $id $$\n";
    close $slave;    # we do not use the socket any more

    while (my $socket = $listener->accept) {
        my $line = <$socket>;
        last unless defined $line;
        chomp $line;
        print $socket "$id $$ $line\n";
        close $socket;
        last if $line eq 'quit';
    }
}

1;
