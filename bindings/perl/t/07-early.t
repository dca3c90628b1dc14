# AnyFork::Early: the program is forked first thing, and new_exec (and so
# the default template of new) forks that copy instead of executing perl.

use strict;
use warnings;

# optional, as the very first thing.
use AnyFork::Early;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use TestUtil;
use AnyFork;

ok $AnyFork::EARLY, '$AnyFork::EARLY is set';
my $early = $AnyFork::EARLY->pid;

my $p = AnyFork->new_exec;
my $comm;
$p->eval('sub parent_of_me { print {$_[0]} getppid(), " ", defined(&Test::More::ok) ? "has" : "hasnot", "\n" }')
  ->run('parent_of_me', sub { $comm = shift });
AnyFork::wait;
is read_all($comm), "$early hasnot\n",
   'new_exec forks the early copy, made before Test::More was loaded';

my $q;
AnyFork->new->send_arg('x')->eval('sub hi { print {$_[0]} "hi $_[1]\n" }')->run('hi', sub { $q = shift });
AnyFork::wait;
is read_all($q), "hi x\n", 'new works through it';

done_testing;
