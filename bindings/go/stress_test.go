package anyfork

// The binding under stress (issue 19's checklist, in Go's idiom):
// goroutines waiting at once, callbacks on another thread, panics in
// callbacks, SIGINT, the garbage collector, exit statuses.
//
// Not here, because Go has no such thing: the host's own fork (a Go
// program cannot fork itself; syscall.ForkExec execs at once, so there is
// no child that goes on using the library), a template copy of the Go
// program (the binding offers none, for the same reason), and output
// buffered at fork (os.Stdout is unbuffered; bufio writers are the
// program's own and never copied).

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// waitRecovering calls Wait once and returns what it panicked with.
func waitRecovering(t *testing.T, timeout time.Duration) (r interface{}) {
	t.Helper()
	defer func() { r = recover() }()
	if _, err := Wait(timeout); err != nil {
		t.Fatal(err)
	}
	return nil
}

// panicValues flattens a recovered value into the panic values it holds.
func panicValues(r interface{}) []string {
	switch v := r.(type) {
	case nil:
		return nil
	case CallbackPanics:
		var out []string
		for _, x := range v {
			out = append(out, fmt.Sprint(x))
		}
		return out
	default:
		return []string{fmt.Sprint(v)}
	}
}

// Issue 19 item 14, second half: several callbacks due at once, two of
// them panicking. Every one runs exactly once and both panics come out;
// the second one was dropped before.
func TestPanickingCallbacksWithOthersDue(t *testing.T) {
	var ran [6]atomic.Int32
	for i := 0; i < 6; i++ {
		i := i
		p := mustNew(t)
		if err := p.SendString("0"); err != nil {
			t.Fatal(err)
		}
		if err := p.RunFunc("anyfork_exit", func(f *os.File, err error) {
			if f != nil {
				f.Close()
			}
			ran[i].Add(1)
			if i == 1 || i == 4 {
				panic(fmt.Sprint("callback ", i))
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // all due by now
	var got []string
	deadline := time.Now().Add(30 * time.Second)
	for Pending() > 0 && time.Now().Before(deadline) {
		got = append(got, panicValues(waitRecovering(t, time.Second))...)
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "callback 1,callback 4" {
		t.Errorf("panics that came out: %q, want callback 1 and callback 4", got)
	}
	for i := range ran {
		if n := ran[i].Load(); n != 1 {
			t.Errorf("callback %d ran %d times", i, n)
		}
	}
}

// Issue 19 item 14: goroutine A's callbacks panic in A's Wait while
// goroutine B runs processes with Run. A panic comes out only of the
// call that ran the callback (each goroutine here is locked to its thread,
// and the panic names the thread the callback ran on), B's Run always
// gets its socket unless it ran a panicking callback itself, and no
// panic is lost.
func TestPanicGoesToTheCallThatRanTheCallback(t *testing.T) {
	const panics = 200
	var raised, received atomic.Int32
	var misdelivered, lost atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})

	wg.Add(1)
	go func() { // B: blocking runs
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		me := syscall.Gettid()
		for {
			select {
			case <-stop:
				return
			default:
			}
			p := mustNew(t)
			if err := p.SendString("0"); err != nil {
				t.Error(err)
				return
			}
			func() {
				defer func() {
					for _, v := range panicValues(recover()) {
						received.Add(1)
						if v != fmt.Sprint("tid ", me) {
							misdelivered.Add(1)
						}
					}
				}()
				f, err := p.Run("anyfork_exit")
				if err != nil {
					lost.Add(1)
					return
				}
				f.Close()
			}()
		}
	}()

	func() { // A: bursts of panicking callbacks due together, its own Wait
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		me := syscall.Gettid()
		take := func(r interface{}) {
			for _, v := range panicValues(r) {
				received.Add(1)
				if v != fmt.Sprint("tid ", me) {
					misdelivered.Add(1)
				}
			}
		}
		for i := 0; i < panics; i++ {
			p := mustNew(t)
			if err := p.SendString("0"); err != nil {
				t.Fatal(err)
			}
			if err := p.RunFunc("anyfork_exit", func(f *os.File, err error) {
				if f != nil {
					f.Close()
				}
				raised.Add(1)
				panic(fmt.Sprint("tid ", syscall.Gettid()))
			}); err != nil {
				t.Fatal(err)
			}
			if i%5 == 4 {
				time.Sleep(20 * time.Millisecond)
				take(waitRecovering(t, 50*time.Millisecond))
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for raised.Load() > received.Load() && time.Now().Before(deadline) {
			take(waitRecovering(t, 100*time.Millisecond))
		}
	}()
	close(stop)
	wg.Wait()
	if raised.Load() != panics || received.Load() != panics {
		t.Errorf("%d callbacks panicked, %d panics came out, want %d", raised.Load(), received.Load(), panics)
	}
	if misdelivered.Load() != 0 {
		t.Errorf("%d panics came out of a call on another thread than the callback's", misdelivered.Load())
	}
	if lost.Load() != 0 {
		t.Errorf("%d Runs lost their socket", lost.Load())
	}
}

// Two goroutines wait at once, each for its own processes; every
// callback runs once, on whichever goroutine's Wait took it.
func TestTwoGoroutinesWaitingAtOnce(t *testing.T) {
	var runs atomic.Int32
	done := make(chan int, 2)
	for g := 0; g < 2; g++ {
		go func() {
			mine := 0
			for i := 0; i < 25; i++ {
				p, err := New()
				if err == nil {
					err = p.SendString("0")
				}
				if err == nil {
					err = p.RunFunc("anyfork_exit", func(f *os.File, err error) {
						if f != nil {
							f.Close()
						}
						runs.Add(1)
					})
				}
				if err != nil {
					t.Error(err)
					break
				}
				mine++
			}
			// Wait(-1) returns once a callback ran or none is waiting.
			for Pending() > 0 {
				if _, err := Wait(-1); err != nil {
					t.Error(err)
					break
				}
			}
			done <- mine
		}()
	}
	timeout := time.After(20 * time.Second)
	for i := 0; i < 2; i++ {
		select {
		case <-done:
		case <-timeout:
			// The goroutines stay blocked in fork_wait(-1) (the library's
			// lost wake-up, issue 17 item 1).
			t.Fatalf("two goroutines in Wait(-1) hung with %d callbacks pending", Pending())
		}
	}
	if runs.Load() != 50 {
		t.Fatalf("%d run callbacks ran, want 50", runs.Load())
	}
}

// Callbacks run on the goroutine (and thread) that waits, not the one
// that created the process.
func TestCallbacksRunOnTheWaitingThread(t *testing.T) {
	tids := make(chan int, 10)
	for i := 0; i < 5; i++ {
		p := mustNew(t)
		if err := p.SendString("0"); err != nil {
			t.Fatal(err)
		}
		if err := p.OnExit(func(int, syscall.WaitStatus, error) { tids <- syscall.Gettid() }); err != nil {
			t.Fatal(err)
		}
		if err := p.RunFunc("anyfork_exit", func(f *os.File, err error) {
			if f != nil {
				f.Close()
			}
			tids <- syscall.Gettid()
		}); err != nil {
			t.Fatal(err)
		}
	}
	waiter := make(chan int)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		deadline := time.Now().Add(30 * time.Second)
		for Pending() > 0 && time.Now().Before(deadline) {
			if _, err := Wait(time.Second); err != nil {
				t.Error(err)
				break
			}
		}
		waiter <- syscall.Gettid()
	}()
	w := <-waiter
	close(tids)
	n := 0
	for tid := range tids {
		n++
		if tid != w {
			t.Errorf("a callback ran on thread %d, the waiter is %d", tid, w)
		}
	}
	if n != 10 {
		t.Fatalf("%d callbacks ran, want 10", n)
	}
}

// SIGINT with os/signal.Notify: it reaches the program at once while a
// goroutine is blocked in Wait or in a blocking Run (cgo calls are not
// interrupted; the library's poll retries on EINTR), and the Wait and the
// Run then finish with nothing lost.
func TestSigintDuringWaitAndRun(t *testing.T) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt)
	defer signal.Stop(sigs)
	interrupt := func() {
		t.Helper()
		start := time.Now()
		if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-sigs:
		case <-time.After(time.Second):
			t.Fatal("SIGINT did not arrive within 1 s")
		}
		t.Logf("SIGINT arrived after %v", time.Since(start))
	}

	t.Run("wait", func(t *testing.T) {
		p := mustNew(t)
		pid, err := p.Pid()
		if err != nil {
			t.Fatal(err)
		}
		var r exitResult
		if err := p.OnExit(r.record); err != nil {
			t.Fatal(err)
		}
		if err := p.ExecFunc([]string{"sleep", "20"}, nil, func(f *os.File, err error) {
			if f != nil {
				f.Close()
			}
		}); err != nil {
			t.Fatal(err)
		}
		waited := make(chan error, 1)
		go func() {
			for !r.done.Load() {
				if _, err := Wait(-1); err != nil {
					waited <- err
					return
				}
			}
			waited <- nil
		}()
		time.Sleep(200 * time.Millisecond)
		interrupt()
		select {
		case err := <-waited:
			t.Fatalf("Wait returned on SIGINT (%v) before the process ended", err)
		case <-time.After(100 * time.Millisecond):
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case err := <-waited:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Wait did not return after the process ended")
		}
		if !r.status.Signaled() || r.status.Signal() != syscall.SIGTERM {
			t.Fatalf("status %#x, want SIGTERM", int(r.status))
		}
	})

	t.Run("run", func(t *testing.T) {
		// A run's socket comes once all it was sent is in the kernel:
		// 16 MB to a stopped server wait until it goes on.
		p, err := NewExec()
		if err != nil {
			t.Fatal(err)
		}
		pid, err := p.Pid()
		if err != nil {
			t.Fatal(err)
		}
		var r exitResult
		if err := p.OnExit(r.record); err != nil {
			t.Fatal(err)
		}
		_ = syscall.Kill(pid, syscall.SIGSTOP)
		defer syscall.Kill(pid, syscall.SIGCONT)
		if err := p.SendString("0"); err != nil {
			t.Fatal(err)
		}
		if err := p.SendArg(make([]byte, 16<<20)); err != nil {
			t.Fatal(err)
		}
		ran := make(chan error, 1)
		go func() {
			f, err := p.Run("anyfork_exit")
			if err == nil {
				f.Close()
			}
			ran <- err
		}()
		time.Sleep(200 * time.Millisecond)
		interrupt()
		select {
		case err := <-ran:
			t.Fatalf("Run returned (%v) while its server was stopped", err)
		default:
		}
		_ = syscall.Kill(pid, syscall.SIGCONT)
		select {
		case err := <-ran:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return after the server went on")
		}
		exitedWith(t, &r, 0)
	})
}

func rssKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// Issue 19 item 15 and the checklist: Procs forgotten before running
// (collected) and after a detached run, 20,000 times, with runtime.GC and
// no Wait at all: fds and memory stay flat.
func TestDroppedProcsWithoutWait(t *testing.T) {
	for Pending() > 0 { // earlier tests' callbacks out of the way
		if _, err := Wait(time.Second); err != nil {
			t.Fatal(err)
		}
	}
	var failed error
	round := func(n int) {
		for i := 0; i < n && failed == nil; i++ {
			p, err := New()
			if err == nil {
				err = p.SendString("0")
			}
			if err == nil && i%2 == 1 {
				err = p.RunFunc("anyfork_exit", nil)
			}
			if err != nil {
				failed = err
				return
			}
			if i%500 == 499 {
				runtime.GC()
				time.Sleep(time.Millisecond) // finalizers run
			}
		}
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
	}
	// What the library still holds is released by a dispatch: leave
	// nothing to the tests after this one.
	defer func() {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
		_, _ = Wait(0)
	}()
	noneHeld := func(fds int) {
		if failed != nil {
			t.Fatalf("%v after dropped Procs without Wait (%d fds before): "+
				"freed processes held their fds until a dispatch", failed, fds)
		}
	}
	round(2000) // warm up
	noneHeld(0)
	fds, rss := openFds(t), rssKB(t)
	round(9000)
	noneHeld(fds)
	mid := openFds(t)
	round(9000)
	noneHeld(fds)
	after := openFds(t)
	t.Logf("fds %d -> %d -> %d, RSS %d kB -> %d kB", fds, mid, after, rss, rssKB(t))
	if after > fds+20 {
		t.Fatalf("%d fds after 20,000 dropped Procs without Wait, %d before: "+
			"freed processes held their fds until a dispatch", after, fds)
	}
	if grew := rssKB(t) - rss; grew > 30000 {
		t.Errorf("RSS grew by %d kB over 18,000 dropped Procs", grew)
	}
}

// Every way a child can end gives the wait status that os/exec (Go's own
// way to start a process; Go has no fork) sees for the same program.
func TestExitStatusesMatchOsExec(t *testing.T) {
	ways := map[string]string{
		"exit 3":      "exit 3",
		"exit 0":      "exit 0",
		"exit 255":    "exit 255",
		"sigterm":     "kill -TERM $$; sleep 5",
		"sigkill":     "kill -KILL $$; sleep 5",
		"sigsegv":     "kill -SEGV $$; sleep 5",
		"exec failed": "exec /nonexistent/program 2>/dev/null",
	}
	describe := func(st syscall.WaitStatus) string {
		if st.Signaled() {
			return fmt.Sprint("signal ", st.Signal())
		}
		return fmt.Sprint("exit ", st.ExitStatus())
	}
	for name, script := range ways {
		p := mustNew(t)
		var r exitResult
		if err := p.OnExit(r.record); err != nil {
			t.Fatal(err)
		}
		f, err := p.Exec([]string{"sh", "-c", script}, nil)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		waitAll(t, r.done.Load)
		if r.err != nil {
			t.Fatalf("%s: %v", name, r.err)
		}
		cmd := exec.Command("sh", "-c", script)
		_ = cmd.Run()
		want := describe(cmd.ProcessState.Sys().(syscall.WaitStatus))
		if got := describe(r.status); got != want {
			t.Errorf("%s: anyfork %s, os/exec %s", name, got, want)
		}
	}
}
