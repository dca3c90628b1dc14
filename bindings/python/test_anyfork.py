"""Tests of the Python binding: python3 -m unittest (in bindings/python).

ANYFORK_LIB names the library (the Rust wrapper tests/binding_python.rs
points it at the fresh build); ANYFORK_SERVE may name anyfork-serve.
"""

import ast
import errno
import os
import random
import socket
import sys
import time
import unittest

import anyfork

HERE = os.path.dirname(os.path.abspath(__file__))
# This module's name in children, which are copies of this interpreter.
MOD = __name__

# State prepared before the template is forked; children see a copy.
STATE = {"prepared": "before the template", "evals": []}


def report(sock, *args):
    """Run in children: describes its args on the comm socket, one line
    each, and writes a greeting into every fd it got."""
    lines = ["pid %d" % os.getpid(), "prepared %s" % STATE["prepared"],
             "evals %s" % ",".join(STATE["evals"])]
    for a in args:
        if isinstance(a, int):
            os.write(a, b"hello from %d\n" % os.getpid())
            lines.append("fd")
        else:
            lines.append("S " + a.hex())
    sock.sendall(("\n".join(lines) + "\n").encode())
    return 0


def remember(*args):
    """Eval in a template: changes what its later children see."""
    STATE["evals"].extend(a.decode() for a in args)
    return 0


def exit_with(sock, code):
    return int(code)


def crash(sock):
    raise RuntimeError("deliberate failure in a child (expected by the test)")


def roll(sock):
    sock.sendall(b"%r" % random.random())


# os.register_at_fork hooks of this program, as a library would register
# them: a child records who ran "before" for it (copied from its parent)
# and that "after_in_child" ran in itself.
AT_FORK = {"before": None, "child": None}
os.register_at_fork(before=lambda: AT_FORK.update(before=os.getpid()),
                    after_in_child=lambda: AT_FORK.update(child=os.getpid()))


def at_fork_seen(sock):
    sock.sendall(repr((AT_FORK["before"], AT_FORK["child"], os.getppid(),
                       os.getpid())).encode())


def threads_and_fork(sock):
    """A thread, then os.fork() in this process: both work."""
    import threading
    box = []
    t = threading.Thread(target=lambda: box.append(threading.get_ident()))
    t.start()
    t.join(10)
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    sock.sendall(repr((len(box), os.waitstatus_to_exitcode(status),
                       threading.active_count())).encode())


def args_seen(sock, *args):
    """Reports anyfork.child_args() next to its own args."""
    sock.sendall(repr((list(args), anyfork.child_args())).encode())


def read_all(sock, timeout=30):
    """Reads a comm socket to its end and closes it. A process that exited
    with commands unread makes the kernel reset the connection: an end too."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                break
            chunks.append(b)
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return b"".join(chunks)


class Exit(object):
    """An on_exit callback that remembers what it got."""

    def __init__(self):
        self.done = False

    def __call__(self, pid, status, err):
        self.done, self.pid, self.status, self.err = True, pid, status, err

    def code(self, timeout=30):
        deadline = time.monotonic() + timeout
        while not self.done:
            if time.monotonic() > deadline:
                raise AssertionError("no exit callback within %ss" % timeout)
            anyfork.wait(1)
        if self.err is not None:
            raise self.err
        self.assert_exited()
        return os.waitstatus_to_exitcode(self.status)

    def assert_exited(self):
        if not os.WIFEXITED(self.status):
            raise AssertionError("wait status %#x" % self.status)


def parse_report(text):
    lines = text.decode().splitlines()
    pid = int(lines[0].split()[1])
    prepared = lines[1].split(" ", 1)[1]
    evals = lines[2].split(" ", 1)[1] if " " in lines[2] else ""
    args = []
    for line in lines[3:]:
        args.append("fd" if line == "fd" else bytes.fromhex(line[2:]))
    return pid, prepared, evals, args


class TemplateTests(unittest.TestCase):
    """Python functions running in children of a template forked from this
    interpreter (fork_template + fork_set_dispatch)."""

    @classmethod
    def setUpClass(cls):
        cls.template = anyfork.template()
        # Changed after the fork: the template keeps its own copy.
        STATE["prepared"] = "after the template (not seen by children)"

    @classmethod
    def tearDownClass(cls):
        cls.template.free()

    def test_python_function_runs_in_child(self):
        r, w = os.pipe()
        try:
            t = self.template.fork()   # a template of its own, with a string and an fd
            t.send_arg(b"before\0fork").send_fd(w)
            t.eval(MOD + ".remember", "one", "two")
            for i in range(3):
                c = t.fork()
                ex = Exit()
                c.on_exit(ex).send_arg("after %d" % i).send_arg(b"")
                pid = c.pid()
                sock = c.run(MOD + ".report")
                rpid, prepared, evals, args = parse_report(read_all(sock))
                self.assertEqual(args, [b"before\0fork", "fd", b"after %d" % i, b""])
                self.assertEqual(prepared, "before the template")
                self.assertEqual(evals, "one,two")
                self.assertEqual(ex.code(), 0)
                self.assertEqual((rpid, ex.pid), (pid, pid))
                self.assertNotIn(pid, (os.getpid(), self.template.pid()))
            t.free()
            os.close(w)
            w = -1
            with os.fdopen(r, "rb") as f:
                r = -1
                got = f.read()        # EOF once the templates let go too
            self.assertEqual(got.count(b"hello from "), 3, got)
        finally:
            for fd in (r, w):
                if fd >= 0:
                    os.close(fd)

    def test_child_args_and_exit_status(self):
        c = self.template.fork().send_arg("17")
        ex = Exit()
        c.on_exit(ex)
        read_all(c.run(MOD + ".exit_with"))
        self.assertEqual(ex.code(), 17)
        sock = self.template.fork().send_arg("a").send_fd(0).run(MOD + ".args_seen")
        own, seen = ast.literal_eval(read_all(sock).decode())
        self.assertEqual(own[0], b"a")
        self.assertEqual(len(seen), 2)
        self.assertEqual(seen[0], b"a")

    def test_children_are_reseeded_like_os_fork(self):
        rolls = {read_all(self.template.fork().run(MOD + ".roll")) for _ in range(3)}
        self.assertEqual(len(rolls), 3, rolls)

    def test_at_fork_hooks_run_around_each_fork_as_with_os_fork(self):
        for _ in range(2):
            before, child, ppid, pid = ast.literal_eval(
                read_all(self.template.fork().run(MOD + ".at_fork_seen")).decode())
            # "before" ran in the template, just before this fork.
            self.assertEqual(before, ppid)
            self.assertEqual(child, pid)

    def test_children_start_threads_and_fork(self):
        got = ast.literal_eval(
            read_all(self.template.fork().run(MOD + ".threads_and_fork")).decode())
        self.assertEqual(got, (1, 7, 1))

    def test_python_errors_in_child(self):
        ex = Exit()
        read_all(self.template.fork().on_exit(ex).run(MOD + ".crash"))
        self.assertEqual(ex.code(), 1)
        ex = Exit()
        read_all(self.template.fork().on_exit(ex).run(MOD + ".no_such_function"))
        self.assertEqual(ex.code(), 127)
        ex = Exit()
        read_all(self.template.fork().on_exit(ex).run("no_such_module_anywhere.fn"))
        self.assertEqual(ex.code(), 127)

    def test_callback_style(self):
        got = []
        self.template.fork().send_arg("cb").run(
            MOD + ".report", lambda sock, err: got.append((sock, err)))
        while not got:
            anyfork.wait(1)
        sock, err = got[0]
        self.assertIsNone(err)
        self.assertEqual(parse_report(read_all(sock))[3], [b"cb"])


def live_children_of(pid):
    """Pids of the live (not zombie) children of pid."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(name))
    return out


class WarmPoolTests(unittest.TestCase):
    """template() keeps a warm pool of 2 by default; warm= sets it."""

    def test_template_keeps_children_waiting_as_asked(self):
        # The default: 2 in the template's warm pool, 2 forked ahead here.
        for kw, want in (({}, 4), ({"warm": 3, "ahead": 0}, 3), ({"warm": 0, "ahead": 0}, 0),
                         ({"warm": 0, "ahead": 1}, 1)):
            t = anyfork.template(**kw)
            try:
                tpid = t.pid()
                for _ in range(3):      # creations work, and the pool refills
                    self.assertEqual(read_all(t.fork().send_arg("5").run(MOD + ".exit_with")), b"")
                deadline = time.monotonic() + 20
                # (Processes forked ahead are replaced by a dispatch.)
                while len(live_children_of(tpid)) != want and time.monotonic() < deadline:
                    anyfork.dispatch()
                    time.sleep(0.05)
                for _ in range(6):      # and no more come
                    anyfork.dispatch()
                    time.sleep(0.05)
                self.assertEqual(len(live_children_of(tpid)), want, kw)
            finally:
                t.free()

    def test_a_bad_warm_is_refused_before_forking(self):
        for bad in (-1, 65, True, "2", 1.5, None):
            with self.assertRaises(ValueError) as cm:
                anyfork.template(warm=bad)
            self.assertIn("0 to 64", str(cm.exception))
            with self.assertRaises(ValueError) as cm:
                anyfork.template(ahead=bad)
            self.assertIn("0 to 64", str(cm.exception))


class PythonServerTests(unittest.TestCase):
    """A fresh Python interpreter as the template (Process.new_python)."""

    def test_python_server(self):
        t = anyfork.Process.new_python()
        try:
            t.eval("anyfork.add_path", HERE)
            t.eval("anyfork.import_modules", "test_anyfork")
            t.eval("test_anyfork.remember", "server")
            c = t.fork()
            sock = c.send_arg("x").run("test_anyfork.report")
            pid, prepared, evals, args = parse_report(read_all(sock))
            self.assertEqual((prepared, evals, args), ("before the template", "server", [b"x"]))
            self.assertNotEqual(pid, os.getpid())
        finally:
            t.free()


class ExecTests(unittest.TestCase):

    def test_exec_builtin(self):
        ex = Exit()
        p = anyfork.Process.new().on_exit(ex)
        p.eval("anyfork_comm_fd", "1").eval("anyfork_chdir", "/")
        sock = p.exec(["sh", "-c", 'echo "$0|$1|$PWD|$ANYFORK_PY"', "one", "two words"],
                      env={"ANYFORK_PY": "env-ok", "PATH": "/usr/bin:/bin"})
        self.assertEqual(read_all(sock), b"one|two words|/|env-ok\n")
        self.assertEqual(ex.code(), 0)

    def test_exec_args_and_fds(self):
        r, w = os.pipe()
        with open(os.devnull, "rb") as null:
            ex = Exit()
            p = anyfork.Process.new().on_exit(ex)
            p.send_arg("sh").send_arg(b"-c")          # argv starts with these
            p.send_fd(null).send_fd(w)                # become fds 0 and 1
        os.close(w)
        sock = p.exec(['echo "[$0]"; cat', "zero"])
        sock.close()
        with os.fdopen(r, "rb") as f:
            self.assertEqual(f.read(), b"[zero]\n")
        self.assertEqual(ex.code(), 0)

    def test_exec_many_async(self):
        socks = {}
        for i in range(50):
            p = anyfork.Process.new().eval("anyfork_comm_fd", "1")
            p.exec(["echo", str(i)], callback=lambda s, e, i=i: socks.__setitem__(i, (s, e)))
        while len(socks) < 50:
            anyfork.wait(1)
        for i, (s, e) in socks.items():
            self.assertIsNone(e)
            self.assertEqual(read_all(s), b"%d\n" % i)

    def test_exec_failure(self):
        ex = Exit()
        sock = anyfork.Process.new().on_exit(ex).exec(["/nonexistent/program"])
        self.assertIn(b"/nonexistent/program", read_all(sock))
        self.assertEqual(ex.code(), 127)


class ErrorTests(unittest.TestCase):

    def test_missing_library_gives_eof_and_127(self):
        ex = Exit()
        p = anyfork.Process.new().on_exit(ex)
        # The process says why on its stderr (ours) and exits.
        p.require("/nonexistent/libanyfork-py-missing.so")
        # Either the process is already gone when run() writes (EPIPE at
        # once), or run() delivers and the socket ends (EOF, or a reset:
        # the process exited with the run command unread).
        try:
            sock = p.run("report")
        except BrokenPipeError as e:
            self.assertIn("fork_run", e.strerror)
        else:
            self.assertEqual(read_all(sock), b"")
        self.assertEqual(ex.code(), 127)

    def test_send_fd_of_closed_fd(self):
        p = anyfork.Process.new()
        fd = os.open(os.devnull, os.O_RDONLY)
        os.close(fd)
        with self.assertRaises(OSError) as cm:
            p.send_fd(fd)
        self.assertEqual(cm.exception.errno, errno.EBADF)
        self.assertIn("fork_send_fd", cm.exception.strerror)
        p.send_arg("still usable").free()

    def test_use_after_run(self):
        p = anyfork.Process.new()
        p.run("anyfork_exit", detach=True)
        for call in (lambda: p.send_arg("x"), lambda: p.run("x"), p.fork, p.pid):
            with self.assertRaises(OSError) as cm:
                call()
            self.assertEqual(cm.exception.errno, errno.EINVAL)
        p.free()

    def test_invalid_arguments(self):
        with anyfork.Process.new() as p:
            with self.assertRaises(OSError) as cm:
                p.eval("")
            self.assertEqual(cm.exception.errno, errno.EINVAL)
            self.assertIn("fork_eval", str(cm.exception))
            with self.assertRaises(OSError):
                p.eval("anyfork_setenv", "A=\0")
            with self.assertRaises(TypeError):
                p.send_arg(42)
        # A pointer call: the errno comes from the message.
        with self.assertRaises(OSError) as cm:
            anyfork.Process.new_exec_argv(["/nonexistent/anyfork-server"])
        self.assertEqual(cm.exception.errno, errno.ENOENT)
        self.assertIn("/nonexistent/anyfork-server", cm.exception.strerror)

    def test_callback_exception_comes_out_of_wait(self):
        def boom(sock, err):
            sock.close()
            raise KeyError("from a callback")
        anyfork.Process.new().run("anyfork_exit", boom)
        with self.assertRaises(KeyError):
            while anyfork.pending():
                anyfork.wait(1)


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def fd_table():
    """This process's fds and what each is ("socket:[1234]", a path)."""
    table = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            table[int(fd)] = os.readlink("/proc/self/fd/" + fd)
        except OSError:             # the listing's own fd, closed by now
            pass
    return table


def new_fds(before):
    """The fds open now that were not open (or were something else) before:
    objects of earlier tests may close fds meanwhile, which is no leak."""
    return {fd: what for fd, what in fd_table().items()
            if before.get(fd) != what}


class LeakTests(unittest.TestCase):

    def test_no_fd_leak_after_1000_creations(self):
        read_all(anyfork.Process.new().run("anyfork_exit"))   # warm up
        while anyfork.pending():
            anyfork.wait(1)
        base, tokens = fd_table(), len(anyfork._callbacks)
        runs, exits = [], []
        with open(os.devnull, "rb") as null:
            for i in range(1000):
                p = anyfork.Process.new().send_fd(null).send_arg("0")
                kind = i % 6
                if kind == 0:
                    read_all(p.run("anyfork_exit"))
                elif kind == 1:
                    p.on_exit(lambda pid, st, err: exits.append(st))
                    p.run("anyfork_exit", lambda s, e: (s.close(), runs.append(e)))
                elif kind == 2:
                    p.run("anyfork_exit", detach=True)
                elif kind == 3:
                    p.free()
                elif kind == 4:
                    p.eval("anyfork_comm_fd", "1")
                    read_all(p.exec(["true"]))
                else:
                    del p               # __del__ frees it
                if i % 100 == 99:
                    while anyfork.pending() > 50:
                        anyfork.wait(1)
        while anyfork.pending():
            anyfork.wait(1)
        self.assertEqual(runs, [None] * 167)
        self.assertEqual(exits, [0] * 167)
        self.assertEqual(len(anyfork._callbacks), tokens)
        deadline = time.monotonic() + 20
        while new_fds(base) and time.monotonic() < deadline:
            anyfork.wait(0.05)
        self.assertEqual(new_fds(base), {})


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class BigProcessTests(unittest.TestCase):

    def test_spawn_from_1gb_process(self):
        big = bytearray(1 << 30)
        big[::4096] = b"\1" * (len(big) // 4096)        # touch every page
        try:
            self.assertGreater(rss_kib(), 1 << 20)
            # It works: programs run and answer from a 1 GB interpreter.
            for i in range(5):
                p = anyfork.Process.new().eval("anyfork_comm_fd", "1")
                self.assertEqual(read_all(p.exec(["echo", "big %d" % i])), b"big %d\n" % i)

            n = 300
            t0 = time.monotonic()
            for _ in range(n):
                read_all(anyfork.Process.new().run("anyfork_exit"))
            anyfork_rate = n / (time.monotonic() - t0)

            m = 60
            t0 = time.monotonic()
            for _ in range(m):
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
            fork_rate = m / (time.monotonic() - t0)
            sys.stderr.write(
                "\n[info] from a %d MiB Python process: anyfork %.0f creations/s, "
                "os.fork %.0f/s (%.1fx)\n"
                % (rss_kib() // 1024, anyfork_rate, fork_rate, anyfork_rate / fork_rate))
        finally:
            del big
        while anyfork.pending():
            anyfork.wait(1)


if __name__ == "__main__":
    unittest.main()
