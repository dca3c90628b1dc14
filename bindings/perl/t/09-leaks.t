# No fd leaks after 1,000 creations through every path of the binding:
# run with a callback that drops the socket, run without a callback,
# objects destroyed before run, forks of a prepared template, to_fh /
# new_from_fh, exec.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use TestUtil;

open my $null, '<', '/dev/null' or die;

# Warm up: the default template and the library's loop fd exist from now.
my $tmpl = AnyFork->new->send_fh($null)->send_arg('template arg');
AnyFork->new->run('CORE::exit', sub { });
AnyFork->new_native->exec(['/bin/true'], sub { });    # the library's own template
AnyFork::wait;
my $before = fd_count();

my ($created, $callbacks, $exits) = (0, 0, 0);
for my $round (1 .. 20) {
    for my $i (1 .. 15) {
        AnyFork->new->send_fh($null)->send_arg("n$i")->run('CORE::exit', sub {
            my ($fh) = @_;
            $callbacks++ if $fh;
        });
        $created++;
    }
    for my $i (1 .. 10) {
        AnyFork->new->send_arg('never run');    # destroyed at once: it exits
        $created++;
    }
    for my $i (1 .. 10) {
        $tmpl->fork->send_fh($null, $null)->run('CORE::exit');    # no callback
        $created++;
    }
    for my $i (1 .. 5) {
        my $fh = $tmpl->fork->send_arg('handed over')->to_fh;
        AnyFork->new_from_fh($fh)->send_fh($null)->run('CORE::exit', sub { $callbacks++ if $_[0] });
        $created++;
    }
    for my $i (1 .. 5) {
        AnyFork->new_native->send_fh($null)->on_exit(sub { $exits++ if $_[1] == 0 })
          ->exec(['/bin/true'], sub { $callbacks++ if $_[0] });
        $created++;
    }
    for my $i (1 .. 5) {
        $tmpl->fork->on_exit(sub { $exits++ if $_[1] == 0 })->run('CORE::exit', sub { $callbacks++ if $_[0] });
        $created++;
    }
    AnyFork::wait(60);
}

is $created, 1000, '1,000 processes created';
is $callbacks, 20 * 30, 'every run callback got its socket';
is $exits, 20 * 10, 'every exit was reported with status 0';
is AnyFork::pending(), 0, 'nothing is pending';
is fd_count(), $before, 'no fd leaked'
  or diag `ls -l /proc/$$/fd`;

# The processes are gone: only the templates are left as our children.
my @kids;
for my $wait (1 .. 100) {
    @kids = ();
    opendir my $d, '/proc' or die;
    for my $pid (grep { /^\d+$/ } readdir $d) {
        open my $st, '<', "/proc/$pid/stat" or next;
        my $stat = <$st> // next;
        my ($state, $ppid) = $stat =~ /\) (\S) (\d+)/ or next;
        push @kids, "$pid $state" if $ppid == $$;
    }
    last if @kids <= 2;
    select undef, undef, undef, 0.05;
}
cmp_ok scalar(@kids), '<=', 2, "only the templates are our children (@kids)";

undef $tmpl;
done_testing;
