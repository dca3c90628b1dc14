package AnyFork::Serve;

# The child's side: a dispatcher (fork_set_dispatch) that performs the
# library's eval and run calls inside this Perl interpreter, and the entry
# point of the exec'd Perl server (AnyFork->new_exec):
#
#   perl -e 'use AnyFork::Serve; AnyFork::Serve::serve()'   # ANYFORK_FD set
#
# eval: Perl code evaluated in package main with @_ set to its strings.
# run:  the named Perl sub (main:: when unqualified) called with the comm
#       socket and every handle and string sent, in order; the process
#       then exits like a Perl program (END blocks, destructors), status 0,
#       or 255 if the sub died, 127 if there is no such function.
# Names that are not Perl subs are looked up as C functions (libraries
# loaded with require "libfoo.so"), so C run/eval functions still work.

# Evaluates $_[0] in package main with @_ set to the rest. First in the
# file, so that the code sees none of this module's lexicals but @arg:
# as in AnyEvent::Fork::Serve, the handles and strings received so far
# (and not taken by run_args), which the code may read or change; what it
# leaves there is what run gets (the array is @AnyFork::Serve::arg).
sub _eval_code {
    local $AnyFork::Serve::CODE = shift;
    our @arg;    # @AnyFork::Serve::arg, under its short name
    CORE::eval("package main;\n#line 1 \"AnyFork eval\"\n$AnyFork::Serve::CODE\n;1");
}

use strict;

# No `use warnings` (nor modules that load warnings.pm, such as constant
# and Carp): an exec'd template holds only what serving needs, as every
# page of it is copied at each fork and torn down at each exit.

our $VERSION = '0.01';

our @CARP_NOT = qw(AnyFork AnyFork::Lib AnyFork::Template AnyFork::Early);

# The name under which AnyFork sends Perl code to eval: the code and its
# strings travel as the eval's strings, so any octets can be passed.
sub EVAL_NAME () { 'AnyFork::Serve::eval' }

# Whether Perl code other than AnyFork's own has run in this process or in
# the templates it was forked from (an eval of Perl code, a Perl require,
# a Perl sub called as an eval function, or a program forked as a template
# by AnyFork::Template / AnyFork::Early). While it has not, the process
# holds no END block and no object of anyone else, so a process told to
# run CORE::exit leaves without Perl's global destruction, which would
# only take apart AnyFork's own data (about 1 ms, most of it copying the
# template's pages it touches).
our $PERL_CODE = 0;

# The received arguments as Perl values (handles own their fds), once
# converted: those not yet taken by run_args (the manual's "returns ... and
# clears them"), as eval code sees them in @arg, and how many of the
# library's arguments they came from.
our @arg;
my $SEEN = 0;

use AnyFork::Fd ();

# The C side. AnyFork::XS when it is built: a few kB, so an exec'd
# template (which loads nothing else) stays about as small as a bare perl.
# Else AnyFork::Lib, through FFI::Platypus (2.5 MB more in the template).
# $ENV{ANYFORK_PERL_XS} = 0 chooses AnyFork::Lib. $AnyFork::LIB is the
# library the caller loaded (set by AnyFork->new_exec's command line).
our $XS;
BEGIN {
    my $path = $INC{'AnyFork/Lib.pm'} ? $AnyFork::Lib::PATH : $AnyFork::LIB;
    $XS = defined $path && length $path && !-d $path
      && !(defined $ENV{ANYFORK_PERL_XS} && !$ENV{ANYFORK_PERL_XS})
      && CORE::eval { require AnyFork::XS; AnyFork::XS::load($path); 1 } ? 1 : 0;
    require AnyFork::Lib unless $XS;
}

my ($DISPATCH, $FORK, $C_EXIT);

# Makes this process (and every process forked from it) run eval and run
# calls through this interpreter, and fork through Perl's own fork.
sub install {
    if ($XS) {
        AnyFork::XS::install(\&_dispatch, 1);
        return;
    }
    $DISPATCH ||= do { my $c = $AnyFork::Lib::FFI->closure(\&_dispatch); $c->sticky; $c };
    $FORK ||= do { my $c = $AnyFork::Lib::FFI->closure(\&_fork); $c->sticky; $c };
    # Looked up here, once: in each child it would cost about as much as
    # the child's whole exit.
    $C_EXIT ||= $AnyFork::Lib::SELF->function(exit => ['int'] => 'void');
    AnyFork::Lib::fork_set_dispatch($DISPATCH, undef);
    AnyFork::Lib::fork_set_fork_hook($FORK, undef);
}

# The library's fork in this process (fork_set_fork_hook): Perl's own
# fork, which flushes every Perl output handle first (so buffered output
# is written once, by the template, not by every child) and clears the
# signals Perl had pending in the child. The pid, or -errno.
sub _fork {
    my $pid = CORE::fork();
    return defined $pid ? $pid : -(($! + 0) || 5);
}

sub _error { $XS ? AnyFork::XS::error() : AnyFork::Lib::error() }

# Every Perl output handle flushed (PerlIO_flush(NULL)).
sub _flush_all { $XS ? AnyFork::XS::flush_all() : AnyFork::Lib::flush_all() }

# The library's fork_args at $ptr as [kind, fd, bytes] triples.
sub _decode { $XS ? AnyFork::XS::decode_args(@_) : AnyFork::Lib::decode_args(@_) }

# A Perl handle that owns $fd.
sub _fh {
    my ($fd) = @_;
    return AnyFork::Lib::fh_from_fd($fd) unless $XS;
    return AnyFork::Fd::handle($fd, AnyFork::XS::fd_flags($fd));
}

# The exec'd server's main: serves on $ENV{ANYFORK_FD}; never returns.
sub serve {
    my $fd = delete $ENV{ANYFORK_FD};
    die "AnyFork::Serve::serve: ANYFORK_FD is not set\n" unless defined $fd && $fd =~ /^\d+\z/;
    install();
    $XS ? AnyFork::XS::serve($fd) : AnyFork::Lib::fork_serve($fd);
    die 'AnyFork::Serve::serve: ' . _error() . "\n";
}

# Strings for eval are encoded so that NUL bytes survive the C string
# interface: "s" + the bytes, or "x" + hex digits.
sub encode_string {
    my ($s) = @_;
    $s = AnyFork::Lib::octets($s);
    return $s =~ /\0/ ? 'x' . unpack('H*', $s) : "s$s";
}

sub decode_string {
    my ($s) = @_;
    my $tag = substr($s, 0, 1, '');
    return $tag eq 'x' ? pack('H*', $s) : $s;
}

# Turns decoded fork_args into what Perl functions get: strings, and
# handles that own their fds.
sub _perl_args { map { $_->[0] == 1 ? _fh($_->[1]) : $_->[2] } @_ }

# AnyEvent::Fork's name for run_args, for code written for that module
# (see bindings/perl/compat), unless a real AnyEvent::Fork::Serve is here.
*AnyEvent::Fork::Serve::run_args = \&run_args
  unless defined &AnyEvent::Fork::Serve::run_args;

# @args = AnyFork::Serve::run_args: inside eval code (or a function it
# calls), the handles and strings received so far and not yet taken; they
# are then no longer passed to the run function.
sub run_args {
    _receive();
    return splice @arg;
}

# Converts the arguments that arrived since the last call into @arg.
sub _receive {
    my ($ptr, $n);
    if ($XS) {
        ($ptr, $n) = AnyFork::XS::child_args();
    }
    else {
        $n = 0;
        $ptr = AnyFork::Lib::fork_child_args(\$n);
    }
    return unless $ptr && $n > $SEEN;
    my @all = _decode($ptr, $n);
    push @arg, _perl_args(@all[$SEEN .. $#all]);
    $SEEN = $n;
}

sub _complain {
    my ($msg) = @_;
    $msg .= "\n" unless $msg =~ /\n\z/;
    print STDERR "AnyFork[$$]: $msg";
    _flush_all();
}

# A Perl sub by name (main:: when unqualified), or undef.
sub _perl_sub {
    my ($name) = @_;
    my $full = $name =~ /::/ ? $name : "main::$name";
    $full =~ s/^::/main::/;
    no strict 'refs';
    return defined &{$full} ? \&{$full} : undef;
}

# Calls the C function $name of this process (the program, or a library
# loaded with fork_require) with the run signature (fd >= 0) or the eval
# one; its int, or undef when there is no such function.
sub _call_c {
    my ($name, $fd, $args, $nargs) = @_;
    return undef unless $name =~ /^[A-Za-z_][A-Za-z0-9_]*\z/;
    return AnyFork::XS::call_c($name, $fd, $args || 0, $nargs) if $XS;
    my $addr = $AnyFork::Lib::SELF->find_symbol($name) or return undef;
    return $fd >= 0
      ? $AnyFork::Lib::SELF->function($addr => ['int', 'opaque', 'size_t'] => 'int')->call($fd, $args, $nargs)
      : $AnyFork::Lib::SELF->function($addr => ['opaque', 'size_t'] => 'int')->call($args, $nargs);
}

# Leaves a process that ran no Perl code but AnyFork's: Perl's output
# buffers are flushed and the C library's exit runs (atexit handlers,
# stdio), but not Perl's global destruction.
sub _quick_exit {
    my ($status) = @_;
    _flush_all();
    AnyFork::XS::c_exit($status) if $XS;
    $C_EXIT->call($status);
}

# The process whose random seed is its own. A process forked by the
# library (not by Perl) starts with its template's generator state: the
# first eval or run in it seeds afresh, so no two processes draw the same
# numbers (Perl's own fork does not do this; AnyEvent::Fork's processes,
# which all start from one template, would share the sequence).
my $SEEDED = $$;

sub _dispatch {
    my ($kind, $name, $fd, $args, $nargs) = @_;
    if ($SEEDED != $$) {
        $SEEDED = $$;
        srand();
    }
    $name = '' unless defined $name;
    return $kind == 0 ? _eval($name, $args, $nargs) : _run($name, $fd, $args, $nargs);
}

# An eval may leave output in Perl's buffers. Perl's fork (the fork hook)
# writes it before every fork, but a template may also never fork again
# and leave through the library when its caller goes, without Perl's exit:
# flush now, so the output is written once, here.
sub _eval {
    my $rc = _eval_call(@_);
    _flush_all();
    return $rc;
}

sub _eval_call {
    my ($name, $args, $nargs) = @_;
    my @strings = map { $_->[2] } _decode($args, $nargs);
    if ($name eq EVAL_NAME) {
        $PERL_CODE = 1;
        my ($code, @rest) = map { decode_string($_) } @strings;
        $code = '' unless defined $code;
        _receive();
        unless (_eval_code($code, @rest)) {
            _complain("eval failed: $@");
            return 255;
        }
        return 0;
    }
    if (my $sub = _perl_sub($name)) {
        $PERL_CODE = 1;
        my $ok = CORE::eval { $sub->(@strings); 1 };
        unless ($ok) {
            _complain("eval $name failed: $@");
            return 255;
        }
        return 0;
    }
    my $rc = _call_c($name, -1, $args, $nargs);
    return $rc if defined $rc;
    _complain("eval: no function '$name' in this process");
    return 127;
}

sub _run {
    my ($name, $fd, $args, $nargs) = @_;
    # The manual's benchmark runs CORE::exit: status 0, END blocks and
    # destructors as Perl's exit does them, when there can be any.
    if ($name eq 'CORE::exit') {
        CORE::exit(0) if $PERL_CODE;
        _quick_exit(0);
    }
    my $sub = _perl_sub($name);
    unless ($sub) {
        my $rc = _call_c($name, $fd, $args, $nargs);
        CORE::exit($rc) if defined $rc;
        _complain("run: no function '$name' in this process");
        CORE::exit(127);
    }
    my $comm;
    if ($XS) {
        push @arg, map { ref $_ ? _fh($$_) : $_ } AnyFork::XS::arg_values($args, $nargs, $SEEN);
        $comm = AnyFork::Fd::comm($fd);
    }
    else {
        my @all = _decode($args, $nargs);
        push @arg, _perl_args(@all[$SEEN .. $#all]) if @all > $SEEN;
        $comm = _fh($fd);
    }
    my @perl = splice @arg;
    # The sub starts as a program does: no errno or child status left
    # over from AnyFork's own calls, which die would turn into the status.
    ($!, $?) = (0, 0);
    my $ok = CORE::eval { $sub->($comm, @perl); 1 };
    unless ($ok) {
        # The status a Perl program gets from an uncaught die: $! if set,
        # else $? >> 8 if set, else 255.
        my ($errno, $child) = ($! + 0, $? >> 8);
        _complain("run $name died: $@");
        CORE::exit(($errno & 255) || ($child & 255) || 255);
    }
    # Leave as a Perl program does when its code ends.
    CORE::exit(0);
}

1;
