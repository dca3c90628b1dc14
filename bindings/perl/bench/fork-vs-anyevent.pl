#!/usr/bin/perl
# AnyFork against AnyEvent::Fork, side by side in one program.
#
#   perl bindings/perl/build-xs.pl target/perl-xs
#   ANYFORK_LIB=target/release perl -I target/perl-xs -I bindings/perl/lib \
#       bindings/perl/bench/fork-vs-anyevent.pl [--n 300] [--reps 5] [--grow-mb 2048]
#
# Without AnyFork::XS on @INC (or with ANYFORK_PERL_XS=0) AnyFork's
# processes go through FFI::Platypus; the table's title says which.
#
# Two workloads, each the same calls on both modules:
#   exit: ->new->run("CORE::exit", $cb), the AnyEvent::Fork manual's benchmark;
#   work: a template prepared once with ->eval (a sub), then per process
#         ->fork->send_arg(...)->run("main::bench_work", $cb): the child reads
#         its arguments, writes a line on its socket and returns.
# The caller waits for EOF on the process's socket (for work, after reading
# its line) before it creates the next one, so each creation is timed from
# the call to the end of the process. The two modules take turns: every
# repetition runs --n of each, alternating every --chunk creations (which
# goes first alternates too), and the table gives the median of the
# repetitions with min-max. Then the program grows to
# --grow-mb (touched memory) and does it all again.
#
# Needs AnyEvent::Fork (Debian: libanyevent-fork-perl); EV is used when
# installed, as AnyEvent would.

use strict;
use warnings;

use Getopt::Long ();
use Time::HiRes ();
use AnyEvent;
use AnyFork;

BEGIN {
    eval { require AnyEvent::Fork; 1 }
      or die "AnyEvent::Fork is not installed (Debian: libanyevent-fork-perl): nothing to compare with\n";
}

my %opt = (n => 300, reps => 5, 'grow-mb' => 2048, warmup => 30, chunk => 25);
Getopt::Long::GetOptions(\%opt, 'n=i', 'reps=i', 'grow-mb=i', 'warmup=i', 'chunk=i')
  or die "usage: $0 [--n N] [--reps R] [--grow-mb MB] [--warmup N] [--chunk N]\n";
die "--reps must be at least 1\n" if $opt{reps} < 1;
die "--n and --chunk must be at least 1\n" if $opt{n} < 1 || $opt{chunk} < 1;

my $WORK = <<'PERL';
sub bench_work {
    my ($fh, @args) = @_;
    my $sum = 0;
    $sum += $_ for map { length } @args;
    my $line = join(',', @args) . " $sum\n";
    syswrite $fh, $line;
    return;
}
PERL

my @IMPL = ('AnyEvent::Fork', 'AnyFork');
my %TEMPLATE;    # impl => the work template

# Waits until $fh is at EOF, collecting what it says.
sub until_eof {
    my ($fh) = @_;
    my $cv  = AE::cv;
    my $got = '';
    my $w;
    $w = AE::io $fh, 0, sub {
        my $r = sysread $fh, my $buf, 4096;
        return if !defined $r && $!{EAGAIN};
        if ($r) { $got .= $buf; return }
        undef $w;
        $cv->send($got);
    };
    return $cv->recv;
}

# One process of a workload; returns what it wrote.
sub create {
    my ($impl, $what, $i) = @_;
    my $cv = AE::cv;
    if ($what eq 'exit') {
        $impl->new->run('CORE::exit', $cv);
    }
    else {
        $TEMPLATE{$impl} ||= $impl->new->eval($WORK);
        $TEMPLATE{$impl}->fork->send_arg("id$i", 'abc', 'de')->run('main::bench_work', $cv);
    }
    my $fh  = $cv->recv or die "$impl: no socket for $what: $!\n";
    my $out = until_eof($fh);
    if ($what eq 'work') {
        my $want = "id$i,abc,de " . (length("id$i") + 5) . "\n";
        die "$impl: the work process wrote '$out', not '$want'\n" unless $out eq $want;
    }
    elsif (length $out) {
        die "$impl: the exiting process wrote '$out'\n";
    }
    return;
}

# One repetition: n creations of each module, the modules taking turns
# every --chunk creations (so that a burst of load on the shared machine
# hits both alike); per module the rate (creations per second of its own
# time) and the p50.
sub round {
    my ($what, $n, @impls) = @_;
    my (%lat, %time);
    my $done = 0;
    while ($done < $n) {
        my $k = $n - $done < $opt{chunk} ? $n - $done : $opt{chunk};
        for my $impl (@impls) {
            my $t0 = Time::HiRes::time();
            for my $i ($done + 1 .. $done + $k) {
                my $t = Time::HiRes::time();
                create($impl, $what, $i);
                push @{ $lat{$impl} }, Time::HiRes::time() - $t;
            }
            $time{$impl} += Time::HiRes::time() - $t0;
        }
        @impls = reverse @impls;
        $done += $k;
    }
    my %r;
    for my $impl (keys %lat) {
        my @l = sort { $a <=> $b } @{ $lat{$impl} };
        $r{$impl} = { rate => $n / $time{$impl}, p50 => $l[int(@l / 2)] * 1000 };
    }
    return \%r;
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

sub span {
    my ($fmt, @v) = @_;
    my @s = sort { $a <=> $b } @v;
    return sprintf("$fmt ($fmt–$fmt)", median(@v), $s[0], $s[-1]);
}

sub rss_mb {
    open my $f, '<', "/proc/$$/status" or return '?';
    while (<$f>) { return int($1 / 1024) if /^VmRSS:\s+(\d+)/ }
    return '?';
}

my @rows;

# The machine's load average (1, 5, 15 minutes).
sub load_avg {
    open my $f, '<', '/proc/loadavg' or return ('?');
    return (split ' ', scalar <$f>)[0 .. 2];
}
my $LOAD0 = join ' ', load_avg();

sub measure {
    my ($host) = @_;
    for my $what ('exit', 'work') {
        create($_, $what, 0) for map { my $x = $_; map { $x } 1 .. $opt{warmup} } @IMPL;
        my %r;
        for my $rep (1 .. $opt{reps}) {
            my $got = round($what, $opt{n}, $rep % 2 ? @IMPL : reverse @IMPL);
            push @{ $r{$_} }, $got->{$_} for @IMPL;
        }
        my ($ae, $af) = @r{@IMPL};
        my @rate_ratio = map { $af->[$_]{rate} / $ae->[$_]{rate} } 0 .. $#$af;
        my @p50_ratio  = map { $af->[$_]{p50} / $ae->[$_]{p50} } 0 .. $#$af;
        push @rows, sprintf('| %s | %s | %s | %s | %s | %s | %s | %s |',
            $what eq 'exit' ? '`->new->run("CORE::exit")`' : 'work (`->fork->send_arg->run`)',
            $host,
            span('%.0f', map { $_->{rate} } @$ae),
            span('%.0f', map { $_->{rate} } @$af),
            span('%.2f', @rate_ratio),
            span('%.2f', map { $_->{p50} } @$ae),
            span('%.2f', map { $_->{p50} } @$af),
            span('%.2f', @p50_ratio));
        printf STDERR "done: %s, %s\n", $what, $host;
    }
}

measure('plain (' . rss_mb() . ' MB)');
if ($opt{'grow-mb'} > 0) {
    # Touched memory: every page is the caller's, as in a grown program.
    our $BALLAST = 'x' x ($opt{'grow-mb'} * 1024 * 1024);
    measure('grown (' . rss_mb() . ' MB)');
}

my $loop = AnyEvent::detect();
my $side = $AnyFork::Serve::XS ? 'AnyFork::XS' : 'FFI::Platypus';
print "AnyFork (processes through $side) vs AnyEvent::Fork $AnyEvent::Fork::VERSION, $opt{n} processes per repetition "
  . "(the modules taking turns every $opt{chunk}), "
  . "median of $opt{reps} repetitions (min–max), loop $loop, perl $^V"
  . ", load average at the start $LOAD0, at the end " . join(' ', load_avg()) . "\n\n";
print "| workload | caller | AnyEvent::Fork /s | AnyFork /s | rate ×| AnyEvent::Fork p50 ms | AnyFork p50 ms | p50 × |\n";
print "|---|---|---|---|---|---|---|---|\n";
print "$_\n" for @rows;
