# Issue 11: bindings/perl/compat first on @INC makes AnyEvent::Fork,
# ::Early and ::Template load AnyFork; the manual's examples run
# unchanged; Perl children behave as Perl children.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../compat", "$FindBin::Bin/lib";

use Test::More;
use AnyEvent;
use AnyEvent::Fork;
use TestUtil;

my $compat = "$FindBin::Bin/../compat";
my $libdir = "$FindBin::Bin/../lib";

ok(AnyEvent::Fork->new->isa('AnyFork'), 'AnyEvent::Fork->new is an AnyFork process');
ok(AnyEvent::Fork->VERSION >= 0.6, 'with a version modules built on AnyEvent::Fork accept');
is \$AnyEvent::Fork::TEMPLATE, \$AnyFork::TEMPLATE, '$AnyEvent::Fork::TEMPLATE is the default template';

# The manual's first example: a condvar as the callback.
{
    AnyEvent::Fork->new->eval('sub hello { my ($fh, $who) = @_; syswrite $fh, "hello $who from $$\n" }')
      ->send_arg('world')->run('hello', my $cv = AE::cv);
    my $fh = $cv->recv;
    like read_line($fh), qr/^hello world from (\d+)\n\z/, 'run with a condvar';
}

# @arg in eval code, as AnyEvent::Fork::Serve gives it: the handles and
# strings received so far; what the code takes out, run does not get.
{
    pipe my $r, my $w or die "pipe: $!";
    AnyEvent::Fork->new->send_fh($w)->send_arg('one')
      ->eval('our $OUT = $arg[0]; syswrite $OUT, "eval sees " . scalar(@arg) . " $arg[1]\n"; shift @arg')
      ->send_arg('two')
      ->eval('sub show { my ($fh, @rest) = @_; syswrite $main::OUT, "run gets @rest\n" }')
      ->run('show', my $cv = AE::cv);
    close $w;
    $cv->recv;
    is read_all($r), "eval sees 2 one\nrun gets one two\n", '@arg in eval, what is left goes to run';
}

# AnyEvent::Fork::Serve::run_args in the process.
{
    AnyEvent::Fork->new->send_arg('a', 'b')
      ->eval('our @TAKEN = AnyEvent::Fork::Serve::run_args()')
      ->send_arg('c')
      ->eval('sub taken { my ($fh, @rest) = @_; syswrite $fh, "@main::TAKEN | @rest\n" }')
      ->run('taken', my $cv = AE::cv);
    is read_line($cv->recv), "a b | c\n", 'AnyEvent::Fork::Serve::run_args';
}

# The template example: arguments before fork cloned, after fork own.
{
    pipe my $r, my $w or die "pipe: $!";
    my $pool = AnyEvent::Fork->new->send_arg('str1', 'str2')->send_fh($w)
      ->eval('sub Some::function { my ($fh, $s1, $s2, $out, $s3) = @_; syswrite $out, "$s1 $s2 $s3\n" }');
    my $cv = AE::cv;
    for (1 .. 2) {
        $cv->begin;
        $pool->fork->send_arg("str3-$_")->run('Some::function', sub { $cv->end });
    }
    undef $pool;
    close $w;
    $cv->recv;
    is join('', sort split /(?<=\n)/, read_all($r)), "str1 str2 str3-1\nstr1 str2 str3-2\n",
      'a template, forked twice, then dropped';
}

# undef $AnyEvent::Fork::TEMPLATE: the next new makes a fresh one.
{
    my $old = $AnyEvent::Fork::TEMPLATE->pid;
    undef $AnyEvent::Fork::TEMPLATE;
    AnyEvent::Fork->new->run('CORE::exit', my $cv = AE::cv);
    $cv->recv;
    ok defined $AnyEvent::Fork::TEMPLATE && $AnyEvent::Fork::TEMPLATE->pid != $old,
      'undef $TEMPLATE: a fresh template';
}

# pid, new_exec, to_fh / new_from_fh.
{
    my $p = AnyEvent::Fork->new_exec;
    ok $p->pid > 0, 'new_exec: pid of a direct child';
    my $fh = $p->eval('sub where { syswrite $_[0], "$$\n" }')->to_fh;
    my $q = AnyEvent::Fork->new_from_fh($fh);
    is $q->pid, undef, 'new_from_fh: no pid, as the manual says';
    my $pid = $p->pid;
    $q->run('where', my $cv = AE::cv);
    is read_line($cv->recv), "$pid\n", 'the handed-over process runs';
}

# Perl children: $$, fresh random numbers, fork inside, output once.
{
    my $t = AnyEvent::Fork->new->eval(<<'PERL');
        my $x = rand;    # the template draws: its generator state is set
        sub kid {
            my ($fh, $file) = @_;
            open my $out, '>>', $file or die "$file: $!";
            print $out "out $$\n";    # buffered: must come out once
            my $r = int rand 1_000_000_000;
            my $pid = fork;
            if (!$pid) { syswrite $fh, "grandchild $$\n"; exit 0 }
            waitpid $pid, 0;
            syswrite $fh, "kid $$ $r " . getppid() . "\n";
        }
        require POSIX;
PERL
    my $out = tmpdir() . '/out';
    my %seen;
    my $cv = AE::cv;
    for (1 .. 3) {
        my $p = $t->fork->send_arg($out);
        my $pid = $p->pid;
        $cv->begin;
        $p->run('kid', sub { my $fh = shift; $seen{$pid} = read_all($fh); $cv->end });
    }
    $cv->recv;
    my (%r, $ok_pid, $grand);
    for my $pid (keys %seen) {
        my ($kid, $r) = $seen{$pid} =~ /^kid (\d+) (\d+) \d+$/m or next;
        $ok_pid++ if $kid == $pid;
        $r{$r}++;
        $grand++ if $seen{$pid} =~ /^grandchild (\d+)$/m && $1 != $pid;
    }
    is $ok_pid, 3, '$$ is each process\'s own pid';
    is scalar(keys %r), 3, 'each process draws its own random numbers';
    is $grand, 3, 'fork inside a process works';
    my @lines = split /\n/, slurp($out) // '';
    is scalar(@lines), 3, 'buffered output written once per process' or diag "@lines";
}

# Exit statuses as AnyEvent::Fork's: exit N, POSIX::_exit, die ($! else 255).
{
    my $t = AnyEvent::Fork->new->eval(<<'PERL');
        sub ex { exit 3 } sub px { require POSIX; POSIX::_exit(4) }
        sub dies { $! = 0; die "no\n" } sub dies_errno { $! = 5; die "io\n" }
PERL
    my %st;
    my $cv = AE::cv;
    open my $save, '>&', \*STDERR or die;
    open STDERR, '>', '/dev/null' or die;
    for my $f (qw(ex px dies dies_errno)) {
        $cv->begin;
        $t->fork->on_exit(sub { $st{$f} = $_[1] >> 8; $cv->end })->run($f);
    }
    $cv->recv;
    open STDERR, '>&', $save or die;
    is_deeply \%st, { ex => 3, px => 4, dies => 255, dies_errno => 5 }, 'exit statuses';
}

# AnyEvent::Fork::Template and ::Early in programs of their own.
for my $case (
    ['AnyEvent::Fork::Template', 'use AnyEvent::Fork::Template; $AnyEvent::Fork::Template->fork'],
    ['$TEMPLATE from AnyEvent::Fork::Template', 'use AnyEvent::Fork::Template; $TEMPLATE->fork'],
    ['AnyEvent::Fork::Early', 'use AnyEvent::Fork::Early; die unless $AnyEvent::Fork::EARLY == $AnyEvent::Fork::TEMPLATE; AnyEvent::Fork->new_exec'],
) {
    my ($name, $make) = @$case;
    my $prog = <<"PERL";
        BEGIN { our \$MINE = "mine \$\$" }
        sub worker { my (\$fh) = \@_; syswrite \$fh, "\$main::MINE\\n" }
        $make->run('worker', my \$cv = AE::cv);
        my \$fh = \$cv->recv;
        \$fh->blocking(1);
        sysread \$fh, my \$buf, 100;
        print \$buf;
PERL
    $prog = "use AnyEvent; BEGIN { require AnyEvent::Fork } " . $prog if $name =~ /Early/;
    my $file = tmpdir() . '/prog.pl';
    open my $pf, '>', $file or die "$file: $!";
    print $pf $prog;
    close $pf;
    my $got = `$^X -I$compat -I$libdir -MAnyEvent $file 2>&1`;
    like $got, qr/\Amine \d+\n\z/, "$name: the program's own subs and data" or diag $got;
}

done_testing;
