package AnyFork::RPC::Sync;

# The synchronous backend of AnyFork::RPC and AnyFork::Pool, in the
# worker: the C library's fork_rpc_serve reads the requests and writes
# the replies; each request calls the function with the thawed arguments,
# and what it returns is the reply. One request at a time, in order.

use strict;
use warnings;

use AnyFork::Lib;
use AnyFork::RPC::Worker;
use FFI::Platypus::Buffer qw(buffer_to_scalar);

our $VERSION = '0.01';

# What the handler needs while fork_rpc_serve runs.
my ($FUNCTION, $FREEZE, $THAW);
our $W;    # the worker handle, while a request is handled

our $HANDLER = $AnyFork::Lib::FFI->closure(sub {
    my ($w, $id, $req, $len) = @_;
    local $W = $w;
    my $args = $len ? buffer_to_scalar($req, $len) : '';
    my $out;
    # Nothing may die through the C library: an exception is the reply.
    unless (CORE::eval { $out = AnyFork::RPC::Worker::OK . $FREEZE->($FUNCTION->($THAW->($args))); 1 }) {
        my $e = $@;
        $out = AnyFork::RPC::Worker::DIED . (length $e ? "$e" : "died\n");
    }
    AnyFork::Lib::fork_rpc_reply($w, $id, $out, length $out);
});
$HANDLER->sticky;

# The run function: AnyFork::Serve calls it with the comm socket and the
# arguments sent; it returns once the caller closed its side and every
# reply was written (the process then exits 0).
sub run {
    my ($fh, $function, $freeze, $thaw) = AnyFork::RPC::Worker::setup(@_);
    ($FUNCTION, $FREEZE, $THAW) = ($function, $freeze, $thaw);
    local $AnyFork::RPC::Worker::EVENT = sub {
        die "AnyFork::RPC::event: only while the worker handles a request\n" unless $W;
        my $ev = $FREEZE->(@_);
        AnyFork::Lib::fork_rpc_event($W, $ev, length $ev) >= 0
          or die 'AnyFork::RPC::event: ' . AnyFork::Lib::error() . "\n";
    };
    local $AnyFork::RPC::Worker::RETIRE = sub {
        die "AnyFork::Pool::retire: only while the worker handles a request\n" unless $W;
        AnyFork::Lib::fork_pool_retire($W) >= 0
          or die 'AnyFork::Pool::retire: ' . AnyFork::Lib::error() . "\n";
    };
    my $rc = AnyFork::Lib::fork_rpc_serve(fileno $fh, $HANDLER, undef, 0);
    die 'AnyFork::RPC::Sync: ' . AnyFork::Lib::error() . "\n" if $rc < 0;
    close $fh;
    return;
}

1;
