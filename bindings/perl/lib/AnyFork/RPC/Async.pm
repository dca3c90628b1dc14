package AnyFork::RPC::Async;

# The asynchronous backend of AnyFork::RPC and AnyFork::Pool, in the
# worker: AnyEvent runs in the worker, the function gets a "done" callback
# first and may answer later, from any AnyEvent callback, many requests at
# once. The C library's fork_rpc_serve blocks its thread while it reads,
# which would stop AnyEvent's loop, so this backend speaks the framing
# itself (README, "RPC": id and length as little-endian u32s, then the
# payload; id 0 an event, 0xFFFFFFFF retire) from AnyEvent io watchers.
# The caller's side is the C library's in both backends.

use strict;
use warnings;

use Errno ();
use AnyEvent ();
use AnyFork::RPC::Worker;

our $VERSION = '0.01';

use constant RETIRE_ID => 0xFFFFFFFF;

sub run {
    my ($fh, $function, $freeze, $thaw) = AnyFork::RPC::Worker::setup(@_);
    $fh->blocking(0);
    my $finished = AE::cv;
    my ($wbuf, $rbuf, $busy, $eof, $ww, $rw) = ('', '', 0, 0);
    my $maybe_end = sub { $finished->send if $eof && !$busy && !length $wbuf };
    my $flush = sub {
        my $n = syswrite $fh, $wbuf;
        unless (defined $n) {
            return if $! == Errno::EAGAIN || $! == Errno::EINTR;
            die "AnyFork::RPC::Async: writing to the caller: $!\n";
        }
        substr $wbuf, 0, $n, '';
        return if length $wbuf;
        undef $ww;
        $maybe_end->();
    };
    my $write = sub {
        $wbuf .= $_[0];
        $ww ||= AE::io $fh, 1, $flush;
    };
    local $AnyFork::RPC::Worker::EVENT = sub { $write->(pack 'VV/a*', 0, $freeze->(@_)) };
    local $AnyFork::RPC::Worker::RETIRE = sub { $write->(pack 'VV', RETIRE_ID, 0) };
    my $answer = sub {
        my ($id, $payload) = @_;
        $write->(pack 'VV/a*', $id, $payload);
        --$busy;
        $maybe_end->();
    };
    $rw = AE::io $fh, 0, sub {
        my $n = sysread $fh, $rbuf, 65536, length $rbuf;
        unless ($n) {
            return if !defined $n && ($! == Errno::EAGAIN || $! == Errno::EINTR);
            die "AnyFork::RPC::Async: reading requests: $!\n" unless defined $n;
            undef $rw;
            $eof = 1;
            return $maybe_end->();
        }
        while (length $rbuf >= 8) {
            my ($id, $len) = unpack 'VV', $rbuf;
            last if length $rbuf < 8 + $len;
            my $req = substr $rbuf, 8, $len;
            substr $rbuf, 0, 8 + $len, '';
            ++$busy;
            my $answered;
            my $done = sub {
                return if $answered++;
                my $out;
                unless (CORE::eval { $out = AnyFork::RPC::Worker::OK . $freeze->(@_); 1 }) {
                    $out = AnyFork::RPC::Worker::DIED . "$@";
                }
                $answer->($id, $out);
            };
            next if CORE::eval { $function->($done, $thaw->($req)); 1 };
            my $e = length $@ ? "$@" : "died\n";
            $answer->($id, AnyFork::RPC::Worker::DIED . $e) unless $answered++;
        }
    };
    $finished->recv;
    shutdown $fh, 1;
    close $fh;
    return;
}

1;
