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

The library is found through $ANYFORK_LIB (a path or a name), else
ctypes.util.find_library("anyfork"), else "libanyfork.so.0".

Errors of the C library raise OSError(errno, fork_last_error() text).
Callbacks run only inside wait() or dispatch(); an exception raised by one
comes out of that call.
"""

import ctypes
import ctypes.util
import errno as _errno
import importlib
import itertools
import os
import re
import socket
import sys
import threading
import traceback

__all__ = [
    "Process", "template", "wait", "dispatch", "loop_fd", "pending",
    "child_args", "serve", "add_path", "import_modules", "library_path",
]


def _find_library():
    override = os.environ.get("ANYFORK_LIB")
    if override:
        return override
    return ctypes.util.find_library("anyfork") or "libanyfork.so.0"


library_path = _find_library()
_lib = ctypes.CDLL(library_path)


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
_DISPATCH_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                ctypes.POINTER(_ForkArg), ctypes.c_size_t, ctypes.c_void_p)

_P = ctypes.c_void_p
_STRV = ctypes.POINTER(ctypes.c_char_p)


def _sig(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_fork_new = _sig("fork_new", _P)
_fork_new_exec = _sig("fork_new_exec", _P)
_fork_new_exec_argv = _sig("fork_new_exec_argv", _P, _STRV)
_fork_template = _sig("fork_template", _P)
_fork_fork = _sig("fork_fork", _P, _P)
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
_fork_serve = _sig("fork_serve", ctypes.c_int, ctypes.c_int)
_fork_child_args = _sig("fork_child_args", ctypes.POINTER(_ForkArg), ctypes.POINTER(ctypes.c_size_t))


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
# One C trampoline per kind; the userdata is a token into _callbacks. Each
# token is removed when its callback runs (the library runs each exactly
# once) or when the registering call fails (then it never runs).

_callbacks = {}
_tokens = itertools.count(1)
_cb_lock = threading.Lock()
_raised = []          # exceptions from callbacks, re-raised by wait/dispatch


def _register(fn):
    with _cb_lock:
        token = next(_tokens)
        _callbacks[token] = fn
    return token


def _unregister(token):
    with _cb_lock:
        return _callbacks.pop(token, None)


def _comm_socket(fd):
    """A blocking socket object owning the caller's end of a comm socket."""
    s = socket.socket(fileno=fd)
    s.setblocking(True)
    return s


def _run_done(fd, token):
    cb = _unregister(token)
    if cb is None:
        if fd >= 0:
            os.close(fd)
        return
    try:
        if fd < 0:
            cb(None, _error(-fd, "run"))
        else:
            cb(_comm_socket(fd), None)
    except BaseException as e:  # never let it vanish inside ctypes
        _raised.append(e)


def _exit_done(pid, status, token):
    cb = _unregister(token)
    if cb is None:
        return
    try:
        if status < 0:
            cb(pid, None, _error(-status, "exit"))
        else:
            cb(pid, status, None)
    except BaseException as e:
        _raised.append(e)


_run_tramp = _RUN_CB(_run_done)
_exit_tramp = _EXIT_CB(_exit_done)


def _reraise():
    if _raised:
        e = _raised.pop(0)
        del _raised[:]
        raise e


def wait(timeout=None):
    """Dispatches until at least one callback ran, timeout seconds passed
    (None: no limit) or no callback waits at all; returns how many ran."""
    ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
    n = _check(_fork_wait(ms), "fork_wait")
    _reraise()
    return n


def dispatch():
    """Does what can be done without blocking and runs the callbacks due;
    for programs watching loop_fd() in their own loop."""
    n = _check(_fork_loop_dispatch(), "fork_loop_dispatch")
    _reraise()
    return n


def loop_fd():
    """The one fd an event loop watches (level-triggered, readable while
    dispatch() has work). It belongs to the library: never close it."""
    return _check(_fork_loop_fd(), "fork_loop_fd")


def pending():
    """The number of run and exit callbacks that have not run yet."""
    return _fork_pending()


def _await(register):
    """Registers a run callback through register(cb) and dispatches until it
    ran: returns the socket or raises the error."""
    box = []
    register(lambda sock, err: box.append((sock, err)))
    while not box:
        # Another thread's wait() may run our callback: look again often.
        wait(0.1)
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
        addr = ctypes.cast(_fork_new, ctypes.c_void_p).value
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

_dispatch_pid = [None]


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
    if rc is None or rc is True:
        return 0
    if rc is False:
        return 1
    if isinstance(rc, int):
        return rc & 0xFF
    sys.stderr.write("anyfork[%d]: %r\n" % (os.getpid(), rc))
    return 1


def _dispatch(kind, name, fd, args, nargs, _ud):
    """The dispatcher, in a child: calls the Python function name."""
    if _dispatch_pid[0] != os.getpid():
        # First Python code in this forked process: do what os.fork() does
        # in a child (reinitialise the interpreter's locks and threads, run
        # the at-fork hooks: random reseeds itself, threading forgets the
        # parent's threads).
        _dispatch_pid[0] = os.getpid()
        try:
            ctypes.pythonapi.PyOS_AfterFork_Child()
        except Exception:
            pass
    text = name.decode("utf-8", "surrogateescape")
    try:
        try:
            fn = _resolve(text)
        except Exception as e:
            sys.stderr.write("anyfork[%d]: %s %s: %s: %s\n" % (
                os.getpid(), "run" if kind == _FORK_CALL_RUN else "eval", text,
                type(e).__name__, e))
            return 127
        pyargs = [_arg(args[i]) for i in range(nargs)]
        if kind != _FORK_CALL_RUN:
            return _status(fn(*pyargs))
        sock = socket.socket(fileno=fd)
        try:
            return _status(fn(sock, *pyargs))
        finally:
            # The process exit closes it; the object must not (no warning).
            if sock.fileno() >= 0:
                sock.detach()
    except SystemExit as e:
        return _status(e.code if isinstance(e.code, int) or e.code is None else 1)
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


def _set_dispatch():
    _dispatch_pid[0] = os.getpid()
    _fork_set_dispatch(_dispatch_fn, None)


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


def template():
    """Forks this interpreter now; the copy is a template whose children
    (process.fork()) run Python functions of this program by name, with
    everything prepared so far in memory. Call it while this process has
    one thread. The copy closes every fd but 0, 1, 2: send what it needs."""
    _set_dispatch()
    return Process._make(_fork_template(), "fork_template")


def serve():
    """For a server started by Process.new_python() (or new_exec_argv):
    serves on $ANYFORK_FD, running Python functions; returns only on failure."""
    fd = os.environ.pop("ANYFORK_FD", None)
    if fd is None:
        raise OSError(_errno.EINVAL, "serve: ANYFORK_FD is not set")
    _set_dispatch()
    _check(_fork_serve(int(fd)), "fork_serve")
