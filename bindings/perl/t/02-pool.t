# The manual's pre-forked server: a template holds the listening socket,
# and every worker forked from it accepts on that same socket.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use AnyFork;
use TestUtil;

my $WORKERS = 5;

# create listener socket
my $listener = IO::Socket::INET->new(
    LocalAddr => '127.0.0.1',
    LocalPort => 0,
    Listen    => 16,
    ReuseAddr => 1,
) or die "listen: $@";
my $port = $listener->sockport;

# create a pool template, initialise it and give it the socket
my $pool = AnyFork
              ->new
              ->require ("Some::Stuff", "My::Server")
              ->send_fh ($listener);

# now create the workers
my (@comm, %status);
for my $id (1 .. $WORKERS) {
   $pool
      ->fork
      ->send_arg ($id)
      ->on_exit (sub { $status{$id} = $_[1] })
      ->run ("My::Server::run", sub { push @comm, shift });
}

# The workers have their own copies of the socket now. (The template
# could go too, but it reports the workers' exit statuses: keep it.)
close $listener;

AnyFork::wait_for(sub { @comm == $WORKERS }, 30);
is scalar(@comm), $WORKERS, 'every worker was started';

my %ready;
for my $fh (@comm) {
    my $line = read_line($fh);
    like $line, qr/^ready (\d+) (\d+)$/, 'a worker is ready';
    $ready{$1} = $2 if $line =~ /^ready (\d+) (\d+)/;
}
is_deeply [sort keys %ready], [1 .. $WORKERS], 'each with its own id';

sub ask {
    my ($what) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 10)
      or return "connect: $@";
    print $s "$what\n";
    my $answer = <$s>;
    return defined $answer ? $answer : 'no answer';
}

my %served_by;
for my $n (1 .. 40) {
    my $answer = ask("ping $n");
    if ($answer =~ /^(\d+) (\d+) ping $n$/ && $ready{$1} && $ready{$1} == $2) {
        $served_by{$1}++;
    }
    else {
        fail "ping $n: $answer";
    }
}
is eval { my $t = 0; $t += $_ for values %served_by; $t }, 40, 'every connection was served by a worker';
note 'served by workers: ' . join ', ', map { "$_ => $served_by{$_}" } sort keys %served_by;

# Each "quit" ends the worker that accepts it.
my %quit;
for (1 .. $WORKERS) {
    my $answer = ask('quit');
    $quit{$1}++ if $answer =~ /^(\d+) \d+ quit$/;
}
is scalar(keys %quit), $WORKERS, 'every worker took one quit';

AnyFork::wait(30);
is_deeply [map { $status{$_} } 1 .. $WORKERS], [(0) x $WORKERS], 'every worker exited with status 0';
is read_all($_, 10), '', 'comm socket at EOF' for @comm;

# Destroying the template makes it vanish; the exit statuses it would
# have reported are then unknown (-ECHILD).
{
    my $pid = $pool->pid;
    my $gone;
    $pool->on_exit(sub { $gone = 1 });
    undef $pool;
    AnyFork::wait(20);
    ok $gone, 'the template exited once destroyed';
    ok !kill(0, $pid), 'and is gone';
}

done_testing;
