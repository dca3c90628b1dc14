# Issue 19 item 10 and the checklist's "handles dropped before and after
# run with no wait call": the fds of freed processes are released.
#
# AnyFork::wait dispatches while the library has work (fork_pending counts
# queued deliveries too), and the AnyEvent watcher is kept while nothing is
# pending; libanyfork holds no fd for a freed process whose fork request
# still waits in its template's queue (issue 17 item 6).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use TestUtil;

my $have_ae = eval { require AnyEvent; AnyEvent::detect(); 1 };

# Warm up: the default template and the loop fd exist from now.
AnyFork->new->run('CORE::exit', sub { });
AnyFork::wait(10);
my $base = fd_count();

# Under AnyEvent the loop releases them with no AnyFork::wait at all.
SKIP: {
    skip 'AnyEvent is not installed', 1 unless $have_ae;
    AnyFork->new->send_arg('x') for 1 .. 500;
    my $cv = AE::cv();
    my $poll = AE::timer(0.05, 0.05, sub { $cv->send('flat') if fd_count() <= $base });
    my $limit = AE::timer(10, 0, sub { $cv->send('timeout') });
    my $how = $cv->recv;
    is $how, 'flat', "500 objects dropped: the AnyEvent loop released their fds (@{[fd_count()]} open, $base before)";
}

# 1,000 drops with no dispatch in between hold no fds (issue 17 item 6).
AnyFork->new->send_arg('x') for 1 .. 1000;
cmp_ok fd_count() - $base, '<', 100, '1,000 drops without a dispatch hold no fds';
AnyFork::wait(30);

# 3,000 drops, then AnyFork::wait: fds flat.
AnyFork->new->send_arg('x') for 1 .. 3000;
AnyFork::wait(30);
cmp_ok fd_count(), '<=', $base, '3,000 drops, then wait: fds flat';

# The same under a 1,024-fd limit, in a fresh perl: no EMFILE.
{
    my $code = 'use AnyFork; AnyFork->new->send_arg("x") for 1 .. 3000; AnyFork::wait(30); print "done\n"';
    my $out = `ulimit -n 1024 && $^X -I$FindBin::Bin/../lib -e '$code' 2>&1`;
    is $out, "done\n", '3,000 drops under ulimit -n 1024';
}

{
    my $rss = sub { (slurp('/proc/self/status') // '') =~ /VmRSS:\s+(\d+)/ ? $1 : 0 };
    # Both templates exist before counting (new_native forks from the
    # library's own default template, a second one).
    AnyFork->new_native->exec(['/bin/true']);
    AnyFork::wait(30);
    my $fds = fd_count();
    my $fds_max = 0;
    my $drop = sub {
        my ($i) = @_;
        if ($i % 2) { AnyFork->new->send_arg('x') }                  # dropped before run
        else        { AnyFork->new_native->exec(['/bin/true']) }     # after run, no callback
    };
    for my $i (1 .. 20_000) {
        $drop->($i);
        if ($i % 1000 == 0) { my $n = fd_count(); $fds_max = $n if $n > $fds_max }
    }
    cmp_ok $fds_max, '<=', $fds + 50, '20,000 drops before and after run, no wait: fds flat';
    AnyFork::wait(30);
    cmp_ok fd_count(), '<=', $fds, 'all released';
    # Memory, in rounds of 5,000 delivered by a wait each (requests still
    # queued are memory until delivered, and a high-water mark stays with
    # the allocator): the last round adds at most 512 kB.
    my @rss;
    for my $round (1 .. 4) {
        $drop->($_) for 1 .. 5_000;
        AnyFork::wait(30);
        push @rss, $rss->();
    }
    cmp_ok $rss[-1], '<=', $rss[-2] + 512, "memory flat (RSS in kB by round: @rss)";
}

done_testing;
