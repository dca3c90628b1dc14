package AnyFork::Lib;

# The C functions of libanyfork, attached with FFI::Platypus, and the few
# conversions every other AnyFork module needs (argument vectors, the
# fork_arg array, file descriptors as Perl handles). Nothing here knows
# the wire protocol: it is all in the C library.

use strict;
use warnings;

use Carp ();
use Config ();
use Fcntl ();
use AnyFork::Fd ();
use FFI::Platypus 2.00;
use FFI::Platypus::DL ();
use FFI::Platypus::Buffer qw(scalar_to_buffer buffer_to_scalar);

our $VERSION = '0.01';

# Errors are reported at the line of the program that called AnyFork.
our @CARP_NOT = qw(AnyFork AnyFork::Serve AnyFork::Template AnyFork::Early);

# Which library to load, in order: $AnyFork::LIB (set before loading
# AnyFork), else $ENV{ANYFORK_LIB} (a file, a directory holding
# libanyfork.so.0, or a bare name for the dynamic linker), else
# libanyfork.so.0 through the dynamic linker, else in $INSTALL_LIBDIR
# (what `pkg-config --variable=libdir anyfork` said at `perl Makefile.PL`,
# kept in AnyFork/Libdir.pm: the one beside this file, else the first in
# @INC, as when a distribution's tests run perl on its lib/ with blib/ in
# PERL5LIB), else under /usr/local (make install's default prefix, before
# ldconfig has run). The error lists what was tried and why each failed.
our $PATH;
our $LIB_NAME = 'libanyfork.so.0';
our @DEFAULT_DIRS = ('/usr/local/lib', '/usr/local/lib64');
our $INSTALL_LIBDIR = do {
    require File::Basename;
    require File::Spec;
    my ($f) = grep { -f } File::Basename::dirname(__FILE__) . '/Libdir.pm',
      map { "$_/AnyFork/Libdir.pm" } grep { !ref } @INC;
    $f ? do(File::Spec->rel2abs($f)) : undef;
};

sub _candidates {
    my ($origin, $want);
    if (defined $AnyFork::LIB && length $AnyFork::LIB) {
        ($origin, $want) = ("\$AnyFork::LIB='$AnyFork::LIB'", $AnyFork::LIB);
    } elsif (defined $ENV{ANYFORK_LIB} && length $ENV{ANYFORK_LIB}) {
        ($origin, $want) = ("ANYFORK_LIB=$ENV{ANYFORK_LIB}", $ENV{ANYFORK_LIB});
    } else {
        my $i    = $INSTALL_LIBDIR;
        my @dirs = ((defined $i && !grep { $_ eq $i } @DEFAULT_DIRS) ? ($i) : (), @DEFAULT_DIRS);
        return (defined $i ? "ANYFORK_LIB unset, libdir $i from pkg-config at install"
                           : 'ANYFORK_LIB unset, no libdir from pkg-config at install',
                $LIB_NAME, map { "$_/$LIB_NAME" } @dirs);
    }
    require File::Spec;
    return ($origin, map { File::Spec->rel2abs($_) } "$want/$LIB_NAME", "$want/libanyfork.so")
      if -d $want;
    return ($origin, $want =~ m{/} ? File::Spec->rel2abs($want) : $want);
}

{
    my ($origin, @paths) = _candidates();
    my @tried;
    for my $path (@paths) {
        my $h = FFI::Platypus::DL::dlopen($path, FFI::Platypus::DL::RTLD_PLATYPUS_DEFAULT());
        if ($h) {
            FFI::Platypus::DL::dlclose($h);
            $PATH = $path;
            last;
        }
        push @tried, FFI::Platypus::DL::dlerror();
    }
    Carp::croak("AnyFork: cannot load libanyfork ($origin); tried "
          . join('; ', @tried)
          . '. Install it with `make install`, or set ANYFORK_LIB to the library or its directory')
      unless defined $PATH;
}

our $FFI = FFI::Platypus->new(api => 2, lib => [$PATH]);
Carp::croak("AnyFork: $PATH has no fork_new: not libanyfork?") unless $FFI->find_symbol('fork_new');

# The process itself: libc's fcntl and close on raw fds, and lookups of C
# functions loaded with fork_require (AnyFork::Serve).
our $SELF = FFI::Platypus->new(api => 2, lib => [undef]);

# struct fork_pool_opts, as fork_pool_defaults returns it.
{
    package AnyFork::Lib::PoolOpts;
    use FFI::Platypus::Record;
    record_layout_1(qw(uint max uint idle uint load double start double stop uint64 retire_after));
}

$FFI->type('(int,opaque)->void'                      => 'fork_run_cb');
$FFI->type('(int,int,opaque)->void'                  => 'fork_exit_cb');
$FFI->type('(int,string,int,opaque,size_t,opaque)->int' => 'fork_dispatch_fn');
$FFI->type('(int,opaque,size_t,opaque)->void'        => 'fork_rpc_reply_cb');
$FFI->type('(opaque,size_t,opaque)->void'            => 'fork_rpc_event_cb');
$FFI->type('(int,opaque)->void'                      => 'fork_rpc_destroyed_cb');
$FFI->type('(opaque,uint32,opaque,size_t,opaque)->void' => 'fork_rpc_handler');
$FFI->type('record(AnyFork::Lib::PoolOpts)'          => 'fork_pool_opts');
$FFI->type('(opaque)->int'                           => 'fork_fork_hook_fn');

my %C = (
    fork_new               => [[]                                   => 'opaque'],
    fork_new_exec          => [[]                                   => 'opaque'],
    fork_new_exec_argv     => [['opaque']                           => 'opaque'],
    fork_new_remote        => [['opaque']                           => 'opaque'],
    fork_fork              => [['opaque']                           => 'opaque'],
    fork_ahead             => [['opaque', 'uint']                   => 'int'],
    fork_template          => [[]                                   => 'opaque'],
    fork_send_fd           => [['opaque', 'int']                    => 'int'],
    fork_send_arg          => [['opaque', 'string', 'size_t']       => 'int'],
    fork_require           => [['opaque', 'string']                 => 'int'],
    fork_eval              => [['opaque', 'string', 'opaque', 'size_t'] => 'int'],
    fork_run               => [['opaque', 'string', 'fork_run_cb', 'opaque'] => 'int'],
    fork_exec              => [['opaque', 'opaque', 'opaque', 'fork_run_cb', 'opaque'] => 'int'],
    fork_on_exit           => [['opaque', 'fork_exit_cb', 'opaque'] => 'int'],
    fork_pid               => [['opaque']                           => 'int'],
    fork_free              => [['opaque']                           => 'void'],
    fork_to_fd             => [['opaque']                           => 'int'],
    fork_from_fd           => [['int']                              => 'opaque'],
    fork_loop_fd           => [[]                                   => 'int'],
    fork_loop_dispatch     => [[]                                   => 'int'],
    fork_wait              => [['int']                              => 'int'],
    fork_pending           => [[]                                   => 'size_t'],
    fork_last_error        => [[]                                   => 'string'],
    fork_set_dispatch      => [['fork_dispatch_fn', 'opaque']       => 'void'],
    fork_set_fork_hook     => [['fork_fork_hook_fn', 'opaque']      => 'void'],
    fork_serve             => [['int']                              => 'int'],
    fork_child_args        => [['size_t*']                          => 'opaque'],
    fork_reset_after_fork  => [[]                                   => 'void'],
    # RPC and pools (AnyFork::RPC, AnyFork::Pool and their workers).
    fork_rpc_start         => [['opaque', 'string', 'fork_rpc_event_cb', 'opaque'] => 'opaque'],
    # The reply callback as a plain pointer (AnyFork::RPC::REPLY_PTR): made
    # once, not converted from a closure object at every call.
    fork_rpc_call          => [['opaque', 'string', 'size_t', 'opaque', 'opaque'] => 'int'],
    fork_rpc_free          => [['opaque', 'fork_rpc_destroyed_cb', 'opaque'] => 'void'],
    fork_rpc_serve         => [['int', 'fork_rpc_handler', 'opaque', 'int'] => 'int'],
    fork_rpc_reply         => [['opaque', 'uint32', 'string', 'size_t'] => 'int'],
    fork_rpc_event         => [['opaque', 'string', 'size_t']       => 'int'],
    fork_pool_retire       => [['opaque']                           => 'int'],
    fork_pool_defaults     => [[]                                   => 'fork_pool_opts'],
    fork_pool_new          => [['opaque', 'string', 'fork_pool_opts*', 'fork_rpc_event_cb', 'opaque'] => 'opaque'],
    fork_pool_call         => [['opaque', 'string', 'size_t', 'opaque', 'opaque'] => 'int'],
    fork_pool_workers      => [['opaque']                           => 'int'],
    fork_pool_free         => [['opaque', 'fork_rpc_destroyed_cb', 'opaque'] => 'void'],
);
$FFI->attach($_ => @{ $C{$_} }) for sort keys %C;

$SELF->attach([close => 'c_close'] => ['int']               => 'int');
$SELF->attach([fcntl => 'c_fcntl'] => ['int', 'int', 'int'] => 'int');

# Only keys of Config.pm itself are read: any other one loads
# Config_heavy.pl, about 370 kB more in every template to copy at each
# fork. A perl with multiplicity (ithreads implies it) says "multi" in its
# archname.
my $MULTIPLICITY = $Config::Config{useithreads}
  || $Config::Config{archname} =~ /-multi\b/;

# Flushes every Perl output handle, as Perl's fork does before it forks
# (PerlIO_flush(NULL), through the interpreter's own function when this
# perl exports it), else STDOUT, STDERR and the selected handle. The
# function is looked up once, at load time: looked up in a forked child,
# it would cost as much as that child's whole exit.
sub _perlio_flush_all {
    my $flush = $SELF->find_symbol('Perl_PerlIO_flush') or return undef;
    unless ($MULTIPLICITY) {
        my $f = $SELF->function($flush => ['opaque'] => 'int');
        return sub { $f->call(undef) };
    }
    my $ctx = $SELF->find_symbol('Perl_get_context') or return undef;
    my $get = $SELF->function($ctx => [] => 'opaque');
    my $f   = $SELF->function($flush => ['opaque', 'opaque'] => 'int');
    return sub { $f->call($get->call, undef) };
}

my $FLUSH_ALL = _perlio_flush_all();

sub flush_all {
    return $FLUSH_ALL->() if $FLUSH_ALL;
    require IO::Handle;
    require Symbol;
    for my $fh (\*STDOUT, \*STDERR, Symbol::qualify_to_ref(select)) {
        local $@;
        CORE::eval { $fh->flush if defined fileno $fh };
    }
    return 0;
}

# The last error as a message: fork_last_error's text.
sub error { my $e = fork_last_error(); defined $e && length $e ? $e : 'unknown anyfork error' }

# Dies with fork_last_error's text (and $! set to the errno) when a C call
# failed: a negative int or a NULL pointer.
sub check_int {
    my ($rc) = @_;
    return $rc if $rc >= 0;
    my $msg = error();
    $! = -$rc;
    Carp::croak($msg);
}

sub check_ptr {
    my ($p) = @_;
    return $p if $p;
    Carp::croak(error());
}

my %PACK     = (4 => 'L', 8 => 'Q');
my $PTR      = $FFI->sizeof('opaque');
my $SZ       = $FFI->sizeof('size_t');
my $PTR_PACK = $PACK{$PTR};

# A NULL-terminated char ** built from Perl strings. Returns the pointer
# and a guard that keeps the bytes alive: hold both until the call returns.
sub strv {
    my @bufs = map {
        my $s = defined $_ ? "$_" : '';
        utf8::downgrade($s, 1) or utf8::encode($s);
        Carp::croak("AnyFork: a string with a NUL byte cannot be passed here")
          if $s =~ /\0/;
        "$s\0";
    } @_;
    my $arr = pack("$PTR_PACK*", (map { (scalar_to_buffer($_))[0] } @bufs), 0);
    my ($ptr) = scalar_to_buffer($arr);
    return ($ptr, [\@bufs, \$arr]);
}

# Bytes of a Perl string for send_arg: octets as they are; characters
# beyond 0xFF are refused, as the process can only get bytes.
sub octets {
    my ($s) = @_;
    $s = '' unless defined $s;
    $s = "$s";
    utf8::downgrade($s, 1)
      or Carp::croak("AnyFork: Wide character in argument (encode it to octets first)");
    return $s;
}

# struct fork_arg { int kind; int fd; const uint8_t *data; size_t len; }
my $ARG_TEMPLATE = "i i $PTR_PACK $PACK{$SZ}";
my $ARG_SIZE     = length pack $ARG_TEMPLATE, 0, 0, 0, 0;
{
    # Round up to the struct's alignment (that of its widest member).
    my $align = $PTR > $SZ ? $PTR : $SZ;
    $ARG_SIZE = int(($ARG_SIZE + $align - 1) / $align) * $align;
}

# Decodes n fork_args at ptr into [kind, fd, bytes] triples.
sub decode_args {
    my ($ptr, $n) = @_;
    return () unless $ptr && $n;
    my $raw = buffer_to_scalar($ptr, $ARG_SIZE * $n);
    my @out;
    for my $i (0 .. $n - 1) {
        my ($kind, $fd, $data, $len) =
          unpack $ARG_TEMPLATE, substr($raw, $i * $ARG_SIZE, $ARG_SIZE);
        if ($kind == 1) {
            push @out, [1, $fd, undef];
        }
        else {
            push @out, [0, -1, ($data && $len) ? buffer_to_scalar($data, $len) : ''];
        }
    }
    return @out;
}

# A Perl handle that owns fd (closing the handle closes the fd): opened in
# the mode the fd allows, and for sockets an IO::Socket of the fitting
# family (so that e.g. $listener->accept works), with autoflush on (see
# AnyFork::Fd).
sub fh_from_fd {
    my ($fd) = @_;
    my $fh = CORE::eval { AnyFork::Fd::handle($fd, c_fcntl($fd, Fcntl::F_GETFL(), 0)) };
    Carp::croak($@ =~ s/\n\z//r) unless $fh;
    return $fh;
}

# A close-on-exec duplicate of fd, as a raw fd the caller owns, or -1
# with $! set.
sub dup_cloexec {
    my ($fd) = @_;
    require POSIX;
    my $new = POSIX::dup($fd);
    return -1 unless defined $new;
    c_fcntl($new, Fcntl::F_SETFD(), Fcntl::FD_CLOEXEC());
    return $new;
}

1;
