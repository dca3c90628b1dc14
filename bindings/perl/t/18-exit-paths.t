# Issue 11: run("CORE::exit") is fast where it may be (a process holding
# no Perl code but AnyFork's leaves without global destruction), and
# keeps Perl's exit where it must: END blocks and destructors of a
# template that received Perl code run once in every child that exits,
# and never in the child of a lean template (there are none).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use TestUtil;

my $dir = tmpdir();

# Exits and their statuses, reported by the template.
sub statuses_of {
    my (@procs) = @_;
    my %st;
    for my $p (@procs) {
        $p->on_exit(sub { $st{ $_[0] } = $_[1] })->run('CORE::exit');
    }
    AnyFork::wait(20);
    return %st;
}

# A lean child: status 0, also with only handles sent.
{
    open my $fh, '<', '/dev/null' or die "/dev/null: $!";
    my %st = statuses_of(AnyFork->new, AnyFork->new->send_fh($fh));
    is_deeply [values %st], [0, 0], 'CORE::exit in a lean child: status 0';
}

# A string sent: still exits 0 (AnyFork's CORE::exit takes no status
# from the strings).
{
    my %st = statuses_of(AnyFork->new->send_arg('7'));
    is_deeply [values %st], [0], 'CORE::exit with a string sent: status 0, not the string';
}

# CORE::exit reaching the process's own side (the caller no longer knew
# the process was lean: a builtin eval was sent): status 0 through C's
# exit, the END block of the process's side not needed.
{
    my %st = statuses_of(AnyFork->new->eval_function('anyfork_setenv', 'ANYFORK_T18=1'));
    is_deeply [values %st], [0], 'CORE::exit after a builtin eval: status 0';
}

# A template with an END block and an object with a destructor: each of
# three children writes both once, with its own pid; the template writes
# nothing while it lives.
{
    my $log = "$dir/end.log";
    my $t = AnyFork->new->eval(<<'PERL', $log);
        our $LOG = $_[0];
        sub Guard::DESTROY { open my $f, '>>', $LOG or die; print $f "destroy $$\n"; close $f }
        our $GUARD = bless {}, 'Guard';
        END { open my $f, '>>', $LOG or die; print $f "end $$\n"; close $f }
PERL
    my @kids = map { $t->fork } 1 .. 3;
    my %st = statuses_of(@kids);
    is scalar(keys %st), 3, 'three children exited';
    is_deeply [values %st], [0, 0, 0], 'with status 0';
    my $text = slurp($log) // '';
    my %end     = map { $_ => 1 } $text =~ /^end (\d+)$/mg;
    my %destroy = map { $_ => 1 } $text =~ /^destroy (\d+)$/mg;
    my @lines   = split /\n/, $text;
    is_deeply [sort keys %end],     [sort keys %st], 'the END block ran in each child';
    is_deeply [sort keys %destroy], [sort keys %st], 'the destructor ran in each child';
    is scalar(@lines), 6, 'once each: nothing else was written' or diag $text;
}

# The same through a Perl run function that returns: END and DESTROY once.
{
    my $log = "$dir/run.log";
    my $t = AnyFork->new->eval(<<'PERL', $log);
        our $LOG = $_[0];
        sub Guard2::DESTROY { open my $f, '>>', $LOG or die; print $f "destroy $$\n"; close $f }
        our $GUARD = bless {}, 'Guard2';
        END { open my $f, '>>', $LOG or die; print $f "end $$\n"; close $f }
        sub work { print { $_[0] } "worked $$\n" }
PERL
    my ($line, $pid);
    my $p = $t->fork;
    $p->on_exit(sub { $pid = $_[0] })->run('work', sub { $line = read_line($_[0]) });
    AnyFork::wait(20);
    is $line, "worked $pid\n", 'the run function worked';
    is slurp($log), "end $pid\ndestroy $pid\n", 'END, then the destructor, once';
}

done_testing;
