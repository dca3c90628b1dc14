package TestUtil;

# Helpers shared by the AnyFork tests.

use strict;
use warnings;

use Exporter 'import';
use IO::Select;
use Time::HiRes ();

our @EXPORT = qw(read_all read_line fd_count tmpdir with_stderr_to slurp);

# A watchdog: a test that hangs is killed by SIGALRM (children made with
# fork do not inherit the alarm).
alarm($ENV{ANYFORK_TEST_TIMEOUT} || 300);

# Everything from a (possibly nonblocking) handle until EOF, or what came
# within $timeout seconds (default 20).
sub read_all {
    my ($fh, $timeout) = @_;
    $timeout = 20 unless defined $timeout;
    my $deadline = Time::HiRes::time() + $timeout;
    my $sel = IO::Select->new($fh);
    my $buf = '';
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($fh, $buf, 65536, length $buf);
        next if !defined $n && ($!{EAGAIN} || $!{EINTR});
        last unless $n;
    }
    return $buf;
}

# One line from a handle (waiting at most $timeout seconds), or undef.
my %PENDING;
sub read_line {
    my ($fh, $timeout) = @_;
    $timeout = 20 unless defined $timeout;
    my $deadline = Time::HiRes::time() + $timeout;
    my $sel = IO::Select->new($fh);
    my $key = fileno $fh;
    $PENDING{$key} = '' unless defined $PENDING{$key};
    while ($PENDING{$key} !~ /\n/) {
        my $left = $deadline - Time::HiRes::time();
        return undef if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread($fh, $PENDING{$key}, 65536, length $PENDING{$key});
        next if !defined $n && ($!{EAGAIN} || $!{EINTR});
        return undef unless $n;
    }
    $PENDING{$key} =~ s/\A([^\n]*\n)//;
    return $1;
}

# Open fds of this process.
sub fd_count {
    opendir my $d, "/proc/self/fd" or die "/proc/self/fd: $!";
    my @fds = grep { /^\d+$/ } readdir $d;
    closedir $d;
    return scalar(@fds) - 1;    # the directory handle itself
}

sub tmpdir {
    require File::Temp;
    return File::Temp::tempdir('anyfork-perl-XXXXXX', TMPDIR => 1, CLEANUP => 1);
}

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return undef;
    local $/;
    return scalar <$fh>;
}

# Runs $code with STDERR sent to $file: processes spawned meanwhile keep
# that stderr.
sub with_stderr_to {
    my ($file, $code) = @_;
    open my $saved, '>&', \*STDERR or die "dup stderr: $!";
    open STDERR, '>', $file or die "$file: $!";
    my @r = eval { $code->() };
    my $err = $@;
    open STDERR, '>&', $saved or die "restore stderr: $!";
    die $err if $err;
    return wantarray ? @r : $r[0];
}

1;
