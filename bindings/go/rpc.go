package anyfork

// RPC workers and pools (fork_rpc_*, fork_pool_*): a worker is a process
// serving requests on its comm socket; Call sends a byte string and
// returns the worker's reply. Replies are delivered by the library's
// dispatch: a goroutine waiting in Call dispatches itself while no other
// one does (one at a time; the others wait for their reply on a channel,
// woken as soon as whoever dispatches has run their callback).

/*
#include <stdlib.h>
#include <anyfork.h>
#include "rpc_shim.h"
*/
import "C"

import (
	"context"
	"runtime"
	"runtime/cgo"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// callResult is what a call's reply callback delivers.
type callResult struct {
	data []byte
	err  error
}

//export goRpcReply
func goRpcReply(status C.int, data unsafe.Pointer, n C.size_t, ud C.uintptr_t, msg *C.char) {
	h := cgo.Handle(ud)
	ch := h.Value().(chan callResult)
	deleteHandle(h)
	if status < 0 {
		ch <- callResult{nil, &Error{Op: "Call", Errno: syscall.Errno(-status), Msg: C.GoString(msg)}}
		return
	}
	b := make([]byte, int(n))
	if n > 0 {
		copy(b, unsafe.Slice((*byte)(data), int(n)))
	}
	ch <- callResult{b, nil} // buffered: never blocks, read or not
}

//export goRpcEvent
func goRpcEvent(data unsafe.Pointer, n C.size_t, ud C.uintptr_t, sink C.uintptr_t) {
	cb := cgo.Handle(ud).Value().(func([]byte))
	b := make([]byte, int(n))
	if n > 0 {
		copy(b, unsafe.Slice((*byte)(data), int(n)))
	}
	defer catch(sink)
	cb(b)
}

//export goRpcDestroyed
func goRpcDestroyed(status C.int, ud C.uintptr_t, msg *C.char) {
	h := cgo.Handle(ud)
	ch := h.Value().(chan error)
	deleteHandle(h)
	if status < 0 {
		ch <- &Error{Op: "Close", Errno: syscall.Errno(-status), Msg: C.GoString(msg)}
		return
	}
	ch <- nil
}

// pumpToken is held by the one goroutine (of those waiting in Call or
// Close) that dispatches; the others wait on their channels.
var pumpToken = make(chan struct{}, 1)

// pumpSlice bounds how long the dispatching goroutine stays in Wait
// before it looks at its context again.
const pumpSlice = 20 * time.Millisecond

// pump dispatches once (up to pumpSlice) holding the token.
func pump() error {
	defer func() { <-pumpToken }()
	_, err := Wait(pumpSlice)
	return err
}

// await waits for a value on ch, dispatching while no other goroutine
// does, until it comes or ctx ends.
func await[T any](ctx context.Context, ch chan T) (T, error) {
	var zero T
	for {
		if err := ctx.Err(); err != nil {
			select {
			case v := <-ch:
				return v, nil
			default:
				return zero, err
			}
		}
		select {
		case v := <-ch:
			return v, nil
		case <-ctx.Done():
			return zero, ctx.Err()
		case pumpToken <- struct{}{}:
			select {
			case v := <-ch:
				<-pumpToken
				return v, nil
			default:
			}
			if err := pump(); err != nil {
				return zero, err
			}
		}
	}
}

// call registers a reply channel, starts the call with start, and waits.
func call(ctx context.Context, op string, start func(ud C.uintptr_t) (int, error)) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ch := make(chan callResult, 1)
	h := newHandle(ch)
	if _, err := start(C.uintptr_t(h)); err != nil {
		deleteHandle(h)
		return nil, err
	}
	// Cancelled, the call stays with the worker; its reply, when it
	// comes, goes to ch, which nobody reads any more.
	r, err := await(ctx, ch)
	if err != nil {
		return nil, err
	}
	return r.data, r.err
}

// bytesPtr is the address of b's first byte, or nil for an empty b.
func bytesPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func eventHandle(onEvent func([]byte)) cgo.Handle {
	if onEvent == nil {
		return 0
	}
	return newHandle(onEvent)
}

func errClosed(op string) error {
	return &Error{Op: op, Errno: syscall.EPIPE, Msg: "the worker or pool was closed"}
}

// RPC is a worker process answering calls: started with StartRPC or
// StartRPCExec, ended with Close. Its methods may be called from any
// goroutine.
type RPC struct {
	mu sync.RWMutex
	h  *C.fork_rpc // nil once closed
	ev cgo.Handle
}

// StartRPC makes p enter function, a C function serving RPC on its comm
// socket (one calling fork_rpc_serve), and consumes p (even on failure).
// onEvent (may be nil) gets the worker's events, in order with the
// replies, from Wait or Dispatch (or a Call dispatching).
func (p *Proc) StartRPC(function string, onEvent func([]byte)) (*RPC, error) {
	if err := checkNUL("StartRPC", function); err != nil {
		return nil, err
	}
	h, err := p.take("StartRPC")
	if err != nil {
		return nil, err
	}
	cf := C.CString(function)
	defer C.free(unsafe.Pointer(cf))
	ev := eventHandle(onEvent)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := C.afgo_rpc_start(h, cf, C.uintptr_t(ev))
	if r == nil {
		deleteHandle(ev)
		return nil, lastError("StartRPC", syscall.Errno(-C.fork_last_errno()))
	}
	return &RPC{h: r, ev: ev}, nil
}

// StartRPCExec runs a program that speaks the RPC framing on its stdin
// and stdout (README, "RPC and pools") with the exec builtin: the comm
// socket becomes its fds 0 and 1, argv follows any strings sent before.
// Consumes p, as StartRPC.
func (p *Proc) StartRPCExec(argv []string, onEvent func([]byte)) (*RPC, error) {
	if err := checkNUL("StartRPCExec", argv...); err != nil {
		return nil, err
	}
	err := p.Eval("anyfork_comm_fd", "0", "1")
	for _, a := range argv {
		if err == nil {
			err = p.SendString(a)
		}
	}
	if err != nil {
		p.Free()
		return nil, err
	}
	return p.StartRPC("anyfork_exec", onEvent)
}

// Call sends req and returns the worker's reply. It fails with an
// *Error (errors.Is(err, syscall.EPIPE): the worker exited or died
// before answering; EPROTO: it broke the framing), or with ctx.Err()
// when ctx ends first: the call stays with the worker, and its reply is
// then discarded, never delivered to anyone.
func (r *RPC) Call(ctx context.Context, req []byte) ([]byte, error) {
	return call(ctx, "Call", func(ud C.uintptr_t) (int, error) {
		r.mu.RLock()
		defer r.mu.RUnlock()
		if r.h == nil {
			return -1, errClosed("Call")
		}
		return intCall("Call", func() C.int {
			return C.afgo_rpc_call(r.h, bytesPtr(req), C.size_t(len(req)), ud)
		})
	})
}

// Close ends the worker gracefully: calls made are still answered, then
// the worker reads EOF and exits. It returns once it has, with nil, or
// an *Error when the worker had ended otherwise (died, exited). A second
// Close does nothing.
func (r *RPC) Close() error {
	r.mu.Lock()
	h := r.h
	r.h = nil
	r.mu.Unlock()
	if h == nil {
		return nil
	}
	ch := make(chan error, 1)
	C.afgo_rpc_free(h, C.uintptr_t(newHandle(ch)))
	err, werr := await(context.Background(), ch)
	deleteHandle(r.ev) // no event comes after the destroyed callback
	if werr != nil {
		return werr
	}
	return err
}

// PoolOptions are a pool's settings, with AnyEvent::Fork::Pool's
// meanings; start from DefaultPoolOptions.
type PoolOptions struct {
	Max         int           // workers at most (default: the number of CPUs)
	Idle        int           // idle workers kept ready, started at once (0)
	Load        int           // requests in flight per worker at most (2)
	Start       time.Duration // between starting workers while all are busy (0.1 s)
	Stop        time.Duration // a spare worker idle this long is stopped (10 s)
	RetireAfter uint64        // retire a worker after this many requests (0: never)
}

// DefaultPoolOptions are fork_pool_defaults().
func DefaultPoolOptions() PoolOptions {
	o := C.fork_pool_defaults()
	return PoolOptions{
		Max:         int(o.max),
		Idle:        int(o.idle),
		Load:        int(o.load),
		Start:       time.Duration(float64(o.start) * float64(time.Second)),
		Stop:        time.Duration(float64(o.stop) * float64(time.Second)),
		RetireAfter: uint64(o.retire_after),
	}
}

// Pool is a set of workers forked from templates on demand; each Call
// goes to the least-loaded worker, or waits in the pool's queue. Its
// methods may be called from any goroutine.
type Pool struct {
	mu sync.RWMutex
	h  *C.fork_pool // nil once closed
	ev cgo.Handle
}

// NewPool makes a pool whose workers are forked from template (consumed,
// even on failure) and enter function (a C function calling
// fork_rpc_serve, or anyfork_exec for a program speaking the framing).
// opts nil means DefaultPoolOptions. onEvent (may be nil) gets every
// worker's events.
func NewPool(template *Proc, function string, opts *PoolOptions, onEvent func([]byte)) (*Pool, error) {
	if err := checkNUL("NewPool", function); err != nil {
		template.Free()
		return nil, err
	}
	o := DefaultPoolOptions()
	if opts != nil {
		o = *opts
	}
	if o.Max < 0 || o.Idle < 0 || o.Load < 0 {
		template.Free()
		return nil, &Error{Op: "NewPool", Errno: syscall.EINVAL, Msg: "Max, Idle and Load must not be negative"}
	}
	h, err := template.take("NewPool")
	if err != nil {
		return nil, err
	}
	co := C.fork_pool_opts{
		max:          C.uint(o.Max),
		idle:         C.uint(o.Idle),
		load:         C.uint(o.Load),
		start:        C.double(o.Start.Seconds()),
		stop:         C.double(o.Stop.Seconds()),
		retire_after: C.uint64_t(o.RetireAfter),
	}
	cf := C.CString(function)
	defer C.free(unsafe.Pointer(cf))
	ev := eventHandle(onEvent)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ph := C.afgo_pool_new(h, cf, &co, C.uintptr_t(ev))
	if ph == nil {
		deleteHandle(ev)
		return nil, lastError("NewPool", syscall.Errno(-C.fork_last_errno()))
	}
	return &Pool{h: ph, ev: ev}, nil
}

// AddTemplate adds another template workers may be forked from (used in
// turn); consumes t, even on failure.
func (p *Pool) AddTemplate(t *Proc) error {
	h, err := t.take("AddTemplate")
	if err != nil {
		return err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.h == nil {
		C.fork_free(h)
		return errClosed("AddTemplate")
	}
	_, err = intCall("AddTemplate", func() C.int { return C.fork_pool_add_template(p.h, h) })
	return err
}

// Call sends req to the least-loaded worker and returns its reply; errors
// and ctx as for (*RPC).Call. A worker that dies fails only its own calls.
func (p *Pool) Call(ctx context.Context, req []byte) ([]byte, error) {
	return call(ctx, "Call", func(ud C.uintptr_t) (int, error) {
		p.mu.RLock()
		defer p.mu.RUnlock()
		if p.h == nil {
			return -1, errClosed("Call")
		}
		return intCall("Call", func() C.int {
			return C.afgo_pool_call(p.h, bytesPtr(req), C.size_t(len(req)), ud)
		})
	})
}

// Workers is the number of workers the pool has now (retiring ones
// included); 0 once closed.
func (p *Pool) Workers() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.h == nil {
		return 0
	}
	return int(C.fork_pool_workers(p.h))
}

// Close ends the pool gracefully: queued calls are still sent and
// answered, then the workers read EOF and exit, and the templates exit.
// It returns once they have. A second Close does nothing.
func (p *Pool) Close() error {
	p.mu.Lock()
	h := p.h
	p.h = nil
	p.mu.Unlock()
	if h == nil {
		return nil
	}
	ch := make(chan error, 1)
	C.afgo_pool_free(h, C.uintptr_t(newHandle(ch)))
	err, werr := await(context.Background(), ch)
	deleteHandle(p.ev)
	if werr != nil {
		return werr
	}
	return err
}
