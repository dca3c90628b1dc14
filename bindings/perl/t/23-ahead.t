#! perl
# fork_ahead: ->fork hands out a process forked before the call, holding
# what the template had; a string sent to the template reaches the next
# ones; the waiting processes go with the template.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TestUtil;
use AnyFork;

sub children_of {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/task/$pid/children" or return ();
    local $/;
    return split ' ', (<$fh> // '');
}

# Alive and not a zombie (an orphan's zombie waits for init).
sub alive {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh> // '';
    return $stat =~ /\)\s+([A-Za-z])/ && $1 ne 'Z';
}

# Each process execs sh, which echoes the strings it got: the template's
# first, then its own; its stdout is the comm socket.
sub echo_from {
    my ($p, $word) = @_;
    my $fh;
    $p->send_arg($word)->exec(['last'], sub { $fh = shift });
    AnyFork::wait while !$fh;
    return read_all($fh);
}

my $t = AnyFork->new_native
  ->eval_function('anyfork_comm_fd', '1')
  ->send_arg('/bin/sh', '-c', 'echo "$@"', 'sh', 'one');
is $t->fork_ahead(2), $t, 'fork_ahead returns the template';
my $tpid = $t->pid;
my @waiting;
for (1 .. 200) {
    @waiting = children_of($tpid);
    last if @waiting == 2;
    select undef, undef, undef, 0.05;
}
is scalar(@waiting), 2, 'two processes wait in the template';

my $p = $t->fork;
my $pid = $p->pid;
ok((grep { $_ == $pid } @waiting), "the fork ($pid) was one of them (@waiting)");
is echo_from($p, 'x'), "one x last\n", 'it has the template\'s strings and its own';

$t->send_arg('two');
for my $i (1 .. 3) {
    is echo_from($t->fork, "y$i"), "one two y$i last\n", "fork $i after a string sent to the template has it";
}

eval { $t->fork_ahead(65) };
like $@, qr/0 to 64/, '65 is refused';
eval { $t->fork_ahead('many') };
like $@, qr/0 to 64/, 'so is a word';

undef $t;
my @left = ($tpid);
for (1 .. 200) {
    @left = grep { alive($_) } $tpid, @waiting;
    last unless @left;
    AnyFork::dispatch();
    select undef, undef, undef, 0.05;
}
is "@left", '', 'the template and its waiting processes are gone with its handle';
done_testing;
