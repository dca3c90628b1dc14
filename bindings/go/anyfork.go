// Package anyfork creates processes without forking the Go program.
//
// A small template server (anyfork-serve, or a template prepared by the
// caller) forks on request; this package talks to it through libanyfork's
// C API. A Go program cannot fork itself safely -- the Go runtime is
// multi-threaded, and fork copies only the calling thread, so the copy
// would run with the scheduler's and the allocator's locks in whatever
// state other threads left them; syscall.ForkExec exists only to exec
// immediately. anyfork is how a Go program gets template processes: the
// forking happens in a separate, single-threaded server, and the Go side
// only sends file descriptors, strings and the name of the function the
// new process enters.
//
// A Proc is a process that has not run yet. Commands queue on it in order
// (SendFd, SendArg, Require, Eval, Fork) and one of Run, RunFunc or Exec
// ends it; Free (or the garbage collector) abandons it, and the process
// then exits. Every failure of the C library becomes an *Error carrying
// fork_last_error()'s text and the errno.
//
// Callbacks (RunFunc, ExecFunc, OnExit) run only inside Wait or Dispatch,
// on the goroutine that calls them. Run and Exec wait for their own
// result by calling Wait, so other callbacks that are due run there too.
package anyfork

/*
#include <stdlib.h>
#include <anyfork.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Error is a failure reported by libanyfork.
type Error struct {
	// Op is the method of this package that failed, e.g. "SendFd".
	Op string
	// Errno is the errno of the failed C call (for calls that return a
	// pointer, fork_last_errno's), or 0 when it reports none.
	Errno syscall.Errno
	// Msg is fork_last_error()'s text: the C call, its object, the cause.
	Msg string
}

func (e *Error) Error() string {
	return "anyfork: " + e.Op + ": " + e.Msg
}

// Unwrap gives the errno, so errors.Is(err, syscall.EPIPE) works.
func (e *Error) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// lastError builds an *Error from this thread's fork_last_error(); the
// caller must have locked the goroutine to its thread since the C call.
func lastError(op string, errno syscall.Errno) *Error {
	return &Error{Op: op, Errno: errno, Msg: C.GoString(C.fork_last_error())}
}

// intCall runs one C call returning int and, on failure, reads the error
// message on the same OS thread (it is thread-local in the library).
func intCall(op string, f func() C.int) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := f()
	if r < 0 {
		return int(r), lastError(op, syscall.Errno(-r))
	}
	return int(r), nil
}

// procCall runs one C call returning a handle, turning NULL into an error.
func procCall(op string, f func() *C.fork_proc) (*Proc, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h := f()
	if h == nil {
		return nil, lastError(op, syscall.Errno(-C.fork_last_errno()))
	}
	return wrap(h), nil
}

const errConsumed = "the process was already run or freed"

// Proc is a process that has not entered its run function yet. Its
// methods may be called from any goroutine; they are serialised.
type Proc struct {
	mu   sync.Mutex
	h    *C.fork_proc // nil once run or freed
	exit *exitState   // set by the first OnExit
}

func wrap(h *C.fork_proc) *Proc {
	p := &Proc{h: h}
	runtime.SetFinalizer(p, (*Proc).Free)
	return p
}

// New creates a process by forking the library's default template (an
// anyfork-serve spawned on first use and shared by the whole program).
func New() (*Proc, error) {
	return procCall("New", func() *C.fork_proc { return C.fork_new() })
}

// NewExec spawns a fresh anyfork-serve, a direct child of this program,
// to use as a template or a process of its own.
func NewExec() (*Proc, error) {
	return procCall("NewExec", func() *C.fork_proc { return C.fork_new_exec() })
}

// NewExecArgv spawns a custom server: argv[0] (searched in PATH without a
// slash) is told its socket in $ANYFORK_FD and must call fork_serve on it.
func NewExecArgv(argv []string) (*Proc, error) {
	if err := checkNUL("NewExecArgv", argv...); err != nil {
		return nil, err
	}
	cargv := cStrings(argv)
	defer freeStrings(cargv)
	return procCall("NewExecArgv", func() *C.fork_proc {
		return C.fork_new_exec_argv(cargv)
	})
}

// NewRemote starts a template on another machine: argv's stdin and stdout
// must reach `anyfork-serve --stdio` there, for example
// NewRemote("ssh", "-o", "BatchMode=yes", "host", "anyfork-serve", "--stdio").
// It blocks for the login; an *Error with ECONNREFUSED says why a start
// failed. Its processes run C functions of libraries required there and
// the builtins, with the remote pids and exit statuses; SendFd fails with
// EOPNOTSUPP (fds cannot cross machines). Each process's comm socket is a
// local socket, so RPC workers and pools work on them unchanged.
func NewRemote(argv ...string) (*Proc, error) {
	if err := checkNUL("NewRemote", argv...); err != nil {
		return nil, err
	}
	cargv := cStrings(argv)
	defer freeStrings(cargv)
	return procCall("NewRemote", func() *C.fork_proc {
		return C.fork_new_remote(cargv)
	})
}

// use runs f with the handle under the lock, or fails if there is none.
func (p *Proc) use(op string, f func(h *C.fork_proc) C.int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h == nil {
		return &Error{Op: op, Errno: syscall.EINVAL, Msg: errConsumed}
	}
	_, err := intCall(op, func() C.int { return f(p.h) })
	runtime.KeepAlive(p)
	return err
}

// take removes the handle for a call that consumes it.
func (p *Proc) take(op string) (*C.fork_proc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.h
	if h == nil {
		return nil, &Error{Op: op, Errno: syscall.EINVAL, Msg: errConsumed}
	}
	p.h = nil
	return h, nil
}

// Fork forks this process, which becomes (or stays) a template: the child
// starts with everything sent to p so far. p stays usable.
func (p *Proc) Fork() (*Proc, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h == nil {
		return nil, &Error{Op: "Fork", Errno: syscall.EINVAL, Msg: errConsumed}
	}
	return procCall("Fork", func() *C.fork_proc { return C.fork_fork(p.h) })
}

// Ahead keeps n processes forked from p ahead of time (0, the default:
// none; at most 64), so that Fork hands out one already forked: what is
// sent to it goes straight to it, with no fork on the way. The
// replacement is forked 2 ms after a hand-out, by the dispatch that
// follows (Wait, or a loop watching LoopFd); forks that come faster refill
// at once. Sending p anything replaces the waiting processes. For
// creations that come now and then (see fork_ahead in anyfork.h).
func (p *Proc) Ahead(n uint) error {
	return p.use("Ahead", func(h *C.fork_proc) C.int {
		return C.fork_ahead(h, C.uint(n))
	})
}

// SendFd sends the file descriptor of c (an *os.File, a net.Conn, a
// listener: anything with SyscallConn). The library duplicates it at once:
// c stays the caller's and may be closed right after. Unlike c.Fd(), this
// leaves the descriptor's blocking mode alone.
func (p *Proc) SendFd(c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return &Error{Op: "SendFd", Errno: syscall.EBADF, Msg: err.Error()}
	}
	var sendErr error
	// Control fails only when the file or connection is closed.
	if err := rc.Control(func(fd uintptr) { sendErr = p.SendFdNum(int(fd)) }); err != nil {
		return &Error{Op: "SendFd", Errno: syscall.EBADF, Msg: err.Error()}
	}
	return sendErr
}

// SendFdNum sends a raw file descriptor number, duplicated at once.
func (p *Proc) SendFdNum(fd int) error {
	return p.use("SendFd", func(h *C.fork_proc) C.int { return C.fork_send_fd(h, C.int(fd)) })
}

// SendArg sends a byte string; it becomes the next argument of the run
// function. The bytes are copied.
func (p *Proc) SendArg(b []byte) error {
	return p.use("SendArg", func(h *C.fork_proc) C.int {
		var ptr unsafe.Pointer
		if len(b) > 0 {
			ptr = unsafe.Pointer(&b[0])
		}
		return C.fork_send_arg(h, ptr, C.size_t(len(b)))
	})
}

// SendString sends a string, as SendArg does.
func (p *Proc) SendString(s string) error {
	return p.SendArg([]byte(s))
}

// Require loads a shared library into the process (dlopen). If it cannot
// be loaded the process reports why on its stderr and exits 127.
func (p *Proc) Require(library string) error {
	if err := checkNUL("Require", library); err != nil {
		return err
	}
	cl := C.CString(library)
	defer C.free(unsafe.Pointer(cl))
	return p.use("Require", func(h *C.fork_proc) C.int { return C.fork_require(h, cl) })
}

// Eval calls `int name(const fork_arg *args, size_t nargs)` in the process
// now with args, e.g. the builtins anyfork_setenv, anyfork_chdir or
// anyfork_comm_fd before Exec. A missing function or a non-zero return
// makes the process exit.
func (p *Proc) Eval(name string, args ...string) error {
	if err := checkNUL("Eval", append([]string{name}, args...)...); err != nil {
		return err
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	ca := cStrings(args)
	defer freeStrings(ca)
	return p.use("Eval", func(h *C.fork_proc) C.int {
		return C.fork_eval(h, cn, ca, C.size_t(len(args)))
	})
}

// Pid returns the process's pid; for a forked process it may wait (up to
// 10 s) for the template's report.
func (p *Proc) Pid() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h == nil {
		return -1, &Error{Op: "Pid", Errno: syscall.EINVAL, Msg: errConsumed}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pid := C.fork_pid(p.h)
	if pid < 0 {
		return -1, lastError("Pid", 0)
	}
	return int(pid), nil
}

// ExitFunc receives a process's pid and wait status, or err when the
// status cannot be known (err then carries the library's reason).
type ExitFunc func(pid int, status syscall.WaitStatus, err error)

type exitState struct {
	mu sync.Mutex
	cb ExitFunc
}

// OnExit registers cb to run (from Wait or Dispatch) once the process has
// exited. Call it before running the process; a second call replaces cb.
func (p *Proc) OnExit(cb ExitFunc) error {
	if cb == nil {
		return &Error{Op: "OnExit", Errno: syscall.EINVAL, Msg: "the callback is nil"}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h == nil {
		return &Error{Op: "OnExit", Errno: syscall.EINVAL, Msg: errConsumed}
	}
	if p.exit != nil {
		p.exit.mu.Lock()
		p.exit.cb = cb
		p.exit.mu.Unlock()
		return nil
	}
	st := &exitState{cb: cb}
	h := newHandle(st)
	if _, err := intCall("OnExit", func() C.int { return C.afgo_on_exit(p.h, C.uintptr_t(h)) }); err != nil {
		deleteHandle(h)
		return err
	}
	p.exit = st
	return nil
}

// RunFunc makes the process enter the C function name (found with dlsym
// in the server, libraries loaded with Require, or a builtin such as
// anyfork_exit) and consumes p, even when the library fails (a name this
// package refuses, with a NUL byte, leaves p untouched). cb then runs once, from
// Wait or Dispatch, with this side of the comm socket (nonblocking, in
// Go's poller, owned by cb: close it) or with the error that stopped the
// delivery. A nil cb lets the library close the socket itself.
func (p *Proc) RunFunc(name string, cb func(*os.File, error)) error {
	if err := checkNUL("Run", name); err != nil {
		return err
	}
	h, err := p.take("Run")
	if err != nil {
		return err
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	ud := newRunHandle("Run", cb)
	if _, err := intCall("Run", func() C.int { return C.afgo_run(h, cn, C.uintptr_t(ud)) }); err != nil {
		deleteHandle(ud)
		return err
	}
	return nil
}

// Run is RunFunc that waits for the comm socket and returns it. It waits
// through Wait, so callbacks of other goroutines that are due may run
// here; if one of them panics, Run panics as Wait does (and this
// process's socket, delivered later, is closed by the garbage collector).
func (p *Proc) Run(name string) (*os.File, error) {
	w := make(runWaiter, 1)
	if err := p.RunFunc(name, w.deliver); err != nil {
		return nil, err
	}
	return w.await()
}

// ExecFunc runs a program in the process with the anyfork_exec builtin
// and consumes p as RunFunc does: argv follows any strings sent before
// (argv[0] is searched in PATH without a slash); the fds sent become the
// program's 0, 1, 2, ... in order. env nil keeps the template's
// environment; otherwise the environment is exactly env (NAME=VALUE).
// An exec failure is written to the comm socket (exit status 127). cb as
// for RunFunc.
func (p *Proc) ExecFunc(argv, env []string, cb func(*os.File, error)) error {
	err := checkNUL("Exec", argv...)
	if err == nil {
		err = checkNUL("Exec", env...)
	}
	if err != nil {
		return err
	}
	h, err := p.take("Exec")
	if err != nil {
		return err
	}
	cargv := cStrings(argv)
	defer freeStrings(cargv)
	var cenv **C.char
	if env != nil {
		e := cStrings(env)
		defer freeStrings(e)
		cenv = e
	}
	ud := newRunHandle("Exec", cb)
	if _, err := intCall("Exec", func() C.int {
		return C.afgo_exec(h, cargv, cenv, C.uintptr_t(ud))
	}); err != nil {
		deleteHandle(ud)
		return err
	}
	return nil
}

// Exec is ExecFunc that waits for the comm socket and returns it.
func (p *Proc) Exec(argv, env []string) (*os.File, error) {
	w := make(runWaiter, 1)
	if err := p.ExecFunc(argv, env, w.deliver); err != nil {
		return nil, err
	}
	return w.await()
}

// Free abandons a process that has not run: what was queued is still
// delivered, then the process sees EOF and exits. Free after a run, or a
// second Free, does nothing. The garbage collector frees forgotten Procs.
func (p *Proc) Free() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h != nil {
		C.fork_free(p.h)
		p.h = nil
	}
}

// Wait dispatches until at least one callback ran, timeout passed
// (negative: no limit), or no callback is waiting at all. It returns the
// number of callbacks run.
//
// A panic in a callback that this Wait ran comes out of this Wait, once
// the callbacks due with it have run too (each exactly once): with the
// callback's panic value, or a CallbackPanics holding every value when
// several panicked. It never goes to another goroutine's call.
func Wait(timeout time.Duration) (int, error) {
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	return intCall("Wait", func() C.int {
		return withSink(func(sink C.uintptr_t) C.int { return C.afgo_wait(C.int(ms), sink) })
	})
}

// Dispatch does the work that can be done without blocking and runs the
// callbacks that are due; for programs that poll LoopFd themselves. Panics
// in those callbacks come out of it as out of Wait.
func Dispatch() (int, error) {
	return intCall("Dispatch", func() C.int {
		return withSink(func(sink C.uintptr_t) C.int { return C.afgo_dispatch(sink) })
	})
}

// LoopFd is the one fd, readable while Dispatch has work, that an event
// loop can watch (level-triggered). It belongs to the library.
func LoopFd() (int, error) {
	return intCall("LoopFd", func() C.int { return C.fork_loop_fd() })
}

// Pending is the number of run and exit callbacks not run yet.
func Pending() int {
	return int(C.fork_pending())
}

// runResult is what a synchronous Run or Exec waits for.
type runResult struct {
	f   *os.File
	err error
}

type runWaiter chan runResult

func (w runWaiter) deliver(f *os.File, err error) { w <- runResult{f, err} }

// await dispatches until this run's callback has run. Another goroutine's
// Wait may run it meanwhile, so Wait is called with a short timeout and
// the channel checked in between.
func (w runWaiter) await() (*os.File, error) {
	for {
		select {
		case r := <-w:
			return r.f, r.err
		default:
		}
		if _, err := Wait(100 * time.Millisecond); err != nil {
			// A late callback's *os.File is closed by its finalizer.
			return nil, err
		}
	}
}

// checkNUL refuses strings that C would silently cut at a NUL byte.
func checkNUL(op string, ss ...string) error {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return &Error{Op: op, Errno: syscall.EINVAL, Msg: fmt.Sprintf("%q contains a NUL byte", s)}
		}
	}
	return nil
}

// cStrings copies ss into a NULL-terminated C array of C strings.
func cStrings(ss []string) **C.char {
	ptrSize := unsafe.Sizeof((*C.char)(nil))
	arr := (*[1 << 28]*C.char)(C.malloc(C.size_t(uintptr(len(ss)+1) * ptrSize)))
	for i, s := range ss {
		arr[i] = C.CString(s)
	}
	arr[len(ss)] = nil
	return &arr[0]
}

func freeStrings(a **C.char) {
	arr := (*[1 << 28]*C.char)(unsafe.Pointer(a))
	for i := 0; arr[i] != nil; i++ {
		C.free(unsafe.Pointer(arr[i]))
	}
	C.free(unsafe.Pointer(a))
}
