"""The Python binding under stress (issue 19): signals, threads, callback
exceptions, garbage collection, the host's own fork, buffered output and
exit statuses compared with os.fork()'s children.

Run with the other tests: python3 -m unittest (in bindings/python).
"""

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import unittest

import anyfork
from test_anyfork import Exit, open_fds, read_all, rss_kib

HERE = os.path.dirname(os.path.abspath(__file__))
MOD = __name__



def echo_args(sock, *args):
    """Run in template children: answers with its args."""
    sock.sendall(b"|".join(args))


def run_snippet(sock, errfd, code):
    """Run in template children: runs code with stdout and stderr on errfd,
    as the body of the child (what follows it is the binding's exit
    handling)."""
    os.dup2(errfd, 1)
    os.dup2(errfd, 2)
    os.close(errfd)
    sock.close()
    exec(code.decode(), {"os": os, "sys": sys, "signal": signal})


def python(script, timeout=60, **kw):
    """Runs a Python script in a fresh interpreter that imports anyfork
    from this directory; returns the CompletedProcess (text)."""
    code = "import sys; sys.path.insert(0, %r)\n" % HERE + textwrap.dedent(script)
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)       # stdout a pipe: block-buffered
    return subprocess.run([sys.executable, "-W", "default", "-c", code],
                          capture_output=True, text=True, timeout=timeout, env=env, **kw)


def drain(timeout=30):
    """Waits until no callback is pending; returns every exception the
    waits raised (groups flattened)."""
    seen = []
    deadline = time.monotonic() + timeout
    while anyfork.pending():
        if time.monotonic() > deadline:
            raise AssertionError("callbacks still pending after %ss" % timeout)
        try:
            anyfork.wait(1)
        except BaseException as e:          # noqa: B036 (collects groups too)
            seen.extend(flatten(e))
    return seen


def flatten(e):
    if isinstance(e, BaseExceptionGroup):
        out = []
        for sub in e.exceptions:
            out.extend(flatten(sub))
        return out
    return [e]


def kill_later(delay):
    """SIGINT to this process after delay seconds, from a thread."""
    t = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    t.start()
    return t


class SignalTests(unittest.TestCase):
    """Item 1 and the checklist's Ctrl-C during a wait and a blocking run."""

    def test_sigint_interrupts_wait_promptly_and_keeps_the_exit_callback(self):
        ex, calls = Exit(), []
        p = anyfork.Process.new().on_exit(lambda *a: (calls.append(a), ex(*a)))
        p.exec(["sleep", "3"], detach=True)
        timer = kill_later(0.3)
        t0 = time.monotonic()
        try:
            with self.assertRaises(KeyboardInterrupt):
                while not calls and time.monotonic() - t0 < 10:
                    anyfork.wait()
            self.assertLess(time.monotonic() - t0, 1.5, "wait() ignored Ctrl-C")
        finally:
            timer.join()
        self.assertEqual(ex.code(), 0)
        self.assertEqual(len(calls), 1)

    def test_signal_during_callbacks_interrupts_none_of_them(self):
        # Each callback is interrupted by a SIGINT if signals are not held
        # back while callbacks run: every one must run to its end anyway,
        # and the KeyboardInterrupt still comes out of the wait.
        finished = []

        def cb(sock, err):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):       # bytecodes where a handler could run
                pass
            sock.close()
            finished.append(err)
        for _ in range(5):
            anyfork.Process.new().run("anyfork_exit", cb)
        interrupts = 0
        deadline = time.monotonic() + 10
        while len(finished) < 5 and time.monotonic() < deadline:
            try:
                anyfork.wait(1)
            except KeyboardInterrupt:
                interrupts += 1
        self.assertEqual(finished, [None] * 5)
        self.assertGreaterEqual(interrupts, 1)
        self.assertEqual(drain(), [])

    def test_sigint_during_blocking_run(self):
        # The child sends SIGINT while run() waits to deliver 8 MB to it:
        # the signal lands while the library is delivering, so the run
        # callback runs with it pending. run() must raise KeyboardInterrupt
        # (not block for good), and the library stays usable. In a fresh
        # interpreter: a run() blocked for good must not hang the suite.
        r = python("""
            import os, time, anyfork
            def nap(pid, after):
                time.sleep(0.3)
                os.kill(int(pid), 2)
                time.sleep(float(after))
                return 0
            def size(sock, data):
                sock.sendall(b"%d" % len(data))
            t = anyfork.template()
            for i in range(4):
                t0 = time.monotonic()
                try:
                    p = t.fork().eval("__main__.nap", str(os.getpid()), "0.5" if i % 2 else "0")
                    sock = p.send_arg(b"x" * (8 << 20)).run("__main__.size")
                    print("run returned", sock.recv(10))
                    sock.close()
                except KeyboardInterrupt:
                    print("interrupted after %.1f s" % (time.monotonic() - t0))
            s = t.fork().send_arg(b"abc").run("__main__.size")
            print("after", s.recv(10)); s.close()
            t.free()
            while anyfork.pending():
                anyfork.wait(1)
            print("pending", anyfork.pending())
            """, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(len(lines), 6, r.stdout + r.stderr)
        for line in lines[:4]:
            self.assertTrue(line.startswith("interrupted after"), r.stdout + r.stderr)
            self.assertLess(float(line.split()[2]), 1.5, r.stdout)
        self.assertEqual(lines[4:], ["after b'3'", "pending 0"], r.stderr)
        self.assertNotIn("Exception ignored", r.stderr)
        self.assertNotIn("ResourceWarning", r.stderr)


class ThreadTests(unittest.TestCase):
    """Item 2 and 4 and the checklist's threads."""

    @classmethod
    def setUpClass(cls):
        cls.template = anyfork.template()

    @classmethod
    def tearDownClass(cls):
        cls.template.free()

    def test_template_while_another_thread_runs_python(self):
        stop = threading.Event()

        def spin():
            n = 0
            while not stop.is_set():
                n += 1
        th = threading.Thread(target=spin)
        th.start()
        try:
            for i in range(3):
                t = anyfork.template()
                try:
                    sock = t.fork().send_arg("busy %d" % i).run(MOD + ".echo_args")
                    self.assertEqual(read_all(sock, timeout=10), b"busy %d" % i)
                finally:
                    t.free()
        finally:
            stop.set()
            th.join()

    def test_template_refused_while_another_thread_is_in_the_library(self):
        ex = Exit()
        anyfork.Process.new().on_exit(ex).exec(["sleep", "1"], detach=True)
        th = threading.Thread(target=ex.code)
        th.start()
        try:
            time.sleep(0.3)         # the thread is in wait()
            with self.assertRaises(OSError) as cm:
                anyfork.template()
            self.assertIn("another thread", str(cm.exception))
        finally:
            th.join()
        anyfork.template().free()   # fine once it left

    def test_callback_exceptions_all_come_out_once(self):
        # Three raising callbacks and two quiet ones, due together: every
        # callback runs exactly once and no exception is lost.
        ran = []

        def bad(i):
            def cb(pid, st, err):
                ran.append(i)
                raise ValueError("callback %d" % i)
            return cb
        procs = []
        for i in range(5):
            p = anyfork.Process.new()
            p.on_exit(bad(i) if i % 2 == 0 else (lambda pid, st, err, i=i: ran.append(i)))
            p.run("anyfork_exit", detach=True)
            procs.append(p)
        time.sleep(0.5)             # all of them exited: due in one dispatch
        seen = drain()
        self.assertEqual(sorted(ran), [0, 1, 2, 3, 4])
        self.assertEqual(sorted(str(e) for e in seen), ["callback 0", "callback 2", "callback 4"])

    def test_several_raising_callbacks_make_a_group(self):
        def cb(sock, err):
            sock.close()
            raise KeyError("mine")
        for _ in range(3):
            anyfork.Process.new().run("anyfork_exit", cb)
        time.sleep(0.3)
        groups = 0
        seen = []
        while anyfork.pending():
            try:
                anyfork.wait(1)
            except BaseExceptionGroup as g:
                groups += 1
                seen.extend(flatten(g))
            except KeyError as e:
                seen.append(e)
        self.assertEqual(len(seen), 3)
        self.assertGreaterEqual(groups, 1)

    def test_worker_never_gets_the_main_threads_exception(self):
        # The main thread's callbacks raise; a worker does blocking execs
        # at the same time (its waits may run the main thread's callbacks).
        # The worker's execs must never raise, and the main thread gets
        # every one of its exceptions.
        n_main, n_worker = 40, 60
        worker_errors, worker_out = [], []

        def worker():
            for i in range(n_worker):
                try:
                    p = anyfork.Process.new().eval("anyfork_comm_fd", "1")
                    worker_out.append(read_all(p.exec(["echo", "w%d" % i])))
                except BaseException as e:
                    worker_errors.append(e)

        def bad(i):
            def cb(sock, err):
                sock.close()
                raise ValueError("main %d" % i)
            return cb
        th = threading.Thread(target=worker)
        th.start()
        seen = []
        for i in range(n_main):
            anyfork.Process.new().run("anyfork_exit", bad(i))
            try:
                anyfork.wait(0.01)
            except BaseException as e:
                seen.extend(flatten(e))
        th.join()
        seen.extend(drain())
        self.assertEqual(worker_errors, [])
        self.assertEqual(worker_out, [b"w%d\n" % i for i in range(n_worker)])
        self.assertEqual(sorted(str(e) for e in seen), sorted("main %d" % i for i in range(n_main)))

    def test_callbacks_run_on_another_thread_than_the_creator(self):
        made, ran = threading.Event(), []

        def creator():
            for i in range(20):
                p = anyfork.Process.new()
                p.on_exit(lambda pid, st, err, i=i: ran.append(("exit", i, threading.get_ident())))
                p.run("anyfork_exit", lambda s, e, i=i: (
                    s.close(), ran.append(("run", i, threading.get_ident()))))
            made.set()
        th = threading.Thread(target=creator)
        th.start()
        th.join()
        self.assertTrue(made.is_set())
        self.assertEqual(drain(), [])
        me = threading.get_ident()
        self.assertEqual(sorted((k, i) for k, i, _ in ran),
                         sorted([("exit", i) for i in range(20)] + [("run", i) for i in range(20)]))
        self.assertEqual({t for _, _, t in ran}, {me})

    def test_two_threads_waiting_at_once(self):
        counts = {}
        errors = []

        def waiter(name):
            try:
                got = []
                for i in range(30):
                    p = anyfork.Process.new()
                    p.on_exit(lambda pid, st, err: got.append(st))
                    p.run("anyfork_exit", lambda s, e: (s.close(), got.append(e)))
                while len(got) < 60 or anyfork.pending():
                    anyfork.wait()          # no timeout: both threads block
                counts[name] = len(got)
            except BaseException as e:
                errors.append(e)
        ths = [threading.Thread(target=waiter, args=(n,)) for n in "ab"]
        for t in ths:
            t.start()
        for t in ths:
            t.join(30)
        if any(t.is_alive() for t in ths):
            # Release them so the suite goes on, then fail.
            for _ in range(3):
                anyfork.Process.new().run("anyfork_exit", detach=True)
            anyfork.Process.new().run("anyfork_exit", lambda s, e: s.close())
            for t in ths:
                t.join(10)
            self.fail("two threads waiting at once: one hung in fork_wait")
        self.assertEqual(errors, [])
        # Callbacks run on whichever thread waits: 120 in all.
        self.assertEqual(sum(counts.values()), 120)


class ForkTests(unittest.TestCase):
    """Items 3 and 6: buffered output at the template's fork, os.fork()
    after using the library."""

    def test_buffered_output_is_flushed_before_template(self):
        r = python("""
            import sys, anyfork
            def nop(sock):
                return 0
            sys.stdout.write("written once\\n")     # a pipe: block-buffered
            t = anyfork.template()
            for i in range(3):
                s = t.fork().run("__main__.nop")
                s.recv(1); s.close()
            t.free()
            while anyfork.pending():
                anyfork.wait(1)
            """)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "written once\n", r.stderr)

    def test_os_fork_after_using_the_library(self):
        runs, exits = [], []
        for i in range(30):
            p = anyfork.Process.new().on_exit(lambda pid, st, err: exits.append(st))
            p.run("anyfork_exit", lambda s, e: (s.close(), runs.append(e)))
        anyfork.wait(0.01)          # some ran, most are due
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(r)
                got = []
                p = anyfork.Process.new().eval("anyfork_comm_fd", "1")
                out = read_all(p.exec(["echo", "child"]))
                q = anyfork.Process.new().on_exit(lambda pid, st, err: got.append(st))
                q.run("anyfork_exit", detach=True)
                while anyfork.pending():
                    anyfork.wait(1)
                os.write(w, repr((out, got, len(runs) + len(exits))).encode())
                status = 0
            except BaseException as e:
                os.write(w, repr(e).encode())
            finally:
                os._exit(status)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            said = f.read().decode()
        _, st = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(st), 0, said)
        out, got, _ = eval(said)
        self.assertEqual((out, got), (b"child\n", [0]))
        self.assertEqual(drain(), [])
        self.assertEqual((runs, exits), ([None] * 30, [0] * 30))


# What a child's body does, and how it ends: compared with os.fork().
SNIPPETS = [
    "pass",
    "sys.exit()",
    "sys.exit(None)",
    "sys.exit(0)",
    "sys.exit(3)",
    "sys.exit(True)",
    "sys.exit(False)",
    "sys.exit('a message')",
    "sys.exit(2.5)",
    "sys.exit([1])",
    "sys.exit(256)",
    "sys.exit(-1)",
    "raise SystemExit(4)",
    "raise ValueError('broken')",
    "raise KeyboardInterrupt",
    "os._exit(7)",
    "os.kill(os.getpid(), signal.SIGKILL)",
    "os.abort()",
    "print('buffered', end=''); sys.stdout.flush(); sys.stderr.write('err'); sys.exit(5)",
]

OS_FORK_SCRIPT = """
import json, os, signal, sys
results = []
for code in json.loads(sys.argv[1]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        sys.argv = ["-c"]
        # The child's whole remaining program: the interpreter's own exit
        # rules apply when code ends.
        exec(code, {"os": os, "sys": sys, "signal": signal})
        sys.exit()
    os.close(w)
    with os.fdopen(r) as f:
        err = f.read()
    _, st = os.waitpid(pid, 0)
    results.append((st, err))
print(json.dumps(results))
"""


class ExitStatusTests(unittest.TestCase):
    """Item 5 and the checklist: every way a child ends, against os.fork()."""

    @classmethod
    def setUpClass(cls):
        cls.template = anyfork.template()

    @classmethod
    def tearDownClass(cls):
        cls.template.free()

    def test_exit_statuses_match_os_fork(self):
        with open(os.devnull, "w") as null:
            r = subprocess.run([sys.executable, "-c", OS_FORK_SCRIPT, json.dumps(SNIPPETS)],
                               capture_output=True, text=True, timeout=60, stdin=null)
        self.assertEqual(r.returncode, 0, r.stderr)
        expected = json.loads(r.stdout)
        for code, (want_status, want_err) in zip(SNIPPETS, expected):
            with self.subTest(code=code):
                ex = Exit()
                rfd, wfd = os.pipe()
                c = self.template.fork().on_exit(ex).send_fd(wfd).send_arg(code)
                os.close(wfd)
                c.run(MOD + ".run_snippet").close()
                with os.fdopen(rfd) as f:
                    err = f.read()
                deadline = time.monotonic() + 30
                while not ex.done and time.monotonic() < deadline:
                    anyfork.wait(1)
                self.assertTrue(ex.done)
                self.assertEqual(ex.status, want_status,
                                 "status %#x, os.fork: %#x; stderr %r" % (
                                     ex.status, want_status, err))
                if "Error" in want_err or "Traceback" in want_err:
                    # Tracebacks name other files and lines: same last line.
                    self.assertEqual(err.strip().splitlines()[-1:],
                                     want_err.strip().splitlines()[-1:], err)
                else:
                    self.assertEqual(err, want_err)

    def test_sys_exit_rules_are_pythons(self):
        # The same values straight against `python3 -c 'import sys; sys.exit(X)'`.
        for arg in ["True", "False", "'msg'", "2.5", "[1]", "None", "int(9)"]:
            with self.subTest(arg=arg):
                want = subprocess.run([sys.executable, "-c", "import sys; sys.exit(%s)" % arg],
                                      capture_output=True, text=True, timeout=30)
                ex = Exit()
                rfd, wfd = os.pipe()
                c = self.template.fork().on_exit(ex).send_fd(wfd).send_arg("sys.exit(%s)" % arg)
                os.close(wfd)
                c.run(MOD + ".run_snippet").close()
                with os.fdopen(rfd) as f:
                    err = f.read()
                self.assertEqual(ex.code(), want.returncode)
                self.assertEqual(err, want.stderr)


class DropTests(unittest.TestCase):
    """The checklist: handles dropped or collected before and after run,
    with no wait call, 20,000 times: fds and memory stay flat."""

    def test_20000_dropped_handles_without_wait(self):
        def burst(n):
            for i in range(n):
                p = anyfork.Process.new()
                if i % 4 == 0:
                    del p                               # collected before run
                elif i % 4 == 1:
                    p.free()                            # freed before run
                elif i % 4 == 2:
                    p.run("anyfork_exit", detach=True)  # dropped after run
                else:
                    p.send_arg("x").run("anyfork_exit", detach=True)
                    del p
                if i % 1000 == 999:
                    gc.collect()
        burst(1000)
        drain()
        anyfork.dispatch()
        fds, rss = open_fds(), rss_kib()
        for _ in range(20):
            burst(1000)
            grown, grew_kib = open_fds() - fds, rss_kib() - rss
            if grown > 1000:
                break               # far from flat: no need to near the fd limit
        drain()
        deadline = time.monotonic() + 20
        while open_fds() - fds >= 50 and time.monotonic() < deadline:
            anyfork.dispatch()      # the library lets go of fds here
            time.sleep(0.02)
        self.assertLess(grown, 50, "fds held by processes created with no wait")
        self.assertLess(grew_kib, 8 << 10, "RSS grew over 8 MiB in 20,000 creations")


if __name__ == "__main__":
    unittest.main()
