package AnyFork::XS;

# The compiled part of AnyFork for the processes: libanyfork's dispatcher,
# fork hook, server loop and received arguments, called from Perl without
# FFI::Platypus (see XS.xs). AnyFork::Serve uses it when it is built
# (`perl Makefile.PL && make`, or bindings/perl/build-xs.pl), which keeps
# the exec'd Perl template small; without it AnyFork::Serve goes through
# AnyFork::Lib (FFI::Platypus).

use strict;

our $VERSION = '0.01';

require XSLoader;
XSLoader::load('AnyFork::XS', $VERSION);

1;
