"""anyfork: create processes without forking the Python interpreter.

A small template server forks on request; this module drives libanyfork's
C API through ctypes. A Process is a process that has not run yet:
commands queue on it in order and return the Process, so they chain::

    import anyfork
    p = anyfork.Process.new()                  # forked by the default template
    p.eval("anyfork_comm_fd", "1")             # its stdout: the comm socket
    sock = p.exec(["sh", "-c", "echo $0", "hi"])
    print(sock.makefile("rb").read())          # b'hi\\n'

Python code runs in children of a template forked from this interpreter
(template()) or of a fresh Python server (Process.new_python()): run() and
eval() then take "module.function" names, called in the child through the
library's dispatcher.

The library is $ANYFORK_LIB (a file, a directory holding libanyfork.so.0,
or a bare name for the dynamic linker), else libanyfork.so.0 through the
dynamic linker, else in INSTALL_LIBDIR (what `pkg-config --variable=libdir
anyfork` said when pip installed this module), else
/usr/local/lib/libanyfork.so.0 (make install's default prefix before
ldconfig has run). The ImportError says what was tried and why each failed.

Errors of the C library raise OSError(errno, fork_last_error() text).
Callbacks run only inside wait() or dispatch(); an exception raised by one
comes out of that call.
"""

import ctypes
import errno as _errno
import importlib
import itertools
import os
import re
import signal
import _signal
import socket
import sys
import threading
import time
import traceback

__all__ = [
    "Process", "template", "wait", "dispatch", "loop_fd", "pending",
    "child_args", "serve", "add_path", "import_modules", "library_path",
    "Pool", "RPC", "Future", "RemoteError", "event", "retire", "get_context",
]


LIB_NAME = "libanyfork.so.0"
DEFAULT_DIRS = ("/usr/local/lib", "/usr/local/lib64")
# The library's directory as `pkg-config --variable=libdir anyfork` gave
# it when this module was installed (the build backend, _build/, writes it
# on this very line), or None (the source tree, or no anyfork.pc then).
INSTALL_LIBDIR = None


def _candidates():
    """(where the choice came from, the paths to try in order)."""
    env = os.environ.get("ANYFORK_LIB", "")
    if env:
        if os.path.isdir(env):
            names = (LIB_NAME, "libanyfork.so")
            return "ANYFORK_LIB=%s" % env, [os.path.join(env, n) for n in names]
        return "ANYFORK_LIB=%s" % env, [env]
    dirs = [d for d in (INSTALL_LIBDIR,) if d and d not in DEFAULT_DIRS] + list(DEFAULT_DIRS)
    origin = "ANYFORK_LIB unset, %s" % (
        "libdir %s from pkg-config at install" % INSTALL_LIBDIR if INSTALL_LIBDIR
        else "no libdir from pkg-config at install")
    return origin, [LIB_NAME] + [os.path.join(d, LIB_NAME) for d in dirs]


def _load_library():
    origin, paths = _candidates()
    tried = []
    for path in paths:
        try:
            return path, ctypes.CDLL(path)
        except OSError as e:
            tried.append(str(e))  # names the path and the cause
    raise ImportError("anyfork: cannot load libanyfork (%s); tried %s. Install it "
                      "with `make install`, or set ANYFORK_LIB to the library or its "
                      "directory" % (origin, "; ".join(tried)))


library_path, _lib = _load_library()


class _ForkArg(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int),         # FORK_ARG_STRING = 0, FORK_ARG_FD = 1
        ("fd", ctypes.c_int),
        ("data", ctypes.c_void_p),
        ("len", ctypes.c_size_t),
    ]


_FORK_ARG_STRING, _FORK_ARG_FD = 0, 1
_FORK_CALL_EVAL, _FORK_CALL_RUN = 0, 1

_RUN_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)
_EXIT_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
# The arguments' array comes as a plain address (cast only when there are
# some): a new process makes no ctypes pointer object it does not need.
_DISPATCH_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_ARGS_P = ctypes.POINTER(_ForkArg)
# The fork hook: returns like fork(); errno travels back through ctypes.
_FORK_HOOK_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, use_errno=True)

_P = ctypes.c_void_p
_STRV = ctypes.POINTER(ctypes.c_char_p)


# Threads inside a call of the library (thread ident -> depth): template()
# refuses to fork while another thread may hold one of the library's locks.
# _gate orders entering a call against template()'s check and fork.
_inside = {}
_gate = threading.Lock()


def _typed(f, restype, argtypes):
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


def _sig(name, restype, *argtypes):
    f = _typed(getattr(_lib, name), restype, argtypes)

    def call(*args):
        me = threading.get_ident()
        with _gate:
            _inside[me] = _inside.get(me, 0) + 1
        try:
            return f(*args)
        finally:
            depth = _inside.get(me, 1) - 1
            if depth:
                _inside[me] = depth
            else:
                _inside.pop(me, None)
    call.raw = f
    call.__name__ = name
    return call


_fork_new = _sig("fork_new", _P)
_fork_new_exec = _sig("fork_new_exec", _P)
_fork_new_exec_argv = _sig("fork_new_exec_argv", _P, _STRV)
_fork_new_remote = _sig("fork_new_remote", _P, _STRV)
_fork_fork = _sig("fork_fork", _P, _P)
_fork_ahead = _sig("fork_ahead", ctypes.c_int, _P, ctypes.c_uint)
_fork_send_fd = _sig("fork_send_fd", ctypes.c_int, _P, ctypes.c_int)
_fork_send_arg = _sig("fork_send_arg", ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_size_t)
_fork_require = _sig("fork_require", ctypes.c_int, _P, ctypes.c_char_p)
_fork_eval = _sig("fork_eval", ctypes.c_int, _P, ctypes.c_char_p, _STRV, ctypes.c_size_t)
_fork_run = _sig("fork_run", ctypes.c_int, _P, ctypes.c_char_p, _RUN_CB, ctypes.c_void_p)
_fork_exec = _sig("fork_exec", ctypes.c_int, _P, _STRV, _STRV, _RUN_CB, ctypes.c_void_p)
_fork_on_exit = _sig("fork_on_exit", ctypes.c_int, _P, _EXIT_CB, ctypes.c_void_p)
_fork_pid = _sig("fork_pid", ctypes.c_int, _P)
_fork_free = _sig("fork_free", None, _P)
_fork_last_error = _sig("fork_last_error", ctypes.c_char_p)
_fork_wait = _sig("fork_wait", ctypes.c_int, ctypes.c_int)
_fork_loop_dispatch = _sig("fork_loop_dispatch", ctypes.c_int)
_fork_loop_fd = _sig("fork_loop_fd", ctypes.c_int)
_fork_pending = _sig("fork_pending", ctypes.c_size_t)
_fork_set_dispatch = _sig("fork_set_dispatch", None, _DISPATCH_FN, ctypes.c_void_p)
_fork_set_fork_hook = _sig("fork_set_fork_hook", None, _FORK_HOOK_FN, ctypes.c_void_p)
_fork_serve = _sig("fork_serve", ctypes.c_int, ctypes.c_int)
_fork_child_args = _sig("fork_child_args", ctypes.POINTER(_ForkArg), ctypes.POINTER(ctypes.c_size_t))
_fork_reset_after_fork = _sig("fork_reset_after_fork", None)
# fork_template through a PyDLL handle of the same library: ctypes keeps
# the GIL across the call, so no other thread holds it in the copy.
_fork_template_gil = _typed(ctypes.PyDLL(library_path).fork_template, _P, [])


# --- errors ----------------------------------------------------------------

_ERRNO_AT_END = re.compile(r"\((E[A-Z0-9]+)\b[^()]*\)\s*$")


def _error(err, what):
    """OSError for a failed call: err is the positive errno, or None for calls
    that return only NULL or -1 (the errno is then read off the message)."""
    msg = (_fork_last_error() or b"").decode("utf-8", "replace") or what + " failed"
    if err is None:
        m = _ERRNO_AT_END.search(msg)
        err = getattr(_errno, m.group(1), _errno.EIO) if m else _errno.EIO
    return OSError(err, msg)


def _check(rc, what):
    if rc < 0:
        raise _error(-rc, what)
    return rc


def _bytes(s, what="argument"):
    if isinstance(s, str):
        return os.fsencode(s)
    if isinstance(s, (bytes, bytearray, memoryview)):
        return bytes(s)
    raise TypeError("%s must be str or bytes, not %s" % (what, type(s).__name__))


def _cstr(s, what):
    b = _bytes(s, what)
    if b"\0" in b:
        raise OSError(_errno.EINVAL, "%s %r contains a NUL byte" % (what, b))
    return b


def _strv(items, what):
    """A NULL-terminated char ** (the result keeps the bytes alive)."""
    items = [_cstr(s, what) for s in items]
    arr = (ctypes.c_char_p * (len(items) + 1))(*items, None)
    return arr


# --- callbacks -------------------------------------------------------------
#
# One C trampoline per kind; the userdata is a token into _callbacks, which
# holds the function and the thread that registered it. Each token is
# removed when its callback runs (the library runs each exactly once) or
# when the registering call fails (then it never runs).
#
# Exceptions: a callback's exception belongs to the thread that registered
# the callback. Run by that thread's wait()/dispatch(), it comes out of
# that call; run by another thread (or by the blocking wait inside run()
# and exec(), which must not lose their socket), it waits in _inbox for the
# owner's next wait()/dispatch(); the owner gone, for the next one of any
# thread. Several at once come out as one BaseExceptionGroup.
#
# Signals: Python runs signal handlers in the main thread between
# bytecodes, so a Ctrl-C could cut a callback short (and ctypes swallows
# an exception that escapes a trampoline). While the main thread is inside
# wait() or dispatch(), every Python signal handler is replaced by one that
# only records the signal; the recorded signals go to the real handlers
# between the slices of a wait and when it ends, never inside a callback.

_callbacks = {}
_tokens = itertools.count(1)
_cb_lock = threading.Lock()
_inbox = {}               # threading.Thread -> [exceptions for it]
_local = threading.local()
_SLICE_MS = 100           # fork_wait blocks at most this long at a time


def _register(fn):
    entry = (fn, threading.current_thread())
    with _cb_lock:
        token = next(_tokens)
        _callbacks[token] = entry
    return token


def _unregister(token):
    with _cb_lock:
        return _callbacks.pop(token, None)


# Comm sockets are always AF_UNIX stream sockets: said when making their
# socket objects, which then ask the kernel nothing (getsockname, two
# getsockopt).
_AF_UNIX, _SOCK_STREAM = int(socket.AF_UNIX), int(socket.SOCK_STREAM)


def _comm_socket(fd):
    """A blocking socket object owning the caller's end of a comm socket."""
    s = socket.socket(_AF_UNIX, _SOCK_STREAM, 0, fd)
    s.setblocking(True)
    return s


def _frames():
    f = getattr(_local, "frames", None)
    if f is None:
        f = _local.frames = []
    return f


def _raised_in_callback(e, owner):
    """Files an exception of a callback for the thread it belongs to."""
    me = threading.current_thread()
    frames = _frames()
    if (owner is me or not owner.is_alive()) and frames:
        frames[-1].append(e)
    else:
        if owner is not me and not owner.is_alive():
            owner = me
        with _cb_lock:
            _inbox.setdefault(owner, []).append(e)


def _run_done(fd, token):
    entry = _unregister(token)
    if entry is None:
        if fd >= 0:
            os.close(fd)
        return
    cb, owner = entry
    try:
        if fd < 0:
            cb(None, _error(-fd, "run"))
        else:
            cb(_comm_socket(fd), None)
    except BaseException as e:  # never let it vanish inside ctypes
        _raised_in_callback(e, owner)


def _exit_done(pid, status, token):
    entry = _unregister(token)
    if entry is None:
        return
    cb, owner = entry
    try:
        if status < 0:
            cb(pid, None, _error(-status, "exit"))
        else:
            cb(pid, status, None)
    except BaseException as e:
        _raised_in_callback(e, owner)


_run_tramp = _RUN_CB(_run_done)
_exit_tramp = _EXIT_CB(_exit_done)


def _take_inbox():
    """This thread's waiting exceptions, and those of threads that ended."""
    if not _inbox:
        return []
    me = threading.current_thread()
    out = []
    with _cb_lock:
        for owner in list(_inbox):
            if owner is me or not owner.is_alive():
                out.extend(_inbox.pop(owner))
    return out


def _group(excs):
    if len(excs) == 1:
        return excs[0]
    return BaseExceptionGroup("%d anyfork callbacks raised" % len(excs), excs)


class _Deferred(object):
    """Signals recorded while the main thread is in the library."""

    depth = 0
    saved = {}            # signal number -> the real handler
    pending = []
    seen = None           # every signal's handler at the last enter
    swap = ()             # (signal, handler) of those that are Python's

    @staticmethod
    def record(signum, frame):
        _Deferred.pending.append(signum)

    @classmethod
    def enter(cls):
        if threading.current_thread() is not threading.main_thread():
            return False
        cls.depth += 1
        if cls.depth == 1:
            # _signal's functions: signal's wrap every number in an enum,
            # which costs 20 times as much (this runs on every wait). The
            # handlers are read in one pass; while they are those of the
            # last time, so are the ones to replace.
            try:
                hs = list(map(_getsignal, _SIGNALS))
            except (OSError, ValueError):
                hs = None
            if hs is None or hs != cls.seen:
                cls.seen = hs
                swap = []
                for sig in _SIGNALS:
                    try:
                        h = _getsignal(sig)
                    except (OSError, ValueError):
                        continue
                    if callable(h) and h is not _record_signal:
                        swap.append((sig, h))
                cls.swap = dict(swap)
            if cls.swap:
                cls.saved = cls.swap.copy()
                for sig in cls.saved:
                    _setsignal(sig, _record_signal)
        return True

    @classmethod
    def deliver(cls):
        """Calls the real handlers of the signals recorded (outermost call
        only: never inside a callback); one that raises ends the wait."""
        while cls.depth == 1 and cls.pending:
            sig = cls.pending.pop(0)
            h = cls.saved.get(sig)
            if callable(h):
                h(sig, sys._getframe(1))

    @classmethod
    def leave(cls):
        cls.depth -= 1
        if cls.depth:
            return
        saved = cls.saved
        if not saved:
            if cls.pending:
                cls.pending = []
            return
        cls.saved = {}
        for sig, h in saved.items():
            if _getsignal(sig) is _record_signal:   # not changed meanwhile
                _setsignal(sig, h)
        pending, cls.pending = cls.pending, []
        for sig in pending:
            h = saved.get(sig)
            if callable(h):
                h(sig, sys._getframe(1))


_record_signal = _Deferred.record
_SIGNALS = sorted(int(s) for s in signal.valid_signals())
_getsignal, _setsignal = _signal.getsignal, _signal.signal


def _in_library(call, public):
    """Runs call(check) with signals held back (main thread) and this
    call's own list for callback exceptions. check() delivers recorded
    signals and, for a public call, reports whether exceptions are waiting
    (the wait then ends). Public calls raise the callback exceptions
    (grouped) at the end; internal ones leave them for the next public
    call on this thread."""
    frames = _frames()
    mine = []
    frames.append(mine)
    held = _Deferred.enter()

    def check():
        if held:
            _Deferred.deliver()
        return bool(mine) or (public and _inbox_has_mine())
    try:
        try:
            result = call(check)
        finally:
            frames.pop()
            if held:
                _Deferred.leave()     # may raise: a signal handler's exception
    except BaseException as e:
        excs = _collect(mine, public)
        if excs:
            # The callback exceptions ride along as its context.
            _chain(e, _group(excs))
        raise
    excs = _collect(mine, public)
    if excs:
        raise _group(excs)
    return result


def _inbox_has_mine():
    if not _inbox:
        return False
    me = threading.current_thread()
    return any(o is me or not o.is_alive() for o in list(_inbox))


def _collect(mine, public):
    """The exceptions a call raises: a public call takes the waiting ones
    too; an internal one leaves its own for the next public call."""
    if public:
        return _take_inbox() + mine
    if mine:
        with _cb_lock:
            _inbox.setdefault(threading.current_thread(), []).extend(mine)
    return []


def _chain(e, context):
    for _ in range(100):            # the end of e's context chain
        if e.__context__ is None or e.__context__ is context:
            break
        e = e.__context__
    if e is not context:
        e.__context__ = context


def _wait(timeout, public):
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)

    def loop(check):
        while True:
            if deadline is None:
                ms = _SLICE_MS
            else:
                ms = min(_SLICE_MS, max(0, int((deadline - time.monotonic()) * 1000 + 0.999)))
            n = _check(_fork_wait(ms), "fork_wait")
            if check() or n > 0 or _fork_pending() == 0:
                return n
            if deadline is not None and time.monotonic() >= deadline:
                return 0
    return _in_library(loop, public)


def wait(timeout=None):
    """Dispatches until at least one callback ran, timeout seconds passed
    (None: no limit) or no callback waits at all; returns how many ran.
    Waits in slices of 0.1 s, so signals (Ctrl-C) interrupt it promptly;
    they are held back while callbacks run, never cutting one short."""
    return _wait(timeout, True)


def dispatch():
    """Does what can be done without blocking and runs the callbacks due;
    for programs watching loop_fd() in their own loop."""
    return _in_library(
        lambda check: _check(_fork_loop_dispatch(), "fork_loop_dispatch"), True)


def loop_fd():
    """The one fd an event loop watches (level-triggered, readable while
    dispatch() has work). It belongs to the library: never close it."""
    return _check(_fork_loop_fd(), "fork_loop_fd")


def pending():
    """The number of run and exit callbacks that have not run yet."""
    return _fork_pending()


def _await(register):
    """Registers a run callback through register(cb) and dispatches until it
    ran: returns the socket or raises the error. Interrupted (Ctrl-C), it
    closes the socket, now or when it comes, and lets the exception out."""
    box = []
    abandoned = []

    def got(sock, err):
        if abandoned:
            if sock is not None:
                sock.close()
        else:
            box.append((sock, err))
    register(got)
    try:
        while not box:
            # Another thread's wait() may run our callback: look again often.
            _wait(0.1, False)
    except BaseException:
        abandoned.append(True)
        if box and box[0][0] is not None:
            box[0][0].close()
        raise
    sock, err = box[0]
    if err is not None:
        raise err
    return sock


# --- process objects -------------------------------------------------------

class Process(object):
    """A process that has not entered its run function yet.

    Create one with Process.new(), Process.new_exec(), Process.new_python(),
    template() or process.fork(). run() and exec() consume it (even when
    they fail); free() -- or garbage collection -- abandons it, and the
    process then exits. One thread at a time may use a given Process.
    """

    def __init__(self, handle):
        if not handle:
            raise ValueError("no process handle")
        self._h = handle
        self._exit = None      # [callback] once on_exit registered one

    @classmethod
    def _make(cls, handle, what):
        if not handle:
            raise _error(None, what)
        return cls(handle)

    @classmethod
    def new(cls):
        """A process forked from the library's default template."""
        return cls._make(_fork_new(), "fork_new")

    @classmethod
    def new_exec(cls):
        """A fresh anyfork-serve: a direct child, usable as a template."""
        return cls._make(_fork_new_exec(), "fork_new_exec")

    @classmethod
    def new_exec_argv(cls, argv):
        """A custom server: argv[0] gets its socket in $ANYFORK_FD and must
        call fork_serve() on it (serve() does, for Python)."""
        arr = _strv(argv, "argv")
        return cls._make(_fork_new_exec_argv(arr), "fork_new_exec_argv")

    @classmethod
    def new_remote(cls, argv):
        """A template on another machine: argv's stdin and stdout must reach
        `anyfork-serve --stdio` there, e.g. ["ssh", "-o", "BatchMode=yes",
        "host", "anyfork-serve", "--stdio"]. Blocks for the login; raises
        OSError (ECONNREFUSED) saying why a start failed. Its processes run
        C functions of libraries required there and the builtins; for
        Python code there, see new_remote_python(). Fds cannot be sent to
        them (send_fd raises EOPNOTSUPP); everything else works as locally,
        with the remote pids."""
        arr = _strv(argv, "argv")
        return cls._make(_fork_new_remote(arr), "fork_new_remote")

    @classmethod
    def new_remote_python(cls, argv, python="python3"):
        """A Python interpreter serving as a template on another machine
        (anyfork installed there): argv ends in `anyfork-serve --stdio`, as
        for new_remote(). run() and eval() take "module.function" names the
        far side can import, as with new_python()."""
        return cls.new_remote(list(argv) + [
            "--", python, "-c", "import anyfork; anyfork.serve()"])

    @classmethod
    def new_python(cls, python=None):
        """A fresh Python interpreter serving as a template (small, unlike
        template() in a big program): run() and eval() take "module.function"
        names; modules are imported in it on first use."""
        here = os.path.dirname(os.path.abspath(__file__))
        # The server loads this very module and library.
        code = ("import os, sys; sys.path.insert(0, %r); "
                "os.environ.setdefault('ANYFORK_LIB', %r); "
                "import anyfork; anyfork.serve()" % (here, _loaded_path()))
        return cls.new_exec_argv([python or sys.executable, "-c", code])

    def _handle(self, what):
        if self._h is None:
            raise OSError(_errno.EINVAL, "%s: the process was already run or freed" % what)
        return self._h

    def _take(self, what):
        h = self._handle(what)
        self._h = None
        return h

    def fork(self):
        """Forks this process (a template): the child starts with everything
        sent so far; self stays usable."""
        return Process._make(_fork_fork(self._handle("fork")), "fork_fork")

    def fork_ahead(self, n):
        """Keeps n processes forked from this template ahead of fork() (0 to
        64; 0, the default for templates other than template()'s, none):
        fork() hands out one already forked, and what is sent to it goes
        straight to it. A replacement is forked at once when forks come
        back to back, else 2 ms after, by the next dispatch (wait(), or a
        loop watching loop_fd()). Sending this template anything replaces
        the waiting processes (copies of it as it was)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 64:
            raise ValueError("fork_ahead: n is the number of processes forked ahead, "
                             "0 to 64, not %r" % (n,))
        _check(_fork_ahead(self._handle("fork_ahead"), n), "fork_ahead")
        return self

    def send_fd(self, f):
        """Sends an fd (an int or anything with fileno()); it is duplicated at
        once, so the caller may close its own right away."""
        fd = f if isinstance(f, int) else f.fileno()
        _check(_fork_send_fd(self._handle("send_fd"), fd), "fork_send_fd")
        return self

    def send_arg(self, data):
        """Sends a string (str is encoded with os.fsencode); the child gets
        bytes."""
        b = _bytes(data)
        _check(_fork_send_arg(self._handle("send_arg"), b, len(b)), "fork_send_arg")
        return self

    def require(self, library):
        """Loads a shared library into the process (dlopen); if it cannot be
        loaded the process exits with status 127."""
        _check(_fork_require(self._handle("require"), _cstr(library, "library")),
               "fork_require")
        return self

    def eval(self, name, *args):
        """Calls name(*args) in the process now: a builtin (anyfork_setenv,
        anyfork_chdir, anyfork_comm_fd, ...), a C function, or in a Python
        template a "module.function" (args arrive as bytes). A non-zero
        result makes the process exit."""
        arr = _strv(args, "eval argument")
        _check(_fork_eval(self._handle("eval"), _cstr(name, "function name"), arr, len(args)),
               "fork_eval")
        return self

    def pid(self):
        """The pid (a forked process's may take a round trip to learn)."""
        pid = _fork_pid(self._handle("pid"))
        if pid < 0:
            raise _error(None, "fork_pid")
        return pid

    def on_exit(self, callback):
        """callback(pid, wait_status, error) runs once the process exited
        (error is an OSError when the status cannot be known, then
        wait_status is None). A second call replaces the callback."""
        if self._exit is not None:
            self._exit[0] = callback
            return self
        box = [callback]
        token = _register(lambda pid, st, err: box[0](pid, st, err))
        rc = _fork_on_exit(self._handle("on_exit"), _exit_tramp, token)
        if rc < 0:
            _unregister(token)
            _check(rc, "fork_on_exit")
        self._exit = box
        return self

    def _start(self, what, call, callback, detach):
        """Consumes the handle into call(handle, trampoline, token)."""
        if detach and callback is not None:
            raise ValueError("a detached run takes no callback")
        h = self._take(what)
        if detach:
            _check(call(h, _RUN_CB(), None), what)
            return None
        if callback is None:
            return _await(lambda cb: self._start_cb(what, call, h, cb))
        self._start_cb(what, call, h, callback)
        return None

    @staticmethod
    def _start_cb(what, call, h, callback):
        token = _register(callback)
        rc = call(h, _run_tramp, token)
        if rc < 0:
            _unregister(token)
            _check(rc, what)

    def run(self, name, callback=None, detach=False):
        """Makes the process enter name: a C function (dlsym), a builtin, or
        in a Python template "module.function", called as
        function(sock, *args) with the comm socket and every string (bytes)
        and fd (int) sent. Consumes the process, even when the library
        fails (arguments this module refuses leave it untouched).

        Without a callback, waits for delivery and returns this side's comm
        socket (blocking; yours to close). With one, returns None and later
        calls callback(sock, error) from wait()/dispatch(). detach=True lets
        the library close the socket itself."""
        n = _cstr(name, "function name")
        return self._start("fork_run", lambda h, cb, ud: _fork_run(h, n, cb, ud),
                           callback, detach)

    def exec(self, argv, env=None, callback=None, detach=False):
        """Runs a program with the anyfork_exec builtin: argv follows the
        strings sent before, the fds sent become its 0, 1, 2, ... in order;
        env (a dict or NAME=VALUE strings) replaces the environment, None
        keeps the template's. Returns/calls back as run()."""
        av = _strv(argv, "argv")
        if env is None:
            ev = None
        elif isinstance(env, dict):
            ev = _strv([_bytes(k) + b"=" + _bytes(v) for k, v in env.items()], "env")
        else:
            ev = _strv(env, "env")
        return self._start("fork_exec", lambda h, cb, ud: _fork_exec(h, av, ev, cb, ud),
                           callback, detach)

    def free(self):
        """Abandons a process that has not run (it sees EOF and exits). Does
        nothing after run() or a first free()."""
        h, self._h = self._h, None
        if h is not None and _fork_free is not None:
            _fork_free(h)

    def __del__(self):
        try:
            self.free()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    def __repr__(self):
        return "<anyfork.Process %s>" % ("used" if self._h is None else hex(self._h))


def _loaded_path():
    """The file the library was loaded from (for servers to load it too)."""
    if os.sep in library_path:
        return os.path.abspath(library_path)
    try:
        addr = ctypes.cast(_fork_new.raw, ctypes.c_void_p).value
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= addr < hi and len(parts) >= 6:
                    return parts[5]
    except (OSError, ValueError):
        pass
    return library_path


# --- Python code in children -------------------------------------------------


def _resolve(name):
    """The object a dotted "module.attr.attr" name means, importing the
    longest module prefix that exists."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        modname = ".".join(parts[:i])
        mod = sys.modules.get(modname)
        if mod is None:
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                continue
        obj = mod
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise LookupError("%r is not a module.function name" % name)


def _arg(a):
    if a.kind == _FORK_ARG_FD:
        return a.fd
    return ctypes.string_at(a.data, a.len) if a.len else b""


def child_args():
    """Inside an eval or run in a child: every string (bytes) and fd (int)
    received so far, in order."""
    n = ctypes.c_size_t(0)
    p = _fork_child_args(ctypes.byref(n))
    return [_arg(p[i]) for i in range(n.value)] if p else []


def _status(rc):
    """The exit status for a run or eval function's return value: None and
    True are success, False is 1, an int is itself; anything else is
    printed and gives 1."""
    if rc is None or rc is True:
        return 0
    if rc is False:
        return 1
    if isinstance(rc, int):
        return rc & 0xFF
    sys.stderr.write("anyfork[%d]: %r\n" % (os.getpid(), rc))
    return 1


def _exit_code(code):
    """What the interpreter does with SystemExit(code) at its top level:
    None is 0, an int (True and False too) is itself, anything else is
    printed on stderr (its str) and gives 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def _die_of_sigint():
    """An unhandled KeyboardInterrupt: the interpreter ends by SIGINT (so
    the parent sees the signal), as python3 and os.fork()'s children do."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except (OSError, ValueError):
        pass
    return 130


def _target(text):
    """_resolve(text), first trying the common case in few steps (every
    object a new process touches costs it a page copy): a function of a
    module already loaded."""
    mod, _, attr = text.rpartition(".")
    m = sys.modules.get(mod)
    if m is not None:
        fn = getattr(m, attr, None)
        if fn is not None:
            return fn
    return _resolve(text)


# The comm socket objects of this process's run function: never closed nor
# finalized by Python (the library closes the fd when the function
# returns, and the process exits with _exit).
_run_socks = []


def _dispatch(kind, name, fd, args, nargs, _ud):
    """The dispatcher, in a child: calls the Python function name. The
    child was made by os.fork() (see _fork_hook): the interpreter's own
    after-fork work has run."""
    text = name.decode("utf-8", "surrogateescape")
    try:
        try:
            fn = _target(text)
        except Exception as e:
            sys.stderr.write("anyfork[%d]: %s %s: %s: %s\n" % (
                os.getpid(), "run" if kind == _FORK_CALL_RUN else "eval", text,
                type(e).__name__, e))
            return 127
        if nargs:
            arr = ctypes.cast(args, _ARGS_P)
            pyargs = [_arg(arr[i]) for i in range(nargs)]
        else:
            pyargs = ()
        if kind != _FORK_CALL_RUN:
            return _status(fn(*pyargs))
        sock = socket.socket(_AF_UNIX, _SOCK_STREAM, 0, fd)
        _run_socks.append(sock)
        return _status(fn(sock, *pyargs))
    except SystemExit as e:
        return _exit_code(e.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        return _die_of_sigint()
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        # The process leaves with _exit: flush Python's buffers first.
        for f in (sys.stdout, sys.stderr):
            try:
                f.flush()
            except Exception:
                pass


_dispatch_fn = _DISPATCH_FN(_dispatch)


def _primer(_sock):
    """The run function of _prime: nothing."""
    return 0


def _prime():
    """Runs the dispatcher's path once here, on a socket pair of its own,
    before this interpreter is copied: the code a new process runs is then
    warm (specialized) in the copy, and the new process writes less of it
    (each page it writes is a page it copies)."""
    a, b = socket.socketpair()
    try:
        _dispatch(_FORK_CALL_RUN, b"anyfork._primer", b.detach(), None, 0, None)
    finally:
        while _run_socks:
            _run_socks.pop().close()
        a.close()


def _fork_hook(_ud):
    """The library's fork in a Python template or server: os.fork(), so
    that a new process is made as the interpreter makes one (its locks
    and threads reset, os.register_at_fork hooks run: random reseeds,
    threading forgets the parent's threads). Buffered output is written
    first, so no child writes it again."""
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except Exception:
            pass
    try:
        return os.fork()
    except OSError as e:
        ctypes.set_errno(e.errno or 0)
    except BaseException:
        traceback.print_exc()
        ctypes.set_errno(0)
    return -1


_fork_hook_fn = _FORK_HOOK_FN(_fork_hook)


def _set_dispatch():
    _fork_set_dispatch(_dispatch_fn, None)
    _fork_set_fork_hook(_fork_hook_fn, None)


def add_path(*dirs):
    """For eval in a Python server: puts directories (bytes or str) in front
    of sys.path, e.g. p.eval("anyfork.add_path", "/my/modules")."""
    for d in reversed(dirs):
        sys.path.insert(0, os.fsdecode(d))


def import_modules(*names):
    """For eval in a Python template or server: imports modules now (so that
    every process forked afterwards has them loaded)."""
    for n in names:
        importlib.import_module(os.fsdecode(n))


def template(warm=2, wait=0, ahead=2):
    """Forks this interpreter now; the copy is a template whose children
    (process.fork()) run Python functions of this program by name, with
    everything prepared so far in memory. The copy closes every fd but 0,
    1, 2: send what it needs.

    warm: how many children the template keeps forked and waiting, each
    handed the next fork() at once (the warm pool, the builtin eval
    anyfork_warm; 0 to 64, 0: none). The default of 2 takes the template's
    fork off each creation's path (bench/fork_bench.py: creations 1.1 to
    1.3 times as fast, p50 15 to 45 % shorter); the waiting children cost two
    idle processes sharing the template's memory.

    ahead: how many children of the template this process keeps forked
    ahead (Process.fork_ahead; 0 to 64, 0: none): fork() hands one out, so
    neither a fork nor a wake-up of the template is on a creation's path.
    With the default of 2 on top of the warm pool, creations one after the
    other ran at 2.2 to 2.5 times the rate of warm=2 alone, and at about
    twice that of os.fork (bench/fork_bench.py); they cost two more idle
    processes.

    The copy, and every process forked from it, is made by os.fork()
    (the library's fork hook): sys.stdout and sys.stderr are flushed
    first, the os.register_at_fork hooks run, and the GIL is held across
    the fork, so other threads running Python are merely not copied.
    Refused (OSError EBUSY) while another thread is inside a
    call of the library, which may hold the library's locks. With wait
    (seconds), new calls of other threads are held back and the calls
    under way are waited for that long first (a call made by one of
    their callbacks meanwhile holds both up until then)."""
    if isinstance(warm, bool) or not isinstance(warm, int) or not 0 <= warm <= 64:
        raise ValueError("template: warm is the number of waiting children, 0 to 64, not %r"
                         % (warm,))
    if isinstance(ahead, bool) or not isinstance(ahead, int) or not 0 <= ahead <= 64:
        raise ValueError("template: ahead is the number of processes forked ahead, 0 to 64, "
                         "not %r" % (ahead,))
    for f in (sys.stdout, sys.stderr):
        try:
            if f is not None:
                f.flush()
        except Exception:
            pass
    _set_dispatch()
    _prime()
    me = threading.get_ident()
    deadline = time.monotonic() + wait
    with _gate:
        while [t for t, depth in list(_inside.items()) if depth and t != me]:
            if time.monotonic() >= deadline:
                raise OSError(_errno.EBUSY, "template: another thread is inside an anyfork "
                              "call (wait, run, ...), which may hold the library's locks in "
                              "the copy; call template() while no other thread uses anyfork")
            time.sleep(0.001)
        h = _fork_template_gil()
    tmpl = Process._make(h, "fork_template")
    if warm:
        tmpl.eval("anyfork_warm", str(warm))
    if ahead:
        tmpl.fork_ahead(ahead)
    return tmpl


def serve():
    """For a server started by Process.new_python() (or new_exec_argv):
    serves on $ANYFORK_FD, running Python functions; returns only on failure."""
    fd = os.environ.pop("ANYFORK_FD", None)
    if fd is None:
        raise OSError(_errno.EINVAL, "serve: ANYFORK_FD is not set")
    _set_dispatch()
    _prime()
    _check(_fork_serve(int(fd)), "fork_serve")


def get_context():
    """A multiprocessing context (as multiprocessing.get_context("forkserver"))
    whose processes are forked from a template of this program, made at its
    first start: see _anyfork_mp."""
    from _anyfork_mp import get_context as ctx
    return ctx()


# --- the host's own fork ------------------------------------------------------


def _reset_python_state():
    """In a new process: forgets the parent's callbacks, waiting exceptions
    and threads inside the library (none of them exists here), with fresh
    locks (another thread may have held one at the fork)."""
    global _gate, _cb_lock
    _gate = threading.Lock()
    _cb_lock = threading.Lock()
    _callbacks.clear()
    _inbox.clear()
    _inside.clear()


def _after_os_fork():
    """os.fork() (or multiprocessing, or the library's own fork through
    _fork_hook) in a program that used anyfork: the child drops the
    library state it inherited (fork_reset_after_fork) so that both it and
    the parent keep working."""
    _fork_reset_after_fork.raw()
    _reset_python_state()


os.register_at_fork(after_in_child=_after_os_fork)


# --- RPC workers and pools ------------------------------------------------------
#
# A pool (fork_pool_*) forks workers from a template; each worker runs
# _pool_serve in a child and speaks the RPC framing on its comm socket
# (README, "RPC and pools": an 8-byte header, id and length as
# little-endian u32s, then the payload). A request's first byte says what
# it is: _RAW, bytes for the pool's handler; _CALL, a pickled
# (fn, args, kwargs). A reply's first byte: _OK_RAW, _OK_PICKLED (the
# result), _RAISED (the pickled exception and the worker's traceback text).
#
# Replies come back through one C trampoline whose userdata is a token into
# _rpc_futures; the future is set inside wait()/dispatch(), or inside
# Future.result(), which dispatches until its own future is done.

import concurrent.futures as _cf
import pickle as _pickle
import struct as _struct

_RAW, _CALL = b"\x00", b"\x01"
_OK_RAW, _OK_PICKLED, _RAISED = 0, 1, 2
_RETIRE_ID = 0xFFFFFFFF
_HEAD = _struct.Struct("<II")


class _PoolOpts(ctypes.Structure):
    _fields_ = [
        ("max", ctypes.c_uint),
        ("idle", ctypes.c_uint),
        ("load", ctypes.c_uint),
        ("start", ctypes.c_double),
        ("stop", ctypes.c_double),
        ("retire_after", ctypes.c_uint64),
    ]


_REPLY_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_EVENT_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_DESTROYED_CB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p)

_fork_pool_defaults = _sig("fork_pool_defaults", _PoolOpts)
_fork_pool_new = _sig("fork_pool_new", _P, _P, ctypes.c_char_p, ctypes.POINTER(_PoolOpts),
                      _EVENT_CB, ctypes.c_void_p)
_fork_pool_add_template = _sig("fork_pool_add_template", ctypes.c_int, _P, _P)
_fork_pool_call = _sig("fork_pool_call", ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_size_t,
                       _REPLY_CB, ctypes.c_void_p)
_fork_pool_workers = _sig("fork_pool_workers", ctypes.c_int, _P)
_fork_pool_free = _sig("fork_pool_free", None, _P, _DESTROYED_CB, ctypes.c_void_p)
_fork_rpc_start = _sig("fork_rpc_start", _P, _P, ctypes.c_char_p, _EVENT_CB, ctypes.c_void_p)
_fork_rpc_call = _sig("fork_rpc_call", ctypes.c_int, _P, ctypes.c_char_p, ctypes.c_size_t,
                      _REPLY_CB, ctypes.c_void_p)
_fork_rpc_free = _sig("fork_rpc_free", None, _P, _DESTROYED_CB, ctypes.c_void_p)

# token -> (Future, raw: the reply is the result as is), or (list, None):
# a box of Pool.apply or map, which gets (status, reply bytes).
_rpc_futures = {}
# One thread at a time dispatches for Future.result(); the others wait on
# _rpc_cond, notified at each reply and when the dispatching thread stops,
# if any waits there (_rpc_followers[0], changed under _rpc_cond).
_rpc_pump = threading.Lock()
_rpc_cond = threading.Condition(threading.Lock())
_rpc_followers = [0]
_RPC_SLICE_MS = 50
_rpc_tokens = itertools.count(1)


class RemoteError(Exception):
    """A worker's exception that could not be pickled back: its type name,
    message and traceback as text."""


def _decode_reply(data):
    if not data:
        raise OSError(_errno.EPROTO, "anyfork pool: an empty reply (the worker's handler "
                      "did not answer)")
    kind, body = data[0], data[1:]
    if kind == _OK_RAW:
        return body
    if kind == _OK_PICKLED:
        return _pickle.loads(body)
    if kind == _RAISED:
        exc, tb = _pickle.loads(body)
        if isinstance(exc, str):
            exc = RemoteError(exc)
        exc.__cause__ = RemoteError("in the worker:\n" + tb)
        raise exc
    raise OSError(_errno.EPROTO, "anyfork pool: a reply of unknown kind %d" % kind)


def _reply_done(status, data, length, token):
    entry = _rpc_futures.pop(token, None)
    if entry is None:
        return
    fut, raw = entry
    if raw is None:
        # A box (apply, map): the reply as it came, decoded by its reader.
        fut.append((status, ctypes.string_at(data, length) if length > 0 else b""))
        if _rpc_followers[0]:
            with _rpc_cond:
                _rpc_cond.notify_all()
        return
    try:
        if status < 0:
            fut.set_exception(_error(-status, "rpc call"))
            return
        try:
            reply = ctypes.string_at(data, length) if length else b""
            fut.set_result(reply if raw else _decode_reply(reply))
        except BaseException as e:
            fut.set_exception(e)
    except BaseException as e:  # InvalidStateError and the like: never inside ctypes
        _raised_in_callback(e, threading.current_thread())
    finally:
        if _rpc_followers[0]:            # someone waits for a reply in _drive
            with _rpc_cond:
                _rpc_cond.notify_all()


def _event_done(data, length, token):
    with _cb_lock:
        entry = _callbacks.get(token)
    if entry is None:
        return
    cb, owner = entry
    try:
        cb(ctypes.string_at(data, length) if length else b"")
    except BaseException as e:
        _raised_in_callback(e, owner)


def _destroyed_done(status, token):
    entry = _unregister(token)
    if entry is not None:
        entry[0](status)


_reply_tramp = _REPLY_CB(_reply_done)
_event_tramp = _EVENT_CB(_event_done)
_destroyed_tramp = _DESTROYED_CB(_destroyed_done)
_no_event = _EVENT_CB()


class Future(_cf.Future):
    """A concurrent.futures.Future whose result() and exception() dispatch
    (anyfork.wait) until it is done, so no other thread needs to. Others
    waiting on it (concurrent.futures.wait, as_completed) need someone to
    call anyfork.wait() or result()."""

    def result(self, timeout=None):
        return super().result(0 if _drive(self.done, timeout) else timeout)

    def exception(self, timeout=None):
        return super().exception(0 if _drive(self.done, timeout) else timeout)


def _drive(done, timeout):
    """Dispatches until done() (a reply came), unless another thread does:
    then waits for a reply (any: _reply_done notifies _rpc_cond) or for
    the other thread to stop dispatching, and looks again. Returns done()."""
    if done():
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if deadline is None:
            ms = _RPC_SLICE_MS
        else:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ms = min(_RPC_SLICE_MS, int(left * 1000 + 0.999))
        if _rpc_pump.acquire(False):
            try:
                _wait_slice(ms)
            finally:
                _rpc_pump.release()
                if _rpc_followers[0]:
                    with _rpc_cond:
                        _rpc_cond.notify_all()
        else:
            with _rpc_cond:
                _rpc_followers[0] += 1
                try:
                    if not done() and _rpc_pump.locked():
                        _rpc_cond.wait(ms / 1000.0)
                finally:
                    _rpc_followers[0] -= 1
        if done():
            return True


def _wait_slice(ms):
    """One fork_wait of at most ms milliseconds, as wait() does it (signals
    held back, callback exceptions kept for the next public call)."""
    return _in_library(lambda check: _check(_fork_wait(ms), "fork_wait"), False)


def _send_boxed(h, payload):
    """Sends a pool call whose reply _reply_done puts in the list returned
    (as (status, bytes)), for _boxed_result."""
    box = []
    token = next(_rpc_tokens)
    _rpc_futures[token] = (box, None)
    rc = _fork_pool_call(h, payload, len(payload), _reply_tramp, token)
    if rc < 0:
        _rpc_futures.pop(token, None)
        _check(rc, "fork_pool_call")
    return box


def _boxed_result(box, timeout):
    """The result of the call of box (dispatching until its reply came, or
    TimeoutError after timeout seconds), or its exception raised."""
    if not box and not _drive(box.__len__, timeout):
        raise _cf.TimeoutError()
    status, reply = box[0]
    if status < 0:
        raise _error(-status, "rpc call")
    return _decode_reply(reply)


def _submit(call, h, payload, what, raw=False):
    fut = Future()
    fut.set_running_or_notify_cancel()     # sent at once: it cannot be cancelled
    token = next(_rpc_tokens)
    _rpc_futures[token] = (fut, raw)
    rc = call(h, payload, len(payload), _reply_tramp, token)
    if rc < 0:
        _rpc_futures.pop(token, None)
        _check(rc, what)
    return fut


# Handlers the pool's workers run, registered before the pool's template is
# forked (so any callable works: lambdas, closures, bound methods).
_pool_handlers = {}
_pool_keys = itertools.count(1)


def _free_gracefully(owner, free, wait, ended=None):
    """Frees owner's handle (a Pool's or an RPC's) with free(h, tramp,
    token), fork_pool_free or fork_rpc_free: calls made are still answered,
    then the workers read EOF and exit, and the destroyed callback passes
    the status to ended. owner's event callback stays registered until
    then (events may come until the last worker is gone). With wait,
    dispatches until it has come; else a later anyfork.wait() does."""
    with owner._lock:
        h, owner._h = owner._h, None
    if h is None:
        return
    done = []
    ev, owner._event_token = owner._event_token, None

    def destroyed(status):
        done.append(status)
        if ended is not None:
            ended(status)
        if ev is not None:
            _unregister(ev)
    free(h, _destroyed_tramp, _register(destroyed))
    if wait:
        while not done:
            _wait(0.1, False)


class Pool(_cf.Executor):
    """A pool of worker processes forked from a template (fork_pool_new),
    driven by this module's wait()/dispatch(); a concurrent.futures.Executor.

    submit(fn, *args, **kwargs) and map(fn, *iterables) pickle the call,
    run fn in a worker and pickle back its result or exception. With
    handler=, call(request) sends request to handler in a worker:
    handler(bytes) -> bytes with serializer=None, or any picklable objects
    with the default serializer (pickle).

    template: None forks this interpreter now (anyfork.template()), so
    the workers have everything defined so far; or a Process prepared as a
    template (e.g. Process.new_python()), consumed, whose children must
    then find handler by a "module.function" name. The settings are
    AnyEvent::Fork::Pool's (fork_pool_opts): max_workers (default: the
    number of CPUs), idle, load, start, stop (seconds), retire_after.
    on_event(bytes) gets what workers send with anyfork.event().

    A worker that dies fails its calls with BrokenPipeError; other calls
    are unaffected and the pool starts a replacement. shutdown() (or the
    with block's end) is graceful: calls made are answered, then the
    workers read EOF and exit.
    """

    def __init__(self, max_workers=None, *, handler=None, serializer=_pickle, template=None,
                 idle=None, load=None, start=None, stop=None, retire_after=None,
                 on_event=None):
        if serializer is not None and serializer is not _pickle:
            raise ValueError("serializer is pickle (the default) or None (bytes)")
        self._raw = serializer is None
        key = b""
        if isinstance(handler, str):
            key = _cstr(handler, "handler")
        elif handler is not None:
            if not callable(handler):
                raise TypeError("handler must be callable or a 'module.function' name")
            key = b"#%d" % next(_pool_keys)
            _pool_handlers[key] = handler
        opts = _fork_pool_defaults()
        for name, v in (("max", max_workers), ("idle", idle), ("load", load),
                        ("start", start), ("stop", stop), ("retire_after", retire_after)):
            if v is not None:
                setattr(opts, name, v)
        try:
            tmpl = template if template is not None else globals()["template"]()
            tmpl.send_arg(key).send_arg(b"raw" if self._raw else b"pickle")
        finally:
            if key.startswith(b"#"):
                _pool_handlers.pop(key, None)   # the template has its copy
        self._event_token = None
        if on_event is not None:
            self._event_token = _register(on_event)
        h = tmpl._take("Pool")
        ptr = _fork_pool_new(h, b"anyfork._pool_serve", ctypes.byref(opts),
                             _event_tramp if on_event is not None else _no_event,
                             self._event_token)
        if not ptr:
            if self._event_token is not None:
                _unregister(self._event_token)
            raise _error(None, "fork_pool_new")
        self._h = ptr
        self._has_handler = handler is not None
        self._lock = threading.Lock()

    def _handle(self, what):
        h = self._h
        if h is None:
            raise RuntimeError("%s: the pool was shut down" % what)
        return h

    def call(self, request):
        """Sends request to the pool's handler; returns a Future of its
        reply (bytes with serializer=None)."""
        if not self._has_handler:
            raise TypeError("call: this pool has no handler (Pool(handler=...))")
        payload = _RAW + (_bytes(request, "request") if self._raw
                          else _pickle.dumps(request, _pickle.HIGHEST_PROTOCOL))
        return _submit(_fork_pool_call, self._handle("call"), payload, "fork_pool_call")

    def apply(self, fn, /, *args, **kwargs):
        """Runs fn(*args, **kwargs) in a worker and returns its result (or
        raises its exception), as submit(...).result() does, without the
        Future: multiprocessing.Pool.apply's counterpart."""
        payload = _CALL + _pickle.dumps((fn, args, kwargs), _pickle.HIGHEST_PROTOCOL)
        return _boxed_result(_send_boxed(self._handle("apply"), payload), None)

    def submit(self, fn, /, *args, **kwargs):
        """Runs fn(*args, **kwargs) in a worker (fn and the arguments are
        pickled: fn by reference, so a module-level function)."""
        payload = _CALL + _pickle.dumps((fn, args, kwargs), _pickle.HIGHEST_PROTOCOL)
        return _submit(_fork_pool_call, self._handle("submit"), payload, "fork_pool_call")

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        """As Executor.map: results in order, each call sent at once;
        chunksize > 1 sends that many calls per request."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        deadline = None if timeout is None else time.monotonic() + timeout
        h = self._handle("map")
        dumps, proto = _pickle.dumps, _pickle.HIGHEST_PROTOCOL
        if chunksize == 1:
            calls = [(fn, a, {}) for a in zip(*iterables)]
        else:
            items = list(zip(*iterables))
            calls = [(_run_chunk, (fn, items[i:i + chunksize]), {})
                     for i in range(0, len(items), chunksize)]
        # Replies land in boxes (as apply's): no Future per call.
        boxes = [_send_boxed(h, _CALL + dumps(c, proto)) for c in calls]

        def results():
            for box in boxes:
                left = None if deadline is None else deadline - time.monotonic()
                r = _boxed_result(box, left)
                if chunksize == 1:
                    yield r
                else:
                    yield from r
        return results()

    def workers(self):
        """How many workers the pool has now (retiring ones included)."""
        return _fork_pool_workers(self._handle("workers"))

    def shutdown(self, wait=True, *, cancel_futures=False):
        """Gracefully: the calls made are still answered, then workers read
        EOF and exit. wait=True dispatches until they have; with
        wait=False, a later anyfork.wait() finishes the job."""
        _free_gracefully(self, _fork_pool_free, wait)

    def __del__(self):
        try:
            if getattr(self, "_h", None) is not None:
                self.shutdown(wait=False)
        except Exception:
            pass


class RPC(object):
    """One RPC worker (fork_rpc_start): a process serving requests on its
    comm socket, e.g. a program speaking the framing on stdin and stdout
    (RPC.exec). call(bytes) returns a Future of the reply (bytes); a
    worker that dies fails its calls with BrokenPipeError (or
    ConnectionResetError). close() is graceful: calls made are answered,
    then the worker reads EOF."""

    def __init__(self, process, name, on_event=None):
        """Makes process (consumed) enter name, a function serving RPC: a
        C function calling fork_rpc_serve, or anyfork_exec."""
        n = _cstr(name, "function name")
        self._event_token = _register(on_event) if on_event is not None else None
        h = process._take("RPC")
        ptr = _fork_rpc_start(h, n, _event_tramp if on_event is not None else _no_event,
                              self._event_token)
        if not ptr:
            if self._event_token is not None:
                _unregister(self._event_token)
            raise _error(None, "fork_rpc_start")
        self._h = ptr
        self._lock = threading.Lock()
        self.status = None      # after close(): 0, or the OSError if it had ended

    @classmethod
    def exec(cls, argv, process=None, on_event=None):
        """Runs a program speaking the framing with the exec builtin, the
        comm socket as its stdin and stdout; process defaults to
        Process.new()."""
        p = process if process is not None else Process.new()
        p.eval("anyfork_comm_fd", "0", "1")
        for a in argv:
            p.send_arg(a)
        return cls(p, "anyfork_exec", on_event)

    def call(self, request):
        """Sends request (bytes); returns a Future of the reply."""
        h = self._h
        if h is None:
            raise RuntimeError("call: the worker was closed")
        b = _bytes(request, "request")
        return _submit(_fork_rpc_call, h, b, "fork_rpc_call", raw=True)

    def close(self, wait=True):
        """Gracefully ends the worker; with wait, dispatches until it has."""
        def ended(status):
            self.status = status if status >= 0 else _error(-status, "rpc")
        _free_gracefully(self, _fork_rpc_free, wait, ended)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if getattr(self, "_h", None) is not None:
                self.close(wait=False)
        except Exception:
            pass


def _run_chunk(fn, items):
    return [fn(*a) for a in items]


# --- the worker side (in a pool's children) ------------------------------------

_worker_sock = [None]
_worker_out = [[]]        # replies of this batch not written yet


def _spin_window():
    """Seconds a worker keeps looking for its next request before it
    sleeps: ANYFORK_SPIN_US microseconds (0: off; at most one second), 50
    when unset or not a number, as the library's own worker loop."""
    try:
        us = int(os.environ.get("ANYFORK_SPIN_US", "50").strip())
    except ValueError:
        us = 50
    return min(max(us, 0), 1000000) / 1e6


def _recv_next(sock, spin):
    """The next bytes from the caller (b"" at EOF). Everything read is
    answered by now, and a caller making one call at a time sends the next
    within microseconds: look without blocking, yielding the CPU between
    looks, for up to spin seconds, then sleep in recv (a caller on another
    CPU then needs no wake-up of this process to reach it)."""
    if spin:
        deadline = time.monotonic() + spin
        while True:
            try:
                return sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                break
            os.sched_yield()
    return sock.recv(1 << 16)


def event(data):
    """In a pool's worker: sends data (bytes) to the pool's on_event, in
    order with the replies."""
    sock = _worker_sock[0]
    if sock is None:
        raise RuntimeError("anyfork.event: not in a pool's worker")
    b = _bytes(data, "event")
    out = _worker_out[0]
    out.append(_HEAD.pack(0, len(b)))
    out.append(b)
    sock.sendall(b"".join(out))         # after the replies before it
    del out[:]


def retire():
    """In a pool's worker: asks to be retired (it answers what it has,
    gets nothing new, and is replaced)."""
    sock = _worker_sock[0]
    if sock is None:
        raise RuntimeError("anyfork.retire: not in a pool's worker")
    out = _worker_out[0]
    out.append(_HEAD.pack(_RETIRE_ID, 0))
    sock.sendall(b"".join(out))
    del out[:]


_OK_RAW_B, _OK_PICKLED_B = bytes([_OK_RAW]), bytes([_OK_PICKLED])


def _answer(handler, raw, req):
    try:
        kind = req[:1]
        if kind == _RAW:
            if handler is None:
                raise TypeError("this pool has no handler")
            if raw:
                out = handler(req[1:])
                return _OK_RAW_B + _bytes(out, "the handler's reply")
            res = handler(_pickle.loads(req[1:]))
            return _OK_PICKLED_B + _pickle.dumps(res, _pickle.HIGHEST_PROTOCOL)
        if kind == _CALL:
            fn, args, kwargs = _pickle.loads(req[1:])
            return _OK_PICKLED_B + _pickle.dumps(fn(*args, **kwargs), _pickle.HIGHEST_PROTOCOL)
        raise ValueError("a request of unknown kind %r" % kind)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:
        tb = traceback.format_exc()
        try:
            body = _pickle.dumps((e, tb), _pickle.HIGHEST_PROTOCOL)
        except Exception:
            body = _pickle.dumps(("%s: %s" % (type(e).__name__, e), tb),
                                 _pickle.HIGHEST_PROTOCOL)
        return bytes([_RAISED]) + body


def _pool_serve(sock, key, serializer):
    """A pool's worker (run in a child of the pool's template): answers
    requests in order until the caller closes its side."""
    if key.startswith(b"#"):
        handler = _pool_handlers.get(key)
    elif key:
        handler = _resolve(key.decode("utf-8", "surrogateescape"))
    else:
        handler = None
    raw = serializer == b"raw"
    sock.setblocking(True)
    _worker_sock[0] = sock
    buf = bytearray()         # the start of a frame not complete yet
    head = _HEAD.size
    unpack, pack = _HEAD.unpack_from, _HEAD.pack
    out = _worker_out[0]
    spin = _spin_window()
    while True:
        # 64 kB at most: a larger buffer is mmap'd and unmapped per read.
        chunk = _recv_next(sock, spin)
        if not chunk:
            return 0
        if buf:
            buf += chunk
            data = buf
        else:
            data = chunk
        pos, end = 0, len(data)
        while end - pos >= head:
            rid, n = unpack(data, pos)
            if end - pos - head < n:
                break
            req = bytes(data[pos + head:pos + head + n])
            pos += head + n
            rep = _answer(handler, raw, req)
            out.append(pack(rid, len(rep)))
            out.append(rep)
        if data is buf:
            del buf[:pos]
        elif pos < end:
            buf += data[pos:]
        if out:
            sock.sendall(b"".join(out))
            del out[:]
