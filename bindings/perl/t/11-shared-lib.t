# require of a shared library: dlopen in the process (fork_require), then
# run calls its C function, both in the library's own template
# (new_native) and in a Perl process (names that are no Perl sub are
# looked up as C functions).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use File::Spec;
use AnyFork;
use TestUtil;

my $root = File::Spec->rel2abs("$FindBin::Bin/../../..");
my $src  = "$root/c-examples/hello_worker.c";
my $cc   = $ENV{CC} || 'cc';
plan skip_all => "no $src" unless -f $src;
my $tmp = tmpdir();
my $so  = "$tmp/libhello_worker.so";
system($cc, '-shared', '-fPIC', "-I$root/include", $src, '-o', $so) == 0
  or plan skip_all => "cannot compile $src with $cc";

for my $how (qw(new_native new new_exec)) {
    pipe my $r, my $w or die;
    my ($comm, $status);
    AnyFork->$how
       ->require ($so)
       ->send_fh ($w)
       ->send_arg ('Hello', "Perl via $how")
       ->on_exit (sub { $status = $_[1] })
       ->run ('hello_run', sub { $comm = shift });
    close $w;
    AnyFork::wait;
    is read_all($comm), "Hello, Perl via $how!\n", "$how: the C function answered";
    like read_line($r), qr/^pid \d+$/, "$how: and wrote into the pipe";
    is $status, 0, "$how: its return value is the exit status";
}

# A library that cannot be loaded ends the process with status 127.
{
    my $status;
    my $errf = "$tmp/err";
    with_stderr_to($errf, sub {
        # A fresh server, so that its stderr is the file.
        AnyFork->new_exec->require("$tmp/missing.so")->on_exit(sub { $status = $_[1] })->run('x');
    });
    AnyFork::wait;
    is $status >> 8, 127, 'a missing library: status 127';
    like slurp($errf), qr/missing\.so/, "and a message on stderr" or diag slurp($errf);
}

done_testing;
