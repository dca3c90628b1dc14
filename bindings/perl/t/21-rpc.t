# Issue 13: AnyFork::RPC, AnyEvent::Fork::RPC's API on the C library's
# RPC. A sync worker (fork_rpc_serve) with init, events and answers in
# order; a worker function that dies (on_error with its message, the
# worker goes on); the Storable serialiser; an async worker (AnyEvent in
# the child) answering out of order; a worker killed with calls in
# flight (each fails exactly once); graceful destroy; no process left.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes ();
use AnyFork;
use AnyFork::RPC;
use TestUtil;

# Dispatches until $cond is true (or 20 s passed); false on timeout.
sub spin {
    my ($cond, $limit) = @_;
    my $deadline = Time::HiRes::time() + ($limit || 20);
    until ($cond->()) {
        return 0 if Time::HiRes::time() > $deadline;
        AnyFork::wait(0.05);
        Time::HiRes::sleep(0.01) unless AnyFork::pending();
    }
    return 1;
}

# Processes forked by a template are the template's children, reaped by it.
sub alive { kill 0, $_[0] }

my $WORKER = q{
    my ($count, $prefix) = (0, 'none');
    sub init_worker { $prefix = join '+', @_ }
    sub steps {
        my ($n) = @_;
        AnyEvent::Fork::RPC::event("step $_ of $n") for 1 .. $n;
        return ("did $n", $prefix, ++$count);
    }
    sub fails { die "no such thing: $_[0]\n" if $_[0] eq 'bad'; return ('fine', $$) }
    sub nap { AnyFork::RPC::event($$); sleep 30; return 'woke' }
};

# Sync: init gets the strings sent before; answers in order, each after
# its events; on_destroy once the object is dropped and all is answered.
{
    my (@events, @answers, $destroyed);
    my $rpc = AnyFork->new->eval($WORKER)->send_arg('a', 'b')->AnyFork::RPC::run(
        'steps',
        init       => 'init_worker',
        on_event   => sub { push @events, "@_"; push @answers, "(event $_[0])" },
        on_error   => sub { fail "on_error: @_" },
        on_destroy => sub { $destroyed++ });
    $rpc->($_, sub { push @answers, "@_" }) for 2, 0, 1;
    ok spin(sub { @answers == 6 }), 'sync: three answers and three events';
    is_deeply \@answers,
      ['(event step 1 of 2)', '(event step 2 of 2)', 'did 2 a+b 1', 'did 0 a+b 2',
       '(event step 1 of 1)', 'did 1 a+b 3'],
      'sync: answers in order, events before the answer they precede';
    ok !$destroyed, 'sync: not destroyed while the object lives';
    undef $rpc;
    ok spin(sub { $destroyed }), 'sync: on_destroy after the object is dropped';
    is $destroyed, 1, 'sync: on_destroy once';
}

# A function that dies: that call gets on_error with the message, the
# others their answers, from the same worker.
{
    my (@ok, @errors, $destroyed);
    my $rpc = AnyFork->new->eval($WORKER)->AnyFork::RPC::run(
        'fails', on_error => sub { push @errors, $_[0] }, on_destroy => sub { $destroyed++ });
    $rpc->('x',   sub { push @ok, [@_] });
    $rpc->('bad', sub { fail 'the call that died got an answer' });
    $rpc->('y',   sub { push @ok, [@_] });
    undef $rpc;
    ok spin(sub { $destroyed }), 'die: the worker is destroyed gracefully';
    is scalar @ok, 2, 'die: the other calls are answered';
    is $ok[0][1], $ok[1][1], 'die: by the same worker, which went on';
    is_deeply \@errors, ["the worker's function died: no such thing: bad"],
      'die: on_error once, with the exception';
}

# Storable: references round-trip; on_event with a condvar-like object.
{
    my ($got, $destroyed);
    my $rpc = AnyFork->new
        ->eval('sub shape { my ($h) = @_; return { keys => [sort keys %$h], n => scalar keys %$h } }')
        ->AnyFork::RPC::run('shape', serialiser => $AnyFork::RPC::STORABLE_SERIALISER,
                            on_destroy => sub { $destroyed++ });
    $rpc->({ b => 1, a => [2], c => undef }, sub { $got = shift });
    undef $rpc;
    ok spin(sub { $destroyed }), 'storable: done';
    is_deeply $got, { keys => [qw(a b c)], n => 3 }, 'storable: a hash in, a hash out';
}

# Under AnyEvent: condvars as the call's callback and as on_destroy, the
# AnyEvent loop driving the library (as with AnyEvent::Fork::RPC).
{
    require AnyEvent;
    my $gone = AnyEvent->condvar;
    my $rpc = AnyFork->new->eval($WORKER)->AnyFork::RPC::run('steps',
        on_event => sub { }, on_destroy => $gone);
    $rpc->(2, my $cv = AnyEvent->condvar);
    my $t = AnyEvent->timer(after => 20, cb => sub { $cv->croak('timeout'); $gone->croak('timeout') });
    my @r = eval { $cv->recv };
    is $r[0], 'did 2', 'anyevent: a condvar gets the answer' or diag $@;
    undef $rpc;
    ok eval { $gone->recv; 1 }, 'anyevent: a condvar as on_destroy' or diag $@;
}

# A serialiser that does not compile is refused at once.
{
    my $p = AnyFork->new;
    ok !eval { $p->AnyFork::RPC::run('x', serialiser => 'sub {'); 1 }, 'bad serialiser: refused';
    like $@, qr/serialiser does not compile/, 'bad serialiser: says why';
}

# Async: AnyEvent in the worker, answers when their timers fire (out of
# order), events and answers in the order the worker made them; a
# function that dies fails only its own call.
{
    my (@seen, @errors, $destroyed);
    my $rpc = AnyFork->new->require('AnyFork::RPC::Async')->eval(q{
        use AnyEvent;
        sub later {
            my ($done, $n) = @_;
            die "negative\n" if $n < 0;
            my $w; $w = AE::timer $n * 0.2, 0, sub {
                undef $w;
                AnyEvent::Fork::RPC::event("fired $n");
                $done->($n * 10, $$);
            };
        }
    })->AnyFork::RPC::run('later', async => 1,
        on_event   => sub { push @seen, "event @_" },
        on_error   => sub { push @errors, @_ },
        on_destroy => sub { $destroyed++ });
    my %pid;
    $rpc->($_, sub { push @seen, "answer $_[0]"; $pid{ $_[1] }++ }) for 3, 1, -1, 2;
    undef $rpc;
    ok spin(sub { $destroyed }), 'async: destroyed after every answer';
    is_deeply \@seen,
      ['event fired 1', 'answer 10', 'event fired 2', 'answer 20', 'event fired 3', 'answer 30'],
      'async: out of order, each event before its answer';
    is_deeply \@errors, ["the worker's function died: negative"], 'async: the die fails its call only';
    is scalar keys %pid, 1, 'async: one worker answered all';
}

# A worker killed with calls in flight: each call fails exactly once
# (on_error), none is answered, on_destroy still comes; the process is gone.
{
    my ($pid, @errors, $answers, $destroyed);
    my $rpc = AnyFork->new->eval($WORKER)->AnyFork::RPC::run('nap',
        on_event   => sub { $pid = shift },
        on_error   => sub { push @errors, $_[0] },
        on_destroy => sub { $destroyed++ });
    $rpc->(sub { $answers++ }) for 1 .. 20;
    ok spin(sub { $pid }), 'killed: the worker started the first call';
    ok kill('KILL', $pid), "killed: SIGKILL to $pid";
    ok spin(sub { @errors == 20 }), 'killed: twenty errors';
    spin(sub { 0 }, 0.3);
    is scalar @errors, 20, 'killed: each call failed exactly once';
    ok !$answers, 'killed: no answer';
    like $errors[0], qr/call \d+ got no reply/, "killed: the error names the call ($errors[0])";
    my $late;
    $rpc->(sub { $late++ });
    ok spin(sub { @errors == 21 }), 'killed: a call after the death fails too';
    undef $rpc;
    ok spin(sub { $destroyed }), 'killed: on_destroy after the drop';
    ok spin(sub { !alive($pid) }), 'killed: the worker is gone';
}

# A worker whose process is gone before it could serve (the eval died):
# calls fail with on_error, nothing hangs.
{
    my (@errors, $destroyed);
    # (Its stderr says "eval failed: broken on purpose".)
    my $rpc = AnyFork->new->eval('die "broken on purpose\n"')->AnyFork::RPC::run('steps',
        on_error => sub { push @errors, @_ }, on_destroy => sub { $destroyed++ });
    $rpc->(1, sub { fail 'answered by a dead worker' });
    ok spin(sub { @errors == 1 }), 'dead before serving: the call fails';
    undef $rpc;
    ok spin(sub { $destroyed }), 'dead before serving: on_destroy';
}

done_testing;
