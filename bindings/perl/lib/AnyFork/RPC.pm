package AnyFork::RPC;

# AnyEvent::Fork::RPC's API on libanyfork's RPC (fork_rpc_start, _call,
# _free): the caller's side is the C library's, driven by AnyFork::wait,
# AnyFork::dispatch or AnyEvent's loop; the worker runs AnyFork::RPC::Sync
# (fork_rpc_serve) or AnyFork::RPC::Async (AnyEvent). AnyFork::Pool shares
# the callbacks below.
#
#   my $rpc = AnyFork->new->require("MyWorker")
#      ->AnyFork::RPC::run("MyWorker::run", on_event => sub { ... });
#   $rpc->(1, 2, sub { my @results = @_ });
#   undef $rpc;    # graceful: the calls made are answered, then on_destroy

use strict;
use warnings;

use Carp ();
use POSIX ();
use Scalar::Util ();
use FFI::Platypus::Buffer qw(buffer_to_scalar);
use AnyFork;
use AnyFork::Lib;
use AnyFork::RPC::Worker;

our $VERSION = '0.01';

our @CARP_NOT = qw(AnyFork AnyFork::Lib AnyFork::Pool);

# AnyEvent::Fork::RPC's serialisers (the same Perl code, so a worker
# written for one works with the other).
our $STRING_SERIALISER   = '(sub { pack "(w/a*)*", @_ }, sub { unpack "(w/a*)*", shift })';
our $JSON_SERIALISER     = 'use JSON (); (sub { JSON::encode_json \@_ }, sub { @{ JSON::decode_json shift } })';
our $STORABLE_SERIALISER = 'use Storable (); (sub { Storable::freeze \@_ }, sub { @{ Storable::thaw shift } })';

# Live RPC objects and pools (id => state) until their destroyed callback
# ran, and the calls waiting for a reply (id => [state id, callback]).
my %LIVE;
my %CALLS;
my $NEXT = 0;

# The C callbacks record; the Perl callbacks run from AnyFork's drain.
our $REPLY = $AnyFork::Lib::FFI->closure(sub {
    my ($status, $data, $len, $call) = @_;
    my $c = delete $CALLS{$call} or return;
    if ($status >= 0) {
        AnyFork::_due(\&_replied, $c, $status, $len ? buffer_to_scalar($data, $len) : '');
    }
    else {
        AnyFork::_due(\&_replied, $c, $status, undef, AnyFork::Lib::error());
    }
});
$REPLY->sticky;
our $REPLY_PTR = $AnyFork::Lib::FFI->cast('fork_rpc_reply_cb' => 'opaque', $REPLY);

our $EVENT = $AnyFork::Lib::FFI->closure(sub {
    my ($data, $len, $id) = @_;
    AnyFork::_due(\&_event, $id, $len ? buffer_to_scalar($data, $len) : '');
});

sub _event {
    my ($id, $bytes) = @_;
    my $st = $LIVE{$id} or return;
    $st->{on_event}->($st->{thaw}->($bytes));
}
$EVENT->sticky;

our $DESTROYED = $AnyFork::Lib::FFI->closure(sub {
    my ($status, $id) = @_;
    AnyFork::_due(sub {
        my $st = delete $LIVE{$id} or return;
        $st->{on_destroy}->() if $st->{on_destroy};
    });
});
$DESTROYED->sticky;

# The state both RPC objects and pools share: callbacks and serialiser,
# with AnyEvent::Fork::RPC's defaults (on_error falls back to on_event
# with "error" first, else dies; an event without on_event is an error).
sub _state {
    my ($what, %arg) = @_;
    my $serialiser = defined $arg{serialiser} ? $arg{serialiser} : $STRING_SERIALISER;
    my ($freeze, $thaw) = CORE::eval $serialiser;
    Carp::croak("$what: the serialiser does not compile: $@") if $@;
    Carp::croak("$what: the serialiser gives no freeze and thaw code refs")
      unless ref $freeze eq 'CODE' && ref $thaw eq 'CODE';
    for my $cb (qw(on_error on_event on_destroy)) {
        Carp::croak("$what: $cb is not code")
          if defined $arg{$cb} && !(ref $arg{$cb} && Scalar::Util::reftype($arg{$cb}) eq 'CODE'
                                    || Scalar::Util::blessed($arg{$cb}) && $arg{$cb}->can('send'));
    }
    my $st = {
        id         => ++$NEXT,
        serialiser => $serialiser,
        freeze     => $freeze,
        thaw       => $thaw,
        on_destroy => _code($arg{on_destroy}),
    };
    my $on_event = _code($arg{on_event});
    my $on_error = _code($arg{on_error});
    $on_error ||= $on_event
      ? sub { $on_event->(error => @_) }
      : sub { die "AnyFork::RPC: uncaught error: $_[0]\n" };
    $st->{on_error} = $on_error;
    $st->{on_event} = $on_event || sub { $on_error->('event received, but no on_event handler') };
    return $st;
}

# A condvar works as a callback (its send), as with AnyEvent::Fork.
sub _code {
    my ($cb) = @_;
    return $cb if !defined $cb || !Scalar::Util::blessed($cb) || !$cb->can('send');
    return sub { $cb->send(@_) };
}

# Sends one call: $c_call is fork_rpc_call or fork_pool_call. A call the
# library refuses (the worker is known to be gone, the pool was freed)
# fails like a call that got no reply: on_error, from the loop.
sub _call {
    my ($st, $handle, $c_call, $args) = @_;
    my $cb = pop @$args;
    unless (ref $cb eq 'CODE') {
        Carp::croak('AnyFork::RPC: the last argument must be the callback (code or a condvar)')
          unless Scalar::Util::blessed($cb) && $cb->can('send');
        $cb = _code($cb);
    }
    my $req = $st->{freeze}->(@$args);
    $req = AnyFork::Lib::octets($req) if utf8::is_utf8($req) || !defined $req;
    my $call = ++$NEXT;
    $CALLS{$call} = [$st, $cb];
    my $rc = $c_call->($handle, $req, length $req, $REPLY_PTR, $call);
    if ($rc < 0) {
        my $c = delete $CALLS{$call};
        Carp::croak(AnyFork::Lib::error()) unless $rc == -POSIX::EPIPE();
        my $err = AnyFork::Lib::error();
        AnyFork::_due(\&_replied, $c, $rc, undef, $err);
        AnyFork::_rearm();
    }
    AnyFork::_watch();
    return;
}

sub _replied {
    my ($c, $status, $bytes, $err) = @_;
    my ($st, $cb) = @$c;
    if ($status < 0) {
        local $! = -$status;
        return $st->{on_error}->($err);
    }
    my $kind = substr $bytes, 0, 1, '';
    if ($kind eq AnyFork::RPC::Worker::OK) {
        return $cb->($st->{thaw}->($bytes));
    }
    if ($kind eq AnyFork::RPC::Worker::DIED) {
        chomp $bytes;
        return $st->{on_error}->("the worker's function died: $bytes");
    }
    $st->{on_error}->('a reply that is not from AnyFork::RPC\'s worker (wrong function?)');
}

# Hands the process over (it is consumed, as by run): returns the C
# handle. $start gets the process pointer and the state id.
sub _take {
    my ($proc, $st, $start) = @_;
    my $p = $proc->_p;
    delete $proc->{p};
    # The template the process was forked from must outlive its report.
    $st->{parent} = delete $proc->{parent};
    $LIVE{ $st->{id} } = $st;
    my $h = $start->($p, $st->{id});
    unless ($h) {
        delete $LIVE{ $st->{id} };
        Carp::croak(AnyFork::Lib::error());
    }
    AnyFork::_watch();
    return $h;
}

# my $rpc = AnyFork::RPC::run($proc, $function, %arg), or
# $proc->AnyFork::RPC::run(...): the process (consumed) serves $function.
sub run {
    my ($proc, $function, %arg) = @_;
    Carp::croak('AnyFork::RPC::run: not an AnyFork process') unless Scalar::Util::blessed($proc) && $proc->isa('AnyFork');
    Carp::croak('AnyFork::RPC::run: no function name') unless defined $function && length $function;
    my $st = _state('AnyFork::RPC::run', %arg);
    my $backend = 'AnyFork::RPC::' . ($arg{async} ? 'Async' : 'Sync');
    $proc->require($backend)->send_arg($function, $arg{init}, $st->{serialiser});
    my $h = _take($proc, $st, sub {
        AnyFork::Lib::fork_rpc_start($_[0], "${backend}::run", $EVENT, $_[1]);
    });
    my $guard = bless { h => $h, id => $st->{id}, pid => $$ }, 'AnyFork::RPC::Guard';
    return sub {
        Carp::croak('AnyFork::RPC: this RPC object belongs to process ' . $guard->{pid})
          unless $guard->{pid} == $$;
        _call($st, $guard->{h}, \&AnyFork::Lib::fork_rpc_call, \@_);
    };
}

# Dropping the RPC object frees it gracefully.
sub AnyFork::RPC::Guard::DESTROY {
    my ($g) = @_;
    return unless $g->{pid} == $$ && $g->{h};
    AnyFork::Lib::fork_rpc_free(delete $g->{h}, $DESTROYED, $g->{id});
    AnyFork::_watch();
}

# For AnyFork::Pool.
sub _live { $LIVE{ $_[0] } }

1;

__END__

=head1 NAME

AnyFork::RPC - AnyEvent::Fork::RPC's API on libanyfork's RPC

=head1 SYNOPSIS

  use AnyFork::RPC;

  my $rpc = AnyFork->new
     ->require ("MyWorker")
     ->AnyFork::RPC::run ("MyWorker::run",
          on_error   => sub { warn "error: $_[0]" },
          on_event   => sub { print "event: @_\n" },
          on_destroy => sub { print "gone\n" },
       );

  $rpc->(rmdir => "/tmp/x", sub { print "returned @_\n" });
  undef $rpc;
  AnyFork::wait;    # or let AnyEvent's loop run

See bindings/perl/README.md ("RPC and pools").

=cut
