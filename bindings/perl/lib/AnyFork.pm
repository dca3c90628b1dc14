package AnyFork;

use strict;
use warnings;

use Carp ();
use File::Spec ();
use POSIX ();
use AnyFork::Lib;
use AnyFork::Serve ();

our $VERSION = '0.01';

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
    $EARLY = _ours($EARLY);
    return $EARLY->fork if $EARLY;
    # A fresh perl that finds the modules this one finds, loads the same
    # libanyfork and serves on ANYFORK_FD.
    my @inc  = map { File::Spec->rel2abs($_) } grep { !ref } @INC;
    my $boot = 'BEGIN { $AnyFork::LIB = shift @ARGV; @INC = @ARGV; @ARGV = () }'
             . ' use AnyFork::Serve; AnyFork::Serve::serve()';
    my ($argv, $guard) = AnyFork::Lib::strv(_perl(), '-e', $boot, '--', $AnyFork::Lib::PATH, @inc);
    my $p = AnyFork::Lib::check_ptr(AnyFork::Lib::fork_new_exec_argv($argv));
    return $class->_wrap($p);
}

# Forks the library's own template (anyfork-serve): no Perl in there, so it
# runs C functions of libraries loaded with require and the builtins
# (anyfork_exec, see exec). Lighter than a Perl process.
sub new_native {
    my ($class) = @_;
    return $class->_wrap(AnyFork::Lib::check_ptr(AnyFork::Lib::fork_new()));
}

# Forks this program now as a template (AnyFork::Template and
# AnyFork::Early call it): its subs and data are there in every process
# forked from it.
sub _template {
    my ($class) = @_;
    # Output still buffered would be written again by every child when it
    # exits (Perl's own fork flushes every handle; this flushes the
    # standard ones and the selected one).
    require IO::Handle;
    require Symbol;
    for my $fh (\*STDOUT, \*STDERR, Symbol::qualify_to_ref(select)) {
        $fh->flush if defined fileno $fh;
    }
    AnyFork::Serve::install();
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
    return $self->_wrap($p, parent => $self);
}

sub new_from_fh {
    my ($class, $fh) = @_;
    my $fd = defined $fh ? fileno($fh) : undef;
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
    my ($argv, $guard) = AnyFork::Lib::strv(@strings);
    return $self->_sent(AnyFork::Lib::fork_eval($self->_p, $name, $argv, scalar @strings));
}

# A shared library by file name (libfoo.so, libfoo.so.1, or a path ending
# so) is loaded with dlopen (fork_require); anything else is a Perl module
# (Foo::Bar) or Perl file (a path, *.pm, *.pl) loaded with Perl's require.
sub _is_shared_lib { $_[0] =~ /\.so(?:\.[0-9]+)*\z/ }

sub require {
    my ($self, @what) = @_;
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
        my $fd = defined $fh && (ref $fh || ref \$fh eq 'GLOB') ? fileno($fh) : undef;
        Carp::croak('AnyFork->send_fh: not an open file handle') unless defined $fd && $fd >= 0;
        $self->_sent(AnyFork::Lib::fork_send_fd($p, $fd));
    }
    return $self;
}

sub send_arg {
    my ($self, @args) = @_;
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
    my ($closure, $id) = _callback($cb, delete $self->{parent});
    my $rc = defined $self->{gone} ? -POSIX::EPIPE() : $call->($p, $closure, $id);
    if ($rc == -POSIX::EPIPE()) {
        AnyFork::Lib::fork_free($p) if defined $self->{gone};
        my $why = defined $self->{gone} ? $self->{gone} : AnyFork::Lib::error();
        push @DUE, ['run', $id, $rc, $why];
        _postpone();
    }
    elsif ($rc < 0) {
        delete $RUN_CB{$id};
        AnyFork::Lib::check_int($rc);
    }
    _watch();
    return;
}

sub run {
    my ($self, $func, $cb) = @_;
    Carp::croak('AnyFork->run: no function name') unless defined $func && length $func;
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
}

# --- waiting ------------------------------------------------------------------------

# Runs the Perl callbacks of what the library reported.
sub _drain {
    my $ran = 0;
    while (my $e = shift @DUE) {
        my ($what, $id, @rest) = @$e;
        if ($what eq 'run') {
            my $entry = delete $RUN_CB{$id} or next;
            my ($cb) = @$entry;
            my ($fd, $err) = @rest;
            unless ($cb) {
                AnyFork::Lib::c_close($fd) if $fd >= 0;
                next;
            }
            $ran++;
            if ($fd >= 0) {
                $cb->(AnyFork::Lib::fh_from_fd($fd));
            }
            else {
                local $! = -$fd;
                $cb->(undef, $err);
            }
        }
        else {
            my $entry = delete $EXIT_CB{$id} or next;
            my ($cb) = @$entry;
            my ($pid, $status, $err) = @rest;
            $ran++;
            local $! = $status < 0 ? -$status : 0;
            $cb->($pid, $status, $err);
        }
    }
    _unwatch() unless AnyFork::Lib::fork_pending() || @DUE;
    return $ran;
}

# Nonblocking: does what can be done now and runs the callbacks that are
# due. For event loops: call it when loop_fd is readable.
sub dispatch {
    my $n = AnyFork::Lib::fork_loop_dispatch();
    AnyFork::Lib::check_int($n);
    return _drain();
}

# Blocks until every run and exit callback has run, or $timeout seconds
# passed (undef: no limit). Returns the number of Perl callbacks run.
sub wait {
    my ($timeout) = @_;
    my $deadline = defined $timeout ? _now() + $timeout : undef;
    my $ran = _drain();
    while (AnyFork::Lib::fork_pending()) {
        my $ms = -1;
        if (defined $deadline) {
            $ms = int((($deadline - _now()) * 1000) + 0.5);
            last if $ms <= 0;
        }
        my $n = AnyFork::Lib::fork_wait($ms);
        AnyFork::Lib::check_int($n);
        $ran += _drain();
        last if $n == 0 && !defined $deadline;
    }
    return $ran;
}

# Blocks until $cond->() is true, dispatching meanwhile; gives up (returning
# false) after $timeout seconds, or when no callback is pending any more
# that could make it true.
sub wait_for {
    my ($cond, $timeout) = @_;
    my $deadline = defined $timeout ? _now() + $timeout : undef;
    _drain();
    until ($cond->()) {
        return 0 unless AnyFork::Lib::fork_pending();
        my $ms = -1;
        if (defined $deadline) {
            $ms = int((($deadline - _now()) * 1000) + 0.5);
            return 0 if $ms <= 0;
        }
        AnyFork::Lib::check_int(AnyFork::Lib::fork_wait($ms));
        _drain();
    }
    return 1;
}

sub _now { require Time::HiRes; Time::HiRes::time() }

# The one fd an event loop watches (readable while dispatch has work).
sub loop_fd { AnyFork::Lib::check_int(AnyFork::Lib::fork_loop_fd()) }

# Callbacks registered and not run yet.
sub pending { AnyFork::Lib::fork_pending() + scalar @DUE }

# With AnyEvent loaded, one io watcher on the loop fd dispatches while
# anything is pending, so callbacks run from the AnyEvent loop (e.g. a
# condvar passed as the callback fires in $cv->recv).
sub _watch {
    return if $WATCHER || !$INC{'AnyEvent.pm'};
    my $fd = AnyFork::Lib::fork_loop_fd();
    return if $fd < 0;
    $WATCHER = AnyEvent->io(fh => $fd, poll => 'r', cb => \&dispatch);
}

sub _unwatch { undef $WATCHER }

# Callbacks queued by this module itself: AnyFork::wait and dispatch run
# them; with AnyEvent, the loop does soon.
sub _postpone {
    AnyEvent::postpone(sub { _drain() }) if $INC{'AnyEvent.pm'};
}

# In a child made with Perl's own fork: forget the parent's templates and
# callbacks (fork_reset_after_fork), so the child can use AnyFork afresh.
sub reset_after_fork {
    AnyFork::Lib::fork_reset_after_fork();
    for my $t ($TEMPLATE, $EARLY) {
        delete $t->{p} if $t;
    }
    undef $TEMPLATE;
    undef $EARLY;
    %RUN_CB = ();
    %EXIT_CB = ();
    @DUE = ();
    undef $WATCHER;
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
