package anyfork

// Command against os/exec: the same commands through both, the same
// outputs, exit codes and errors.

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// spec is one command and how it is set up, applied to either Cmd.
type spec struct {
	name  string
	args  []string
	env   []string
	dir   string
	stdin string // through a reader when not empty
}

// result is what a run gave: outputs, exit code and error text.
type result struct {
	stdout, stderr string
	code           int
	err            string
}

func runExec(s spec) result {
	c := exec.Command(s.name, s.args...)
	c.Env, c.Dir = s.env, s.dir
	if s.stdin != "" {
		c.Stdin = strings.NewReader(s.stdin)
	}
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	r := result{stdout: out.String(), stderr: errb.String(), code: c.ProcessState.ExitCode()}
	if err != nil {
		r.err = err.Error()
	}
	return r
}

func runAnyfork(s spec) result {
	c := Command(s.name, s.args...)
	c.Env, c.Dir = s.env, s.dir
	if s.stdin != "" {
		c.Stdin = strings.NewReader(s.stdin)
	}
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	r := result{stdout: out.String(), stderr: errb.String(), code: c.ProcessState.ExitCode()}
	if err != nil {
		r.err = err.Error()
	}
	return r
}

func same(t *testing.T, s spec) result {
	t.Helper()
	want, got := runExec(s), runAnyfork(s)
	if want != got {
		t.Fatalf("%s %q:\nos/exec: %+v\nanyfork: %+v", s.name, s.args, want, got)
	}
	return got
}

func TestCommandOutputsAndExitCodesMatchOsExec(t *testing.T) {
	r := same(t, spec{name: "echo", args: []string{"hello", "world"}})
	if r.stdout != "hello world\n" || r.code != 0 || r.err != "" {
		t.Fatalf("echo: %+v", r)
	}
	r = same(t, spec{name: "sh", args: []string{"-c", "echo out; echo err >&2; exit 3"}})
	if r.code != 3 || r.err != "exit status 3" || r.stderr != "err\n" {
		t.Fatalf("exit 3: %+v", r)
	}
	r = same(t, spec{name: "sh", args: []string{"-c", "kill -9 $$"}})
	if r.code != -1 || r.err != "signal: killed" {
		t.Fatalf("killed: %+v", r)
	}
}

func TestCommandEnvAndDirMatchOsExec(t *testing.T) {
	r := same(t, spec{name: "env", env: []string{"A=1", "B=two words", "A=3"}})
	if r.stdout != "B=two words\nA=3\n" {
		t.Fatalf("env with duplicates: %q", r.stdout)
	}
	r = same(t, spec{name: "env", env: []string{}})
	if r.stdout != "" {
		t.Fatalf("empty env: %q", r.stdout)
	}
	// Env nil: the calling program's environment, set just now, and PWD.
	t.Setenv("ANYFORK_COMMAND_TEST", "set by the caller")
	dir := t.TempDir()
	want, got := runExec(spec{name: "env", dir: dir}), runAnyfork(spec{name: "env", dir: dir})
	if sortedLines(want.stdout) != sortedLines(got.stdout) {
		t.Fatalf("inherited env differs:\nos/exec:\n%s\nanyfork:\n%s", want.stdout, got.stdout)
	}
	if !strings.Contains(got.stdout, "ANYFORK_COMMAND_TEST=set by the caller\n") ||
		!strings.Contains(got.stdout, "PWD="+dir+"\n") {
		t.Fatalf("inherited env lacks the caller's variable or PWD:\n%s", got.stdout)
	}
	r = same(t, spec{name: "pwd", args: []string{"-P"}, dir: dir})
	real, _ := filepath.EvalSymlinks(dir)
	if r.stdout != real+"\n" {
		t.Fatalf("pwd in %s: %q", dir, r.stdout)
	}
}

func sortedLines(s string) string {
	l := strings.Split(s, "\n")
	sort.Strings(l)
	return strings.Join(l, "\n")
}

func TestCommandStdinFromAReaderMatchesOsExec(t *testing.T) {
	big := strings.Repeat("abc\n", 100000) // more than a pipe holds
	r := same(t, spec{name: "tr", args: []string{"a-z", "A-Z"}, stdin: big})
	if r.stdout != strings.ToUpper(big) {
		t.Fatalf("tr: %d bytes back", len(r.stdout))
	}
	// A program that stops reading early: no error from the copy.
	r = same(t, spec{name: "head", args: []string{"-c", "4"}, stdin: big})
	if r.stdout != "abc\n" || r.err != "" {
		t.Fatalf("head: %+v", r)
	}
}

func TestCommandStartErrorsMatchOsExec(t *testing.T) {
	// A program not in PATH: os/exec's *exec.Error from Start.
	we := exec.Command("anyfork-no-such-program").Run()
	ge := Command("anyfork-no-such-program").Run()
	if ge == nil || ge.Error() != we.Error() || !errors.Is(ge, exec.ErrNotFound) || !errors.Is(ge, ErrNotFound) {
		t.Fatalf("missing program: os/exec %v, anyfork %v", we, ge)
	}
	// A missing working directory.
	we = exec.Command("true").Run()
	if we != nil {
		t.Fatal(we)
	}
	c1, c2 := exec.Command("true"), Command("true")
	c1.Dir, c2.Dir = "/nonexistent/anyfork-dir", "/nonexistent/anyfork-dir"
	we, ge = c1.Run(), c2.Run()
	var pe *fs.PathError
	if ge == nil || ge.Error() != we.Error() || !errors.As(ge, &pe) || !errors.Is(ge, fs.ErrNotExist) {
		t.Fatalf("missing dir: os/exec %v, anyfork %v", we, ge)
	}
	// A file that is not executable: the exec itself fails, with EACCES.
	f := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	we, ge = exec.Command(f).Run(), Command(f).Run()
	if ge == nil || ge.Error() != we.Error() || !errors.Is(ge, syscall.EACCES) {
		t.Fatalf("not executable: os/exec %v, anyfork %v", we, ge)
	}
	c := Command(f)
	if c.Start() == nil || c.Process != nil {
		t.Fatal("a failed Start left a Process")
	}
	if err := c.Wait(); err == nil || err.Error() != "exec: not started" {
		t.Fatalf("Wait after a failed Start: %v", err)
	}
}

func TestCommandOutputAndCombinedOutputMatchOsExec(t *testing.T) {
	script := "echo out; echo err >&2; echo out2; exit 2"
	wo, we := exec.Command("sh", "-c", script).Output()
	go_, ge := Command("sh", "-c", script).Output()
	var wee *exec.ExitError
	var gee *ExitError
	if !errors.As(we, &wee) || !errors.As(ge, &gee) {
		t.Fatalf("Output's errors: os/exec %T %v, anyfork %T %v", we, we, ge, ge)
	}
	if string(wo) != string(go_) || string(wee.Stderr) != string(gee.Stderr) || wee.ExitCode() != gee.ExitCode() {
		t.Fatalf("Output: os/exec %q %q %d, anyfork %q %q %d", wo, wee.Stderr, wee.ExitCode(), go_, gee.Stderr, gee.ExitCode())
	}
	if string(gee.Stderr) != "err\n" || gee.ExitCode() != 2 || gee.Sys().(syscall.WaitStatus).ExitStatus() != 2 {
		t.Fatalf("ExitError: %q %d", gee.Stderr, gee.ExitCode())
	}
	wc, _ := exec.Command("sh", "-c", script).CombinedOutput()
	gc, _ := Command("sh", "-c", script).CombinedOutput()
	if string(gc) != string(wc) || string(gc) != "out\nerr\nout2\n" {
		t.Fatalf("CombinedOutput: os/exec %q, anyfork %q", wc, gc)
	}
	c := Command("true")
	c.Stdout = io.Discard
	if _, err := c.Output(); err == nil {
		t.Fatal("Output with Stdout set did not fail")
	}
}

func TestCommandFilesAndExtraFilesMatchOsExec(t *testing.T) {
	run := func(start func(in, out, extra *os.File) error) string {
		dir := t.TempDir()
		in := filepath.Join(dir, "in")
		if err := os.WriteFile(in, []byte("from a file\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		inF, _ := os.Open(in)
		defer inF.Close()
		outF, _ := os.Create(filepath.Join(dir, "out"))
		defer outF.Close()
		r, w, _ := os.Pipe()
		defer r.Close()
		if err := start(inF, outF, w); err != nil {
			t.Fatal(err)
		}
		w.Close()
		extra, _ := io.ReadAll(r)
		out, _ := os.ReadFile(filepath.Join(dir, "out"))
		return string(out) + "|" + string(extra)
	}
	script := "cat; echo to fd 3 >&3"
	want := run(func(in, out, extra *os.File) error {
		c := exec.Command("sh", "-c", script)
		c.Stdin, c.Stdout, c.ExtraFiles = in, out, []*os.File{extra}
		return c.Run()
	})
	got := run(func(in, out, extra *os.File) error {
		c := Command("sh", "-c", script)
		c.Stdin, c.Stdout, c.ExtraFiles = in, out, []*os.File{extra}
		return c.Run()
	})
	if got != want || got != "from a file\n|to fd 3\n" {
		t.Fatalf("files: os/exec %q, anyfork %q", want, got)
	}
	// The program holds exactly 0, 1, 2 and ExtraFiles (ls's own directory
	// fd aside). os/exec's would also hold whatever fds the caller has
	// without close-on-exec; anyfork's never does.
	got = run(func(in, out, extra *os.File) error {
		c := Command("ls", "/proc/self/fd")
		c.Stdin, c.Stdout, c.ExtraFiles = in, out, []*os.File{extra}
		return c.Run()
	})
	if got != "0\n1\n2\n3\n4\n|" {
		t.Fatalf("fds of the program: %q", got)
	}
	c := Command("true")
	c.ExtraFiles = []*os.File{nil}
	if err := c.Run(); err == nil || !strings.Contains(err.Error(), "ExtraFiles[0] is nil") {
		t.Fatalf("a nil ExtraFiles entry: %v", err)
	}
}

func TestCommandPipesProcessAndWait(t *testing.T) {
	c := Command("sh", "-c", "read line; echo got $line")
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(in, "ping\n"); err != nil {
		t.Fatal(err)
	}
	in.Close()
	b, _ := io.ReadAll(out)
	if err := c.Wait(); err != nil || string(b) != "got ping\n" {
		t.Fatalf("pipes: %q, %v", b, err)
	}
	if c.ProcessState.Pid() != c.Process.Pid || !c.ProcessState.Success() || c.ProcessState.String() != "exit status 0" {
		t.Fatalf("ProcessState %v pid %d, Process pid %d", c.ProcessState, c.ProcessState.Pid(), c.Process.Pid)
	}
	if err := c.Wait(); err == nil || err.Error() != "exec: Wait was already called" {
		t.Fatalf("second Wait: %v", err)
	}

	// Process.Kill reaches the program; Wait reports the signal.
	s := Command("sleep", "30")
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err = s.Wait()
	var ee *ExitError
	if !errors.As(err, &ee) || err.Error() != "signal: killed" || ee.Exited() || time.Since(t0) > 10*time.Second {
		t.Fatalf("killed sleep: %v after %v", err, time.Since(t0))
	}
	if got := Command("echo", "a b").String(); !strings.HasSuffix(got, "/echo a b") {
		t.Fatalf("String: %q", got)
	}
}
