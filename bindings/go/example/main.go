// Command example spawns 100 `sh -c 'echo $0' N` processes through
// anyfork's exec builtin, with each program's stdout being its comm
// socket, and checks that every one printed its own N and exited 0.
//
// Every process is forked by the library's small default template, not by
// this (multi-threaded) Go program: Go cannot fork itself safely.
//
//	go run ./example        (exits 0 when all outputs are right)
package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"anyfork"
)

// spawned is what the callbacks learn about one process.
type spawned struct {
	comm   *os.File // stdout of the program, our end
	err    error
	ran    bool
	exited bool
	status syscall.WaitStatus
	exitEr error
}

// spawnEchoes runs n echo programs and checks their output and status.
func spawnEchoes(n int, log io.Writer) error {
	procs := make([]spawned, n)
	for i := range procs {
		s := &procs[i]
		p, err := anyfork.New()
		if err != nil {
			return err
		}
		// The comm socket becomes the program's fd 1, its stdout.
		if err := p.Eval("anyfork_comm_fd", "1"); err != nil {
			p.Free()
			return err
		}
		if err := p.OnExit(func(pid int, st syscall.WaitStatus, err error) {
			s.exited, s.status, s.exitEr = true, st, err
		}); err != nil {
			p.Free()
			return err
		}
		argv := []string{"sh", "-c", "echo $0", strconv.Itoa(i)}
		// ExecFunc consumes p; the callback runs inside anyfork.Wait.
		if err := p.ExecFunc(argv, nil, func(f *os.File, err error) {
			s.ran, s.comm, s.err = true, f, err
		}); err != nil {
			return err
		}
	}

	// Run callbacks until every process has been started and has exited.
	deadline := time.Now().Add(60 * time.Second)
	for !allDone(procs) {
		if time.Now().After(deadline) {
			return fmt.Errorf("not every process finished within 60 s")
		}
		if _, err := anyfork.Wait(time.Second); err != nil {
			return err
		}
	}

	// Each program has exited, so its stdout is at EOF: read them all.
	var wg sync.WaitGroup
	outs := make([]string, n)
	errs := make([]error, n)
	for i := range procs {
		if procs[i].err != nil {
			errs[i] = procs[i].err
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			f := procs[i].comm
			defer f.Close()
			_ = f.SetReadDeadline(time.Now().Add(30 * time.Second))
			b, err := io.ReadAll(f)
			outs[i], errs[i] = string(b), err
		}(i)
	}
	wg.Wait()

	bad := 0
	for i := range procs {
		s := &procs[i]
		want := strconv.Itoa(i) + "\n"
		switch {
		case errs[i] != nil:
			fmt.Fprintf(log, "process %d: %v\n", i, errs[i])
		case s.exitEr != nil:
			fmt.Fprintf(log, "process %d: %v\n", i, s.exitEr)
		case !s.status.Exited() || s.status.ExitStatus() != 0:
			fmt.Fprintf(log, "process %d: wait status %#x\n", i, int(s.status))
		case outs[i] != want:
			fmt.Fprintf(log, "process %d: printed %q, want %q\n", i, outs[i], want)
		default:
			continue
		}
		bad++
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d processes went wrong", bad, n)
	}
	fmt.Fprintf(log, "%d processes printed their numbers and exited 0\n", n)
	return nil
}

func allDone(procs []spawned) bool {
	for i := range procs {
		if !procs[i].ran || !procs[i].exited {
			return false
		}
	}
	return true
}

func main() {
	if err := spawnEchoes(100, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}
