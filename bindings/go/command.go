package anyfork

// Command: os/exec's Cmd, created through the default template. A program
// that uses exec.Command switches by changing the import; the fields and
// methods mean what os/exec says, with the differences listed on Cmd.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotFound and LookPath are os/exec's: a Command whose program is not
// found fails in Start with os/exec's own *exec.Error.
var ErrNotFound = exec.ErrNotFound

// LookPath is exec.LookPath.
func LookPath(file string) (string, error) { return exec.LookPath(file) }

// Cmd is a program to run, as exec.Cmd, except that a template forks it:
// the calling Go program is never forked, and the program starts in a
// process of the default template (New, then Exec).
//
// Differences from os/exec, all stated here:
//   - the program sees Path as argv[0] (os/exec passes Args[0]); the rest
//     of Args follows unchanged;
//   - the parent of the process is the template, so Process can signal it
//     (Kill, Signal) but not wait for it: use Cmd.Wait;
//   - an ExtraFiles entry may not be nil (anyfork numbers the fds it sends
//     without gaps); Start refuses one;
//   - the program holds only fds 0, 1, 2 and ExtraFiles: fds the caller
//     has without close-on-exec (inherited from its own parent, say) do
//     not reach it, as they would through os/exec;
//   - ProcessState has no CPU times (UserTime, SystemTime, SysUsage): the
//     template reaps the program and reports only its wait status;
//   - SysProcAttr, Cancel and WaitDelay do not exist.
type Cmd struct {
	// Path is the program to run: Command sets it with LookPath when the
	// name has no slash.
	Path string
	// Args holds the command line, Args[0] the name given to Command.
	Args []string
	// Env is the whole environment (NAME=VALUE; the last of duplicates
	// wins). nil means the calling program's os.Environ(), with PWD set to
	// Dir when Dir is set, as in os/exec.
	Env []string
	// Dir is the working directory; empty means the calling program's.
	Dir string
	// Stdin, Stdout and Stderr: nil is the null device; an *os.File is
	// handed over as it is; anything else goes through a pipe and a
	// goroutine, which Wait waits for.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// ExtraFiles become fds 3, 4, ... of the program.
	ExtraFiles []*os.File
	// Process is set by Start (its Pid; Kill and Signal work).
	Process *os.Process
	// ProcessState is set by Wait.
	ProcessState *ProcessState
	// Err is the LookPath error of Command, returned by Start.
	Err error

	closeAfterStart []io.Closer // the program's ends of pipes
	closeAfterWait  []io.Closer // our ends of pipes
	copies          []func() error
	copyErrs        chan error
	exited          chan exitReport
	stdoutFile      *os.File // fd 1, shared with fd 2 when Stderr == Stdout
	waitDone        bool
}

type exitReport struct {
	pid    int
	status syscall.WaitStatus
	err    error
}

// Command returns a Cmd that runs name with args, as exec.Command does.
func Command(name string, args ...string) *Cmd {
	c := &Cmd{Path: name, Args: append([]string{name}, args...)}
	if filepath.Base(name) == name {
		lp, err := exec.LookPath(name)
		if lp != "" {
			c.Path = lp
		}
		if err != nil {
			c.Err = err
		}
	}
	return c
}

// String is the command line, as exec.Cmd's String.
func (c *Cmd) String() string {
	if c.Err != nil {
		return strings.Join(c.Args, " ")
	}
	b := new(strings.Builder)
	b.WriteString(c.Path)
	for _, a := range c.Args[1:] {
		b.WriteByte(' ')
		b.WriteString(a)
	}
	return b.String()
}

// ProcessState is how a program ended, as os.ProcessState (which only the
// os package can make): the wait status the template reported.
type ProcessState struct {
	pid    int
	status syscall.WaitStatus
}

// Pid is the program's process id.
func (p *ProcessState) Pid() int { return p.pid }

// Exited says whether the program exited (rather than was killed).
func (p *ProcessState) Exited() bool { return p.status.Exited() }

// Success says whether it exited with status 0.
func (p *ProcessState) Success() bool { return p.status.Exited() && p.status.ExitStatus() == 0 }

// ExitCode is the exit status, or -1 when a signal ended it.
func (p *ProcessState) ExitCode() int {
	if p == nil {
		return -1
	}
	return p.status.ExitStatus()
}

// Sys is the syscall.WaitStatus.
func (p *ProcessState) Sys() interface{} { return p.status }

// String reads as os.ProcessState's: "exit status 1", "signal: killed".
func (p *ProcessState) String() string {
	if p == nil {
		return "<nil>"
	}
	st := p.status
	var s string
	switch {
	case st.Exited():
		s = "exit status " + strconv.Itoa(st.ExitStatus())
	case st.Signaled():
		s = "signal: " + st.Signal().String()
	case st.Stopped():
		s = "stop signal: " + st.StopSignal().String()
	case st.Continued():
		s = "continued"
	}
	if st.CoreDump() {
		s += " (core dumped)"
	}
	return s
}

// ExitError is a program that did not exit with status 0, as
// exec.ExitError. Stderr holds what it wrote there when Output
// collected it.
type ExitError struct {
	*ProcessState
	Stderr []byte
}

func (e *ExitError) Error() string { return e.ProcessState.String() }

// Run starts the program and waits for it to end.
func (c *Cmd) Run() error {
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

// Output runs the program and returns its standard output. When Stderr is
// nil, what it writes there ends up in the *ExitError's Stderr.
func (c *Cmd) Output() ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("exec: Stdout already set")
	}
	var out bytes.Buffer
	c.Stdout = &out
	var stderr *bytes.Buffer
	if c.Stderr == nil {
		stderr = new(bytes.Buffer)
		c.Stderr = stderr
	}
	err := c.Run()
	var ee *ExitError
	if stderr != nil && errors.As(err, &ee) {
		ee.Stderr = stderr.Bytes()
	}
	return out.Bytes(), err
}

// CombinedOutput runs the program and returns its standard output and
// standard error together, as one pipe carried them.
func (c *Cmd) CombinedOutput() ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("exec: Stdout already set")
	}
	if c.Stderr != nil {
		return nil, errors.New("exec: Stderr already set")
	}
	var b bytes.Buffer
	c.Stdout = &b
	c.Stderr = &b
	err := c.Run()
	return b.Bytes(), err
}

// StdinPipe returns a pipe to the program's standard input; Wait closes
// it once the program has ended (close it earlier to send EOF).
func (c *Cmd) StdinPipe() (io.WriteCloser, error) {
	if c.Stdin != nil {
		return nil, errors.New("exec: Stdin already set")
	}
	if c.Process != nil {
		return nil, errors.New("exec: StdinPipe after process started")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	c.Stdin = r
	c.closeAfterStart = append(c.closeAfterStart, r)
	wc := &closeOnce{File: w}
	c.closeAfterWait = append(c.closeAfterWait, wc)
	return wc, nil
}

// StdoutPipe returns a pipe from the program's standard output; read it
// all before Wait, which closes it.
func (c *Cmd) StdoutPipe() (io.ReadCloser, error) {
	if c.Stdout != nil {
		return nil, errors.New("exec: Stdout already set")
	}
	return c.outPipe(&c.Stdout, "StdoutPipe")
}

// StderrPipe is StdoutPipe for standard error.
func (c *Cmd) StderrPipe() (io.ReadCloser, error) {
	if c.Stderr != nil {
		return nil, errors.New("exec: Stderr already set")
	}
	return c.outPipe(&c.Stderr, "StderrPipe")
}

func (c *Cmd) outPipe(field *io.Writer, name string) (io.ReadCloser, error) {
	if c.Process != nil {
		return nil, errors.New("exec: " + name + " after process started")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	*field = w
	c.closeAfterStart = append(c.closeAfterStart, w)
	c.closeAfterWait = append(c.closeAfterWait, r)
	return r, nil
}

type closeOnce struct {
	*os.File
	once sync.Once
	err  error
}

func (c *closeOnce) Close() error {
	c.once.Do(func() { c.err = c.File.Close() })
	return c.err
}

// Start starts the program and returns once it runs (its exec succeeded)
// or with why it could not: a program not found (*exec.Error), a missing
// Dir (*fs.PathError "chdir"), an exec that failed (*fs.PathError
// "fork/exec"), or the library's *Error.
func (c *Cmd) Start() (err error) {
	if c.Path == "" && c.Err == nil {
		c.Err = errors.New("exec: no command")
	}
	if c.Err != nil {
		c.closeAll(c.closeAfterStart)
		c.closeAll(c.closeAfterWait)
		return c.Err
	}
	if c.Process != nil {
		return errors.New("exec: already started")
	}
	defer func() {
		c.closeAll(c.closeAfterStart)
		c.closeAfterStart = nil
		if err != nil {
			c.closeAll(c.closeAfterWait)
			c.closeAfterWait = nil
		}
	}()
	if c.Dir != "" {
		// As os.StartProcess: say clearly that the directory is missing.
		if _, err := os.Stat(c.Dir); err != nil {
			pe := err.(*fs.PathError)
			pe.Op = "chdir"
			return pe
		}
	}
	for i, f := range c.ExtraFiles {
		if f == nil {
			return &Error{Op: "Start", Errno: syscall.EINVAL,
				Msg: fmt.Sprintf("ExtraFiles[%d] is nil: anyfork sends fds without gaps, so each entry must be a file", i)}
		}
	}
	env, err := c.environ()
	if err != nil {
		return err
	}
	stdio := make([]*os.File, 3)
	for i := range stdio {
		var f *os.File
		if i == 0 {
			f, err = c.stdin()
		} else {
			f, err = c.output(i)
		}
		if err != nil {
			return err
		}
		stdio[i] = f
	}

	p, err := New()
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			p.Free()
		}
	}()
	if c.Dir != "" {
		if err := p.Eval("anyfork_chdir", c.Dir); err != nil {
			return err
		}
	}
	for _, f := range append(stdio, c.ExtraFiles...) {
		// Fd puts the file in blocking mode, as os.StartProcess does: a
		// program expects blocking stdio (os.Pipe's ends are nonblocking).
		err := p.SendFdNum(int(f.Fd()))
		runtime.KeepAlive(f)
		if err != nil {
			return err
		}
	}
	exited := make(chan exitReport, 1)
	if err := p.OnExit(func(pid int, st syscall.WaitStatus, err error) {
		exited <- exitReport{pid, st, err}
	}); err != nil {
		return err
	}
	pid, err := p.Pid()
	if err != nil {
		return err
	}
	ok = true
	comm, err := p.Exec(append([]string{c.Path}, c.Args[1:]...), env)
	if err != nil {
		return err
	}
	// The comm socket is close-on-exec in the program: EOF means the exec
	// succeeded; a message means it failed (and the process exits 127).
	msg, rerr := io.ReadAll(comm)
	comm.Close()
	if rerr != nil && !errors.Is(rerr, syscall.ECONNRESET) {
		return &Error{Op: "Start", Msg: "reading whether the exec succeeded: " + rerr.Error()}
	}
	c.exited = exited
	if len(msg) > 0 {
		// Collect the exit report of the failed process, then say why.
		if _, werr := c.awaitExit(); werr != nil {
			return werr
		}
		c.exited = nil
		return c.execError(strings.TrimSpace(string(msg)))
	}
	c.Process, _ = os.FindProcess(pid)
	c.copyErrs = make(chan error, len(c.copies))
	for _, fn := range c.copies {
		go func(fn func() error) { c.copyErrs <- fn() }(fn)
	}
	return nil
}

// execError turns the exec builtin's message into os/exec's error: a
// *fs.PathError "fork/exec" with the errno the message ends with
// ("... (os error 13)"), else an *Error with the message.
func (c *Cmd) execError(msg string) error {
	if m := osError.FindStringSubmatch(msg); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
			return &fs.PathError{Op: "fork/exec", Path: c.Path, Err: syscall.Errno(n)}
		}
	}
	return &Error{Op: "Start", Msg: msg}
}

// osError is the errno at the end of the exec builtin's message.
var osError = regexp.MustCompile(`\(os error (\d+)\)$`)

// Wait waits for the program to end and for the copying to and from its
// pipes to finish, then closes the pipes. A non-zero exit is an
// *ExitError; otherwise the first copy error, if any.
func (c *Cmd) Wait() error {
	if c.Process == nil {
		return errors.New("exec: not started")
	}
	if c.waitDone {
		return errors.New("exec: Wait was already called")
	}
	c.waitDone = true
	rep, err := c.awaitExit()
	if err != nil {
		c.closeAll(c.closeAfterWait)
		return err
	}
	c.ProcessState = &ProcessState{pid: rep.pid, status: rep.status}
	var copyErr error
	for range c.copies {
		if err := <-c.copyErrs; err != nil && copyErr == nil {
			copyErr = err
		}
	}
	c.closeAll(c.closeAfterWait)
	if !c.ProcessState.Success() {
		return &ExitError{ProcessState: c.ProcessState}
	}
	return copyErr
}

// awaitExit dispatches until this process's exit callback has run (another
// goroutine's Wait may run it meanwhile).
func (c *Cmd) awaitExit() (exitReport, error) {
	for {
		select {
		case r := <-c.exited:
			if r.err != nil {
				return r, r.err
			}
			return r, nil
		default:
		}
		if _, err := Wait(100 * time.Millisecond); err != nil {
			return exitReport{}, err
		}
	}
}

// environ is os/exec's: Env or os.Environ() (with PWD=Dir), last duplicate
// wins.
func (c *Cmd) environ() ([]string, error) {
	env := c.Env
	if env == nil {
		env = os.Environ()
		if c.Dir != "" {
			pwd, err := filepath.Abs(c.Dir)
			if err != nil {
				return nil, err
			}
			env = append(env, "PWD="+pwd)
		}
	}
	// As os/exec: the last of duplicates wins, at its own position.
	seen := make(map[string]bool, len(env))
	out := make([]string, 0, len(env))
	for i := len(env) - 1; i >= 0; i-- {
		kv := env[i]
		if strings.IndexByte(kv, 0) >= 0 {
			return nil, fmt.Errorf("exec: environment variable contains NUL")
		}
		k := kv
		if j := strings.IndexByte(kv[min1(len(kv)):], '='); j >= 0 {
			k = kv[:j+min1(len(kv))]
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, kv)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// min1 skips a leading '=' when looking for the name's end, as os/exec
// does (names such as "=C:" exist on Windows).
func min1(n int) int {
	if n > 0 {
		return 1
	}
	return 0
}

func (c *Cmd) stdin() (*os.File, error) {
	switch r := c.Stdin.(type) {
	case nil:
		f, err := os.Open(os.DevNull)
		if err != nil {
			return nil, err
		}
		c.closeAfterStart = append(c.closeAfterStart, f)
		return f, nil
	case *os.File:
		return r, nil
	default:
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		c.closeAfterStart = append(c.closeAfterStart, pr)
		c.closeAfterWait = append(c.closeAfterWait, pw)
		c.copies = append(c.copies, func() error {
			_, err := io.Copy(pw, r)
			if errors.Is(err, syscall.EPIPE) {
				err = nil // the program stopped reading: not an error
			}
			if cerr := pw.Close(); err == nil && !errors.Is(cerr, os.ErrClosed) {
				err = cerr
			}
			return err
		})
		return pr, nil
	}
}

// output makes fd 1 (i == 1) or 2; Stderr equal to Stdout shares its fd.
func (c *Cmd) output(i int) (*os.File, error) {
	w := c.Stdout
	if i == 2 {
		w = c.Stderr
		if w != nil && interfaceEqual(w, c.Stdout) {
			return c.stdoutFile, nil
		}
	}
	var f *os.File
	switch wf := w.(type) {
	case nil:
		nf, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		c.closeAfterStart = append(c.closeAfterStart, nf)
		f = nf
	case *os.File:
		f = wf
	default:
		pr, pw, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		c.closeAfterStart = append(c.closeAfterStart, pw)
		c.closeAfterWait = append(c.closeAfterWait, pr)
		c.copies = append(c.copies, func() error {
			_, err := io.Copy(wf, pr)
			pr.Close()
			return err
		})
		f = pw
	}
	if i == 1 {
		c.stdoutFile = f
	}
	return f, nil
}

func interfaceEqual(a, b interface{}) bool {
	defer func() { _ = recover() }() // uncomparable dynamic types
	return a == b
}

func (c *Cmd) closeAll(cs []io.Closer) {
	for _, x := range cs {
		x.Close()
	}
}
