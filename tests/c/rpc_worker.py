# rpc_worker.py: an RPC worker in Python (tests/rpc.rs runs it), started
# through the anyfork_exec builtin with the comm socket as stdin and
# stdout. Each request gets an event "got N bytes", then its bytes
# upper-cased.
import struct, sys

inp, out = sys.stdin.buffer, sys.stdout.buffer

def send(id, data):
    out.write(struct.pack("<II", id, len(data)) + data)

while True:
    head = inp.read(8)
    if len(head) < 8:
        break                                  # EOF: the caller let go
    id, n = struct.unpack("<II", head)
    req = inp.read(n)
    send(0, b"got %d bytes" % n)               # id 0: an event
    send(id, req.upper())                      # the reply carries the id
    out.flush()
