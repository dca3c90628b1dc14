"""Remote templates from Python (Process.new_remote): through a local
transport, `sh -c 'exec anyfork-serve --stdio'`, which speaks the same
protocol as `ssh host anyfork-serve --stdio` (tests/remote_ssh.rs covers
ssh itself). ANYFORK_SERVE names anyfork-serve, as in test_anyfork.py."""

import errno
import os
import sys
import unittest

import anyfork
from test_anyfork import Exit, read_all, parse_report, HERE

SERVE = os.environ.get("ANYFORK_SERVE", "anyfork-serve")
LOCAL = ["sh", "-c", 'exec "$0" --stdio "$@"', SERVE]


class RemoteTests(unittest.TestCase):

    def test_builtins_and_exit_statuses_of_a_remote_template(self):
        t = anyfork.Process.new_remote(LOCAL)
        try:
            ex = Exit()
            p = t.fork().on_exit(ex).eval("anyfork_comm_fd", "1")
            sock = p.exec(["sh", "-c", "echo remote $$; exit 4"])
            out = read_all(sock).decode().split()
            self.assertEqual(out[0], "remote")
            self.assertEqual(ex.code(), 4)
            self.assertEqual(ex.pid, int(out[1]), "the remote pid")
        finally:
            t.free()

    def test_send_fd_is_refused(self):
        t = anyfork.Process.new_remote(LOCAL)
        try:
            p = t.fork()
            with open(os.devnull, "rb") as f:
                with self.assertRaises(OSError) as cm:
                    p.send_fd(f)
            self.assertEqual(cm.exception.errno, errno.EOPNOTSUPP)
            self.assertIn("cannot cross machines", str(cm.exception))
            p.free()
        finally:
            t.free()

    def test_a_failed_start_says_why(self):
        with self.assertRaises(OSError) as cm:
            anyfork.Process.new_remote(["sh", "-c", "echo no such host >&2; exit 255"])
        self.assertEqual(cm.exception.errno, errno.ECONNREFUSED)
        self.assertIn("status 255", str(cm.exception))
        self.assertIn("no such host", str(cm.exception))

    def test_python_code_in_a_remote_python_template(self):
        t = anyfork.Process.new_remote_python(LOCAL, python=sys.executable)
        try:
            t.eval("anyfork.add_path", HERE)
            t.eval("anyfork.import_modules", "test_anyfork")
            t.eval("test_anyfork.remember", "far")
            sock = t.fork().send_arg("x").run("test_anyfork.report")
            pid, prepared, evals, args = parse_report(read_all(sock))
            self.assertEqual((prepared, evals, args), ("before the template", "far", [b"x"]))
            self.assertNotEqual(pid, os.getpid())
        finally:
            t.free()


if __name__ == "__main__":
    unittest.main()
