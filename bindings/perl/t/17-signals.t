# The checklist's "Ctrl-C (SIGINT) during a wait and during a blocking
# run", and "two waiters at once" as Perl has it (a wait nested in a
# callback; without threads that is how two waits overlap). A SIGINT
# handler runs promptly during AnyFork::wait (which blocks in slices with
# signals held off only inside the library) and no callback is lost; the
# default SIGINT ends the program at once.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use POSIX ();
use Time::HiRes ();
use AnyFork;
use TestUtil;

sub interrupt_after {
    my ($delay) = @_;
    my $pid = fork // die "fork: $!";
    unless ($pid) { Time::HiRes::sleep($delay); kill 'INT', getppid; POSIX::_exit(0) }
    return $pid;
}

{
    my @ran;
    AnyFork->new->eval('sub slow { sleep 2 }')->on_exit(sub { push @ran, 'exit' })
      ->run('slow', sub { push @ran, 'run' });
    my $got = 0;
    local $SIG{INT} = sub { $got++; die "interrupted\n" };
    my $kid = interrupt_after(0.3);
    my $t0 = Time::HiRes::time();
    my $err = eval { AnyFork::wait(20); 'not interrupted' } // $@;
    my $took = Time::HiRes::time() - $t0;
    waitpid $kid, 0;
    is $err, "interrupted\n", 'the handler\'s die comes out of AnyFork::wait';
    cmp_ok $took, '<', 2, "promptly (${\ sprintf '%.2f', $took} s, the child sleeps 2 s)";
    AnyFork::wait(20);
    is_deeply [sort @ran], ['exit', 'run'], 'no callback was lost';
}

# The default SIGINT during a wait: the program ends by the signal.
{
    my $lib = "$FindBin::Bin/../lib";
    my $pid = fork // die;
    unless ($pid) {
        $SIG{INT} = 'DEFAULT';    # a shell may have started us ignoring it
        exec $^X, "-I$lib", '-MAnyFork', '-e',
          'AnyFork->new->eval(q{sub slow { my $fh = shift; <$fh> }})->on_exit(sub {})->run(q{slow}, sub { $main::fh = shift }); AnyFork::wait(20); exit 7';
    }
    Time::HiRes::sleep(0.5);
    kill 'INT', $pid;
    waitpid $pid, 0;
    is $? & 127, POSIX::SIGINT(), 'the default SIGINT ends a waiting program';
}

# Nested waits: a callback waits for processes of its own.
{
    my (@outer, @inner);
    for my $n (1 .. 3) {
        AnyFork->new->run('CORE::exit', sub {
            push @outer, $n;
            for my $m (1 .. 2) { AnyFork->new->run("CORE::exit", sub { push @inner, "$n.$m" }) }
            AnyFork::wait(20);
        });
    }
    AnyFork::wait(20);
    is_deeply [sort @outer], [1, 2, 3], 'every outer callback ran once';
    is_deeply [sort @inner], [qw(1.1 1.2 2.1 2.2 3.1 3.2)], 'every callback of the nested waits ran once';
}

is AnyFork::pending(), 0, 'nothing pending';
done_testing;
