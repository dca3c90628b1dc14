# Perl code in the children of an exec'd Perl server (new_exec: perl
# running AnyFork::Serve, which serves through the library's fork_serve
# with a dispatcher): eval of code, require of modules, run of Perl subs.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use TestUtil;

my $server = AnyFork->new_exec;
my $pid = $server->pid;
like $pid, qr/^\d+$/, 'new_exec gives a direct child with a pid';
{
    open my $st, '<', "/proc/$pid/stat" or die;
    my $stat = <$st>;
    my ($ppid) = $stat =~ /\) \S+ (\d+)/;
    is $ppid, $$, 'its parent is this process';
    open my $cmd, '<', "/proc/$pid/cmdline" or die;
    my $cmdline = join ' ', split /\0/, scalar <$cmd>;
    like $cmdline, qr/perl.*AnyFork::Serve/, 'it is a perl running AnyFork::Serve';
}

sub run_in {
    my ($proc, $func) = @_;
    my $comm;
    $proc->run($func, sub { $comm = shift });
    AnyFork::wait;
    return read_all($comm);
}

# eval: code in package main, @_ holds the strings (any octets).
is run_in($server->fork
    ->eval('our $JOINED = join "|", map { length } @_', "a\0b", "", "\xff\x00")
    ->eval('sub report { my ($fh) = @_; print $fh "$JOINED ", __PACKAGE__, "\n" }'),
  'report'), "3|0|2 main\n", 'eval sees its strings in @_, in package main';

# require: a Perl module, found through this process's @INC.
is run_in($server->fork->require('My::Worker')
    ->eval('sub has { print {$_[0]} defined &My::Worker::worker ? "yes\n" : "no\n" }'),
  'has'), "yes\n", 'require loads Perl modules';

# The module loaded into the server is there in every fork of it.
$server->require('Some::Stuff');
is run_in($server->fork->eval('sub loaded_in { print {$_[0]} "$Some::Stuff::LOADED_IN\n" }'),
    'loaded_in'), "$pid\n", 'code loaded into the server is shared by its forks';

# run: unqualified names are looked up in main; args follow the socket.
{
    pipe my $r, my $w or die;
    my $out = run_in($server->fork
        ->send_arg('one')->send_fh($w)->send_arg('two')
        ->eval('sub args { my ($fh, @a) = @_; print $fh join(",", map { ref($_) || $_ } @a), "\n"; syswrite $a[1], "via pipe\n" }'),
      'args');
    close $w;
    like $out, qr/^one,IO::\w+|one,GLOB/, 'handles arrive as handles';
    is((split /,/, $out)[2], "two\n", 'in order');
    is read_line($r), "via pipe\n", 'and they work';
}

# &name with the eval's strings, as the manual recommends for init calls.
is run_in($server->fork
    ->eval('sub init { our @INIT = @_ }')
    ->eval('&init', 'x', 'y')
    ->eval('sub show { print {$_[0]} "@main::INIT\n" }'),
  'show'), "x y\n", 'eval("&init", ...) passes the strings on';

# run_args: handles and strings received so far, taken away from run.
{
    my $out = run_in($server->fork
        ->send_fh(\*STDIN)->send_arg('early')
        ->eval('our @GOT = AnyFork::Serve::run_args()')
        ->send_arg('late')
        ->eval('sub rest { my ($fh, @a) = @_; print $fh scalar(@GOT), " ", (ref $GOT[0] ? "fh" : "?"), " $GOT[1] | @a\n" }'),
      'rest');
    is $out, "2 fh early | late\n", 'run_args gives what came so far, run the rest';
}

# send_arg passes any octets; pid is the child's pid even for forks.
{
    my $p = $server->fork;
    my $child_pid = $p->pid;
    my $out = run_in($p->send_arg("a\0b\n", "\xff", '')
        ->eval('sub octets { my $fh = shift; print $fh join(",", map { unpack "H*", $_ } @_), " $$\n" }'),
      'octets');
    is $out, "6100620a,ff, $child_pid\n", 'strings arrive byte for byte; pid is right';
}

# The comm socket is blocking in the child.
is run_in($server->fork->eval('sub blk { print {$_[0]} $_[0]->blocking ? "blocking\n" : "nonblocking\n" }'),
    'blk'), "blocking\n", 'the comm socket is blocking in the child';

# A run function may be a Perl sub anywhere, e.g. in a module.
{
    my $comm;
    $server->fork->require('My::Worker')->send_arg('q')->run('My::Worker::worker', sub { $comm = shift });
    AnyFork::wait;
    like read_line($comm), qr/^worker \d+ ready \(q\)$/, 'module function as run function';
    syswrite $comm, "ping\n";
    is read_line($comm), "echo: ping\n", 'and it talks';
}

# A fresh interpreter each time.
my $other = AnyFork->new_exec;
isnt $other->pid, $pid, 'every new_exec is a new perl';
is run_in($other->fork->eval('sub chk { print {$_[0]} defined &My::Worker::worker ? "loaded\n" : "fresh\n" }'),
    'chk'), "fresh\n", 'without what the other server loaded';

# $AnyFork::PERL chooses the interpreter.
{
    local $AnyFork::PERL = '/nonexistent/perl';
    my $p = eval { AnyFork->new_exec };
    if ($p) {
        my $status;
        $p->on_exit(sub { $status = $_[1] });
        undef $p;
        AnyFork::wait(20);
        isnt $status, 0, '$AnyFork::PERL is used (a missing perl fails)';
    }
    else {
        like $@, qr/nonexistent/, '$AnyFork::PERL is used (a missing perl fails)';
    }
}

done_testing;
