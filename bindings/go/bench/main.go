// Command bench compares Go's own ways to start a program with anyfork's,
// side by side in one run. Plain Go cannot fork without exec, so every
// method starts /bin/true and waits for its end:
//
//   - os/exec: exec.Command("/bin/true").Run();
//   - syscall.ForkExec + Wait4 (what os/exec does underneath, without its
//     pipes and goroutines);
//   - anyfork.Command("/bin/true").Run() (this module's os/exec look-alike,
//     through the default template);
//   - anyfork New + Exec: the exec builtin on a process of the default
//     template (one request; the template starts the program), reading the
//     comm socket to EOF and waiting for the exit report.
//
// Every repetition runs each method -n times, the methods taking turns
// (the order rotates); the table gives the median of -reps repetitions
// with min-max for the rate and the p50 latency, and the ratios to os/exec
// taken repetition by repetition. Then the heap grows to -grow-mb of
// touched memory and it is all done again. -json writes the figures for
// tools/bench_chart.py. From bindings/go, against a build tree:
//
//	CGO_CFLAGS=-I$PWD/../../include \
//	CGO_LDFLAGS="-L$PWD/../../target/release -Wl,-rpath,$PWD/../../target/release" \
//	ANYFORK_SERVE=$PWD/../../target/release/anyfork-serve \
//	go run -tags anyfork_nopkgconfig ./bench -n 200 -reps 5 -grow-mb 1024
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"anyfork"
)

const program = "/bin/true"

type method struct {
	key, name string
	run       func() error
}

var methods = []method{
	{"own", "os/exec Command.Run", func() error { return exec.Command(program).Run() }},
	{"own_forkexec", "syscall.ForkExec + Wait4", forkExec},
	{"anyfork", "anyfork.Command.Run", func() error { return anyfork.Command(program).Run() }},
	{"anyfork_exec", "anyfork New + Exec (one request)", anyforkExec},
}

func forkExec() error {
	pid, err := syscall.ForkExec(program, []string{program},
		&syscall.ProcAttr{Files: []uintptr{0, 1, 2}})
	if err != nil {
		return err
	}
	var st syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &st, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return err
	}
	if !st.Exited() || st.ExitStatus() != 0 {
		return fmt.Errorf("%s: wait status %#x", program, int(st))
	}
	return nil
}

func anyforkExec() error {
	p, err := anyfork.New()
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	if err := p.OnExit(func(_ int, st syscall.WaitStatus, err error) {
		if err == nil && (!st.Exited() || st.ExitStatus() != 0) {
			err = fmt.Errorf("%s: wait status %#x", program, int(st))
		}
		done <- err
	}); err != nil {
		p.Free()
		return err
	}
	comm, err := p.Exec([]string{program}, nil)
	if err != nil {
		return err
	}
	msg, err := io.ReadAll(comm)
	comm.Close()
	if err != nil {
		return err
	}
	if len(msg) > 0 {
		return fmt.Errorf("exec: %s", strings.TrimSpace(string(msg)))
	}
	for {
		select {
		case err := <-done:
			return err
		default:
		}
		if _, err := anyfork.Wait(100 * time.Millisecond); err != nil {
			return err
		}
	}
}

type span struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func spanOf(v []float64) span {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return span{m, s[0], s[len(s)-1]}
}

type methodResult struct {
	Name     string `json:"name"`
	RatePerS span   `json:"rate_per_s"`
	P50Ms    span   `json:"p50_ms"`
}

type size struct {
	Label    string                  `json:"label"`
	RSSBytes int64                   `json:"rss_bytes"`
	Methods  map[string]methodResult `json:"methods"`
	Ratios   map[string]span         `json:"ratios"`
}

func roundOf(m method, n int) (rate, p50 float64, err error) {
	lat := make([]float64, 0, n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := m.run(); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", m.name, err)
		}
		lat = append(lat, time.Since(t).Seconds())
	}
	total := time.Since(t0).Seconds()
	sort.Float64s(lat)
	return float64(n) / total, lat[len(lat)/2] * 1000, nil
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), &kb)
			return kb * 1024
		}
	}
	return 0
}

func loadavg() []float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	var a, c, d float64
	fmt.Sscan(string(b), &a, &c, &d)
	return []float64{a, c, d}
}

func measure(label string, n, reps, warmup int) (size, error) {
	for _, m := range methods {
		for i := 0; i < warmup; i++ {
			if err := m.run(); err != nil {
				return size{}, fmt.Errorf("%s: %w", m.name, err)
			}
		}
	}
	rates := map[string][]float64{}
	p50s := map[string][]float64{}
	for rep := 0; rep < reps; rep++ {
		k := rep % len(methods)
		order := append(append([]method(nil), methods[k:]...), methods[:k]...)
		for _, m := range order {
			r, p, err := roundOf(m, n)
			if err != nil {
				return size{}, err
			}
			rates[m.key] = append(rates[m.key], r)
			p50s[m.key] = append(p50s[m.key], p)
		}
		fmt.Fprintf(os.Stderr, "%s: repetition %d of %d\n", label, rep+1, reps)
	}
	s := size{Label: label, RSSBytes: rssBytes(), Methods: map[string]methodResult{}, Ratios: map[string]span{}}
	for _, m := range methods {
		s.Methods[m.key] = methodResult{m.name, spanOf(rates[m.key]), spanOf(p50s[m.key])}
		if m.key != "own" {
			r := make([]float64, reps)
			for i := range r {
				r[i] = rates[m.key][i] / rates["own"][i]
			}
			s.Ratios[m.key+"_over_own"] = spanOf(r)
		}
	}
	return s, nil
}

func fmtSpan(s span, f string) string {
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.Median, s.Min, s.Max)
}

var ballast []byte

func main() {
	n := flag.Int("n", 200, "starts per method and repetition")
	reps := flag.Int("reps", 5, "repetitions")
	warmup := flag.Int("warmup", 20, "starts of each method before measuring")
	growMB := flag.Int("grow-mb", 1024, "heap to grow to (touched) for the second round; 0: none")
	jsonOut := flag.String("json", "", "write the figures here too")
	flag.Parse()
	if *n < 1 || *reps < 1 || *growMB < 0 || *warmup < 0 {
		fmt.Fprintln(os.Stderr, "bench: -n and -reps must be at least 1, -grow-mb and -warmup at least 0")
		os.Exit(2)
	}
	load0 := loadavg()
	var sizes []size
	s, err := measure("plain", *n, *reps, *warmup)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	sizes = append(sizes, s)
	if *growMB > 0 {
		// Touched memory: every page is this process's, as in a grown program.
		ballast = make([]byte, *growMB<<20)
		for i := 0; i < len(ballast); i += 4096 {
			ballast[i] = 1
		}
		if s, err = measure("grown", *n, *reps, *warmup); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		sizes = append(sizes, s)
		runtime.KeepAlive(ballast)
	}
	load1 := loadavg()
	date := time.Now().UTC().Format("2006-01-02 15:04 UTC")
	fmt.Printf("Go's own process start against anyfork's (%s, %s), %d starts of %s per repetition, "+
		"median of %d repetitions (min–max), interleaved; load average %.1f at the start, %.1f at the end (%d CPUs)\n\n",
		runtime.Version(), date, *n, program, *reps, load0[0], load1[0], runtime.NumCPU())
	fmt.Println("| method | caller | starts/s | × os/exec | p50 ms |")
	fmt.Println("|---|---|---|---|---|")
	for _, s := range sizes {
		where := fmt.Sprintf("%s (%d MB)", s.Label, s.RSSBytes>>20)
		for _, m := range methods {
			r := s.Methods[m.key]
			ratio := "1"
			if x, ok := s.Ratios[m.key+"_over_own"]; ok {
				ratio = fmtSpan(x, "%.2f")
			}
			fmt.Printf("| %s | %s | %s | %s | %s |\n", r.Name, where, fmtSpan(r.RatePerS, "%.0f"), ratio,
				fmtSpan(r.P50Ms, "%.2f"))
		}
	}
	if *jsonOut != "" {
		out := map[string]interface{}{
			"language":     "go",
			"own_fork":     "os/exec",
			"interpreter":  runtime.Version(),
			"date":         date,
			"n":            *n,
			"repetitions":  *reps,
			"cpus":         runtime.NumCPU(),
			"load_average": map[string][]float64{"start": load0, "end": load1},
			"workload":     "start " + program + " and wait",
			"sizes":        sizes,
		}
		b, _ := json.MarshalIndent(out, "", " ")
		tmp := *jsonOut + ".tmp"
		if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		if err := os.Rename(tmp, *jsonOut); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}
