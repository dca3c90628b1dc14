package AnyEvent::Fork::Early;

# AnyFork::Early under AnyEvent::Fork's name (see AnyEvent/Fork.pm here):
# forks the program first thing; the copy becomes $AnyEvent::Fork::EARLY
# and also $AnyEvent::Fork::TEMPLATE, so new_exec and new fork it instead
# of executing perl.

use strict;
use warnings;

use AnyEvent::Fork ();

our $VERSION = '1.32';

$AnyEvent::Fork::TEMPLATE = $AnyEvent::Fork::EARLY = AnyEvent::Fork->_template;

1;
