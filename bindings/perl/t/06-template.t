#! perl
# The manual's "stingy standalone program": AnyFork::Template forks this
# program as a template, and its processes run this program's own subs
# with the data prepared before the fork; nothing is exec'd.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

# next, load all modules you need in your template process
use List::Util ();
use TestUtil;

# next, put your run function definition and anything else you
# need, but do not use code outside of BEGIN blocks.
our %PREPARED;
BEGIN { %PREPARED = (answer => 42, list => [1 .. 5]) }

sub worker_run {
   my ($fh, @args) = @_;
   print $fh join(' ', 'worker', @args, $PREPARED{answer}, List::Util::sum(@{ $PREPARED{list} }), $$), "\n";
}

sub worker_with_handle {
   my ($fh, $pipe, $word) = @_;
   syswrite $pipe, "$word from $$\n";
}

# now preserve everything so far as AnyFork object in $TEMPLATE.
use AnyFork::Template;

# do not put code outside of BEGIN blocks until here

use Test::More;

isa_ok $TEMPLATE, 'AnyFork';
is $AnyFork::TEMPLATE, $TEMPLATE, 'it is the default template of AnyFork->new now';
my $tpid = $TEMPLATE->pid;
like $tpid, qr/^\d+$/, 'the template is a direct child with a pid';

# now use the $TEMPLATE process in any way you like

# for example: create 10 worker processes
my @worker;
for (1 .. 10) {
   $TEMPLATE->fork->send_arg ($_)->run ("worker_run", sub {
      push @worker, shift;
   });
}
AnyFork::wait;
is scalar(@worker), 10, 'ten workers';

my %seen;
for my $fh (@worker) {
    my $line = read_all($fh);
    if ($line =~ /^worker (\d+) 42 15 (\d+)$/) {
        $seen{$1} = $2;
    }
    else {
        diag "unexpected: $line";
    }
}
is_deeply [sort { $a <=> $b } keys %seen], [1 .. 10], 'each ran worker_run with its argument and the prepared data';
ok !grep({ $_ == $$ || $_ == $tpid } values %seen), 'in processes of their own';

# AnyFork->new forks the template too.
{
    my $comm;
    AnyFork->new->send_arg('via-new')->run('main::worker_run', sub { $comm = shift });
    AnyFork::wait;
    like read_all($comm), qr/^worker via-new 42 15 \d+$/, 'AnyFork->new uses $TEMPLATE';
}

# Handles are sent as usual; eval changes the data of one process only.
{
    pipe my $r, my $w or die;
    $TEMPLATE->fork->send_fh($w)->send_arg('hello')->run('worker_with_handle');
    close $w;
    AnyFork::wait;
    like read_line($r), qr/^hello from \d+$/, 'handles reach template processes';

    my $comm;
    $TEMPLATE->fork->eval('$main::PREPARED{answer} = $_[0]', 43)->send_arg('x')
      ->run('worker_run', sub { $comm = shift });
    AnyFork::wait;
    like read_all($comm), qr/^worker x 43 15 /, 'eval works in template processes';
    $TEMPLATE->fork->send_arg('y')->run('worker_run', sub { $comm = shift });
    AnyFork::wait;
    like read_all($comm), qr/^worker y 42 15 /, 'without changing the template';
}

# A template made of a template.
{
    my $t2 = $TEMPLATE->fork->eval('$main::PREPARED{answer} = 7');
    my @c;
    $t2->fork->send_arg($_)->run('worker_run', sub { push @c, shift }) for 1 .. 3;
    AnyFork::wait;
    is scalar(grep { read_all($_) =~ /^worker \d 7 15 / } @c), 3, 'forks of a prepared template';
}

# Everything ends with this program: its END blocks do not run in the
# children (Test::More was loaded after the fork).
done_testing;
