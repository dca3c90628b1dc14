package anyfork

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	rpcLibOnce sync.Once
	rpcLib     string
	rpcLibErr  error
)

// rpcWorkerLib builds testdata/rpc_worker.c beside TestMain's library
// (in the directory TestMain removes).
func rpcWorkerLib(t *testing.T) string {
	t.Helper()
	rpcLibOnce.Do(func() {
		rpcLib = filepath.Join(filepath.Dir(workerLib), "librpcworker.so")
		args := append(strings.Fields(os.Getenv("CGO_CFLAGS")),
			"-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "testdata/rpc_worker.c", "-o", rpcLib)
		cc := os.Getenv("CC")
		if cc == "" {
			cc = "cc"
		}
		if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
			rpcLibErr = fmt.Errorf("building testdata/rpc_worker.c: %v\n%s", err, out)
		}
	})
	if rpcLibErr != nil {
		t.Fatal(rpcLibErr)
	}
	return rpcLib
}

// rpcTemplate is a fresh anyfork-serve with the worker library loaded.
func rpcTemplate(t *testing.T) *Proc {
	t.Helper()
	p, err := NewExec()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Require(rpcWorkerLib(t)); err != nil {
		t.Fatal(err)
	}
	return p
}

func startRPC(t *testing.T, onEvent func([]byte)) *RPC {
	t.Helper()
	tmpl := rpcTemplate(t)
	defer tmpl.Free()
	p, err := tmpl.Fork()
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.StartRPC("rpc_worker", onEvent)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newPool(t *testing.T, o PoolOptions) *Pool {
	t.Helper()
	pool, err := NewPool(rpcTemplate(t), "rpc_worker", &o, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pool
}

func mustCall(t *testing.T, c interface {
	Call(context.Context, []byte) ([]byte, error)
}, req string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := c.Call(ctx, []byte(req))
	if err != nil {
		t.Fatalf("Call(%q): %v", req, err)
	}
	return string(b)
}

func pidGone(pid int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err == nil {
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
			if len(f) > 0 && f[0] == "Z" {
				return true // a zombie of its template: it has exited
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// waitPending waits until at least n callbacks are pending (calls made
// and not answered count).
func waitPending(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for Pending() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d callbacks pending after 30 s, want %d", Pending(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// callsFrom makes n calls from each of g goroutines ("echo g-i") and
// checks every reply is its own.
func callsFrom(t *testing.T, c interface {
	Call(context.Context, []byte) ([]byte, error)
}, g, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, g)
	for i := 0; i < g; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < n; j++ {
				want := fmt.Sprintf("%d-%d", i, j)
				got, err := c.Call(context.Background(), []byte("echo "+want))
				if err != nil || string(got) != want {
					errs <- fmt.Errorf("goroutine %d call %d: %q, %v", i, j, got, err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRPCCallsFromManyGoroutines(t *testing.T) {
	r := startRPC(t, nil)
	callsFrom(t, r, 16, 100)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	pool := newPool(t, PoolOptions{Max: 2, Load: 4, Start: 0, Stop: 10 * time.Second})
	callsFrom(t, pool, 16, 200)
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRPCEventsComeBeforeTheReply(t *testing.T) {
	var mu sync.Mutex
	var got []string
	r := startRPC(t, func(b []byte) {
		mu.Lock()
		got = append(got, string(b))
		mu.Unlock()
	})
	defer r.Close()
	if s := mustCall(t, r, "events 3"); s != "done" {
		t.Fatalf("reply %q", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, ",") != "ev0,ev1,ev2" {
		t.Fatalf("events %q", got)
	}
}

func TestRPCContextCancellationDiscardsTheReply(t *testing.T) {
	r := startRPC(t, nil)
	base := atomic.LoadInt64(&liveHandles)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	b, err := r.Call(ctx, []byte("sleep 2000"))
	if !errors.Is(err, context.DeadlineExceeded) || b != nil {
		t.Fatalf("Call: %q, %v; want DeadlineExceeded", b, err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("the cancelled Call took %v", d)
	}
	// The worker answers in order: this call waits for the sleep, and
	// gets its own reply, not the cancelled one's.
	if s := mustCall(t, r, "echo after"); s != "after" {
		t.Fatalf("the next call got %q", s)
	}
	if h := atomic.LoadInt64(&liveHandles); h != base {
		t.Fatalf("%d handles live, %d before: the cancelled call's callback did not run", h, base)
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := r.Call(done, []byte("echo x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("a call with a cancelled context: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPoolWorkerKilledWithCallsInFlight(t *testing.T) {
	pool := newPool(t, PoolOptions{Max: 1, Load: 20, Start: 0, Stop: 10 * time.Second})
	defer pool.Close()
	pid, _ := strconv.Atoi(mustCall(t, pool, "pid"))
	results := make(chan error, 20)
	for i := 0; i < 20; i++ {
		go func() {
			_, err := pool.Call(context.Background(), []byte("sleep 30"))
			results <- err
		}()
	}
	waitPending(t, 20) // every call made
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i := 0; i < 20; i++ {
		select {
		case err := <-results:
			if err != nil {
				// The library says EPIPE, or ECONNRESET when the worker
				// died with requests unread (its header names only EPIPE).
				if !(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) ||
					!strings.Contains(err.Error(), "Call") {
					t.Errorf("a call failed with %v, want EPIPE or ECONNRESET", err)
				}
				failed++
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of 20 calls returned", i)
		}
	}
	if failed == 0 {
		t.Fatal("no call failed although the worker was killed with calls in flight")
	}
	if p2, _ := strconv.Atoi(mustCall(t, pool, "pid")); p2 == pid || p2 == 0 {
		t.Fatalf("no new worker: pid %d, before %d", p2, pid)
	}
	// A worker that exits in a call fails that call only.
	_, err := pool.Call(context.Background(), []byte("exit"))
	if !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("a call whose worker exited: %v", err)
	}
	if s := mustCall(t, pool, "echo on"); s != "on" {
		t.Fatalf("after the exit: %q", s)
	}
}

func TestRPCWorkerGoneFailsCalls(t *testing.T) {
	r := startRPC(t, nil)
	if _, err := r.Call(context.Background(), []byte("exit")); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Call(exit): %v", err)
	}
	_, err := r.Call(context.Background(), []byte("echo x"))
	if !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("a call after the worker exited: %v", err)
	}
	if err := r.Close(); err == nil {
		t.Fatal("Close of a worker that exited on its own reported no error")
	}
}

func TestRPCAndPoolCloseAreGraceful(t *testing.T) {
	for _, kind := range []string{"rpc", "pool"} {
		var c interface {
			Call(context.Context, []byte) ([]byte, error)
			Close() error
		}
		if kind == "rpc" {
			c = startRPC(t, nil)
		} else {
			c = newPool(t, PoolOptions{Max: 2, Load: 1, Start: 0, Stop: 10 * time.Second})
		}
		pid, _ := strconv.Atoi(mustCall(t, c, "pid"))
		results := make(chan string, 20)
		for i := 0; i < 20; i++ {
			go func() {
				b, err := c.Call(context.Background(), []byte("sleep 5"))
				if err != nil {
					results <- err.Error()
					return
				}
				results <- string(b)
			}()
		}
		waitPending(t, 20) // every call made
		if err := c.Close(); err != nil {
			t.Fatalf("%s: Close: %v", kind, err)
		}
		for i := 0; i < 20; i++ {
			if s := <-results; s != "slept 5" {
				t.Fatalf("%s: a call made before Close got %q", kind, s)
			}
		}
		if !pidGone(pid, 5*time.Second) {
			t.Fatalf("%s: worker %d still runs after Close", kind, pid)
		}
		if _, err := c.Call(context.Background(), []byte("pid")); !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("%s: Call after Close: %v", kind, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("%s: a second Close: %v", kind, err)
		}
	}
}

func TestRPCExecPythonWorker(t *testing.T) {
	py, err := filepath.Abs("testdata/rpc_worker.py")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	r, err := p.StartRPCExec([]string{"python3", py}, func(b []byte) { events = append(events, string(b)) })
	if err != nil {
		t.Fatal(err)
	}
	callsFrom(t, &upper{r}, 4, 25)
	if s := mustCall(t, r, "abc"); s != "ABC" {
		t.Fatalf("reply %q", s)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if len(events) != 101 || events[100] != "got 3" {
		t.Fatalf("%d events, last %q", len(events), events[len(events)-1])
	}
}

// upper adapts the upper-casing Python worker to callsFrom's echo check.
type upper struct{ r *RPC }

func (u *upper) Call(ctx context.Context, req []byte) ([]byte, error) {
	b, err := u.r.Call(ctx, req)
	if err != nil {
		return nil, err
	}
	want := strings.ToUpper(strings.TrimPrefix(string(req), "echo "))
	if string(b) != "ECHO "+want {
		return b, fmt.Errorf("reply %q to %q", b, req)
	}
	return []byte(want), nil
}

func TestPoolTenThousandCallsLeaveFdsAndHandlesFlat(t *testing.T) {
	pool := newPool(t, PoolOptions{Max: 2, Idle: 2, Load: 2, Start: 0, Stop: 10 * time.Second})
	callsFrom(t, pool, 4, 50)
	if n := pool.Workers(); n != 2 {
		t.Fatalf("%d workers, want 2", n)
	}
	fds, handles := openFds(t), atomic.LoadInt64(&liveHandles)
	callsFrom(t, pool, 8, 1250)
	if n := openFds(t); n != fds {
		t.Fatalf("%d fds open, %d before", n, fds)
	}
	if h := atomic.LoadInt64(&liveHandles); h != handles {
		t.Fatalf("%d handles live, %d before", h, handles)
	}
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	if pool.Workers() != 0 {
		t.Fatal("a closed pool has workers")
	}
}

func TestPoolBadOptionsAndDefaults(t *testing.T) {
	d := DefaultPoolOptions()
	if d.Max < 1 || d.Load != 2 || d.Start != 100*time.Millisecond || d.Stop != 10*time.Second {
		t.Fatalf("defaults %+v", d)
	}
	o := d
	o.Load = 0
	tmpl, err := NewExec()
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewPool(tmpl, "rpc_worker", &o, nil)
	if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), "load") {
		t.Fatalf("NewPool with load 0: %v", err)
	}
}
