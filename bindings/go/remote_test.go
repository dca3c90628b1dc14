package anyfork

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// localTransport reaches anyfork-serve --stdio through sh: the protocol of
// `ssh host anyfork-serve --stdio` (tests/remote_ssh.rs covers ssh).
func localTransport() []string {
	serve := os.Getenv("ANYFORK_SERVE")
	if serve == "" {
		serve = "anyfork-serve"
	}
	return []string{"sh", "-c", `exec "$0" --stdio "$@"`, serve}
}

func TestRemoteTemplate(t *testing.T) {
	tpl, err := NewRemote(localTransport()...)
	if err != nil {
		t.Fatal(err)
	}
	defer tpl.Free()
	p, err := tpl.Fork()
	if err != nil {
		t.Fatal(err)
	}
	var ex exitResult
	if err := p.OnExit(ex.record); err != nil {
		t.Fatal(err)
	}
	if err := p.Eval("anyfork_comm_fd", "1"); err != nil {
		t.Fatal(err)
	}
	f, err := p.Exec([]string{"sh", "-c", "echo $$; exit 3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(readAll(t, f)))
	exitedWith(t, &ex, 3)
	if ex.pid != pid {
		t.Fatalf("exit reported for pid %d, the process said %d", ex.pid, pid)
	}

	q, err := tpl.Fork()
	if err != nil {
		t.Fatal(err)
	}
	defer q.Free()
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	err = q.SendFd(w)
	if !errors.Is(err, syscall.EOPNOTSUPP) || !strings.Contains(err.Error(), "cannot cross machines") {
		t.Fatalf("SendFd to a remote process: %v", err)
	}
}

func TestRemoteStartFailureSaysWhy(t *testing.T) {
	_, err := NewRemote("sh", "-c", "echo unknown host >&2; exit 255")
	if !errors.Is(err, syscall.ECONNREFUSED) ||
		!strings.Contains(err.Error(), "status 255") || !strings.Contains(err.Error(), "unknown host") {
		t.Fatalf("got %v", err)
	}
}
