# to_fh / new_from_fh: a process object given up as a socket, and taken
# up again, here and in another process.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use POSIX ();
use AnyFork;
use TestUtil;

my $REPORT = 'sub report { my $fh = shift; print $fh join(",", @_), "\n" }';

# In this process.
{
    my $proc = AnyFork->new->eval($REPORT)->send_arg('before');
    my $got;
    my $fh = $proc->to_fh(sub { $got = shift });
    ok $fh, 'to_fh returns the socket';
    is $got, $fh, 'and passes it to the callback';
    ok !eval { $proc->send_arg('x'); 1 }, 'the object is used up';

    my $again = AnyFork->new_from_fh($fh);
    isa_ok $again, 'AnyFork';
    close $fh;    # new_from_fh made its own duplicate
    is $again->pid, undef, 'the pid is not known to the new owner';
    my $comm;
    $again->send_arg('after')->run('report', sub { $comm = shift });
    AnyFork::wait;
    is read_all($comm), "before,after\n", 'the process kept what it was sent';
}

# In another process (a child made with Perl's fork).
{
    my $fh = AnyFork->new->eval($REPORT)->send_arg('from parent')->to_fh;
    pipe my $r, my $w or die;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        close $r;
        my $line = eval {
            AnyFork::reset_after_fork();
            my $p = AnyFork->new_from_fh($fh);
            my $comm;
            $p->send_arg('from child')->run('report', sub { $comm = shift });
            AnyFork::wait;
            read_all($comm);
        };
        syswrite $w, defined $line ? $line : "error: $@\n";
        POSIX::_exit(0);
    }
    close $w;
    close $fh;
    is read_all($r), "from parent,from child\n", 'another process took the object over';
    waitpid $pid, 0;
}

# new_from_fh refuses what is not a process socket.
{
    ok !eval { AnyFork->new_from_fh(undef); 1 }, 'undef is refused';
    open my $null, '<', '/dev/null' or die;
    ok !eval { AnyFork->new_from_fh($null); 1 }, 'a file is refused';
    like $@, qr/fork_from_fd/, 'with the library\'s message';
}

done_testing;
