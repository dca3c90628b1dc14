# With AnyEvent loaded, AnyFork dispatches from AnyEvent's loop (one io
# watcher on AnyFork::loop_fd), so the manual's examples run as written:
# a condvar is the run callback, and $cv->recv waits.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
BEGIN {
    eval { require AnyEvent; 1 }
      or plan skip_all => 'AnyEvent is not installed (Debian: libanyevent-perl)';
}
use AnyEvent;
use AnyEvent::Handle;
use AnyFork;
use TestUtil;

# The manual's synopsis.
{
   AnyFork
      ->new
      ->require ("My::Worker")
      ->run ("My::Worker::worker", my $cv = AE::cv);

   my $fh = $cv->recv;
   ok $fh, 'the condvar got the comm socket';

   # Talk to it through AnyEvent::Handle.
   my $done = AE::cv;
   my @lines;
   my $hdl; $hdl = AnyEvent::Handle->new(
      fh       => $fh,
      on_error => sub { $done->send('error: ' . $_[2]) },
      on_eof   => sub { $done->send('eof') },
   );
   $hdl->push_read(line => sub {
      push @lines, $_[1];
      $hdl->push_write("from anyevent\n");
      $hdl->push_read(line => sub {
         push @lines, $_[1];
         $hdl->push_shutdown;
         $hdl->on_read(sub { });    # keep reading until EOF
      });
   });
   my $t = AE::timer 20, 0, sub { $done->send('timeout') };
   is $done->recv, 'eof', 'the worker ends when we shut down';
   like $lines[0], qr/^worker \d+ ready/, 'its greeting';
   is $lines[1], 'echo: from anyevent', 'its answer';
}

# The template example, counting with a condvar.
{
   my $cv = AE::cv;
   my @worker;
   my $template = AnyFork->new->eval('sub worker_run { my ($fh, $n) = @_; print $fh "worker $n\n" }');
   for my $n (1 .. 10) {
      $cv->begin;
      $template->fork->send_arg ($n)->run ("worker_run", sub {
         push @worker, shift;
         $cv->end;
      });
   }
   my $t = AE::timer 20, 0, sub { $cv->croak('timeout') };
   $cv->recv;
   is scalar(@worker), 10, 'ten workers started from the loop';
   is_deeply [sort { $a <=> $b } map { read_all($_) =~ /^worker (\d+)$/ ? $1 : 0 } @worker], [1 .. 10],
     'each ran';
}

# The faster fork+exec, as in the manual.
{
   my $tmp = tmpdir();
   open my $output, ">$tmp/log" or die "$!";

   AnyFork
      ->new
      ->eval ('
           sub run {
              my ($fh, $output, @cmd) = @_;
              open STDOUT, ">&", $output or die;
              open STDERR, ">&", $fh or die;
              exec @cmd;
           }
        ')
      ->send_fh ($output)
      ->send_arg ("/bin/echo", "hi")
      ->run ("run", my $cv = AE::cv);

   my $stderr = $cv->recv;
   is read_all($stderr), '', 'nothing on stderr';
   is slurp("$tmp/log"), "hi\n", 'hi in the log';
}

# Exit callbacks come through the loop too.
{
   my $cv = AE::cv;
   AnyFork->new->on_exit(sub { $cv->send($_[1]) })->eval('sub bye { exit 5 }')->run('bye');
   my $t = AE::timer 20, 0, sub { $cv->send('timeout') };
   is $cv->recv >> 8, 5, 'on_exit through the loop';
}

ok !AnyFork::pending(), 'nothing pending';
done_testing;
