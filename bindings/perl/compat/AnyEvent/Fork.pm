package AnyEvent::Fork;

# AnyFork under AnyEvent::Fork's name. With bindings/perl/compat first on
# @INC (perl -I bindings/perl/compat, or PERL5LIB), a program written for
# AnyEvent::Fork, and modules built on it (AnyEvent::Fork::RPC,
# AnyEvent::Fork::Pool), load this instead and run unchanged on
# libanyfork:
#
#   AnyEvent::Fork->new, ->new_exec, ->new_from_fh, ->fork, ->send_fh,
#   ->send_arg, ->eval, ->require, ->run, ->to_fh, ->pid
#
# are AnyFork's (an AnyEvent::Fork object is an AnyFork object), with an
# AnyEvent condvar or a code reference as callback. $AnyEvent::Fork::TEMPLATE,
# $EARLY and $PERL are AnyFork's variables under these names: undef them
# and the next new makes a fresh template, as the manual says. In the
# processes, code given to eval sees @arg, and AnyEvent::Fork::Serve::run_args
# works, as in AnyEvent::Fork's own server.

use strict;
use warnings;

use AnyFork ();

our @ISA     = ('AnyFork');
our $VERSION = '1.32';    # the AnyEvent::Fork release whose manual this follows

our ($TEMPLATE, $EARLY, $PERL);
*TEMPLATE = \$AnyFork::TEMPLATE;
*EARLY    = \$AnyFork::EARLY;
*PERL     = \$AnyFork::PERL;

# AnyFork->new forks the shared default template, which may have been made
# by AnyFork itself: the process belongs to the class asked for.
sub new {
    my $class = shift;
    my $proc  = $class->SUPER::new(@_);
    return bless $proc, ref $class || $class;
}

1;
