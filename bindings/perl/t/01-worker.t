# The manual's first example: create a single new process, tell it to run
# a worker function, and talk to it over the comm socket.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use TestUtil;

# Without an event loop, AnyFork::wait runs the callbacks.
my $master;
AnyFork
   ->new
   ->require ("My::Worker")
   ->send_arg ("a", "b")
   ->run ("My::Worker::worker", sub {
      ($master) = @_;
   });
is $master, undef, 'the callback does not run inside run';
AnyFork::wait;

ok $master, 'the callback got the comm socket';
isa_ok $master, 'IO::Handle';
ok !$master->blocking, 'it is nonblocking in the parent';

like read_line($master), qr/^worker \d+ ready \(a b\)$/, 'the worker got its arguments';
syswrite $master, "hello\n";
is read_line($master), "echo: hello\n", 'the worker answers on the comm socket';
syswrite $master, "again\n";
is read_line($master), "echo: again\n", 'and again';
shutdown $master, 1;
is read_all($master), '', 'EOF once the worker returned';
close $master;

# Methods chain, and return the object.
{
    my $proc = AnyFork->new;
    isa_ok $proc, 'AnyFork';
    is $proc->send_arg('x'), $proc, 'send_arg returns the object';
    is $proc->send_fh(\*STDIN), $proc, 'send_fh returns the object';
    is $proc->eval('1'), $proc, 'eval returns the object';
    is $proc->require('strict'), $proc, 'require returns the object';
    like $proc->pid, qr/^\d+$/, 'forked processes have a pid too';
    isnt $proc->pid, $$, 'not ours';
    # Destroyed before run: the process simply exits.
}

# The process object is unusable after run.
{
    my $proc = AnyFork->new;
    $proc->run('CORE::exit');
    ok !eval { $proc->send_arg('late'); 1 }, 'methods after run die';
    like $@, qr/already used/, '... saying so';
}

# Errors die with fork_last_error's text.
{
    my $proc = AnyFork->new;
    open my $fh, '<', '/dev/null' or die;
    AnyFork::Lib::c_close(fileno $fh);    # the handle stays, its fd is gone
    ok !eval { $proc->send_fh($fh); 1 }, 'sending a closed fd dies';
    my $err = $@;
    like $err, qr/fork_send_fd/, 'the message names the C call';
    is $err =~ s/ at \S+ line \d+\.\n\z//r, AnyFork::Lib::fork_last_error(),
       'the message is fork_last_error';
    ok !eval { $proc->send_fh('not a handle'); 1 }, 'a string is not a handle';
    ok !eval { $proc->send_arg("\x{263a}"); 1 }, 'wide characters are refused';
    { no warnings; close $fh }    # its fd was closed behind perl's back
}

# A process that cannot be reached: whether the library notices while
# sending or while delivering, the callback gets undef and the reason.
{
    my $dead = AnyFork->new_exec;
    kill 'KILL', $dead->pid;
    my ($fh, $why);
    my $done = 0;
    select undef, undef, undef, 0.2;
    $dead->send_arg('x' x 100000)->eval('1')->run('main::nothing', sub { ($fh, $why) = @_; $done = 1 });
    is $done, 0, 'the callback does not run inside run';
    AnyFork::wait(20);
    ok $done, 'the callback ran';
    ok !defined $fh, 'without a handle';
    like $why, qr/EPIPE/, "with the reason: $why";
}

# A child that dies early (here: a failing require) is reported the same
# way, or its socket reaches EOF, depending on when the library notices.
{
    my $tmp = tmpdir();
    my ($fh, $why, $status);
    with_stderr_to("$tmp/err", sub {
        AnyFork->new_exec->fork->require('No::Such::Module')->send_arg('x')
          ->on_exit(sub { $status = $_[1] })->run('main::x', sub { ($fh, $why) = @_ });
    });
    AnyFork::wait(20);
    ok !$fh || read_all($fh) eq '', 'no process to talk to';
    is $status >> 8, 255, 'the failing eval made it exit 255';
    like slurp("$tmp/err"), qr{Can't locate No/Such/Module\.pm}, 'the reason is on its stderr';
}

# Unknown functions, dying code and exit statuses.
{
    my $tmp  = tmpdir();
    my $errf = "$tmp/stderr";
    my $srv  = with_stderr_to($errf, sub { AnyFork->new_exec });
    my %status;
    my @comm;
    my $start = sub {
        my ($name, $setup) = @_;
        my $p = $srv->fork;
        $setup->($p) if $setup;
        $p->on_exit(sub { $status{$name} = $_[1] })->run($name, sub { push @comm, shift });
    };
    $start->('No::such::function');
    $start->('main::dies', sub { $_[0]->eval('sub dies { die "oops\n" }') });
    $start->('main::exits', sub { $_[0]->eval('sub exits { exit 3 }') });
    $start->('main::bad_eval', sub { $_[0]->eval('die "eval went wrong\n"') });
    $start->('main::returns', sub { $_[0]->eval('sub returns { 42 }') });
    $start->('CORE::exit');
    AnyFork::wait(30);
    is scalar(keys %status), 6, 'every exit was reported';
    is $status{'No::such::function'} >> 8, 127, 'a missing function exits 127';
    is $status{'main::dies'} >> 8, 255, 'a dying run function exits 255';
    is $status{'main::exits'} >> 8, 3, 'exit in the run function sets the status';
    is $status{'main::bad_eval'} >> 8, 255, 'a failing eval exits 255';
    is $status{'main::returns'}, 0, 'returning exits 0';
    is $status{'CORE::exit'}, 0, 'CORE::exit works as a run function';
    undef $srv;
    my $err = slurp($errf);
    like $err, qr/AnyFork\[\d+\]: run: no function 'No::such::function'/, 'missing functions are reported';
    like $err, qr/AnyFork\[\d+\]: run main::dies died: oops/, 'errors of run functions are reported';
    like $err, qr/AnyFork\[\d+\]: eval failed: eval went wrong/, 'errors of eval are reported';
}

done_testing;
