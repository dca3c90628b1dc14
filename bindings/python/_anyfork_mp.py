"""anyfork's multiprocessing context: anyfork.get_context() returns it.

A multiprocessing context (like multiprocessing.get_context("forkserver"))
whose processes are forked from a template of this program
(anyfork.template(), made at the first start) instead of from the program
itself, so starting one costs the same whatever this program's size.

As with "forkserver", the Process object travels to the child pickled
(multiprocessing's reduction: its target by reference, Queues, Pipes and
Locks with their fds, which are sent with the library's fd passing); the
child, a copy of the template, unpickles it and runs
process._bootstrap(). The child's comm socket is the sentinel on both
sides (EOF when the other side is gone); the exit status comes from the
template (fork_on_exit), so exitcode is what the "fork" context gives:
0, the sys.exit() code, 1 after an exception, -N after signal N.
"""

import io
import os
import runpy
import select
import signal
import struct
import sys
import threading
import time

from multiprocessing import connection, context, process, reduction, resource_tracker, spawn, util

import anyfork

__all__ = ["AnyforkContext", "AnyforkProcess", "get_context"]

METHOD = "anyfork"
_RUN = "_anyfork_mp._child"
# When the child's sentinel fired, how long poll(WNOHANG) lets the
# template's report of its exit status take before answering "running".
_REPORT_GRACE = 0.05
# How long making the template waits for other threads to leave the
# library (anyfork.template() refuses to fork meanwhile).
_BUSY_LIMIT = 10.0


class _Template(object):
    """The template of this program the context's children are forked
    from: made at the first start, per process (a child of this one that
    uses the context makes its own)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc = None
        self._pidfd = -1     # readable once the template has exited
        self.gone = []       # non-empty once a child found it dead

    def _dead(self):
        if self.gone:
            return True
        return bool(select.select([self._pidfd], [], [], 0)[0])

    def fork(self):
        """A new child of the template (made now if there is none, or if
        the one there was died): (the child's Process, the template's
        gone box)."""
        with self._lock:
            if self._proc is not None and self._dead():
                self._drop()
            if self._proc is None:
                tmpl = self._make()
                self.gone = []
                # A pidfd, not an exit callback: that would stay pending
                # as long as the template lives (anyfork.pending()).
                self._pidfd = os.pidfd_open(tmpl.pid())
                # The template's objects are never collected in children
                # (the collector would visit them all, copying their pages).
                tmpl.eval("gc.freeze")
                if _context.warm:
                    tmpl.eval("anyfork_warm", str(_context.warm))
                self._proc = tmpl
            return self._proc.fork(), self.gone

    @staticmethod
    def _make():
        """anyfork.template(), which other threads inside a call of the
        library would make refuse (EBUSY): such calls are short (a wait
        returns every 0.1 s), so it holds new ones back and waits for
        those under way."""
        # Its own warm pool, made after gc.freeze (the context's warm
        # option); no processes forked ahead in this process.
        return anyfork.template(warm=0, ahead=0, wait=_BUSY_LIMIT)

    def _drop(self):
        old, self._proc = self._proc, None
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if old is not None:
            old.free()

    def reset(self):
        """Frees the template (its process exits); the next start makes a
        new one of the program as it is then."""
        with self._lock:
            self._drop()


_template = _Template()


def _forget_template():
    """In a new process (the template itself, its children, os.fork()'s):
    the parent's template is not ours, and its lock may have been held at
    the fork."""
    _template._lock = threading.Lock()
    if _template._proc is not None:
        _template._proc._h = None        # the parent's handle: not ours to free
    _template._proc = None
    if _template._pidfd >= 0:
        try:
            os.close(_template._pidfd)
        except OSError:
            pass
        _template._pidfd = -1
    _template.gone = []


os.register_at_fork(after_in_child=_forget_template)


class _DupFd(object):
    """An fd in the pickled Process: the index of the fd sent with it."""

    def __init__(self, ind):
        self.ind = ind

    def detach(self):
        return _inherited_fds[self.ind]


_inherited_fds = []
_PID = struct.Struct("i")


def _close_fds(fds):
    for fd in fds:
        os.close(fd)
    del fds[:]


class Popen(object):
    """multiprocessing's Popen interface over a process forked from the
    template: pid, sentinel, poll/wait/returncode, terminate/kill, close."""

    method = METHOD
    DupFd = _DupFd

    def __init__(self, process_obj):
        util._flush_std_streams()
        self.returncode = None
        self.finalizer = None
        self.sentinel = None
        self._fds = []
        self._exit = []          # [(pid, wait status or None, error or None)]
        self._pid = None
        self._pid_r = None
        self._pid_lock = threading.Lock()
        self._template_gone = []
        self._launch(process_obj)

    def duplicate_for_child(self, fd):
        self._fds.append(fd)
        return len(self._fds) - 1

    def _launch(self, process_obj):
        prep = spawn.get_preparation_data(process_obj._name)
        # The child sets the default start method itself (it may not know
        # this one before it imported this module); the main module it
        # already has, and imports again only to unpickle a target that
        # the template's copy lacks.
        prep.pop("start_method", None)
        main = {k: prep.pop(k) for k in ("init_main_from_name", "init_main_from_path")
                if k in prep}
        tracker = resource_tracker._resource_tracker._fd
        if tracker is not None:
            self.duplicate_for_child(tracker)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump((tracker is not None, prep, main), buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)

        payload = buf.getvalue()
        for attempt in (1, 2):
            child = None
            # A box per attempt (an abandoned child's callback reports
            # ECANCELED into its own), and not self: the callback must
            # not keep the Popen alive.
            box = self._exit = []
            # The child writes its pid into a pipe, read when someone asks
            # (multiprocessing itself rarely does): asking the template
            # (fork_pid) would cost every start a round trip.
            pid_r, pid_w = os.pipe()
            try:
                child, self._template_gone = _template.fork()
                for fd in self._fds:
                    child.send_fd(fd)
                child.send_fd(pid_w)
                child.send_arg(payload)
                child.on_exit(lambda pid, status, err, box=box: box.append((pid, status, err)))
                sock = child.run(_RUN)
                break
            except (BrokenPipeError, ConnectionResetError):
                os.close(pid_r)
                if child is not None:
                    child.free()
                if attempt == 2:
                    raise
                # The template is gone (killed): the next one is made now.
                _template.reset()
            except BaseException:
                os.close(pid_r)
                if child is not None:
                    child.free()
                raise
            finally:
                os.close(pid_w)
        self.sentinel = sock.detach()
        self._pid_r = pid_r
        self._open = [self.sentinel, pid_r]
        self.finalizer = util.Finalize(self, _close_fds, (self._open,))

    @property
    def pid(self):
        with self._pid_lock:
            if self._pid is None and self._pid_r is not None:
                self._pid = self._read_pid()
            return self._pid

    def _read_pid(self):
        r, self._pid_r = self._pid_r, None
        data = b""
        try:
            while len(data) < _PID.size:
                chunk = os.read(r, _PID.size - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            self._open.remove(r)
            os.close(r)
        if len(data) == _PID.size:
            return _PID.unpack(data)[0]
        # The child ended before it ran (or was never made): its pid comes
        # with the template's report of its end.
        self._status(None)
        pid = self._exit[0][0] if self._exit else -1
        return pid if pid > 0 else None

    def _status(self, limit):
        """Dispatches until the template reported the exit (at most limit
        seconds, None: no limit): the exit code, or None. A template that
        died reports an error: the exit code is then 255, as "forkserver"
        gives when its server died."""
        deadline = None if limit is None else time.monotonic() + limit
        while not self._exit:
            step = 0.1
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
                if step <= 0:
                    return None
            anyfork._wait(step, False)
        _pid, status, err = self._exit[0]
        if err is not None:
            # Never made, or its end unknown: the template died (it is
            # replaced at the next start).
            self._template_gone.append(True)
            return 255
        return os.waitstatus_to_exitcode(status)

    def _settle(self, timeout):
        """Waits up to timeout seconds (None: no limit) for the child's
        end: its sentinel (the child's end of the comm socket closed),
        then the template's report of its exit status."""
        if self.returncode is not None:
            return
        start = time.monotonic()
        if not self._exit and not connection.wait([self.sentinel], timeout):
            return
        limit = None
        if timeout is not None:
            # The child is exiting: its report is a moment away (unless it
            # closed its end early and runs on).
            limit = max(timeout - (time.monotonic() - start), _REPORT_GRACE)
        self.returncode = self._status(limit)

    def poll(self, flag=os.WNOHANG):
        self._settle(0 if flag == os.WNOHANG else None)
        return self.returncode

    def wait(self, timeout=None):
        self._settle(timeout)
        return self.returncode

    def _send_signal(self, sig):
        pid = self.pid
        if self.returncode is None and not self._exit and pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            except OSError:
                if self.wait(timeout=0.1) is None:
                    raise

    def terminate(self):
        self._send_signal(signal.SIGTERM)

    def kill(self):
        self._send_signal(signal.SIGKILL)

    def close(self):
        if self.finalizer is not None:
            self.finalizer()


class AnyforkProcess(process.BaseProcess):
    """multiprocessing.Process, started from anyfork's template."""

    _start_method = METHOD

    @staticmethod
    def _Popen(process_obj):
        return Popen(process_obj)


class AnyforkContext(context.BaseContext):
    """A multiprocessing context whose processes are forked from a
    template of this program (made at the first start)."""

    _name = METHOD
    Process = AnyforkProcess
    # Children the template keeps forked ahead (anyfork_warm), so that a
    # start does not wait for a fork; read when the template is made.
    warm = 2

    def reset_template(self):
        """Lets the next start make a new template of the program as it is
        then. The old one stays until its running children have exited
        (it reports their exits), then exits."""
        _template.reset()


_context = AnyforkContext()
# Registered under its name, as multiprocessing's own methods are: a
# child sets its default start method to its parent's, and
# multiprocessing.get_context("anyfork") works once this module is loaded.
context._concrete_contexts.setdefault(METHOD, _context)


def get_context():
    """The context (one per program)."""
    return _context


def _run_main(main):
    """The main module's names, from running it again as __mp_main__ (as
    the "spawn" and "forkserver" methods do for every child)."""
    if "init_main_from_path" in main:
        path = main["init_main_from_path"]
        if os.path.splitext(os.path.basename(path))[0] == "ipython":
            return {}
        return runpy.run_path(path, run_name="__mp_main__")
    name = main["init_main_from_name"]
    if name == "__main__" or name.endswith(".__main__"):
        return {}          # a package's __main__ runs its main code unguarded
    return runpy.run_module(name, run_name="__mp_main__", alter_sys=False)


def _find_late_names(main):
    """A name of the main module the template's copy lacks (a function or
    class defined after the template was made, sent by reference now or
    later through a Queue) is looked up, on first need, in the main module
    run again as __mp_main__ (module __getattr__, PEP 562)."""
    mod = sys.modules.get("__main__")
    if not main or mod is None or "__getattr__" in vars(mod):
        return
    names = []

    def __getattr__(name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)       # probes (__path__, __wrapped__...)
        if not names:
            names.append(_run_main(main))
        try:
            return names[0][name]
        except KeyError:
            raise AttributeError("module '__main__' has no attribute %r" % name) from None
    mod.__getattr__ = __getattr__


def _child(sock, *args):
    """In a child of the template (run by anyfork's dispatcher): unpickles
    the Process object with the fds sent before it and runs it; returns
    its exit code."""
    global _inherited_fds
    fds, payload = list(args[:-1]), args[-1]
    pid_w = fds.pop()
    try:
        os.write(pid_w, _PID.pack(os.getpid()))
    except OSError:
        pass                    # the parent closed its Popen already
    os.close(pid_w)
    _inherited_fds = fds
    parent_sentinel = sock.fileno()
    current = process.current_process()
    current._inheriting = True
    try:
        buf = io.BytesIO(payload)
        has_tracker, prep, main = reduction.pickle.load(buf)
        # The template's copy of the tracker's fd is closed (or, worse,
        # reused): use the one sent, or none (a new one starts if needed).
        rt = resource_tracker._resource_tracker
        rt._fd = fds[0] if has_tracker else None
        rt._pid = None
        spawn.prepare(prep)
        context._force_start_method(METHOD)
        _find_late_names(main)
        obj = reduction.pickle.load(buf)
    finally:
        del current._inheriting
    return obj._bootstrap(parent_sentinel)
