# The manual's "faster fork+exec": /bin/echo hi with standard output
# redirected to a file and standard error to the comm socket; then the
# same through the library's exec builtin.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use TestUtil;

my $tmp = tmpdir();

sub spawn_with_perl {
    my ($log, @cmd) = @_;
    open my $output, '>', $log or die "$log: $!";
    my $stderr;
    AnyFork
       ->new
       ->eval ('
            # compile a helper function for later use
            sub run {
               my ($fh, $output, @cmd) = @_;

               # perl will clear close-on-exec on STDOUT/STDERR
               open STDOUT, ">&", $output or die;
               open STDERR, ">&", $fh or die;

               exec @cmd;
            }
         ')
       ->send_fh ($output)
       ->send_arg (@cmd)
       ->run ("run", sub { $stderr = shift });
    # $output is ours to close: the library has its own duplicate.
    close $output;
    AnyFork::wait;
    return $stderr;
}

{
    my $stderr = spawn_with_perl("$tmp/log", '/bin/echo', 'hi');
    ok $stderr, 'got the comm socket';
    is read_all($stderr), '', 'nothing on stderr';
    is slurp("$tmp/log"), "hi\n", 'echo wrote hi into the log';
}

{
    my $stderr = spawn_with_perl("$tmp/log2", '/bin/sh', '-c', 'echo out; echo err >&2; exit 0');
    is read_all($stderr), "err\n", 'stderr arrives on the comm socket';
    is slurp("$tmp/log2"), "out\n", 'stdout went to the file';
}

# The exec builtin: handles sent become fds 0, 1, 2, ... of the program,
# strings sent before come first in argv; anyfork_comm_fd makes the comm
# socket its stderr. This runs in the library's own template, no perl.
{
    open my $output, '>', "$tmp/log3" or die;
    open my $null, '<', '/dev/null' or die;
    my $stderr;
    AnyFork
       ->new_native
       ->send_fh ($null, $output)
       ->eval_function ('anyfork_comm_fd', '2')
       ->eval_function ('anyfork_setenv', 'GREETING=hello')
       ->send_arg ('/bin/sh', '-c')
       ->exec (['echo "$GREETING $0"; echo oops >&2', 'there'], sub { $stderr = shift });
    close $output;
    AnyFork::wait;
    is read_all($stderr), "oops\n", 'exec builtin: stderr on the comm socket';
    is slurp("$tmp/log3"), "hello there\n", 'exec builtin: stdout to the file, env set';
}

# The builtin works from Perl templates too, and with an explicit
# environment.
{
    open my $output, '>', "$tmp/log4" or die;
    open my $null, '<', '/dev/null' or die;
    my ($comm, $status);
    AnyFork
       ->new
       ->send_fh ($null, $output)
       ->on_exit (sub { $status = $_[1] })
       ->exec (['/bin/sh', '-c', 'echo "[$ONLY] [$HOME]"; exit 7'], sub { $comm = shift }, { ONLY => 'me' });
    AnyFork::wait;
    is $status >> 8, 7, 'the exit status of the program is reported';
    is read_all($comm), '', 'the comm socket reaches EOF';
    is slurp("$tmp/log4"), "[me] []\n", 'the environment is exactly the one given';
}

{
    my ($comm, $status);
    AnyFork->new_native
       ->on_exit (sub { $status = $_[1] })
       ->exec (['/nonexistent/program'], sub { $comm = shift });
    AnyFork::wait;
    like read_all($comm), qr/nonexistent/, 'an exec failure is written to the comm socket';
    is $status >> 8, 127, 'and the status is 127';
}

done_testing;
