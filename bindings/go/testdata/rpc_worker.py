# An RPC worker program for rpc_test.go, run with the exec builtin: the
# comm socket is its stdin and stdout. Each request gets an event
# "got N", then its bytes upper-cased as the reply.
import struct
import sys

inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = inp.read(8)
    if len(head) < 8:
        break                                   # EOF: no more requests
    rid, n = struct.unpack("<II", head)
    req = inp.read(n)
    ev = b"got %d" % n
    out.write(struct.pack("<II", 0, len(ev)) + ev)
    out.write(struct.pack("<II", rid, n) + req.upper())
    out.flush()
