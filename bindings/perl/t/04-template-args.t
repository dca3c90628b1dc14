# The manual's template example: strings and handles sent to a template
# before fork are cloned into every child, and the run function gets them
# all, in order, with what was sent after the fork:
#   ($fh, "str1", "str2", $fh1, $fh2, "str3")

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use TestUtil;

my $tmp = tmpdir();
open my $out, '>', "$tmp/file1" or die;
print $out "file one\n";
close $out;
open my $fh1, '<', "$tmp/file1" or die;
pipe my $report_r, my $fh2 or die "pipe: $!";
my $ino = (stat $fh1)[1];

my $pool = AnyFork
              ->new
              ->require ("Some::Stuff")
              ->send_arg ("str1", "str2")
              ->send_fh ($fh1, $fh2);

my $sent = 0;
for my $n (1 .. 2) {
   $pool
      ->fork
      ->send_arg ("str3")
      ->run ("Some::function", sub {
         my ($fh) = @_;

         # fh is nonblocking, but we trust that the OS can accept these
         # few octets anyway.
         syswrite $fh, "hi #$n\n";
         $sent++;

         # $fh is being closed here, as we don't store it anywhere
      });
}

# The template is not needed any more: it may go now.
undef $pool;
close $fh2;    # ours; the children have theirs

AnyFork::wait;
is $sent, 2, 'both callbacks ran';

my @lines = sort map { read_line($report_r) } 1 .. 2;
my $template_pid;
for my $i (0, 1) {
    my $n = $i + 1;
    my $line = $lines[$i];
    ok defined $line, "report $n arrived";
    $line = '' unless defined $line;
    chomp $line;
    my @f = split /,/, $line;
    is_deeply [@f[0 .. 8]], ['str1', 'str2', 'str3', 'fh', 'fh', 'fh', $ino, 0, "hi #$n"],
      "child $n got (\$fh, str1, str2, \$fh1, \$fh2, str3) in order and read 'hi #$n'";
    $template_pid = $f[9] unless defined $template_pid;
    is $f[9], $template_pid, 'Some::Stuff was loaded once, in the template';
}
isnt $template_pid, $$, 'not in this process';
is read_all($report_r), '', 'the pipe reaches EOF: both children are done';

# Arguments sent to a child of a child of a template accumulate the same way.
{
    my $t1 = AnyFork->new->send_arg('a');
    my $t2 = $t1->fork->send_arg('b');
    my $comm;
    $t2->fork->send_arg('c')
       ->eval('sub show { my $fh = shift; syswrite $fh, join(",", @_) . "\n" }')
       ->run('show', sub { $comm = shift });
    AnyFork::wait;
    is read_line($comm), "a,b,c\n", 'arguments of every template, in order';
}

done_testing;
