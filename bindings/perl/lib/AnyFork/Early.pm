package AnyFork::Early;

# use AnyFork::Early;   # as the very first thing in the main program
#
# As AnyEvent::Fork::Early: forks the program while it is still small and
# keeps the copy as the template that AnyFork->new_exec (and so the
# default template of AnyFork->new) forks instead of executing a new perl.

use strict;
use warnings;

use AnyFork ();

our $VERSION = '0.01';
our $EARLY = AnyFork->_template;
$AnyFork::EARLY = $EARLY;

1;
