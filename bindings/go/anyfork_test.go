package anyfork

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// workerLib is testdata/worker.c built as a shared library by TestMain.
var workerLib string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "anyfork-go-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerLib = filepath.Join(dir, "libworker.so")
	// The header is where cgo finds it: CGO_CFLAGS, or the default paths.
	args := append(strings.Fields(os.Getenv("CGO_CFLAGS")),
		"-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "testdata/worker.c", "-o", workerLib)
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building testdata/worker.c: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitAll dispatches until cond holds, failing the test after 30 s.
func waitAll(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("callbacks did not run within 30 s (%d pending)", Pending())
		}
		if _, err := Wait(time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll reads a comm socket to EOF, with a deadline, and closes it.
func readAll(t *testing.T, f *os.File) string {
	t.Helper()
	defer f.Close()
	if err := f.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatalf("SetReadDeadline: %v (the comm socket is not in Go's poller)", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type exitResult struct {
	done   atomic.Bool
	pid    int
	status syscall.WaitStatus
	err    error
}

func (r *exitResult) record(pid int, st syscall.WaitStatus, err error) {
	r.pid, r.status, r.err = pid, st, err
	r.done.Store(true)
}

// exitedWith waits for r and checks the exit status.
func exitedWith(t *testing.T, r *exitResult, code int) {
	t.Helper()
	waitAll(t, r.done.Load)
	if r.err != nil {
		t.Fatalf("exit status unknown: %v", r.err)
	}
	if !r.status.Exited() || r.status.ExitStatus() != code {
		t.Fatalf("pid %d: wait status %#x, want exit %d", r.pid, int(r.status), code)
	}
}

func TestExecBuiltin(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	var ex exitResult
	for _, step := range []error{
		p.Eval("anyfork_comm_fd", "1"),
		p.Eval("anyfork_chdir", "/"),
		p.OnExit(ex.record),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	f, err := p.Exec([]string{"sh", "-c", `echo "$0 $1 $PWD $ANYFORK_GO"`, "one", "two words"},
		[]string{"ANYFORK_GO=env-ok", "PATH=/usr/bin:/bin"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readAll(t, f), "one two words / env-ok\n"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	exitedWith(t, &ex, 0)
}

// Strings sent before Exec come first in argv; fds sent become 0, 1, ...
func TestExecArgsAndFds(t *testing.T) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	var ex exitResult
	for _, step := range []error{
		p.SendString("sh"),
		p.SendArg([]byte("-c")),
		p.SendFd(devnull), // becomes stdin
		p.SendFd(w),       // becomes stdout
		p.OnExit(ex.record),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	w.Close() // the library holds its own duplicate
	f, err := p.Exec([]string{`echo "[$0]"; cat`, "zero"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := r.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "[zero]\n" {
		t.Fatalf("the pipe got %q", out)
	}
	exitedWith(t, &ex, 0)
}

// parseReport reads what worker.c's report writes: its pid and its args.
func parseReport(t *testing.T, text string) (pid int, args []string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(text))
	var n int
	if !sc.Scan() {
		t.Fatalf("empty report")
	}
	if _, err := fmt.Sscanf(sc.Text(), "pid %d nargs %d", &pid, &n); err != nil {
		t.Fatalf("bad report %q: %v", text, err)
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "S ") {
			b, err := hex.DecodeString(line[2:])
			if err != nil {
				t.Fatal(err)
			}
			args = append(args, "S:"+string(b))
		} else {
			args = append(args, line)
		}
	}
	if len(args) != n {
		t.Fatalf("report %q: %d args listed, %d announced", text, len(args), n)
	}
	return pid, args
}

// pidAndReport asks c's pid, runs worker.c's report in it and parses what
// it writes: the pid Pid gave, the pid the process reported, its args.
func pidAndReport(t *testing.T, c *Proc) (pid, reported int, args []string) {
	t.Helper()
	pid, err := c.Pid()
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.Run("report")
	if err != nil {
		t.Fatal(err)
	}
	reported, args = parseReport(t, readAll(t, f))
	return pid, reported, args
}

// A C function from a Required library gets every fd and string sent, in
// order, before and after a fork of a template; the pids agree.
func TestTemplateRunArgsAndFds(t *testing.T) {
	tmpl, err := NewExec()
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Free()
	tpid, err := tmpl.Pid()
	if err != nil || tpid <= 0 {
		t.Fatalf("template pid %d, %v", tpid, err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := tmpl.Require(workerLib); err != nil {
		t.Fatal(err)
	}
	if err := tmpl.SendArg([]byte("before\x00fork")); err != nil {
		t.Fatal(err)
	}
	if err := tmpl.SendFd(w); err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i := 0; i < n; i++ {
		c, err := tmpl.Fork()
		if err != nil {
			t.Fatal(err)
		}
		var ex exitResult
		if err := c.OnExit(ex.record); err != nil {
			t.Fatal(err)
		}
		if err := c.SendString(fmt.Sprint("after ", i)); err != nil {
			t.Fatal(err)
		}
		if err := c.SendArg(nil); err != nil { // an empty string
			t.Fatal(err)
		}
		pid, rpid, args := pidAndReport(t, c)
		want := []string{"S:before\x00fork", "F", fmt.Sprint("S:after ", i), "S:"}
		if fmt.Sprint(args) != fmt.Sprint(want) {
			t.Fatalf("args %q, want %q", args, want)
		}
		exitedWith(t, &ex, 0)
		if rpid != pid || ex.pid != pid || pid == tpid {
			t.Fatalf("pids: Pid() %d, reported %d, OnExit %d, template %d", pid, rpid, ex.pid, tpid)
		}
	}
	w.Close()
	tmpl.Free()
	if err := r.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r) // EOF once the template is gone too
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(string(out), "hello from "); c != n {
		t.Fatalf("the pipe got %q", out)
	}
}

func TestRunExitStatus(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	var ex exitResult
	if err := p.OnExit(ex.record); err != nil {
		t.Fatal(err)
	}
	if err := p.SendString("7"); err != nil {
		t.Fatal(err)
	}
	if err := p.RunFunc("anyfork_exit", nil); err != nil { // detached
		t.Fatal(err)
	}
	exitedWith(t, &ex, 7)
}

// Errors carry fork_last_error()'s text and the errno.
func TestErrors(t *testing.T) {
	t.Run("missing library: EOF and status 127", func(t *testing.T) {
		p, err := New()
		if err != nil {
			t.Fatal(err)
		}
		var ex exitResult
		if err := p.OnExit(ex.record); err != nil {
			t.Fatal(err)
		}
		// The process reports the failure on its stderr (ours) and exits.
		if err := p.Require("/nonexistent/libanyfork-go-missing.so"); err != nil {
			t.Fatal(err)
		}
		// Either the process is already gone when Run writes (EPIPE at
		// once), or Run delivers and the socket ends: EOF, or ECONNRESET
		// when the process exited with the run command still unread (the
		// kernel resets a unix socket closed with data in it).
		f, err := p.Run("report")
		if errors.Is(err, syscall.EPIPE) {
			t.Logf("Run: %v", err)
			exitedWith(t, &ex, 127)
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		_ = f.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(f)
		if len(got) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("expected the end at once, got %q, %v", got, err)
		}
		t.Logf("reading the comm socket: %d bytes, end: %v", len(got), err)
		exitedWith(t, &ex, 127)
	})

	t.Run("missing function: status 127", func(t *testing.T) {
		p, err := New()
		if err != nil {
			t.Fatal(err)
		}
		var ex exitResult
		if err := p.OnExit(ex.record); err != nil {
			t.Fatal(err)
		}
		f, err := p.Run("no_such_function_anywhere")
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, f)
		exitedWith(t, &ex, 127)
	})

	t.Run("exec failure is written to the comm socket", func(t *testing.T) {
		p, err := New()
		if err != nil {
			t.Fatal(err)
		}
		var ex exitResult
		if err := p.OnExit(ex.record); err != nil {
			t.Fatal(err)
		}
		f, err := p.Exec([]string{"/nonexistent/program"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, f); !strings.Contains(got, "/nonexistent/program") {
			t.Fatalf("comm socket said %q", got)
		}
		exitedWith(t, &ex, 127)
	})

	t.Run("SendFd of a closed fd", func(t *testing.T) {
		p, err := New()
		if err != nil {
			t.Fatal(err)
		}
		defer p.Free()
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fd := int(f.Fd())
		f.Close()
		err = p.SendFdNum(fd)
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, syscall.EBADF) {
			t.Fatalf("SendFdNum(closed) = %v, want an *Error with EBADF", err)
		}
		if !strings.Contains(e.Msg, "fork_send_fd") {
			t.Fatalf("message %q does not name the call", e.Msg)
		}
		t.Logf("SendFdNum(closed): %v", err)
		// A closed *os.File fails before reaching the library.
		if err := p.SendFd(f); !errors.As(err, &e) || !errors.Is(err, syscall.EBADF) {
			t.Fatalf("SendFd(closed *os.File) = %v, want an *Error with EBADF", err)
		} else {
			t.Logf("SendFd(closed *os.File): %v", err)
		}
		// The process is still usable after those failures.
		if err := p.SendString("fine"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a consumed or freed Proc", func(t *testing.T) {
		p, err := New()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.RunFunc("anyfork_exit", nil); err != nil {
			t.Fatal(err)
		}
		for _, err := range []error{p.SendString("x"), p.RunFunc("x", nil), p.OnExit(func(int, syscall.WaitStatus, error) {})} {
			if !errors.Is(err, syscall.EINVAL) {
				t.Fatalf("use after Run: %v, want EINVAL", err)
			}
		}
		if _, err := p.Fork(); err == nil {
			t.Fatal("Fork after Run succeeded")
		}
		p.Free() // harmless
	})

	t.Run("invalid arguments", func(t *testing.T) {
		p, err := New()
		if err != nil {
			t.Fatal(err)
		}
		defer p.Free()
		err = p.Eval("")
		var e *Error
		if !errors.As(err, &e) || e.Errno != syscall.EINVAL || e.Msg == "" {
			t.Fatalf("Eval(\"\") = %#v", err)
		}
		t.Logf("Eval(\"\"): %v", err)
		if err := p.Eval("anyfork_setenv", "A=\x00"); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("a NUL byte: %v", err)
		}
		if _, err := NewExecArgv([]string{"/nonexistent/anyfork-server"}); err == nil {
			t.Fatal("NewExecArgv of a missing program succeeded")
		} else {
			t.Logf("NewExecArgv(missing): %v", err)
		}
		if err := (&Proc{}).SendString("x"); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("zero Proc: %v", err)
		}
	})
}

// A panic in a callback comes out of Wait, not through the C library.
func TestCallbackPanic(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RunFunc("anyfork_exit", func(f *os.File, err error) {
		if f != nil {
			f.Close()
		}
		panic("boom")
	}); err != nil {
		t.Fatal(err)
	}
	got := func() (r interface{}) {
		defer func() { r = recover() }()
		for Pending() > 0 {
			if _, err := Wait(time.Second); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	}()
	if got != "boom" {
		t.Fatalf("recovered %v, want boom", got)
	}
}

// Goroutines on different threads run processes at the same time; any of
// them may dispatch another's callback.
func TestConcurrentGoroutines(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				p, err := New()
				if err == nil {
					err = p.Eval("anyfork_comm_fd", "1")
				}
				var f *os.File
				if err == nil {
					f, err = p.Exec([]string{"echo", fmt.Sprint(g, ":", i)}, nil)
				}
				if err != nil {
					errs <- err
					return
				}
				_ = f.SetReadDeadline(time.Now().Add(30 * time.Second))
				b, err := io.ReadAll(f)
				f.Close()
				if want := fmt.Sprint(g, ":", i, "\n"); err != nil || string(b) != want {
					errs <- fmt.Errorf("goroutine %d: got %q (%v), want %q", g, b, err, want)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// settle waits for the open fd count to come back to base.
func settle(t *testing.T, base int, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		runtime.GC()
		_, _ = Wait(50 * time.Millisecond)
		n := openFds(t)
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d fds open, %d before", what, n, base)
		}
	}
}

// 1,000 creations in every way the binding offers leave no fd and no
// handle behind; forgotten Procs are freed by the garbage collector.
func TestNoFdLeak(t *testing.T) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	// Warm up: the default template, the loop fd, Go's poller.
	if f, err := mustNew(t).Run("anyfork_exit"); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	for Pending() > 0 {
		if _, err := Wait(time.Second); err != nil {
			t.Fatal(err)
		}
	}
	base := openFds(t)
	handles := atomic.LoadInt64(&liveHandles)

	const total = 1000
	var exits, runs atomic.Int64
	for i := 0; i < total; i++ {
		p := mustNew(t)
		if err := p.SendFd(devnull); err != nil {
			t.Fatal(err)
		}
		if err := p.SendString("0"); err != nil {
			t.Fatal(err)
		}
		switch i % 5 {
		case 0: // synchronous run
			f, err := p.Run("anyfork_exit")
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		case 1: // callback and exit callback
			if err := p.OnExit(func(int, syscall.WaitStatus, error) { exits.Add(1) }); err != nil {
				t.Fatal(err)
			}
			if err := p.RunFunc("anyfork_exit", func(f *os.File, err error) {
				if f != nil {
					f.Close()
				}
				runs.Add(1)
			}); err != nil {
				t.Fatal(err)
			}
		case 2: // detached
			if err := p.RunFunc("anyfork_exit", nil); err != nil {
				t.Fatal(err)
			}
		case 3: // freed before running
			p.Free()
		case 4: // forgotten: the finalizer frees it
		}
		if i%100 == 99 {
			runtime.GC()
			for Pending() > 50 {
				if _, err := Wait(time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for Pending() > 0 {
		if _, err := Wait(time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if runs.Load() != total/5 || exits.Load() != total/5 {
		t.Fatalf("%d run and %d exit callbacks ran, want %d each", runs.Load(), exits.Load(), total/5)
	}
	settle(t, base, fmt.Sprintf("after %d creations", total))
	if h := atomic.LoadInt64(&liveHandles); h != handles {
		t.Fatalf("%d callback handles left, %d before", h, handles)
	}
	t.Logf("%d creations: %d fds open before and after", total, base)
}

func mustNew(t *testing.T) *Proc {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// childrenOf lists the pids of pid's children.
func childrenOf(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// Ahead: Fork hands out a process forked before the call, holding what the
// template had; a string sent to the template reaches the next ones.
func TestAhead(t *testing.T) {
	tmpl, err := NewExec()
	if err != nil {
		t.Fatal(err)
	}
	defer tmpl.Free()
	if err := tmpl.Require(workerLib); err != nil {
		t.Fatal(err)
	}
	if err := tmpl.SendString("one"); err != nil {
		t.Fatal(err)
	}
	if err := tmpl.Ahead(2); err != nil {
		t.Fatal(err)
	}
	tpid, err := tmpl.Pid()
	if err != nil {
		t.Fatal(err)
	}
	var waiting []string
	waitAll(t, func() bool { waiting = childrenOf(t, tpid); return len(waiting) == 2 })
	run := func(want []string) int {
		c, err := tmpl.Fork()
		if err != nil {
			t.Fatal(err)
		}
		pid, _, args := pidAndReport(t, c)
		if fmt.Sprint(args) != fmt.Sprint(want) {
			t.Fatalf("args %q, want %q", args, want)
		}
		return pid
	}
	if pid := run([]string{"S:one"}); !strings.Contains(" "+strings.Join(waiting, " ")+" ", fmt.Sprint(" ", pid, " ")) {
		t.Fatalf("pid %d was not waiting before the fork (%v)", pid, waiting)
	}
	if err := tmpl.SendString("two"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		run([]string{"S:one", "S:two"})
	}
	err = tmpl.Ahead(65)
	var e *Error
	if !errors.As(err, &e) || e.Errno != syscall.EINVAL || !strings.Contains(e.Msg, "64") {
		t.Fatalf("Ahead(65): %v", err)
	}
}
