# Issue 11 item 1 and issue 12 item 1 for Perl: the exec'd Perl template
# holds only what serving needs (with AnyFork::XS built: no FFI::Platypus,
# no IO::Socket, no warnings.pm; each page of it costs every fork and
# every exit), the comm socket is still an IO::Socket::UNIX whose class
# loads on first use, and the template forks through Perl's own fork (the
# fork hook), so a Perl signal the template had pending is handled by the
# template, not once more in every child.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use Fcntl ();
use Socket ();
use TestUtil;

my $dir = tmpdir();

# Which C side the processes use: AnyFork::XS when it is built and not
# turned off (ANYFORK_PERL_XS=0), as in this process.
my $xs = $AnyFork::Serve::XS;
note $xs ? 'processes use AnyFork::XS' : 'processes use AnyFork::Lib (FFI::Platypus)';

# What a child of the default template has loaded, and what its comm
# socket is before and after the first method call.
{
    my $got;
    AnyFork->new->eval(q{
        sub report {
            my ($fh) = @_;
            my @before = grep { m{^(FFI/Platypus|IO/Socket|warnings|AnyFork/Lib|AnyFork/XS)\.pm\z} } sort keys %INC;
            my $ref = ref $fh;
            my $isa = $fh->isa('IO::Socket::UNIX') ? 1 : 0;
            my $peer = $fh->can('peername') ? 1 : 0;
            $fh->blocking(1);
            my $loaded = $INC{'IO/Socket/UNIX.pm'} ? 1 : 0;
            syswrite $fh, join(' ', "loaded=@before", "ref=$ref", "isa=$isa", "can=$peer", "after=$loaded") . "\n";
        }
    })->run('report', sub { $got = $_[0] });
    AnyFork::wait_for(sub { ref $got }, 20);
    my $line = read_line($got);
    ok defined $line, 'the child reported' or diag 'no line';
    $line = '' unless defined $line;
    my ($loaded) = $line =~ /loaded=([^ ]*(?: [^ =]+)*) ref=/;
    $loaded = '' unless defined $loaded;
    if ($xs) {
        is $loaded, 'AnyFork/XS.pm', 'the template loaded AnyFork::XS and nothing of FFI::Platypus, IO::Socket or warnings';
    }
    else {
        like $loaded, qr{\bFFI/Platypus\.pm\b}, 'without AnyFork::XS the template goes through FFI::Platypus';
    }
    like $line, qr/ ref=IO::Socket::UNIX isa=1 can=1 after=1$/,
      'the comm socket is an IO::Socket::UNIX: isa, can and methods work, the class loads on first use';
}

# AnyFork::Fd's Linux numbers are the ones Fcntl and Socket give.
is_deeply \%AnyFork::Fd::O,
  { ACCMODE => Fcntl::O_ACCMODE(), RDONLY => Fcntl::O_RDONLY(), WRONLY => Fcntl::O_WRONLY(), APPEND => Fcntl::O_APPEND() },
  'AnyFork::Fd: the O_ flags are Fcntl\'s';
is_deeply \%AnyFork::Fd::CLASS,
  { Socket::AF_UNIX() => 'IO::Socket::UNIX', Socket::AF_INET() => 'IO::Socket::INET', Socket::AF_INET6() => 'IO::Socket::IP' },
  'AnyFork::Fd: the address families are Socket\'s';

# A signal with a Perl handler reaches the template while it waits in the
# library: Perl only records it (safe signals) until it next runs Perl
# code. Children forked meanwhile must not run the template's handler:
# Perl's own fork clears what is pending in the child; a bare fork() would
# let every child that enters Perl run it again.
{
    my $log = "$dir/signals";
    my $t = AnyFork->new_exec->eval(q{
        our $LOG = $_[0];
        sub note_line { open my $f, '>>', $LOG or die "$LOG: $!"; print $f "$_[0] $$\n"; close $f }
        $SIG{USR1} = sub { note_line('usr1') };
        sub child { note_line('child') }
    }, $log);
    my $tpid = $t->pid;
    # The eval has run once the template reports a fork of itself.
    my $first = $t->fork;
    $first->pid;
    kill 'USR1', $tpid or die "kill: $!";
    select undef, undef, undef, 0.3;
    my @done;
    for my $i (1 .. 3) {
        $t->fork->run('child', sub { push @done, read_all($_[0]) });
    }
    $first->run('child', sub { push @done, read_all($_[0]) });
    AnyFork::wait_for(sub { @done == 4 }, 20);
    # The template runs Perl again: its own handler runs now, once.
    $t->eval('1')->run('child', sub { push @done, read_all($_[0]) });
    AnyFork::wait_for(sub { @done == 5 }, 20);
    my @lines = split /\n/, slurp($log);
    my @usr1  = grep { /^usr1 / } @lines;
    is scalar(grep { /^child / } @lines), 5, 'every child ran its function';
    is_deeply \@usr1, ["usr1 $tpid"], "the template's pending signal: handled once, by the template, by no child"
      or diag explain \@lines;
}

AnyFork::wait(5);
done_testing;
