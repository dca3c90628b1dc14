#!/usr/bin/perl
# AnyFork::RPC (the C library's caller side, fork_rpc_serve in the worker)
# against the same RPC done in Perl on both ends, side by side in one
# program.
#
#   ANYFORK_LIB=target/release perl -I bindings/perl/lib \
#       bindings/perl/bench/rpc.pl [--seq 2000] [--pipe 20000] [--reps 5]
#
# The Perl side is what AnyEvent::Fork::RPC does (CPAN; not packaged for
# Debian, so this stands in for it): requests framed in Perl and written
# from AnyEvent io watchers, a sync worker reading with sysread and
# answering with syswrite (t/lib/Compat/Worker.pm's sync_run, the shape of
# AnyEvent::Fork::RPC::Sync). Both run on processes forked by AnyFork,
# with the string serialiser, under AnyEvent's loop:
#   seq:  one call at a time (the next is made in the previous one's callback);
#   pipe: every call made at once, then the loop runs until all are answered.
# The two take turns (which goes first alternates); the table gives calls
# per second, the median of the repetitions with min-max.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";
use Errno ();
use Getopt::Long ();
use Time::HiRes ();
use AnyEvent;
use AnyFork;
use AnyFork::RPC;

my %opt = (seq => 2000, pipe => 20000, reps => 5);
Getopt::Long::GetOptions(\%opt, 'seq=i', 'pipe=i', 'reps=i')
  or die "usage: $0 [--seq N] [--pipe N] [--reps R]\n";
die "--reps must be at least 1\n" if $opt{reps} < 1;

my $WORKER = 'sub echo { return @_ }';
my $SER    = $AnyFork::RPC::STRING_SERIALISER;
my ($FREEZE, $THAW) = eval $SER;

# The Perl client: framing as AnyEvent::Fork::RPC's sync mode (requests
# "N/a*", replies "N N/a*"), replies in order.
sub perl_rpc {
    my ($done) = @_;
    my (@cbs, $fh, $rw, $ww);
    my ($wbuf, $rbuf) = ('', '');
    my $flush = sub {
        my $n = syswrite $fh, $wbuf;
        return if !defined $n && $! == Errno::EAGAIN;
        die "write: $!" unless defined $n;
        substr $wbuf, 0, $n, '';
        undef $ww unless length $wbuf;
    };
    AnyFork->new->require('Compat::Worker')->eval($WORKER)
      ->send_arg('main::echo', '', $SER)->run('Compat::Worker::sync_run', sub {
        $fh = shift or die "no process: @_";
        $rw = AE::io $fh, 0, sub {
            my $n = sysread $fh, $rbuf, 65536, length $rbuf;
            if (!$n) {
                return if !defined $n && $! == Errno::EAGAIN;
                undef $rw;
                return $done->send;
            }
            while (length $rbuf >= 8) {
                my ($id, $len) = unpack 'NN', $rbuf;
                last if length $rbuf < 8 + $len;
                my @r = $THAW->(substr $rbuf, 8, $len);
                substr $rbuf, 0, 8 + $len, '';
                (shift @cbs)->(@r);
            }
        };
        $ww ||= AE::io $fh, 1, $flush if length $wbuf;
    });
    my $call = sub {
        push @cbs, pop;
        $wbuf .= pack 'N/a*', $FREEZE->(@_);
        $ww ||= $fh && AE::io $fh, 1, $flush;
    };
    my $close = sub { shutdown $fh, 1 };
    return ($call, $close);
}

sub anyfork_rpc {
    my ($done) = @_;
    my $rpc = AnyFork->new->eval($WORKER)->AnyFork::RPC::run('echo', on_destroy => $done);
    return ($rpc, sub { });    # dropping $rpc frees it
}

my $MSG = 'x' x 64;

# Calls per second for one run of $how (seq or pipe) with $make.
sub one {
    my ($make, $how, $n) = @_;
    my $gone = AE::cv;
    my ($call, $close) = $make->($gone);
    my $warm = AE::cv;
    $call->($MSG, sub { $warm->send });    # the worker is up
    $warm->recv;
    my $all = AE::cv;
    my $t0 = Time::HiRes::time();
    if ($how eq 'seq') {
        my $left = $n;
        my $next; $next = sub { return $all->send unless $left--; $call->($MSG, $next) };
        $next->();
    }
    else {
        my $left = $n;
        $call->($MSG, sub { $all->send unless --$left }) for 1 .. $n;
    }
    $all->recv;
    my $dt = Time::HiRes::time() - $t0;
    undef $call;
    $close->();
    $gone->recv;
    return $n / $dt;
}

sub median { my @s = sort { $a <=> $b } @_; $s[$#s / 2] }

my %r;
for my $rep (1 .. $opt{reps}) {
    for my $how ('seq', 'pipe') {
        my @order = (['anyfork', \&anyfork_rpc], ['perl', \&perl_rpc]);
        @order = reverse @order if $rep % 2;
        push @{ $r{$how}{ $_->[0] } }, one($_->[1], $how, $opt{$how}) for @order;
    }
}

my $load = '?';
if (open my $f, '<', '/proc/loadavg') { $load = (split ' ', scalar <$f>)[0] }
printf "64-byte calls per second, median [min-max] of %d, load average %s\n", $opt{reps}, $load;
printf "| %-4s | %-26s | %-26s | %-18s |\n", '', 'AnyFork::RPC (C caller)', 'Perl on both ends', 'ratio';
for my $how ('seq', 'pipe') {
    my ($c, $p) = @{ $r{$how} }{qw(anyfork perl)};
    my @ratio = map { $c->[$_] / $p->[$_] } 0 .. $#$c;
    my $fmt = sub { my @v = @_; sprintf '%.0f [%.0f-%.0f]', median(@v), (sort { $a <=> $b } @v)[0, -1] };
    printf "| %-4s | %-26s | %-26s | %-18s |\n", $how, $fmt->(@$c), $fmt->(@$p),
      sprintf('%.2f [%.2f-%.2f]', median(@ratio), (sort { $a <=> $b } @ratio)[0, -1]);
}
