package AnyFork::Template;

# use AnyFork::Template;   # forks this program here, as a template
#
# As AnyEvent::Fork::Template: the program is forked the moment this
# module is loaded (at compile time), and the copy serves as a template
# whose processes run the program's own subs, defined above the use line.
# $TEMPLATE (exported to the package using this module) is its AnyFork
# object; AnyFork->new forks it too, instead of a fresh perl.

use strict;
use warnings;

use AnyFork ();

our $VERSION = '0.01';
our $TEMPLATE = AnyFork->_template;
$AnyFork::TEMPLATE = $TEMPLATE;

sub import {
    my $pkg = caller;
    no strict 'refs';
    *{"${pkg}::TEMPLATE"} = \$TEMPLATE;
}

1;
