package AnyEvent::Fork::Template;

# AnyFork::Template under AnyEvent::Fork's name (see AnyEvent/Fork.pm
# here): forks the program where this module is used; the copy is
# $AnyEvent::Fork::Template, and $TEMPLATE in the package that used it,
# as the manual's example writes it.

use strict;
use warnings;

use AnyEvent::Fork ();

our $VERSION = '1.32';

$AnyEvent::Fork::Template = AnyEvent::Fork->_template;

sub import {
    my $pkg = caller;
    no strict 'refs';
    *{"${pkg}::TEMPLATE"} = \$AnyEvent::Fork::Template;
}

1;
