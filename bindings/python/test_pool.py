"""Tests of anyfork.Pool (RPC workers in Python): python3 -m unittest.

The pools fork this interpreter as their template, so the worker
functions below (and the lambdas and closures given as handlers) exist in
the workers.
"""

import concurrent.futures
import errno
import os
import pickle
import signal
import sys
import threading
import time
import unittest

import anyfork
from test_anyfork import fd_table, new_fds


def square(x):
    return x * x


def pid_after(ms=0):
    time.sleep(ms / 1000.0)
    return os.getpid()


def fail(msg):
    raise KeyError(msg)


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no pickling")


def fail_unpicklable():
    raise Unpicklable("local")


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def chatty(n):
    for i in range(n):
        anyfork.event(b"ev%d" % i)
    return "done %d" % n


def retiring():
    anyfork.retire()
    return os.getpid()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of the template counts as gone.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def gone_within(pids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


class WorkerSpinTests(unittest.TestCase):
    """The worker's look for its next request before it sleeps."""

    def test_the_window_comes_from_ANYFORK_SPIN_US(self):
        old = os.environ.get("ANYFORK_SPIN_US")
        try:
            for value, want in (("0", 0.0), (" 20 ", 20e-6), ("5000000", 1.0),
                                ("fast", 50e-6), ("-3", 0.0)):
                os.environ["ANYFORK_SPIN_US"] = value
                self.assertAlmostEqual(anyfork._spin_window(), want, msg=value)
            del os.environ["ANYFORK_SPIN_US"]
            self.assertAlmostEqual(anyfork._spin_window(), 50e-6)
        finally:
            if old is None:
                os.environ.pop("ANYFORK_SPIN_US", None)
            else:
                os.environ["ANYFORK_SPIN_US"] = old

    def test_a_request_during_or_after_the_spin_is_read_then_eof(self):
        import socket
        a, b = socket.socketpair()
        with a, b:
            a.sendall(b"now")
            self.assertEqual(anyfork._recv_next(b, 0.2), b"now")
            late = threading.Timer(0.05, a.sendall, (b"later",))
            late.start()
            self.assertEqual(anyfork._recv_next(b, 10e-6), b"later")   # slept in recv
            late.join()
            a.shutdown(socket.SHUT_WR)
            self.assertEqual(anyfork._recv_next(b, 0.2), b"")


class PoolTests(unittest.TestCase):

    def test_submit_and_map_keep_order(self):
        with anyfork.Pool(2, load=3) as pool:
            futs = [pool.submit(square, i) for i in range(300)]
            self.assertEqual([f.result(30) for f in futs], [i * i for i in range(300)])
            self.assertEqual(list(pool.map(square, range(500))), [i * i for i in range(500)])
            self.assertEqual(list(pool.map(pow, range(20), [3] * 20, chunksize=7)),
                             [i ** 3 for i in range(20)])
            self.assertIsInstance(futs[0], anyfork.Future)
            self.assertFalse(futs[0].cancel(), "a call sent cannot be cancelled")

    def test_threads_waiting_on_their_own_futures(self):
        with anyfork.Pool(2, load=4) as pool:
            errors = []

            def caller(k):
                try:
                    for i in range(150):
                        got = pool.submit(pow, k, i % 5).result(30)
                        if got != k ** (i % 5):
                            errors.append((k, i, got))
                except BaseException as e:
                    errors.append(e)
            threads = [threading.Thread(target=caller, args=(k,)) for k in range(2, 10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            self.assertEqual(errors, [])
            self.assertFalse(any(t.is_alive() for t in threads), "a thread hung")

    def test_apply_returns_the_result_or_raises_like_result(self):
        with anyfork.Pool(2) as pool:
            self.assertEqual([pool.apply(square, i) for i in range(200)],
                             [i * i for i in range(200)])
            self.assertEqual(pool.apply(pow, 2, exp=5), 32)
            with self.assertRaises(KeyError) as cm:
                pool.apply(fail, "gone")
            self.assertEqual(cm.exception.args, ("gone",))
            self.assertIn("in fail", str(cm.exception.__cause__))
            with self.assertRaises(BrokenPipeError):
                pool.apply(die)
            # Threads applying at once each get their own result.
            got = {}

            def caller(k):
                got[k] = [pool.apply(pow, k, i % 4) for i in range(50)]
            threads = [threading.Thread(target=caller, args=(k,)) for k in range(2, 6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(got, {k: [k ** (i % 4) for i in range(50)] for k in range(2, 6)})
        with self.assertRaises(RuntimeError):
            pool.apply(square, 1)

    def test_map_raises_each_error_when_reached_and_times_out(self):
        with anyfork.Pool(2) as pool:
            it = pool.map(fail, ["a", "b"])
            with self.assertRaises(KeyError) as cm:
                next(it)
            self.assertEqual(cm.exception.args, ("a",))
            it = pool.map(square, [1, 2, 3])
            self.assertEqual(next(it), 1)
            self.assertEqual(list(it), [4, 9])
            t = time.monotonic()
            with self.assertRaises(concurrent.futures.TimeoutError):
                list(pool.map(pid_after, [800], timeout=0.1))
            self.assertLess(time.monotonic() - t, 0.7, "the timeout was kept")
            self.assertEqual(list(pool.map(square, [5], chunksize=3)), [25])

    def test_handler_with_bytes_and_with_pickle(self):
        suffix = b"!"   # a closure: the template is forked after it exists
        with anyfork.Pool(1, handler=lambda b: b.upper() + suffix, serializer=None) as pool:
            self.assertEqual(pool.call(b"abc").result(30), b"ABC!")
            self.assertEqual(pool.call(b"").result(30), b"!")
            with self.assertRaises(TypeError):
                pool.call(42)
        with anyfork.Pool(1, handler=lambda o: {"got": o}) as pool:
            self.assertEqual(pool.call([1, "x"]).result(30), {"got": [1, "x"]})
        with anyfork.Pool(1) as pool:
            with self.assertRaises(TypeError):
                pool.call(b"no handler")

    def test_exceptions_come_back_with_the_workers_traceback(self):
        with anyfork.Pool(1) as pool:
            f = pool.submit(fail, "missing")
            with self.assertRaises(KeyError) as cm:
                f.result(30)
            self.assertEqual(cm.exception.args, ("missing",))
            self.assertIsInstance(cm.exception.__cause__, anyfork.RemoteError)
            self.assertIn("in fail", str(cm.exception.__cause__))
            with self.assertRaises(anyfork.RemoteError) as cm:
                pool.submit(fail_unpicklable).result(30)
            self.assertIn("Unpicklable: local", str(cm.exception))
            # A result that cannot be pickled is an error of that call only.
            with self.assertRaises(Exception):
                pool.submit(threading.Lock).result(30)
            self.assertEqual(pool.submit(square, 3).result(30), 9)

    def test_a_worker_that_dies_fails_its_calls_once_and_is_replaced(self):
        with anyfork.Pool(1, load=1) as pool:
            first = pool.submit(pid_after).result(30)
            futs = [pool.submit(square, i) for i in range(3)]
            dead = pool.submit(die)
            after = [pool.submit(square, i) for i in range(3)]
            self.assertEqual([f.result(30) for f in futs], [0, 1, 4])
            with self.assertRaises(BrokenPipeError) as cm:
                dead.result(30)
            self.assertEqual(cm.exception.errno, errno.EPIPE)
            self.assertTrue(str(cm.exception), "the error says why")
            self.assertEqual([f.result(30) for f in after], [0, 1, 4])
            second = pool.submit(pid_after).result(30)
            self.assertNotEqual(first, second, "a new worker took over")

    def test_a_worker_killed_from_outside_with_calls_in_flight(self):
        with anyfork.Pool(1, load=20) as pool:
            pid = pool.submit(pid_after).result(30)
            futs = [pool.submit(pid_after, 20) for _ in range(20)]
            time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
            ok = failed = 0
            for f in futs:
                e = f.exception(30)
                if e is None:
                    ok += 1
                else:
                    # EPIPE, or ECONNRESET when it died with requests unread.
                    self.assertIsInstance(e, (BrokenPipeError, ConnectionResetError))
                    failed += 1
            self.assertEqual(ok + failed, 20)
            self.assertGreater(failed, 0)
            self.assertNotEqual(pool.submit(pid_after).result(30), pid)
        self.assertEqual(anyfork._rpc_futures, {}, "each call's callback ran once")

    def test_events_arrive_in_order_with_replies(self):
        got = []
        with anyfork.Pool(1, load=4, on_event=lambda b: got.append(b)) as pool:
            futs = [pool.submit(chatty, n) for n in (3, 0, 2)]
            replies = []
            for f in futs:
                f.add_done_callback(lambda f: got.append(f.result()))
            replies = [f.result(30) for f in futs]
        self.assertEqual(replies, ["done 3", "done 0", "done 2"])
        self.assertEqual(got, [b"ev0", b"ev1", b"ev2", "done 3", "done 0", b"ev0", b"ev1",
                               "done 2"])

    def test_retire_and_retire_after(self):
        with anyfork.Pool(1) as pool:
            a = pool.submit(retiring).result(30)
            b = pool.submit(pid_after).result(30)
            self.assertNotEqual(a, b)
        with anyfork.Pool(1, load=1, retire_after=3) as pool:
            pids = [pool.submit(pid_after).result(30) for _ in range(9)]
        self.assertEqual(len(set(pids)), 3, pids)
        self.assertEqual(pids, sorted(pids, key=pids.index))

    def test_shutdown_is_graceful_and_leaves_no_worker(self):
        pool = anyfork.Pool(2, load=1)
        futs = [pool.submit(pid_after, 5) for _ in range(40)]
        pool.shutdown(wait=True)
        pids = {f.result(0) for f in futs}
        self.assertTrue(all(f.done() for f in futs))
        self.assertTrue(gone_within(pids, 5), "workers still running: %s" % pids)
        with self.assertRaises(RuntimeError):
            pool.submit(square, 1)
        pool.shutdown()    # a second one does nothing
        self.assertEqual(anyfork.pending(), 0)

    def test_ten_thousand_calls_leave_fds_and_callbacks_flat(self):
        with anyfork.Pool(2, idle=2) as pool:      # both workers from the start
            self.assertEqual(sum(pool.map(square, range(100))), sum(i * i for i in range(100)))
            self.assertEqual(pool.workers(), 2)
            base, tokens = fd_table(), len(anyfork._callbacks)
            for chunk in range(10):
                futs = [pool.submit(square, i) for i in range(1000)]
                self.assertEqual(sum(f.result(60) for f in futs),
                                 sum(i * i for i in range(1000)))
            self.assertEqual(new_fds(base), {})
            self.assertEqual(len(anyfork._callbacks), tokens)
            self.assertEqual(anyfork._rpc_futures, {})
        self.assertEqual(anyfork.pending(), 0)

    def test_bad_settings_are_refused_with_a_message(self):
        with self.assertRaises(OSError) as cm:
            anyfork.Pool(0)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        self.assertIn("max", str(cm.exception))
        with self.assertRaises(ValueError):
            anyfork.Pool(1, serializer=str)


UPPER_WORKER = r"""
import struct, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
while len(head := inp.read(8)) == 8:
    rid, n = struct.unpack("<II", head)
    req = inp.read(n)
    if req == b"die":
        sys.exit(3)
    out.write(struct.pack("<II", 0, 4) + b"got!")
    out.write(struct.pack("<II", rid, n) + req.upper())
    out.flush()
"""


class RPCTests(unittest.TestCase):

    def test_an_exec_worker_in_python(self):
        events = []
        with anyfork.RPC.exec([sys.executable, "-c", UPPER_WORKER],
                              on_event=events.append) as rpc:
            futs = [rpc.call(b"call %d" % i) for i in range(100)]
            self.assertEqual([f.result(30) for f in futs],
                             [b"CALL %d" % i for i in range(100)])
        self.assertEqual(events, [b"got!"] * 100)
        self.assertEqual(rpc.status, 0)
        with self.assertRaises(RuntimeError):
            rpc.call(b"x")

    def test_a_worker_that_exits_fails_its_calls(self):
        rpc = anyfork.RPC.exec([sys.executable, "-c", UPPER_WORKER])
        self.assertEqual(rpc.call(b"a").result(30), b"A")
        dead = rpc.call(b"die")
        with self.assertRaises((BrokenPipeError, ConnectionResetError)):
            dead.result(30)
        rpc.close()
        self.assertIsInstance(rpc.status, OSError)
        self.assertEqual(anyfork._rpc_futures, {})


if __name__ == "__main__":
    unittest.main()
