# Issue 19 item 12 and the checklist's "the host's own fork" and "exit
# statuses": after Perl's fork, with no reset_after_fork call, the child
# never runs the parent's callbacks nor reads its processes' data, and
# both sides keep working; a child ends with the status Perl's own fork
# gives for the same ending.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use POSIX ();
use AnyFork;
use TestUtil;

my $t = AnyFork->new->eval('sub hi { my ($fh) = @_; print $fh "hi $$\n"; <$fh> }');
my @got;
for (1 .. 10) {
    $t->fork->run('hi', sub { push @got, $_[0] ? read_line($_[0]) : "failed: $_[1]" });
}

pipe my $r, my $w or die "pipe: $!";
my $pid = fork // die "fork: $!";
unless ($pid) {
    close $r;
    # No reset_after_fork: AnyFork notices the new process by itself.
    my $ran = AnyFork::wait(5);
    my $own = 'none';
    AnyFork->new->eval('sub two { my ($fh) = @_; print $fh "two\n" }')
      ->run('two', sub { $own = $_[0] ? read_line($_[0]) : "failed: $_[1]" });
    AnyFork::wait(10);
    chomp $own;
    print $w "parent callbacks run in the child: $ran; own: $own\n";
    close $w;
    POSIX::_exit(0);
}
close $w;
my $report = read_line($r, 30) // 'nothing';
waitpid $pid, 0;
is $report, "parent callbacks run in the child: 0; own: two\n", 'the child runs none of ours and makes its own';

AnyFork::wait(10);
is scalar(@got), 10, 'the parent got every callback';
is scalar(grep { defined && /^hi \d+$/ } @got), 10, 'and every greeting (the child read none)';

# Exit statuses: each way a child can end, through AnyFork and through
# Perl's own fork.
my @ends = (
    [exit          => 'exit 3'],
    [posix_exit    => 'POSIX::_exit(4)'],
    [die           => '$! = 0; $? = 0; die "bye\n"'],
    [die_errno     => '$! = 5; die "bye\n"'],
    [die_child     => '$! = 0; $? = 6 << 8; die "bye\n"'],
    [signal        => 'kill "TERM", $$; sleep 10'],
    [return        => '1'],
);
my $code = join '', map { "sub end_$_->[0] { open STDERR, '>', '/dev/null'; $_->[1] }\n" } @ends;
eval "$code; 1" or die $@;
my $tmpl = AnyFork->new->eval("use POSIX (); $code");
for my $end (@ends) {
    my ($how, $body) = @$end;
    my $name = "end_$how";
    my $perl = fork // die "fork: $!";
    unless ($perl) { no strict 'refs'; &$name(); CORE::exit(0) }
    waitpid $perl, 0;
    my $want = $?;
    my $status;
    $tmpl->fork->on_exit(sub { $status = $_[1] })->run($name);
    AnyFork::wait_for(sub { defined $status }, 20);
    is $status, $want, "$how ($body): wait status $want, as with Perl's fork";
}

undef $t;
undef $tmpl;
AnyFork::wait(10);
done_testing;
