# Issue 11: the paths AnyEvent::Fork::RPC and AnyEvent::Fork::Pool (CPAN)
# take through AnyEvent::Fork, run on the drop-in (bindings/perl/compat):
# a worker module required into a process, the function, init and
# serialiser sent as strings (init possibly undef), run with the worker's
# run function, the socket driven by AnyEvent watchers in both
# directions; a sync worker (blocking reads in the child) and an async one
# (AnyEvent in the child), both sending events; and a pool: a template
# prepared with require and an eval defining a retire function closed
# over eval arguments, workers forked from it, retiring on request and
# replaced. The client below is written for this test.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../compat", "$FindBin::Bin/lib";

use Test::More;
use AnyEvent;
use AnyEvent::Fork;
use Errno ();

like $INC{'AnyEvent/Fork.pm'}, qr{/compat/AnyEvent/Fork\.pm\z}, 'the drop-in AnyEvent::Fork is loaded';

my $SERIALISER = <<'PERL';
(sub { join "\0", map { defined $_ ? "d$_" : 'u' } @_ },
 sub { map { $_ eq 'u' ? undef : substr $_, 1 } split /\0/, $_[0], -1 })
PERL
my ($FREEZE, $THAW) = eval $SERIALISER;

# An RPC client: returns a code ref, called as $rpc->(@args, $cb); the
# process ends when the code ref is dropped and every answer is in.
sub rpc {
    my ($proc, $function, %arg) = @_;
    my $on_event   = $arg{on_event} || sub { fail "unexpected event @_" };
    my $on_error   = $arg{on_error} || sub { fail "rpc error: @_" };
    my $on_destroy = $arg{on_destroy};
    my (@sync_cb, %async_cb, $fh, $ww, $rw, $closing);
    my ($wbuf, $rbuf) = ('', '');
    my $flush = sub {
        my $n = syswrite $fh, $wbuf;
        if (!defined $n) {
            return if $! == Errno::EAGAIN;
            undef $ww;
            return $on_error->("write: $!");
        }
        substr $wbuf, 0, $n, '';
        return if length $wbuf;
        undef $ww;
        shutdown $fh, 1 if $closing;
    };
    my $module = 'Compat::Worker::' . ($arg{async} ? 'async_run' : 'sync_run');
    $proc->require('Compat::Worker')
         ->send_arg($function, $arg{init}, $SERIALISER)
         ->run($module, sub {
        $fh = shift or return $on_error->("no process: @_");
        $rw = AE::io($fh, 0, sub {
            my $n = sysread $fh, $rbuf, 65536, length $rbuf;
            if ($n) {
                while (length $rbuf >= 8) {
                    my ($id, $len) = unpack 'NN', $rbuf;
                    last if length $rbuf < 8 + $len;
                    my @r = $THAW->(substr $rbuf, 8, $len);
                    substr $rbuf, 0, 8 + $len, '';
                    if (!$id)             { $on_event->(@r) }
                    elsif ($arg{async})   { (delete $async_cb{$id})->(@r) }
                    else                  { (shift @sync_cb)->(@r) }
                }
                return;
            }
            return if !defined $n && $! == Errno::EAGAIN;
            undef $rw;
            return $on_error->('unexpected eof') if @sync_cb || %async_cb;
            $on_destroy->() if $on_destroy;
        });
        $ww ||= AE::io($fh, 1, $flush) if length $wbuf;
        if ($closing && !length $wbuf) { shutdown $fh, 1 }
    });
    my $guard = bless sub { $closing = 1; shutdown $fh, 1 if $fh && !$ww }, 'Compat::Guard';
    my $id = 0;
    return sub {
        my $cb = pop;
        $guard if 0;
        if ($arg{async}) {
            $async_cb{ ++$id } = $cb;
            $wbuf .= pack 'NN/a*', $id, $FREEZE->(@_);
        }
        else {
            push @sync_cb, $cb;
            $wbuf .= pack 'N/a*', $FREEZE->(@_);
        }
        $ww ||= $fh && AE::io($fh, 1, $flush);
    };
}
sub Compat::Guard::DESTROY { $_[0]->() }

# Sync, with init (a name) and events.
{
    my @events;
    my $gone = AE::cv;
    my $rpc = rpc(AnyEvent::Fork->new, 'Compat::Worker::steps',
        init => 'Compat::Worker::init', on_event => sub { push @events, "@_" },
        on_destroy => $gone);
    my $cv = AE::cv;
    $cv->begin for 1 .. 2;
    my @r;
    $rpc->(3, sub { push @r, "@_"; $cv->end });
    $rpc->(1, sub { push @r, "@_"; $cv->end });
    $cv->recv;
    is_deeply \@r, ['did 3', 'did 1'], 'sync: answers in order';
    is_deeply \@events, ['step 1', 'step 2', 'step 3', 'step 1'], 'sync: events before each answer';
    undef $rpc;
    my $t = AE::timer(20, 0, sub { $gone->croak('timeout') });
    ok eval { $gone->recv; 1 }, 'sync: the process ends when the rpc object is dropped' or diag $@;
}

# Sync without init (undef sent as the init string): whoami sees no init;
# the worker's pid is its own.
{
    my $rpc = rpc(AnyEvent::Fork->new, 'Compat::Worker::whoami', init => undef);
    $rpc->('x', 'y', my $cv = AE::cv);
    my ($pid, $init, @rest) = $cv->recv;
    is $init, 'not initialised', 'sync: undef init is no init';
    is_deeply \@rest, ['x', 'y'], 'sync: arguments through the serialiser';
    ok $pid > 1 && $pid != $$, "sync: the worker has its own pid ($pid)";
}

# Async, events and answers out of order, AnyEvent in the child.
{
    my @events;
    my $gone = AE::cv;
    my $rpc = rpc(AnyEvent::Fork->new, 'Compat::Worker::later_sum', async => 1,
        on_event => sub { push @events, "@_" }, on_destroy => $gone);
    my $cv = AE::cv;
    my %r;
    $cv->begin for 1 .. 3;
    $rpc->(1, 2, 3, 4, sub { $r{a} = shift; $cv->end });
    $rpc->(10,      sub { $r{b} = shift; $cv->end });
    $rpc->(5, 5,    sub { $r{c} = shift; $cv->end });
    $cv->recv;
    is_deeply \%r, { a => 10, b => 10, c => 10 }, 'async: every answer to its caller';
    is_deeply [sort @events], ['summed 1', 'summed 2', 'summed 4'], 'async: events';
    undef $rpc;
    my $t = AE::timer(20, 0, sub { $gone->croak('timeout') });
    ok eval { $gone->recv; 1 }, 'async: the process ends when the rpc object is dropped' or diag $@;
}

# A pool: a template with the worker module and a retire function from
# an eval with arguments; workers forked from it; a worker asked to
# retire tells the pool with an event, gets no more jobs and ends.
{
    my ($m0, $m1) = ('<magic0>', '<magic1>');
    my $template = AnyEvent::Fork->new->require('Compat::Worker')->eval(
        'my ($m0, $m1) = @_; sub retire_worker { Compat::Worker::event($m0, "quit", $m1) }',
        $m0, $m1);
    my (@workers, %retired, %ended, %answered_by);
    my $all_ended = AE::cv;
    my $start = sub {
        my $w = {};
        $all_ended->begin;
        $w->{rpc} = rpc($template->fork, 'Compat::Worker::job',
            on_event => sub {
                if (@_ == 3 && $_[0] eq $m0 && $_[2] eq $m1 && $_[1] eq 'quit') {
                    $w->{retiring} = 1;
                    return;
                }
                fail "pool: unexpected event @_";
            },
            on_destroy => sub { $ended{$w}++; $all_ended->end });
        push @workers, $w;
        return $w;
    };
    my $jobs = AE::cv;
    my @answers;
    for my $i (1 .. 12) {
        my ($w) = grep { !$_->{retiring} } @workers;
        $w ||= $start->();
        $jobs->begin;
        # Every fourth job asks its worker to retire.
        $w->{rpc}->($i, $i % 4 == 0 ? 1 : 0, sub {
            my ($pid, $double) = @_;
            push @answers, $double;
            $answered_by{$pid}++;
            $jobs->end;
        });
        # The retire event comes before the answer: wait for it, as the
        # pool sees it before it schedules the next job to that worker.
        if ($i % 4 == 0) {
            my $seen = AE::cv;
            my $poll; $poll = AE::timer(0, 0.005, sub { $seen->send if $w->{retiring} });
            $seen->recv;
            $retired{$w} = 1;
            delete $w->{rpc};    # the pool forgets it: the process ends
        }
    }
    $jobs->recv;
    is_deeply [sort { $a <=> $b } @answers], [map { $_ * 2 } 1 .. 12], 'pool: every job answered';
    is scalar(@workers), 3, 'pool: three workers, each retired after four jobs';
    is scalar(keys %answered_by), 3, 'pool: three distinct processes answered';
    is_deeply [values %answered_by], [4, 4, 4], 'pool: four jobs each';
    my $t = AE::timer(20, 0, sub { $all_ended->croak('timeout') });
    ok eval { $all_ended->recv; 1 }, 'pool: every retired worker ended' or diag $@;
    is scalar(keys %ended), 3, 'pool: three ends seen';
}

done_testing;
