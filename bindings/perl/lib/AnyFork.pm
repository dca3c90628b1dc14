package AnyFork;

use strict;
use warnings;

use Carp ();
use File::Spec ();
use POSIX ();
use AnyFork::Lib;
use AnyFork::Serve ();

# The classes of the comm sockets that run callbacks get: loaded here, in
# the caller, once (in the processes they load on first use, see
# AnyFork::Fd).
use IO::Socket::UNIX ();
use IO::Socket::INET ();

our $VERSION = '0.01';

# Errors are reported at the caller's line: Carp skips the frames of
# these packages, which call each other.
our @CARP_NOT = qw(AnyFork::Lib AnyFork::Serve AnyFork::Template AnyFork::Early);

# As in AnyEvent::Fork: the default template (spawned by the first new),
# the early template (AnyFork::Early), and the perl that new_exec runs.
our $TEMPLATE;
our $EARLY;
our $PERL;

# Callbacks waiting for the library: id => code. The C callbacks only
# record what happened; the Perl callbacks run after the C call returns
# (in wait/dispatch), so no Perl exception ever crosses the C library.
my %RUN_CB;
my %EXIT_CB;
my @DUE;
my $NEXT_ID = 0;
my $WATCHER;
my $REARM;

# The process this state belongs to. After Perl's own fork the child
# resets the library by itself on its first AnyFork call (see _this_process).
my $PID = $$;

# A wait blocks in the library at most this long at a time, so that Perl's
# signal handlers (deferred to between Perl ops) run promptly.
my $SLICE_MS = 100;

our $RUN_CLOSURE = $AnyFork::Lib::FFI->closure(sub {
    my ($fd, $id) = @_;
    push @DUE, ['run', $id, $fd, $fd < 0 ? AnyFork::Lib::error() : undef];
});
$RUN_CLOSURE->sticky;

our $EXIT_CLOSURE = $AnyFork::Lib::FFI->closure(sub {
    my ($pid, $status, $id) = @_;
    push @DUE, ['exit', $id, $pid, $status, $status < 0 ? AnyFork::Lib::error() : undef];
});
$EXIT_CLOSURE->sticky;

# --- constructors ----------------------------------------------------------

sub _wrap {
    my ($class, $ptr, %more) = @_;
    return bless { p => $ptr, owner => $$, %more }, ref $class || $class;
}

sub _p {
    my ($self) = @_;
    Carp::croak('AnyFork: this process object was already used by run, exec or to_fh')
      unless $self->{p};
    # Objects copied into a child (Perl's fork, template processes) are
    # the parent's: hand a process over with to_fh/new_from_fh instead.
    Carp::croak("AnyFork: this process object belongs to process $self->{owner}")
      unless $self->{owner} == $$;
    return $self->{p};
}

# The global templates, unless they are copies inherited from a parent.
sub _ours { $_[0] && $_[0]{owner} == $$ ? $_[0] : undef }

# A queued command's result. A process that is gone (-EPIPE: it exited,
# e.g. because an eval or require failed in it) is not an error here, as
# whether the library notices now or while delivering is a race: it is
# reported, with fork_last_error's text, to the run callback instead
# (undef and the message). Every other failure dies with that text.
sub _sent {
    my ($self, $rc) = @_;
    return $self if $rc >= 0;
    if ($rc == -POSIX::EPIPE()) {
        $self->{gone} = AnyFork::Lib::error() unless defined $self->{gone};
        return $self;
    }
    AnyFork::Lib::check_int($rc);
}

sub new {
    my ($class) = @_;
    _this_process();
    $TEMPLATE = _ours($TEMPLATE);
    for my $attempt (1, 2) {
        $TEMPLATE ||= $class->new_exec;
        my $child = CORE::eval { $TEMPLATE->fork };
        return $child if $child;
        Carp::croak($@ =~ s/ at \S+ line \d+\.?\n\z//r) if $attempt == 2;
        undef $TEMPLATE;    # it died: spawn a fresh one, once
    }
}

sub _perl {
    return $PERL if defined $PERL;
    return $^X if $^X =~ m{(?:^|/)perl[0-9.]*\z} && -x $^X;
    require Config;
    return $Config::Config{perlpath};
}

sub new_exec {
    my ($class) = @_;
    _this_process();
    $EARLY = _ours($EARLY);
    return $EARLY->fork if $EARLY;
    # A fresh perl that finds the modules this one finds, loads the same
    # libanyfork and serves on ANYFORK_FD.
    my @inc  = map { File::Spec->rel2abs($_) } grep { !ref } @INC;
    # The dynamic linker binds every symbol when the template starts
    # (LD_BIND_NOW), once, rather than in each child on its first call of
    # each function (the exit path, global destruction): each lazy binding
    # writes a GOT page the child then has to copy. The template takes the
    # variable out of its environment again, unless it was ours already.
    my $bind = defined $ENV{LD_BIND_NOW} ? '' : 'delete $ENV{LD_BIND_NOW};';
    local $ENV{LD_BIND_NOW} = 1 if $bind;
    my $boot = "BEGIN { \$AnyFork::LIB = shift \@ARGV; \@INC = \@ARGV; \@ARGV = (); $bind }"
             . ' use AnyFork::Serve; AnyFork::Serve::serve()';
    my ($argv, $guard) = AnyFork::Lib::strv(_perl(), '-e', $boot, '--', $AnyFork::Lib::PATH, @inc);
    my $p = AnyFork::Lib::check_ptr(AnyFork::Lib::fork_new_exec_argv($argv));
    return $class->_wrap($p, lean => 1);
}

# A template on another machine: @argv's stdin and stdout must reach
# `anyfork-serve --stdio` there, e.g. ('ssh', '-o', 'BatchMode=yes', $host,
# 'anyfork-serve', '--stdio'). Blocks for the login; dies saying why a
# start failed. Its processes run C functions of libraries required there
# and the builtins (for Perl there, see new_remote_perl); send_fh dies
# (fds cannot cross machines); the rest works as locally, with the remote
# pids. AnyFork::Remote->new_execp is the same, in AnyEvent::Fork::Remote's
# shape.
sub new_remote {
    my ($class, @argv) = @_;
    Carp::croak('AnyFork->new_remote: no command') unless @argv;
    _this_process();
    my ($av, $guard) = AnyFork::Lib::strv(@argv);
    return $class->_wrap(AnyFork::Lib::check_ptr(AnyFork::Lib::fork_new_remote($av)));
}

# A perl serving as a template on another machine (AnyFork installed
# there): @argv ends in `anyfork-serve --stdio`, as for new_remote; its
# processes run Perl code as with new_exec. Options for that perl (e.g.
# -I dirs) follow a '--perl' marker: new_remote_perl(@ssh, '--perl', 'perl', '-I', $dir).
sub new_remote_perl {
    my ($class, @argv) = @_;
    my @perl = ('perl');
    for my $i (0 .. $#argv) {
        next unless $argv[$i] eq '--perl';
        @perl = @argv[$i + 1 .. $#argv];
        splice @argv, $i;
        last;
    }
    my $p = $class->new_remote(@argv, '--', @perl, '-MAnyFork::Serve', '-e', 'AnyFork::Serve::serve()');
    $p->{lean} = 1;
    return $p;
}

# Forks the library's own template (anyfork-serve): no Perl in there, so it
# runs C functions of libraries loaded with require and the builtins
# (anyfork_exec, see exec). Lighter than a Perl process.
sub new_native {
    my ($class) = @_;
    _this_process();
    return $class->_wrap(AnyFork::Lib::check_ptr(AnyFork::Lib::fork_new()));
}

# Forks this program now as a template (AnyFork::Template and
# AnyFork::Early call it): its subs and data are there in every process
# forked from it.
sub _template {
    my ($class) = @_;
    _this_process();
    # From here the library forks through Perl's own fork (the fork hook),
    # which flushes every output handle first, so output still buffered is
    # not written again by the copy and every child of it.
    AnyFork::Serve::install();
    # The template is this program: its END blocks and objects are there.
    $AnyFork::Serve::PERL_CODE = 1;
    my $p = AnyFork::Lib::check_ptr(AnyFork::Lib::fork_template());
    return $class->_wrap($p);
}

# The child keeps its template object alive until its run has been
# delivered: the library fails the run (EPIPE, "the template exited before
# answering") if the template's handle is freed before the template
# reported the fork, and the manual allows dropping the template at once.
sub fork {
    my ($self) = @_;
    my $p = AnyFork::Lib::check_ptr(AnyFork::Lib::fork_fork($self->_p));
    return $self->_wrap($p, parent => $self, lean => $self->{lean});
}

# Keeps $n processes forked from this template ahead of ->fork (the C
# library's fork_ahead): ->fork hands out one already forked.
sub fork_ahead {
    my ($self, $n) = @_;
    Carp::croak('AnyFork->fork_ahead: the number of processes forked ahead is 0 to 64, not '
          . (defined $n ? "'$n'" : 'undef'))
      unless defined $n && $n =~ /^\d+\z/ && $n <= 64;
    AnyFork::Lib::check_int(AnyFork::Lib::fork_ahead($self->_p, $n));
    return $self;
}

# The fd of a handle, or undef. A handle tied to a class without FILENO
# has no fd: that is said here rather than by Perl's method lookup.
sub _fileno {
    my ($fh, $what) = @_;
    return undef unless defined $fh && (ref $fh || ref \$fh eq 'GLOB');
    if (my $tie = CORE::eval { tied *$fh }) {
        Carp::croak("$what: the handle is tied to " . ref($tie)
              . ', which has no FILENO method, so it has no file descriptor to pass')
          unless CORE::eval { $tie->can('FILENO') };
    }
    return fileno($fh);
}

sub new_from_fh {
    my ($class, $fh) = @_;
    _this_process();
    my $fd = _fileno($fh, 'AnyFork->new_from_fh');
    Carp::croak('AnyFork->new_from_fh: not a file handle') unless defined $fd && $fd >= 0;
    my $dup = AnyFork::Lib::dup_cloexec($fd);
    Carp::croak("AnyFork->new_from_fh: dup: $!") if $dup < 0;
    my $p = AnyFork::Lib::fork_from_fd($dup);
    unless ($p) {
        my $msg = AnyFork::Lib::error();
        AnyFork::Lib::c_close($dup);
        Carp::croak($msg);
    }
    return $class->_wrap($p, from_fh => 1);
}

# --- preparing the process ------------------------------------------------------

sub eval {
    my ($self, $code, @args) = @_;
    delete $self->{lean};
    my @s = map { AnyFork::Serve::encode_string($_) } $code, @args;
    my ($argv, $guard) = AnyFork::Lib::strv(@s);
    return $self->_sent(
        AnyFork::Lib::fork_eval($self->_p, AnyFork::Serve::EVAL_NAME, $argv, scalar @s));
}

# Beyond the manual: calls an eval *function* by name with strings (no NUL
# bytes): a library builtin (anyfork_setenv, anyfork_chdir,
# anyfork_comm_fd, ...), else a Perl sub of that name, else a C function
# int name(const fork_arg *, size_t) from a required shared library.
sub eval_function {
    my ($self, $name, @strings) = @_;
    Carp::croak('AnyFork->eval_function: no function name') unless defined $name && length $name;
    delete $self->{lean};
    my ($argv, $guard) = AnyFork::Lib::strv(@strings);
    return $self->_sent(AnyFork::Lib::fork_eval($self->_p, $name, $argv, scalar @strings));
}

# A shared library by file name (libfoo.so, libfoo.so.1, or a path ending
# so) is loaded with dlopen (fork_require); anything else is a Perl module
# (Foo::Bar) or Perl file (a path, *.pm, *.pl) loaded with Perl's require.
sub _is_shared_lib { $_[0] =~ /\.so(?:\.[0-9]+)*\z/ }

sub require {
    my ($self, @what) = @_;
    delete $self->{lean};
    my @perl;
    my $flush = sub {
        return unless @perl;
        $self->eval('CORE::require($_) for @_', @perl);
        @perl = ();
    };
    for my $name (@what) {
        Carp::croak('AnyFork->require: empty name') unless defined $name && length $name;
        if (_is_shared_lib($name)) {
            $flush->();
            $self->_sent(AnyFork::Lib::fork_require($self->_p, $name));
        }
        elsif ($name =~ m{/} || $name =~ /\.p[lm]\z/) {
            push @perl, $name;
        }
        else {
            (my $file = "$name.pm") =~ s{::}{/}g;
            push @perl, $file;
        }
    }
    $flush->();
    return $self;
}

sub send_fh {
    my ($self, @fhs) = @_;
    my $p = $self->_p;
    for my $fh (@fhs) {
        my $fd = _fileno($fh, 'AnyFork->send_fh');
        Carp::croak('AnyFork->send_fh: not an open file handle') unless defined $fd && $fd >= 0;
        $self->_sent(AnyFork::Lib::fork_send_fd($p, $fd));
    }
    return $self;
}

sub send_arg {
    my ($self, @args) = @_;
    delete $self->{lean};
    my $p = $self->_p;
    for my $arg (@args) {
        my $s = AnyFork::Lib::octets($arg);
        $self->_sent(AnyFork::Lib::fork_send_arg($p, $s, length $s));
    }
    return $self;
}

# --- running --------------------------------------------------------------------------

# Registers a run callback (undef: close the socket) and what must stay
# alive until it runs.
sub _callback {
    my ($cb, $keep) = @_;
    Carp::croak('AnyFork: the callback is not code') if defined $cb && !ref $cb;
    my $id = ++$NEXT_ID;
    $RUN_CB{$id} = [$cb, $keep];
    return ($RUN_CLOSURE, $id);
}

# Hands the process to fork_run or fork_exec ($call gets the handle, the C
# callback and its id), which consume it; a process already gone gets its
# callback from wait/dispatch with the reason.
sub _start {
    my ($self, $cb, $call) = @_;
    my $p = $self->_p;
    delete $self->{p};
    my $parent = delete $self->{parent};
    # Without a callback the library runs the process detached: it closes
    # its end of the socket once everything is written, with no dispatch.
    my ($closure, $id) = defined $cb ? _callback($cb, $parent) : (undef, 0);
    my $rc = defined $self->{gone} ? -POSIX::EPIPE() : $call->($p, $closure, $id);
    if ($rc < 0 && !defined $cb) {
        AnyFork::Lib::fork_free($p) if defined $self->{gone};
        AnyFork::Lib::check_int($rc) unless $rc == -POSIX::EPIPE();
    }
    elsif ($rc == -POSIX::EPIPE()) {
        AnyFork::Lib::fork_free($p) if defined $self->{gone};
        my $why = defined $self->{gone} ? $self->{gone} : AnyFork::Lib::error();
        push @DUE, ['run', $id, $rc, $why];
        _rearm();
    }
    elsif ($rc < 0) {
        delete $RUN_CB{$id};
        AnyFork::Lib::check_int($rc);
    }
    _watch();
    return;
}

# A process is lean while it holds nothing but what a fresh AnyFork::Serve
# perl holds (and fds): no Perl code but AnyFork's, no string. Running
# CORE::exit there is then the library's anyfork_exit (status 0): nothing
# of the user's is there for END blocks or destructors, and the child
# leaves without entering Perl at all.
sub run {
    my ($self, $func, $cb) = @_;
    Carp::croak('AnyFork->run: no function name') unless defined $func && length $func;
    $func = 'anyfork_exit' if $func eq 'CORE::exit' && $self->{lean};
    return $self->_start($cb, sub { AnyFork::Lib::fork_run($_[0], $func, $_[1], $_[2]) });
}

# The manual's "faster fork+exec" through the library's exec builtin: the
# handles sent become the program's fds 0, 1, 2, ... in order; strings sent
# before come first in argv. %$env, if given, is the whole environment.
sub exec {
    my ($self, $argv, $cb, $env) = @_;
    Carp::croak('AnyFork->exec: argv must be a non-empty array reference')
      unless ref $argv eq 'ARRAY' && @$argv;
    my ($av, $g1) = AnyFork::Lib::strv(@$argv);
    my ($ev, $g2) = defined $env
      ? AnyFork::Lib::strv(map { "$_=$env->{$_}" } sort keys %$env)
      : (undef, undef);
    return $self->_start($cb, sub { AnyFork::Lib::fork_exec($_[0], $av, $ev, $_[1], $_[2]) });
}

# Beyond the manual: $cb->($pid, $wait_status) once the process has exited
# (every process, not only direct children; $wait_status is -errno, with
# the reason as a third argument, when it cannot be known). Call before
# run. The template that reports the exit is kept alive until then.
sub on_exit {
    my ($self, $cb) = @_;
    Carp::croak('AnyFork->on_exit: the callback is not code') unless ref $cb;
    my $id = ++$NEXT_ID;
    # The template reports the exit: it must live until then.
    $EXIT_CB{$id} = [$cb, $self->{parent}];
    my $rc = AnyFork::Lib::fork_on_exit($self->_p, $EXIT_CLOSURE, $id);
    if ($rc < 0) {
        delete $EXIT_CB{$id};
        AnyFork::Lib::check_int($rc);
    }
    _watch();
    return $self;
}

# The pid. The library knows it for every process it made (the manual's
# AnyEvent::Fork knows it only for direct children); undef for objects
# made by new_from_fh. Forked processes learn it from their template, so
# the first call may wait for its report.
sub pid {
    my ($self) = @_;
    return $self->{pid} if exists $self->{pid};
    return undef if $self->{from_fh};
    my $pid = AnyFork::Lib::fork_pid($self->_p);
    Carp::croak(AnyFork::Lib::error()) if $pid < 0;
    return $self->{pid} = $pid;
}

sub to_fh {
    my ($self, $cb) = @_;
    my $p = $self->_p;
    delete $self->{p};
    my $fd = AnyFork::Lib::check_int(AnyFork::Lib::fork_to_fd($p));
    my $fh = AnyFork::Lib::fh_from_fd($fd);
    $cb->($fh) if $cb;
    return $fh;
}

sub DESTROY {
    my ($self) = @_;
    my $p = delete $self->{p} or return;
    # A copy of this object in a forked child (Perl's fork, or a template
    # made from this program) must not touch the parent's process.
    return unless $self->{owner} == $$;
    AnyFork::Lib::fork_free($p);
    # The library releases its fd in a later dispatch: under AnyEvent,
    # make sure the loop does one.
    _watch();
}

# --- waiting ------------------------------------------------------------------------

# Runs the Perl callbacks of what the library reported. Each one due runs
# exactly once: if one dies, the others stay queued (with AnyEvent, a
# zero-second timer runs them on the next loop turn; otherwise the next
# wait or dispatch does) and the exception comes out of here at once.
sub _drain {
    my $ran = 0;
    while (my $e = shift @DUE) {
        my ($what, $id, @rest) = @$e;
        my $call;
        if ($what eq 'code') {
            # AnyFork::RPC and AnyFork::Pool's callbacks: code and its
            # arguments (one per reply: no closure made for it).
            $ran++;
            next if CORE::eval { $id->(@rest); 1 };
            my $died = $@;
            _rearm();
            die $died;
        }
        elsif ($what eq 'run') {
            my $entry = delete $RUN_CB{$id} or next;
            my ($cb) = @$entry;
            my ($fd, $err) = @rest;
            unless ($cb) {
                AnyFork::Lib::c_close($fd) if $fd >= 0;
                next;
            }
            $call = $fd >= 0
              ? sub { $cb->(AnyFork::Lib::fh_from_fd($fd)) }
              : sub { local $! = -$fd; $cb->(undef, $err) };
        }
        else {
            my $entry = delete $EXIT_CB{$id} or next;
            my ($cb) = @$entry;
            my ($pid, $status, $err) = @rest;
            $call = sub { local $! = $status < 0 ? -$status : 0; $cb->($pid, $status, $err) };
        }
        $ran++;
        next if CORE::eval { $call->(); 1 };
        my $died = $@;
        _rearm();
        die $died;
    }
    return $ran;
}

# For AnyFork::RPC and AnyFork::Pool: runs $code->(@args) as a callback
# of the library, from wait/dispatch or AnyEvent's loop (their C
# callbacks only record what happened, as ours do).
sub _due {
    push @DUE, ['code', @_];
    return;
}

# Every signal blocked while the library runs our C callbacks: a Perl
# signal handler that dies must not unwind through the library (and lose
# the callback it was recording); it runs once the C call has returned.
my ($ALL_SIGNALS, $OLD_SIGNALS);

sub _c_call {
    my ($f, @args) = @_;
    $ALL_SIGNALS ||= do { my $s = POSIX::SigSet->new; $s->fillset; $s };
    $OLD_SIGNALS ||= POSIX::SigSet->new;
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), $ALL_SIGNALS, $OLD_SIGNALS);
    my $rc = $f->(@args);
    my $errno = $!;
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $OLD_SIGNALS);
    $! = $errno;
    return $rc;
}

sub _dispatch_c { AnyFork::Lib::check_int(_c_call(\&AnyFork::Lib::fork_loop_dispatch)) }

# Nonblocking: does what can be done now and runs the callbacks that are
# due. For event loops: call it when loop_fd is readable.
sub dispatch {
    _this_process();
    _dispatch_c();
    return _drain();
}

# Whether the library has work for a dispatch now (the loop fd is readable).
sub _loop_readable {
    my $fd = AnyFork::Lib::fork_loop_fd();
    return 0 if $fd < 0;
    require IO::Poll;
    my @fds = ($fd, IO::Poll::POLLIN());
    return IO::Poll::_poll(0, @fds) > 0 && $fds[1] != 0;
}

# How long (ms) to block next: a slice, or less before the deadline; 0
# when it has passed.
sub _slice {
    my ($deadline) = @_;
    return $SLICE_MS unless defined $deadline;
    my $ms = int((($deadline - _now()) * 1000) + 0.5);
    return $ms < $SLICE_MS ? ($ms > 0 ? $ms : 0) : $SLICE_MS;
}

# Blocks until every run and exit callback has run, or $timeout seconds
# passed (undef: no limit), and then lets the library finish the work it
# still has (the fds of freed processes) as far as it shows it: while the
# loop fd is readable. Returns the number of Perl callbacks run. Blocks in
# slices, so Perl's signal handlers run promptly; one that dies ends the
# wait with its exception, and no callback is lost.
sub wait {
    my ($timeout) = @_;
    _this_process();
    my $deadline = defined $timeout ? _now() + $timeout : undef;
    my $ran = _drain();
    while (AnyFork::Lib::fork_pending()) {
        my $ms = _slice($deadline);
        last if $ms == 0;
        AnyFork::Lib::check_int(_c_call(\&AnyFork::Lib::fork_wait, $ms));
        $ran += _drain();
    }
    # The library's own leftovers: bounded, as a loop fd that stays
    # readable without callbacks is not ours to wait for.
    for (1 .. 64) {
        last if @DUE || !_loop_readable() || (defined $deadline && _now() >= $deadline);
        _dispatch_c();
        $ran += _drain();
    }
    return $ran;
}

# Blocks until $cond->() is true, dispatching meanwhile; gives up (returning
# false) after $timeout seconds, or when no callback is pending any more
# that could make it true.
sub wait_for {
    my ($cond, $timeout) = @_;
    _this_process();
    my $deadline = defined $timeout ? _now() + $timeout : undef;
    _drain();
    until ($cond->()) {
        return 0 unless AnyFork::Lib::fork_pending();
        my $ms = _slice($deadline);
        return 0 if $ms == 0;
        AnyFork::Lib::check_int(_c_call(\&AnyFork::Lib::fork_wait, $ms));
        _drain();
    }
    return 1;
}

sub _now { require Time::HiRes; Time::HiRes::time() }

# The one fd an event loop watches (readable while dispatch has work).
sub loop_fd { _this_process(); AnyFork::Lib::check_int(AnyFork::Lib::fork_loop_fd()) }

# Callbacks registered and not run yet.
sub pending { _this_process(); AnyFork::Lib::fork_pending() + scalar @DUE }

# With AnyEvent loaded, one io watcher on the loop fd dispatches, so
# callbacks run from the AnyEvent loop (e.g. a condvar passed as the
# callback fires in $cv->recv). It is made on first use and kept: the
# library also needs the loop when no callback is pending (to release
# the fds of freed processes), and an idle fd costs nothing.
sub _watch {
    return if $WATCHER || !$INC{'AnyEvent.pm'} || ${^GLOBAL_PHASE} eq 'DESTRUCT';
    _this_process();
    my $fd = AnyFork::Lib::fork_loop_fd();
    return if $fd < 0;
    $WATCHER = AnyEvent->io(fh => $fd, poll => 'r', cb => \&dispatch);
}

# Callbacks left in @DUE by this module (a process gone at run, or a
# callback that died before the others due ran): AnyFork::wait and
# dispatch run them; with AnyEvent, the loop does on its next turn.
sub _rearm {
    return unless @DUE && $INC{'AnyEvent.pm'} && ${^GLOBAL_PHASE} ne 'DESTRUCT';
    $REARM ||= AnyEvent->timer(after => 0, cb => sub { undef $REARM; _drain() });
}

# In a new process made by Perl's own fork (or anything else that copied
# this one): the library state is the parent's, so reset it first.
sub _this_process { reset_after_fork() if $PID != $$ }

# In a child made with Perl's own fork: forget the parent's templates and
# callbacks (fork_reset_after_fork), so the child can use AnyFork afresh.
# Every AnyFork call does this by itself in a new process; calling it
# explicitly is still allowed.
sub reset_after_fork {
    undef $WATCHER;
    undef $REARM;
    AnyFork::Lib::fork_reset_after_fork();
    for my $t ($TEMPLATE, $EARLY) {
        delete $t->{p} if $t;
    }
    undef $TEMPLATE;
    undef $EARLY;
    %RUN_CB = ();
    %EXIT_CB = ();
    @DUE = ();
    $PID = $$;
    return;
}

1;

__END__

=head1 NAME

AnyFork - AnyEvent::Fork's API on top of libanyfork

=head1 SYNOPSIS

  use AnyFork;

  AnyFork
     ->new
     ->require ("MyModule")
     ->send_arg ("some id")
     ->run ("MyModule::worker", sub {
        my ($fh) = @_;    # our end of the comm socket
     });

  AnyFork::wait;          # or let AnyEvent's loop do it

See bindings/perl/README.md for the differences to AnyEvent::Fork.

=cut
