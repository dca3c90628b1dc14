# Issue 19 item 9 and the checklist's "die in a callback with others
# due": every callback that was due runs exactly once even when one of
# them dies, and the exception still comes out. AnyEvent's pure-Perl loop
# is used so that an exception from a watcher leaves $cv->recv (with EV
# it is printed as a warning instead); the callbacks still due are run by
# a zero-second timer on the next loop turn.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
BEGIN {
    $ENV{PERL_ANYEVENT_MODEL} = 'Perl';
    eval { require AnyEvent; 1 }
      or plan skip_all => 'AnyEvent is not installed (Debian: libanyevent-perl)';
}
use AnyEvent;
use AnyFork;
use TestUtil;

# Three processes whose run callbacks become due in one dispatch (the
# template answered them all before the loop looks); the second dies.
sub start_three {
    my ($ran, $cv) = @_;
    my $t = AnyFork->new->eval('sub hi { }');
    for my $n (1 .. 3) {
        $cv->begin if $cv;
        $t->fork->run('hi', sub {
            $ran->{$n}++;
            $cv->end if $cv;
            die "boom $n\n" if $n == 2;
        });
    }
    # Let the template answer all three before anything dispatches.
    $t->pid;
    select undef, undef, undef, 0.3;
}

{
    my %ran;
    my $cv = AE::cv;
    start_three(\%ran, $cv);
    my $guard = AE::timer 10, 0, sub { $cv->send('timeout') };
    my $got = eval { $cv->recv; 'no exception' } // $@;
    is $got, "boom 2\n", 'the exception of the dying callback comes out of $cv->recv';
    my $end = eval { $cv->recv } // "died again: $@";
    isnt $end, 'timeout', 'the callbacks due with it still run (on the next loop turn)';
    is_deeply \%ran, { 1 => 1, 2 => 1, 3 => 1 }, 'each callback ran exactly once';
}

{
    my %ran;
    start_three(\%ran);
    my $got = eval { AnyFork::wait(10); 'no exception' } // $@;
    is $got, "boom 2\n", 'the exception comes out of AnyFork::wait';
    AnyFork::wait(10);
    is_deeply \%ran, { 1 => 1, 2 => 1, 3 => 1 }, 'the next wait ran the rest, each once';
}

is AnyFork::pending(), 0, 'nothing pending';
done_testing;
