# Issue 19 item 13: errors name the caller's line, and a tied handle
# without FILENO gets AnyFork's own error.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use AnyFork;
use TestUtil;

package Tied::NoFileno {
    sub TIEHANDLE { bless {}, shift }
    sub PRINT { 1 }
}

my $line;
my $p = AnyFork->new;

eval { $line = __LINE__; $p->send_arg("\x{263a}") };
like $@, qr/Wide character.* at \Q$0\E line $line\.$/, 'send_arg of wide characters: reported at our line';

eval { $line = __LINE__; $p->eval("\x{263a}") };
like $@, qr/Wide character.* at \Q$0\E line $line\.$/, 'eval of wide characters: reported at our line';

eval { $line = __LINE__; $p->exec(["/bin/echo", "a\0b"]) };
like $@, qr/NUL byte.* at \Q$0\E line $line\.$/, 'a NUL byte in argv: reported at our line';
$p = AnyFork->new;

tie *TIED, 'Tied::NoFileno';
eval { $line = __LINE__; $p->send_fh(\*TIED) };
like $@, qr/^AnyFork->send_fh: the handle is tied to Tied::NoFileno, which has no FILENO method.* at \Q$0\E line $line\.$/,
  'send_fh of a tied handle without FILENO: our own error, at our line';
unlike $@, qr/Can't locate object method/, 'not Perl\'s method lookup error';

eval { $line = __LINE__; AnyFork->new_from_fh(\*TIED) };
like $@, qr/^AnyFork->new_from_fh: the handle is tied to Tied::NoFileno.* at \Q$0\E line $line\.$/,
  'new_from_fh of a tied handle without FILENO';

undef $p;
AnyFork::wait(10);
done_testing;
