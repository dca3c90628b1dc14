package AnyFork::Pool;

# AnyEvent::Fork::Pool's API on libanyfork's pools (fork_pool_new, _call,
# _free): the C library forks the workers from the template, sends each
# call to the least-loaded worker (or queues it), starts and stops
# workers by max / idle / load / start / stop, replaces workers that
# retire or die. The workers run AnyFork::RPC's backends, so the worker
# side is AnyEvent::Fork::RPC's (sync or async, events, retire).
#
#   my $pool = AnyFork->new->require("MyWorker")
#      ->AnyFork::Pool::run("MyWorker::run", max => 4, load => 2);
#   $pool->(1, 2, sub { my @results = @_ });
#   undef $pool;    # graceful: queued calls are answered, then on_destroy

use strict;
use warnings;

use Carp ();
use Scalar::Util ();
use AnyFork;
use AnyFork::Lib;
use AnyFork::RPC;

our $VERSION = '0.01';

our @CARP_NOT = qw(AnyFork AnyFork::Lib AnyFork::RPC);

# Pools by the address of their code ref, for workers().
my %BY_CODE;

# The number of CPUs (the default of max), or $default (else 1) when it
# cannot be known. AnyEvent::Fork::Pool's function of that name.
sub ncpu {
    my ($default) = @_;
    my $n = AnyFork::Lib::fork_pool_defaults()->max;
    $n = defined $default ? $default : 1 unless $n;
    return wantarray ? ($n, $n) : $n;
}

my %OPT = map { $_ => 1 } qw(max idle load start stop retire_after);

# my $pool = AnyFork::Pool::run($template, $function, %arg), or
# $template->AnyFork::Pool::run(...). The template is consumed.
sub run {
    my ($template, $function, %arg) = @_;
    Carp::croak('AnyFork::Pool::run: the template is not an AnyFork process')
      unless Scalar::Util::blessed($template) && $template->isa('AnyFork');
    Carp::croak('AnyFork::Pool::run: no function name') unless defined $function && length $function;
    my $opts = AnyFork::Lib::fork_pool_defaults();
    for my $k (grep { $OPT{$_} } sort keys %arg) {
        my $v = $arg{$k};
        Carp::croak("AnyFork::Pool::run: $k must be a number, not " . (defined $v ? "'$v'" : 'undef'))
          unless defined $v && Scalar::Util::looks_like_number($v) && $v >= 0;
        $opts->$k($v);
    }
    # AnyEvent::Fork::Pool's on_event default: events are ignored.
    my $st = AnyFork::RPC::_state('AnyFork::Pool::run', on_event => sub { }, %arg);
    my $backend = 'AnyFork::RPC::' . ($arg{async} ? 'Async' : 'Sync');
    $template->require($backend)->send_arg($function, $arg{init}, $st->{serialiser});
    my $h = AnyFork::RPC::_take($template, $st, sub {
        AnyFork::Lib::fork_pool_new($_[0], "${backend}::run", $opts, $AnyFork::RPC::EVENT, $_[1]);
    });
    my $guard = bless { h => $h, id => $st->{id}, pid => $$ }, 'AnyFork::Pool::Guard';
    my $code = sub {
        Carp::croak('AnyFork::Pool: this pool belongs to process ' . $guard->{pid})
          unless $guard->{pid} == $$;
        AnyFork::RPC::_call($st, $guard->{h}, \&AnyFork::Lib::fork_pool_call, \@_);
    };
    $guard->{code} = Scalar::Util::refaddr($code);
    $BY_CODE{ $guard->{code} } = $guard;
    Scalar::Util::weaken($BY_CODE{ $guard->{code} });
    return $code;
}

# Beyond AnyEvent::Fork::Pool: how many workers $pool has now (retiring
# ones included).
sub workers {
    my ($pool) = @_;
    my $g = ref $pool && $BY_CODE{ Scalar::Util::refaddr($pool) }
      or Carp::croak('AnyFork::Pool::workers: not a live pool');
    return AnyFork::Lib::fork_pool_workers($g->{h});
}

# Dropping the pool frees it gracefully.
sub AnyFork::Pool::Guard::DESTROY {
    my ($g) = @_;
    delete $BY_CODE{ $g->{code} } if defined $g->{code};
    return unless $g->{pid} == $$ && $g->{h};
    AnyFork::Lib::fork_pool_free(delete $g->{h}, $AnyFork::RPC::DESTROYED, $g->{id});
    AnyFork::_watch();
}

1;

__END__

=head1 NAME

AnyFork::Pool - AnyEvent::Fork::Pool's API on libanyfork's pools

=head1 SYNOPSIS

  use AnyFork::Pool;

  my $pool = AnyFork->new
     ->require ("MyWorker")
     ->AnyFork::Pool::run ("MyWorker::run",
          max => 4, idle => 1, load => 2, start => 0.1, stop => 10,
          on_destroy => sub { print "pool gone\n" },
       );

  $pool->(doit => $_, sub { print "returned @_\n" }) for 1 .. 10;
  undef $pool;
  AnyFork::wait;

See bindings/perl/README.md ("RPC and pools").

=cut
