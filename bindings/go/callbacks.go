package anyfork

// The library calls back into Go through the C trampolines in shim.c,
// which pass the cgo.Handle given as userdata. Each handle is deleted when
// its callback runs (the library runs each exactly once) or when the call
// that registered it fails (then it never runs).

/*
#include <stdint.h>
#include <sys/types.h>
*/
import "C"

import (
	"os"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"syscall"
)

// liveHandles counts the handles the library holds (the tests check that
// none is left behind).
var liveHandles int64

func newHandle(v interface{}) cgo.Handle {
	atomic.AddInt64(&liveHandles, 1)
	return cgo.NewHandle(v)
}

func deleteHandle(h cgo.Handle) {
	if h != 0 {
		h.Delete()
		atomic.AddInt64(&liveHandles, -1)
	}
}

// runCallback is what a run handle holds: the callback and the method
// that registered it (for errors).
type runCallback struct {
	op string
	cb func(*os.File, error)
}

// newRunHandle wraps a run callback for the library; 0 for a nil cb.
func newRunHandle(op string, cb func(*os.File, error)) cgo.Handle {
	if cb == nil {
		return 0
	}
	return newHandle(runCallback{op, cb})
}

//export goRunDone
func goRunDone(fd C.int, ud C.uintptr_t, msg *C.char) {
	h := cgo.Handle(ud)
	rc := h.Value().(runCallback)
	deleteHandle(h)
	defer catch()
	if fd < 0 {
		rc.cb(nil, &Error{Op: rc.op, Errno: syscall.Errno(-fd), Msg: C.GoString(msg)})
		return
	}
	// The fd is nonblocking: os.NewFile puts it in Go's poller, so reads
	// block only the goroutine and deadlines work.
	rc.cb(os.NewFile(uintptr(fd), "anyfork-comm"), nil)
}

//export goExitDone
func goExitDone(pid C.pid_t, status C.int, ud C.uintptr_t, msg *C.char) {
	h := cgo.Handle(ud)
	st := h.Value().(*exitState)
	deleteHandle(h)
	st.mu.Lock()
	cb := st.cb
	st.mu.Unlock()
	defer catch()
	if status < 0 {
		cb(int(pid), 0, &Error{Op: "OnExit", Errno: syscall.Errno(-status), Msg: C.GoString(msg)})
		return
	}
	cb(int(pid), syscall.WaitStatus(status), nil)
}

// A panic must not unwind through the library's C frames: the trampolines
// keep the first one and Wait or Dispatch raise it again once back in Go.
var (
	panicMu  sync.Mutex
	panicked []interface{}
)

func catch() {
	if r := recover(); r != nil {
		panicMu.Lock()
		panicked = append(panicked, r)
		panicMu.Unlock()
	}
}

func repanic() {
	panicMu.Lock()
	p := panicked
	panicked = nil
	panicMu.Unlock()
	if len(p) > 0 {
		panic(p[0])
	}
}
