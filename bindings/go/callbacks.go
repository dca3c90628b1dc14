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
	"fmt"
	"os"
	"runtime/cgo"
	"strings"
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
func goRunDone(fd C.int, ud C.uintptr_t, msg *C.char, sink C.uintptr_t) {
	h := cgo.Handle(ud)
	rc := h.Value().(runCallback)
	deleteHandle(h)
	defer catch(sink)
	if fd < 0 {
		rc.cb(nil, &Error{Op: rc.op, Errno: syscall.Errno(-fd), Msg: C.GoString(msg)})
		return
	}
	// The fd is nonblocking: os.NewFile puts it in Go's poller, so reads
	// block only the goroutine and deadlines work.
	rc.cb(os.NewFile(uintptr(fd), "anyfork-comm"), nil)
}

//export goExitDone
func goExitDone(pid C.pid_t, status C.int, ud C.uintptr_t, msg *C.char, sink C.uintptr_t) {
	h := cgo.Handle(ud)
	st := h.Value().(*exitState)
	deleteHandle(h)
	st.mu.Lock()
	cb := st.cb
	st.mu.Unlock()
	defer catch(sink)
	if status < 0 {
		cb(int(pid), 0, &Error{Op: "OnExit", Errno: syscall.Errno(-status), Msg: C.GoString(msg)})
		return
	}
	cb(int(pid), syscall.WaitStatus(status), nil)
}

// A panic must not unwind through the library's C frames: the trampolines
// catch it and hand it to the Wait or Dispatch call that ran the callback
// (its panicSink, found through a thread-local in shim.c), which raises
// it again once back in Go. Every panic is kept; none goes to another
// goroutine's call.
type panicSink struct {
	vals []interface{}
}

// CallbackPanics is the value Wait or Dispatch (and so Run or Exec, which
// wait through Wait) panic with when more than one callback they ran
// panicked: every panic value, in the order the callbacks ran. With one,
// they panic with that value itself.
type CallbackPanics []interface{}

func (p CallbackPanics) Error() string {
	parts := make([]string, len(p))
	for i, v := range p {
		parts[i] = fmt.Sprint(v)
	}
	return fmt.Sprintf("anyfork: %d callbacks panicked: %s", len(p), strings.Join(parts, "; "))
}

func catch(sink C.uintptr_t) {
	if r := recover(); r != nil {
		// Callbacks run only inside Wait or Dispatch, which always set a
		// sink on their thread.
		s := cgo.Handle(sink).Value().(*panicSink)
		s.vals = append(s.vals, r)
	}
}

// withSink runs a dispatching C call with a fresh sink and raises what
// the callbacks it ran panicked with.
func withSink(f func(sink C.uintptr_t) C.int) C.int {
	s := &panicSink{}
	h := cgo.NewHandle(s)
	r := f(C.uintptr_t(h))
	h.Delete()
	switch len(s.vals) {
	case 0:
	case 1:
		panic(s.vals[0])
	default:
		panic(CallbackPanics(s.vals))
	}
	return r
}
