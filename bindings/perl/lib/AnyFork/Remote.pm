package AnyFork::Remote;

# Remote templates in the shape of AnyEvent::Fork::Remote's constructor:
#
#   my $t = AnyFork::Remote->new_execp('ssh', 'ssh', $host, 'anyfork-serve', '--stdio');
#
# runs the program (searched in PATH) with the argv that follows (argv[0]
# first, as exec does), and returns an AnyFork template whose stdin and
# stdout reach `anyfork-serve --stdio` on the other machine. Unlike
# AnyEvent::Fork::Remote, processes are forked there from one connection
# (not a new ssh session each), and the far side runs anyfork-serve, not a
# bare perl: add '--', 'perl', '-MAnyFork::Serve', '-e',
# 'AnyFork::Serve::serve()' for Perl code there (AnyFork->new_remote_perl
# does). send_fh dies: fds cannot cross machines.

use strict;
use warnings;

use AnyFork ();

sub new_execp {
    my ($class, $file, $argv0, @args) = @_;
    Carp::croak('AnyFork::Remote->new_execp: no program') unless defined $file;
    return AnyFork->new_remote($file, @args);
}

1;
