"""Python's own fork against anyfork, side by side in one run.

    cd bindings/python && ANYFORK_LIB=../../target/release/libanyfork.so \\
        python3 bench/fork_bench.py [--n 200] [--reps 5] [--grow-mb 1024] \\
        [--warm 2] [--json out.json]

Each creation makes a process that ends at once, and the caller waits for
its end before making the next:

- os.fork: os.fork(), the child calls os._exit(0), the parent waitpid();
- anyfork: tmpl.fork().run("__main__.noop") on a template of this program
  without a warm pool (anyfork.template(warm=0, ahead=0), made once at the plain
  size), reading the socket to EOF;
- anyfork, warm pool: the same on a second template that keeps --warm
  children forked and waiting (anyfork.template(warm=--warm, ahead=0));
- anyfork, default: the same on a third template made as template()
  makes it by default: a warm pool of 2, and 2 processes forked ahead in
  this process (anyfork.template());
- forkserver: multiprocessing's forkserver context, Process(target=noop)
  start() and join() (for reference; its server starts at the plain size).

Every repetition runs each method --n times, the methods taking turns (the
order rotates); the table gives the median of --reps repetitions with
min-max for the rate and for the p50 latency, and the ratios to os.fork
taken repetition by repetition. Then the program grows to --grow-mb of
touched memory and does it all again; the templates and the forkserver
stay as they were made, small, as a program would make them at its start.
--json writes the figures for tools/bench_chart.py.
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import anyfork  # noqa: E402


def noop(*_args):
    """What every child runs: nothing."""
    return 0


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Methods:
    """The ways to create a process, each a function making one and
    waiting for its end."""

    def __init__(self, warm, with_forkserver):
        self.tmpl = anyfork.template(warm=0, ahead=0)
        self.warm = anyfork.template(warm=warm, ahead=0)
        self.default = anyfork.template()
        self.ctx = multiprocessing.get_context("forkserver") if with_forkserver else None
        self.table = [
            ("own", "os.fork + _exit + waitpid", self.own),
            ("anyfork", "anyfork template(warm=0, ahead=0).fork().run", self.anyfork),
            ("anyfork_warm", "anyfork template(warm=%d, ahead=0).fork().run" % warm,
             self.anyfork_warm),
            ("anyfork_default", "anyfork template().fork().run (warm=2, ahead=2)",
             self.anyfork_default),
        ]
        if self.ctx is not None:
            self.table.append(("forkserver", "multiprocessing forkserver Process start+join",
                               self.forkserver))

    @staticmethod
    def own():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeError("os.fork child: wait status %d" % status)

    @staticmethod
    def _to_eof(sock):
        with sock:
            while True:
                b = sock.recv(4096)
                if not b:
                    return
                raise RuntimeError("the child wrote %r" % b)

    def anyfork(self):
        self._to_eof(self.tmpl.fork().run("__main__.noop"))

    def anyfork_warm(self):
        self._to_eof(self.warm.fork().run("__main__.noop"))

    def anyfork_default(self):
        self._to_eof(self.default.fork().run("__main__.noop"))

    def forkserver(self):
        p = self.ctx.Process(target=noop)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise RuntimeError("forkserver child: exit code %r" % p.exitcode)

    def close(self):
        for t in (self.tmpl, self.warm, self.default):
            t.free()


def round_of(fn, n):
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    lat.sort()
    return n / total, lat[len(lat) // 2] * 1000


def span(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure(methods, label, n, reps, warmup):
    for _key, _name, fn in methods.table:
        for _ in range(warmup):
            fn()
    got = {key: [] for key, _, _ in methods.table}
    for rep in range(reps):
        k = rep % len(methods.table)
        for key, _name, fn in methods.table[k:] + methods.table[:k]:
            got[key].append(round_of(fn, n))
        sys.stderr.write("%s: repetition %d of %d\n" % (label, rep + 1, reps))
    size = {"label": label, "rss_bytes": rss_bytes(), "methods": {}, "ratios": {}}
    for key, name, _fn in methods.table:
        size["methods"][key] = {
            "name": name,
            "rate_per_s": span([r for r, _ in got[key]]),
            "p50_ms": span([p for _, p in got[key]]),
        }
        if key != "own":
            size["ratios"][key + "_over_own"] = span(
                [a[0] / b[0] for a, b in zip(got[key], got["own"])])
    return size


def fmt(s, f):
    return "%s (%s–%s)" % (f % s["median"], f % s["min"], f % s["max"])


def table(result):
    out = ["| method | caller | creations/s | × os.fork | p50 ms |", "|---|---|---|---|---|"]
    for size in result["sizes"]:
        where = "%s (%d MB)" % (size["label"], size["rss_bytes"] >> 20)
        for key, m in size["methods"].items():
            ratio = size["ratios"].get(key + "_over_own")
            out.append("| %s | %s | %s | %s | %s |" % (
                m["name"], where, fmt(m["rate_per_s"], "%.0f"),
                fmt(ratio, "%.2f") if ratio else "1", fmt(m["p50_ms"], "%.2f")))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="creations per method and repetition")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--grow-mb", type=int, default=1024, help="0: the plain size only")
    ap.add_argument("--warm", type=int, default=2, help="the warm pool's size")
    ap.add_argument("--no-forkserver", action="store_true")
    ap.add_argument("--json", help="write the figures here too")
    o = ap.parse_args()
    if o.n < 1 or o.reps < 1 or o.grow_mb < 0 or not 1 <= o.warm <= 64:
        ap.error("--n and --reps must be at least 1, --grow-mb at least 0, --warm 1 to 64")

    load0 = os.getloadavg()
    methods = Methods(o.warm, not o.no_forkserver)
    sizes = [measure(methods, "plain", o.n, o.reps, o.warmup)]
    ballast = None
    if o.grow_mb:
        # Touched memory: every page is this process's, as in a grown program.
        ballast = b"\x01" * (o.grow_mb << 20)
        sizes.append(measure(methods, "grown", o.n, o.reps, o.warmup))
    del ballast
    methods.close()
    load1 = os.getloadavg()
    result = {
        "language": "python",
        "own_fork": "os.fork",
        "interpreter": "Python %s" % platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "n": o.n,
        "repetitions": o.reps,
        "load_average": {"start": list(load0), "end": list(load1)},
        "cpus": os.cpu_count(),
        "sizes": sizes,
    }
    print("Python's own fork against anyfork (%s, %s), %d creations per repetition, median of %d "
          "repetitions (min–max), interleaved; load average %.1f at the start, %.1f at the end "
          "(%d CPUs)\n" % (result["interpreter"], result["date"], o.n, o.reps, load0[0], load1[0],
                           result["cpus"]))
    print(table(result))
    if o.json:
        tmp = o.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, o.json)


if __name__ == "__main__":
    main()
