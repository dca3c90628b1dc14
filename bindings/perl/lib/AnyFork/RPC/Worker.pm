package AnyFork::RPC::Worker;

# What a worker's own code calls, in the process an RPC or a pool runs
# (AnyFork::RPC::Sync or ::Async set the backend): AnyFork::RPC::event and
# AnyFork::Pool::retire, also under AnyEvent::Fork::RPC's and
# AnyEvent::Fork::Pool's names, so code written for those modules runs
# unchanged. Outside a worker they die.

use strict;
use warnings;

use Carp ();

our $VERSION = '0.01';

# Set by the backend while it serves: code refs taking the event's values,
# and none (retire).
our ($EVENT, $RETIRE);

# The payload of every reply starts with one byte: OK, then the frozen
# return values; DIED, then the message of the exception the function
# died with (the caller's on_error gets it; the worker goes on).
use constant { OK => "\0", DIED => "\1" };

sub AnyFork::RPC::event {
    Carp::croak('AnyFork::RPC::event: not in an RPC worker') unless $EVENT;
    $EVENT->(@_);
    return;
}

sub AnyFork::Pool::retire {
    Carp::croak('AnyFork::Pool::retire: not in a pool worker') unless $RETIRE;
    $RETIRE->();
    return;
}

# AnyEvent::Fork::RPC and ::Pool's names, unless the real modules are here.
{
    no strict 'refs';
    *{'AnyEvent::Fork::RPC::event'} = \&AnyFork::RPC::event
      unless defined &{'AnyEvent::Fork::RPC::event'};
    *{'AnyEvent::Fork::Pool::retire'} = \&AnyFork::Pool::retire
      unless defined &{'AnyEvent::Fork::Pool::retire'};
}

# Splits a backend's arguments (comm socket, what was sent, then the
# function, init and serialiser the caller sent last), calls init in
# package main with the arguments between, and returns the socket, the
# function as a code ref and the freeze and thaw subs.
sub setup {
    my ($fh, @args) = @_;
    my ($function, $init, $serialiser) = splice @args, -3, 3;
    {
        package main;
        no strict 'refs';
        &$init(@args) if defined $init && length $init;
        $function = \&$function;
    }
    Carp::croak("AnyFork::RPC: no function '$_[-3]' in the worker") unless defined &$function;
    my ($freeze, $thaw) = CORE::eval $serialiser;
    die "AnyFork::RPC: the serialiser does not compile: $@" if $@;
    die "AnyFork::RPC: the serialiser gave no freeze and thaw code refs\n"
      unless ref $freeze eq 'CODE' && ref $thaw eq 'CODE';
    return ($fh, $function, $freeze, $thaw);
}

1;
