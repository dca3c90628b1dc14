package AnyFork::Fd;

# File descriptors as Perl handles that own them, opened in the mode the
# fd allows; sockets blessed into the IO::Socket class of their family
# (IO::Socket::UNIX, ::INET, ::IP, else IO::Socket), with autoflush on.
#
# The socket classes are loaded when a method is first called on such a
# handle, not before: a Perl template keeps only what it needs, as every
# page it holds is copied at each fork and torn down at each exit, and
# IO::Socket with its dependencies is about 1.2 MB of heap. print,
# syswrite, sysread, <$fh> and close need no class at all.

use strict;

our $VERSION = '0.01';

# Linux's address families (sys/socket.h), as getsockname gives them:
# the numbers, so that telling them apart does not load Socket.
our %CLASS = (1 => 'IO::Socket::UNIX', 2 => 'IO::Socket::INET', 10 => 'IO::Socket::IP');

# Fcntl's O_ACCMODE, O_RDONLY, O_WRONLY and O_APPEND, the same way: their
# values on Linux (t/21-lean-template.t checks both tables against Socket
# and Fcntl).
our %O = (ACCMODE => 3, RDONLY => 0, WRONLY => 1, APPEND => 0x400);

# handle($fd, $flags): $flags is fcntl(F_GETFL)'s result for $fd; dies
# when it is negative (the fd is not open) or the fd cannot be opened.
sub handle {
    my ($fd, $flags) = @_;
    die "AnyFork: fd $fd is not open\n" if $flags < 0;
    my $acc  = $flags & $O{ACCMODE};
    my $mode = $acc == $O{RDONLY} ? '<'
             : $acc == $O{WRONLY} ? (($flags & $O{APPEND}) ? '>>' : '>')
             : '+<';
    open(my $fh, "$mode&=", $fd) or die "AnyFork: cannot open fd $fd: $!\n";
    if (-S $fh) {
        my $name   = getsockname($fh);
        my $family = defined $name && length $name >= 2 ? unpack('S', $name) : -1;
        my $class  = $CLASS{$family} || 'IO::Socket';
        _lazy($class);
        bless $fh, $class;
        my $old = select $fh;
        $| = 1;
        select $old;
    }
    return $fh;
}

# comm($fd): the comm socket a run function gets, which is always one end
# of a Unix stream socketpair, read-write: handle() without asking the
# kernel what it is.
sub comm {
    my ($fd) = @_;
    open(my $fh, '+<&=', $fd) or die "AnyFork: cannot open fd $fd: $!\n";
    _lazy('IO::Socket::UNIX');
    bless $fh, 'IO::Socket::UNIX';
    my $old = select $fh;
    $| = 1;
    select $old;
    return $fh;
}

# Makes $class load itself on first use, unless it is loaded: it inherits
# from AnyFork::Fd::Lazy until then, which requires the real module and
# takes itself out of @ISA.
sub _lazy {
    my ($class) = @_;
    (my $file = "$class.pm") =~ s{::}{/}g;
    return if $INC{$file};
    no strict 'refs';
    my $isa = \@{"${class}::ISA"};
    @$isa = ('AnyFork::Fd::Lazy') unless grep { $_ eq 'AnyFork::Fd::Lazy' } @$isa;
}

package AnyFork::Fd::Lazy;

our $AUTOLOAD;

# Loads the real class of $obj (a handle or a class name).
sub _load {
    my ($obj) = @_;
    my $class = ref $obj || $obj;
    (my $file = "$class.pm") =~ s{::}{/}g;
    {
        no strict 'refs';
        my $isa = \@{"${class}::ISA"};
        @$isa = grep { $_ ne 'AnyFork::Fd::Lazy' } @$isa;
    }
    require $file unless $INC{$file};
    no strict 'refs';
    my $isa = \@{"${class}::ISA"};
    @$isa = grep { $_ ne 'AnyFork::Fd::Lazy' } @$isa;
    return $class;
}

sub AUTOLOAD {
    my $name = $AUTOLOAD;
    $name =~ s/.*:://;
    return if $name eq 'DESTROY';
    _load($_[0]);
    my $method = $_[0]->can($name)
      or die sprintf(qq{Can't locate object method "%s" via package "%s" at %s line %d.\n},
        $name, ref $_[0] || $_[0], (caller)[1, 2]);
    goto &$method;
}

sub isa { _load($_[0]); goto &UNIVERSAL::isa }
sub can { _load($_[0]); goto &UNIVERSAL::can }
sub DOES { _load($_[0]); $_[0]->DOES($_[1]) }

sub DESTROY { }

1;
