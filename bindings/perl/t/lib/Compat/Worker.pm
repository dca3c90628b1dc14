package Compat::Worker;

# The child side of the RPC-shaped tests (t/20-compat-rpc.t): what a
# worker module written for AnyEvent::Fork::RPC relies on in the process,
# written for these tests. The run function gets the comm socket and
# then (function name, init function name, serialiser code) as strings,
# as the RPC module sends them; it reads length-prefixed requests, calls
# the function, answers with (id, length, payload) frames, id 0 being an
# event, and exits at EOF.
#
#   sync:  requests "N/a*", blocking reads, one call at a time;
#   async: requests "N N/a*" with an id, AnyEvent in the child, the function
#          gets a done callback first and may answer later.

use strict;
use warnings;

our $INIT = 'not initialised';

my $EVENT = sub { die "event outside a call\n" };
sub event { $EVENT->(@_) }

sub _setup {
    my ($function, $init, $serialiser) = @_;
    {
        no strict 'refs';
        &{"main::$init"}() if defined $init && length $init && $init !~ /::/;
        &{$init}() if defined $init && $init =~ /::/;
    }
    my ($freeze, $thaw) = eval $serialiser;
    die $@ if $@;
    no strict 'refs';
    return (\&{$function}, $freeze, $thaw);
}

sub _write_all {
    my ($fh, $data) = @_;
    my $off = 0;
    while ($off < length $data) {
        my $n = syswrite $fh, $data, length($data) - $off, $off;
        die "Compat::Worker: write: $!\n" unless defined $n;
        $off += $n;
    }
}

sub sync_run {
    my ($function, $init, $serialiser) = splice @_, -3, 3;
    my $fh = shift;
    my $out = fileno $fh ? $fh : \*STDOUT;
    my ($f, $freeze, $thaw) = _setup($function, $init, $serialiser);
    $EVENT = sub { _write_all($out, pack 'NN/a*', 0, $freeze->(@_)) };
    my $buf = '';
    while (sysread $fh, $buf, 65536, length $buf) {
        while (length $buf >= 4) {
            my $len = unpack 'N', $buf;
            last if length $buf < 4 + $len;
            my @req = $thaw->(substr $buf, 4, $len);
            substr $buf, 0, 4 + $len, '';
            _write_all($out, pack 'NN/a*', 1, $freeze->($f->(@req)));
        }
    }
    shutdown $out, 1;
    exit;
}

sub async_run {
    my ($function, $init, $serialiser) = splice @_, -3, 3;
    my $fh = shift;
    require AnyEvent;
    my ($f, $freeze, $thaw) = _setup($function, $init, $serialiser);
    my ($wbuf, $rbuf, $busy, $eof, $ww, $rw) = ('', '', 0, 0);
    my $end = AE::cv();
    my $done_if_idle = sub { $end->send if $eof && !$busy && !length $wbuf };
    my $write = sub {
        $wbuf .= $_[0];
        $ww ||= AE::io($fh, 1, sub {
            my $n = syswrite $fh, $wbuf;
            substr $wbuf, 0, $n, '' if $n;
            return if length $wbuf;
            undef $ww;
            $done_if_idle->();
        });
    };
    $EVENT = sub { $write->(pack 'NN/a*', 0, $freeze->(@_)) };
    $rw = AE::io($fh, 0, sub {
        my $n = sysread $fh, $rbuf, 65536, length $rbuf;
        return if !defined $n && $!{EAGAIN};
        unless ($n) {
            undef $rw;
            $eof = 1;
            return $done_if_idle->();
        }
        while (length $rbuf >= 8) {
            my ($id, $len) = unpack 'NN', $rbuf;
            last if length $rbuf < 8 + $len;
            my @req = $thaw->(substr $rbuf, 8, $len);
            substr $rbuf, 0, 8 + $len, '';
            $busy++;
            $f->(sub {
                $busy--;
                $write->(pack 'NN/a*', $id, $freeze->(@_));
            }, @req);
        }
    });
    $end->recv;
    shutdown $fh, 1;
    exit;
}

# Worker functions.

sub init { $INIT = "initialised in $$" }

sub whoami { return ($$, $INIT, @_) }

sub steps {
    my ($n) = @_;
    event('step', $_) for 1 .. $n;
    return "did $n";
}

sub later_sum {
    my ($done, @nums) = @_;
    my $t;
    $t = AE::timer(0.01 * @nums, 0, sub {
        undef $t;
        event('summed', scalar @nums);
        my $sum = 0;
        $sum += $_ for @nums;
        $done->($sum);
    });
}

# For the pool: answers with the pid, and retires (the pool's template
# defines retire with eval) when asked to.
sub job {
    my ($x, $retire) = @_;
    main::retire_worker() if $retire;
    return ($$, $x * 2);
}

1;
