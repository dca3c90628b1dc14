package anyfork_test

import (
	"fmt"
	"io"
	"log"

	"anyfork"
)

// Runs echo in a process forked by the default template, with the comm
// socket as its stdout.
func ExampleProc_Exec() {
	p, err := anyfork.New()
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Eval("anyfork_comm_fd", "1"); err != nil {
		log.Fatal(err)
	}
	out, err := p.Exec([]string{"echo", "hello from", "a forked echo"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer out.Close()
	b, err := io.ReadAll(out)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(b))
	// Output: hello from a forked echo
}
