"""Tests of anyfork.get_context(), the multiprocessing context whose
processes are forked from a template of this program: python3 -m unittest.

multiprocessing's documented uses with the context: Pool (map,
imap_unordered, apply_async with callbacks and errors), Queue, Pipe,
Manager, Process exit codes (return, sys.exit, an exception, terminate,
kill), join with a timeout, is_alive; and that children leave nothing
behind (no process, no fd, no callback).
"""

import gc
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import unittest

import anyfork
from test_anyfork import fd_table, new_fds

HERE = os.path.dirname(os.path.abspath(__file__))


def square(x):
    return x * x


def fail_on(x):
    if x == 3:
        raise KeyError("three")
    return x


def quiet_raise():
    """Raises in the child, its traceback (printed by multiprocessing)
    going nowhere."""
    sys.stderr = open(os.devnull, "w")
    raise ValueError("in the child")


def exit_with(code):
    sys.exit(code)


def sleep_then_exit(seconds, code):
    time.sleep(seconds)
    sys.exit(code)


def close_sentinel_then_exit(seconds, code):
    """Closes this child's end of the comm socket (its parent's sentinel
    fires), then lives on a while."""
    os.close(multiprocessing.parent_process()._sentinel)
    time.sleep(seconds)
    sys.exit(code)


def quiet_exit_with(code):
    sys.stderr = open(os.devnull, "w")
    sys.exit(code)


def kill_self(sig):
    os.kill(os.getpid(), sig)


def produce(q, n):
    for i in range(n):
        q.put((os.getpid(), i))
    q.put(None)


def consume(q, out):
    total = 0
    while True:
        item = q.get()
        if item is None:
            break
        total += item[1]
    out.put(total)


def echo_pipe(conn):
    while True:
        msg = conn.recv()
        if msg is None:
            break
        conn.send(("echo", msg))
    conn.close()


def fill_manager(d, lst, who):
    d[who] = os.getpid()
    lst.append(who)


def describe(q):
    proc = multiprocessing.current_process()
    parent = multiprocessing.parent_process()
    q.put({
        "pid": os.getpid(),
        "name": proc.name,
        "authkey": bytes(proc.authkey),
        "parent_pid": parent.pid,
        "parent_alive": parent.is_alive(),
        "cwd": os.getcwd(),
        "start_method": multiprocessing.get_start_method(),
        "frozen": gc.get_freeze_count(),
    })


def pid_and_child_pid(q):
    """Starts a process of its own with the context (a template of this
    child) and reports both pids."""
    ctx = anyfork.get_context()
    inner = ctx.Queue()
    p = ctx.Process(target=describe, args=(inner,))
    p.start()
    got = inner.get(timeout=30)
    p.join(30)
    q.put((os.getpid(), got["pid"], got["parent_pid"], p.exitcode))


ANONYMOUS = (lambda: None)      # pickled by reference: "<lambda>" is no name


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class ProcessTest(unittest.TestCase):
    """Process: exit codes as the "fork" context gives them."""

    @classmethod
    def setUpClass(cls):
        cls.ctx = anyfork.get_context()

    def run_to_end(self, target, *args):
        p = self.ctx.Process(target=target, args=args)
        p.start()
        p.join(30)
        self.assertFalse(p.is_alive())
        self.assertTrue(gone(p.pid), "process %d is still there after join" % p.pid)
        return p.exitcode

    def test_the_context_is_one_and_registered(self):
        self.assertIs(anyfork.get_context(), self.ctx)
        self.assertIs(multiprocessing.get_context("anyfork"), self.ctx)
        self.assertEqual(self.ctx.get_start_method(), "anyfork")

    def test_exit_codes(self):
        self.assertEqual(self.run_to_end(square, 4), 0)
        self.assertEqual(self.run_to_end(exit_with, 0), 0)
        self.assertEqual(self.run_to_end(exit_with, None), 0)
        self.assertEqual(self.run_to_end(exit_with, 7), 7)
        self.assertEqual(self.run_to_end(quiet_exit_with, "a message"), 1)
        self.assertEqual(self.run_to_end(quiet_raise), 1)
        self.assertEqual(self.run_to_end(kill_self, signal.SIGKILL), -signal.SIGKILL)
        self.assertEqual(self.run_to_end(kill_self, signal.SIGSEGV), -signal.SIGSEGV)

    def test_exit_codes_match_the_fork_context(self):
        fork = multiprocessing.get_context("fork")
        for target, arg in ((exit_with, 3), (exit_with, 300), (quiet_raise, None),
                            (kill_self, signal.SIGTERM)):
            codes = []
            for ctx in (fork, self.ctx):
                p = ctx.Process(target=target, args=() if arg is None else (arg,))
                p.start()
                p.join(30)
                codes.append(p.exitcode)
            self.assertEqual(codes[0], codes[1], "%s(%r)" % (target.__name__, arg))

    def test_terminate_and_kill(self):
        for how, sig in (("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)):
            p = self.ctx.Process(target=time.sleep, args=(60,))
            p.start()
            self.assertTrue(p.is_alive())
            self.assertIsNone(p.exitcode)
            t0 = time.monotonic()
            getattr(p, how)()
            p.join(30)
            self.assertLess(time.monotonic() - t0, 20)
            self.assertEqual(p.exitcode, -sig, how)
            self.assertFalse(p.is_alive())
            self.assertTrue(gone(p.pid))
            p.terminate()           # after the end: nothing happens
            p.close()

    def test_join_with_timeout_and_is_alive(self):
        p = self.ctx.Process(target=time.sleep, args=(0.7,))
        p.start()
        t0 = time.monotonic()
        p.join(0.2)
        waited = time.monotonic() - t0
        self.assertGreaterEqual(waited, 0.15)
        self.assertLess(waited, 0.6)
        self.assertTrue(p.is_alive())
        self.assertIsNone(p.exitcode)
        p.join(30)
        self.assertFalse(p.is_alive())
        self.assertEqual(p.exitcode, 0)

    def test_join_waits_for_the_exit_not_the_sentinel(self):
        p = self.ctx.Process(target=close_sentinel_then_exit, args=(0.8, 3))
        p.start()
        from multiprocessing.connection import wait
        self.assertEqual(wait([p.sentinel], 30), [p.sentinel])
        t0 = time.monotonic()
        p.join(0.2)                 # the sentinel fired, the child runs on
        self.assertIsNone(p.exitcode)
        self.assertTrue(p.is_alive())
        self.assertLess(time.monotonic() - t0, 0.6)
        p.join()
        self.assertEqual(p.exitcode, 3)
        self.assertTrue(gone(p.pid))

    def test_sentinel_becomes_ready_at_exit(self):
        from multiprocessing.connection import wait
        p = self.ctx.Process(target=time.sleep, args=(0.3,))
        p.start()
        self.assertEqual(wait([p.sentinel], 0), [])
        self.assertEqual(wait([p.sentinel], 30), [p.sentinel])
        p.join(30)
        self.assertEqual(p.exitcode, 0)
        p.close()
        with self.assertRaises(ValueError):
            p.sentinel                  # closed, as multiprocessing says

    def test_close_refuses_a_running_process(self):
        p = self.ctx.Process(target=time.sleep, args=(60,))
        p.start()
        with self.assertRaises(ValueError):
            p.close()
        p.kill()
        p.join(30)
        p.close()

    def test_child_sees_its_parent_and_settings(self):
        q = self.ctx.Queue()
        p = self.ctx.Process(target=describe, args=(q,), name="worker-x")
        p.start()
        got = q.get(timeout=30)
        p.join(30)
        self.assertEqual(got["pid"], p.pid)
        self.assertEqual(got["name"], "worker-x")
        self.assertEqual(got["authkey"], bytes(multiprocessing.current_process().authkey))
        self.assertEqual(got["parent_pid"], os.getpid())
        self.assertTrue(got["parent_alive"])
        self.assertEqual(got["cwd"], os.getcwd())
        self.assertEqual(got["start_method"], "anyfork")
        # The template's objects are frozen: a collection in the child
        # leaves them (and their pages) alone.
        self.assertGreater(got["frozen"], 1000)

    def test_a_child_starts_processes_of_its_own(self):
        q = self.ctx.Queue()
        p = self.ctx.Process(target=pid_and_child_pid, args=(q,))
        p.start()
        outer, inner, inner_parent, inner_code = q.get(timeout=60)
        p.join(30)
        self.assertEqual(p.exitcode, 0)
        self.assertEqual(outer, p.pid)
        self.assertEqual(inner_parent, outer)
        self.assertNotEqual(inner, outer)
        self.assertEqual(inner_code, 0)
        self.assertTrue(gone(inner))

    def test_many_starts_leave_no_fd_callback_or_process(self):
        p = self.ctx.Process(target=square, args=(1,))
        p.start()
        p.join(30)
        p.close()
        fds, pending = fd_table(), anyfork.pending()
        pids = []
        for i in range(60):
            p = self.ctx.Process(target=square, args=(i,))
            p.start()
            pids.append(p.pid)
            p.join(30)
            self.assertEqual(p.exitcode, 0)
            p.close()
        self.assertEqual(new_fds(fds), {})
        self.assertEqual(anyfork.pending(), pending)
        self.assertEqual([pid for pid in pids if not gone(pid)], [])

    def test_a_killed_template_is_replaced(self):
        import _anyfork_mp
        self.assertEqual(self.run_to_end(square, 1), 0)
        tmpl = _anyfork_mp._template._proc.pid()
        os.kill(tmpl, signal.SIGKILL)
        try:
            os.waitid(os.P_PID, tmpl, os.WEXITED | os.WNOWAIT)    # it has died
        except ChildProcessError:
            pass                        # and the library reaped it already
        self.assertEqual(self.run_to_end(exit_with, 5), 5)
        self.assertNotEqual(_anyfork_mp._template._proc.pid(), tmpl)
        deadline = time.monotonic() + 30
        while not gone(tmpl) and time.monotonic() < deadline:
            anyfork.wait(0.05)          # the library reaps it
        self.assertTrue(gone(tmpl))

    def test_reset_template_makes_a_new_one(self):
        import _anyfork_mp
        self.assertEqual(self.run_to_end(square, 1), 0)
        old = _anyfork_mp._template._proc.pid()
        running = self.ctx.Process(target=sleep_then_exit, args=(0.5, 9))
        running.start()
        self.ctx.reset_template()
        self.assertEqual(self.run_to_end(exit_with, 6), 6)
        self.assertNotEqual(_anyfork_mp._template._proc.pid(), old)
        running.join(30)            # the old template reports its exit
        self.assertEqual(running.exitcode, 9)
        deadline = time.monotonic() + 30
        while not gone(old) and time.monotonic() < deadline:
            anyfork.wait(0.05)
        self.assertTrue(gone(old), "the old template %d did not exit" % old)

    def test_first_start_while_another_thread_waits_in_the_library(self):
        import _anyfork_mp
        self.ctx.reset_template()
        stop = threading.Event()

        def waiter():               # inside fork_wait most of the time
            while not stop.is_set():
                anyfork._wait(0.05, False)
        keep = anyfork.Process.new()  # something to wait for
        t = threading.Thread(target=waiter)
        t.start()
        try:
            time.sleep(0.1)
            self.assertEqual(self.run_to_end(exit_with, 4), 4)
        finally:
            stop.set()
            t.join(30)
            keep.free()
        self.assertIsNotNone(_anyfork_mp._template._proc)

    def test_an_unpicklable_target_is_refused_at_start(self):
        fds = fd_table()
        p = self.ctx.Process(target=ANONYMOUS)
        # As with "forkserver": the error says what could not be pickled,
        # and nothing was forked.
        with self.assertRaises(pickle.PicklingError) as cm:
            p.start()
        self.assertIn("lambda", str(cm.exception))
        self.assertEqual(new_fds(fds), {})
        self.assertEqual(self.run_to_end(exit_with, 2), 2)

    def test_the_template_leaves_no_callback_pending(self):
        self.assertEqual(self.run_to_end(square, 1), 0)
        t0 = time.monotonic()
        while anyfork.pending():        # programs drain their callbacks so
            anyfork.wait(1)
            self.assertLess(time.monotonic() - t0, 20, "a callback stays pending")

    def test_threads_start_processes_at_once(self):
        codes = []
        lock = threading.Lock()

        def starter(n):
            for i in range(5):
                p = self.ctx.Process(target=exit_with, args=(n,))
                p.start()
                p.join(30)
                with lock:
                    codes.append(p.exitcode)
        threads = [threading.Thread(target=starter, args=(n,)) for n in (1, 2, 3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(sorted(codes), sorted([1, 2, 3, 4] * 5))


class SharingTest(unittest.TestCase):
    """Queue, Pipe and Manager between processes of the context."""

    @classmethod
    def setUpClass(cls):
        cls.ctx = anyfork.get_context()

    def test_queue_between_processes(self):
        q, out = self.ctx.Queue(), self.ctx.Queue()
        producer = self.ctx.Process(target=produce, args=(q, 1000))
        consumer = self.ctx.Process(target=consume, args=(q, out))
        consumer.start()
        producer.start()
        self.assertEqual(out.get(timeout=60), sum(range(1000)))
        producer.join(30)
        consumer.join(30)
        self.assertEqual((producer.exitcode, consumer.exitcode), (0, 0))
        q.close()
        out.close()
        q.join_thread()
        out.join_thread()

    def test_pipe(self):
        ours, theirs = self.ctx.Pipe()
        p = self.ctx.Process(target=echo_pipe, args=(theirs,))
        p.start()
        theirs.close()
        for msg in ("a", 2, [3, {"four": 4}], b"x" * 100000):
            ours.send(msg)
            self.assertEqual(ours.recv(), ("echo", msg))
        ours.send(None)
        with self.assertRaises(EOFError):
            ours.recv()                 # the child closed its end and left
        p.join(30)
        self.assertEqual(p.exitcode, 0)
        ours.close()

    def test_manager_dict_and_list(self):
        with self.ctx.Manager() as m:
            d, lst = m.dict(), m.list()
            ps = [self.ctx.Process(target=fill_manager, args=(d, lst, "p%d" % i))
                  for i in range(4)]
            for p in ps:
                p.start()
            for p in ps:
                p.join(30)
            self.assertEqual([p.exitcode for p in ps], [0] * 4)
            self.assertEqual(dict(d), {"p%d" % i: ps[i].pid for i in range(4)})
            self.assertEqual(sorted(lst), ["p0", "p1", "p2", "p3"])
            server = m._process
        self.assertEqual(server.exitcode, 0)
        self.assertTrue(gone(server.pid))


class PoolTest(unittest.TestCase):
    """multiprocessing.Pool over the context."""

    @classmethod
    def setUpClass(cls):
        cls.ctx = anyfork.get_context()

    def worker_pids(self, pool):
        return [w.pid for w in pool._pool]

    def test_map_and_imap_unordered(self):
        with self.ctx.Pool(2) as pool:
            self.assertEqual(pool.map(square, range(1000)), [x * x for x in range(1000)])
            self.assertEqual(sorted(pool.imap_unordered(square, range(200), chunksize=7)),
                             sorted(x * x for x in range(200)))
            self.assertEqual(list(pool.imap(square, range(50))), [x * x for x in range(50)])
            self.assertEqual(pool.starmap(pow, [(2, 3), (3, 2)]), [8, 9])
            pids = self.worker_pids(pool)
            pool.close()
            pool.join()
        self.assertEqual([pid for pid in pids if not gone(pid)], [])

    def test_apply_async_with_callbacks_and_errors(self):
        got, errors = [], []
        done = threading.Event()

        def on_result(r):
            got.append(r)
            if len(got) + len(errors) == 6:
                done.set()

        def on_error(e):
            errors.append(e)
            if len(got) + len(errors) == 6:
                done.set()
        with self.ctx.Pool(2) as pool:
            rs = [pool.apply_async(fail_on, (i,), callback=on_result, error_callback=on_error)
                  for i in range(6)]
            self.assertTrue(done.wait(60))
            self.assertEqual(sorted(got), [0, 1, 2, 4, 5])
            self.assertEqual(len(errors), 1)
            self.assertIsInstance(errors[0], KeyError)
            with self.assertRaises(KeyError):
                rs[3].get(30)
            self.assertEqual(rs[5].get(30), 5)
            self.assertEqual(pool.apply(square, (9,)), 81)

    def test_map_error_comes_out(self):
        with self.ctx.Pool(2) as pool:
            with self.assertRaises(KeyError):
                pool.map(fail_on, range(10))
            self.assertEqual(pool.map(square, [5]), [25])

    def test_workers_replaced_after_maxtasksperchild(self):
        # The pool's own thread starts the replacements.
        with self.ctx.Pool(2, maxtasksperchild=1) as pool:
            pids = set(pool.starmap(os.getpid, [()] * 8, chunksize=1))
            self.assertGreaterEqual(len(pids), 4)
            pool.close()
            pool.join()
        self.assertEqual([pid for pid in pids if not gone(pid)], [])

    def test_terminate_pool(self):
        pool = self.ctx.Pool(2)
        pool.map_async(time.sleep, [60, 60])
        time.sleep(0.2)
        pids = self.worker_pids(pool)
        pool.terminate()
        pool.join()
        self.assertEqual([pid for pid in pids if not gone(pid)], [])


SCRIPT = r'''
import multiprocessing, sys, time
sys.path.insert(0, {here!r})
import anyfork

def early(x):
    return x + 1

if __name__ == "__main__":
    ctx = anyfork.get_context()          # the one line that differs
    with ctx.Pool(2) as pool:            # the template is made here
        print(pool.map(early, [1, 2, 3]))

def late(x):                             # defined after the template
    return x * 10

if __name__ == "__main__":
    with ctx.Pool(2) as pool:
        print(pool.map(late, [1, 2, 3]))
    p = ctx.Process(target=late, args=(1,))
    p.start()
    p.join()
    print(p.exitcode)
    d = ctx.Process(target=time.sleep, args=(60,), daemon=True)
    d.start()                            # ended by multiprocessing at exit
    print(d.pid)
'''


class ScriptTest(unittest.TestCase):
    """A program switched to the context by one line; a target defined
    after the template was made is found by importing the main module
    again in the child, as "forkserver" does."""

    def test_a_program_and_a_late_target(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "prog.py")
            with open(path, "w") as f:
                f.write(SCRIPT.format(here=HERE))
            r = subprocess.run([sys.executable, path], capture_output=True, text=True,
                               timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[:3], ["[2, 3, 4]", "[10, 20, 30]", "0"], r.stderr)
        daemon = int(lines[3])
        self.assertTrue(gone(daemon), "the daemon process %d outlived the program" % daemon)


if __name__ == "__main__":
    unittest.main()
