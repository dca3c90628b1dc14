# Remote templates (AnyFork->new_remote, AnyFork::Remote->new_execp)
# through a local transport, `sh -c 'exec anyfork-serve --stdio'`, which
# speaks what `ssh host anyfork-serve --stdio` does (tests/remote_ssh.rs
# covers ssh itself).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use AnyFork::Remote;
use TestUtil;

my $serve = $ENV{ANYFORK_SERVE} || 'anyfork-serve';
my @local = ('sh', '-c', 'exec "$0" --stdio "$@"', $serve);

{
    my $t = AnyFork->new_remote(@local);
    my ($pid, $status, $comm);
    my $p = $t->fork->eval_function('anyfork_comm_fd', '1');
    $p->on_exit(sub { ($pid, $status) = @_ });
    $p->exec(['sh', '-c', 'echo $$; exit 5'], sub { $comm = shift });
    AnyFork::wait;
    my $out = read_all($comm);
    AnyFork::wait until defined $status;
    is $pid, 0 + $out, 'the remote pid';
    is $status >> 8, 5, 'the remote exit status';
}

{
    my $t = AnyFork::Remote->new_execp('sh', @local);
    my $p = $t->fork->send_arg('x');
    open my $null, '<', '/dev/null' or die;
    eval { $p->send_fh($null) };
    like $@, qr/cannot cross machines/, 'send_fh to a remote process dies';
    my $comm;
    $p->send_arg('y')->run('anyfork_exit', sub { $comm = shift });
    AnyFork::wait;
    is read_all($comm), '', 'the process runs after the refused send_fh';
}

eval { AnyFork->new_remote('sh', '-c', 'echo host unknown >&2; exit 255') };
like $@, qr/status 255.*host unknown/s, 'a failed start says why';

{
    my $t = AnyFork->new_remote_perl(@local, '--perl', $^X, map { ('-I', $_) } grep { !ref } @INC);
    my $comm;
    $t->fork
      ->eval('sub where { my ($fh, @a) = @_; print $fh "perl $$ @a\n" }')
      ->send_arg('far')
      ->run('where', sub { $comm = shift });
    AnyFork::wait;
    like read_all($comm), qr/^perl \d+ far$/, 'Perl code in a remote perl template';
}

done_testing;
