"""anyfork.get_context() against multiprocessing's "fork" and "forkserver"
contexts, side by side in one run.

    cd bindings/python && ANYFORK_LIB=../../target/release/libanyfork.so \\
        python3 bench/mp_bench.py [--reps 5] [--procs 50] [--items 10000] [--grow-mb 1024]

Rows per context: Process(target=f).start(); join() (--procs of them
in a row), as starts per second and as CPU time per start summed over
every process involved (this one, its reaped children, and the
forkserver or anyfork's template with the children they reaped: less
sensitive to a loaded machine than the rate, but counted in clock ticks,
so take it to about 10 ms / --procs), and `with ctx.Pool(2) as pool:
pool.map(f, range(--items))` (the pool's start and end included, as
milliseconds per pool). Each is measured at the plain size, then after the
program grew by --grow-mb of touched memory (a bytearray written page by
page). The anyfork template and the forkserver are made (by a first
start) at the plain size, before the program grows. Each repetition runs
every row of every context in turn (interleaved); the table gives the
median [min-max] of --reps repetitions, and the ratios of anyfork to
forkserver and to fork taken repetition by repetition.
"""

import argparse
import datetime
import multiprocessing
import os
import resource
import statistics
import sys
import time

# anyfork is imported in main(), not here: Python 3.11's forkserver runs
# this script again (as __mp_main__) in every child, so what it imports at
# the top is paid by each forkserver child (loading anyfork and its
# library would cost each one tens of ms).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def f(x=0):
    return x + 1


_TICK = os.sysconf("SC_CLK_TCK")


def _helper_pid(ctx):
    """The process that forks the context's children (None: this one, or
    not started yet)."""
    method = ctx.get_start_method()
    if method == "forkserver":
        from multiprocessing import forkserver
        return forkserver._forkserver._forkserver_pid
    if method == "anyfork":
        import _anyfork_mp
        tmpl = _anyfork_mp._template._proc
        return None if tmpl is None else tmpl.pid()
    return None


def cpu(ctx):
    """CPU seconds used so far by this process, its reaped children, and
    the context's forking process with its reaped children (the forkserver,
    or anyfork's template: each reaps the children it forks)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    pid = _helper_pid(ctx)
    if pid is not None:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15]) / _TICK   # utime stime cutime cstime
    return total


def starts(ctx, n):
    """Process(target=f).start(); join(), n times: (starts per second, CPU
    ms per start of every process involved)."""
    c = cpu(ctx)
    t = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=f)
        p.start()
        p.join()
        assert p.exitcode == 0, p.exitcode
        p.close()
    took = time.perf_counter() - t
    return n / took, (cpu(ctx) - c) * 1000 / n


def pool_map(ctx, items):
    """Pool(2).map over items small ints, the pool's start and end included:
    milliseconds."""
    t = time.perf_counter()
    with ctx.Pool(2) as pool:
        got = pool.map(f, range(items))
        pool.close()
        pool.join()
    took = (time.perf_counter() - t) * 1000
    assert got[-1] == items, got[-1]
    return took


def fmt(xs, spec):
    return "%s [%s–%s]" % (format(statistics.median(xs), spec), format(min(xs), spec),
                           format(max(xs), spec))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--procs", type=int, default=50)
    ap.add_argument("--items", type=int, default=10000)
    ap.add_argument("--grow-mb", type=int, default=1024)
    o = ap.parse_args()

    import anyfork
    ctxs = {
        "fork": multiprocessing.get_context("fork"),
        "forkserver": multiprocessing.get_context("forkserver"),
        "anyfork": anyfork.get_context(),
    }
    for ctx in ctxs.values():      # the forkserver and the template, at the plain size
        starts(ctx, 2)

    sizes = ["plain", "%d MB" % o.grow_mb]
    got = {}                       # (size, row, context) -> [values]
    ballast = None
    for size in sizes:
        if size != "plain":
            ballast = bytearray(o.grow_mb << 20)
            ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))
        for ctx in ctxs.values():  # warm up at this size
            starts(ctx, 1)
        for _ in range(o.reps):
            for name, ctx in ctxs.items():
                rate, cpu_ms = starts(ctx, o.procs)
                got.setdefault((size, "start", name), []).append(rate)
                got.setdefault((size, "cpu", name), []).append(cpu_ms)
                got.setdefault((size, "pool", name), []).append(pool_map(ctx, o.items))
        rss = 0
        with open("/proc/self/status") as st:
            for line in st:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) // 1024
        got[(size, "rss")] = rss
    del ballast

    print("%s, load average %s, Python %s, %d repetitions of %d starts and a pool, "
          "anyfork's template with a warm pool of %d\n" % (
              datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              " ".join("%.1f" % x for x in os.getloadavg()), sys.version.split()[0], o.reps,
              o.procs, ctxs["anyfork"].warm))
    print("| | %s |" % " | ".join("%s (RSS %d MB)" % (s, got[(s, "rss")]) for s in sizes))
    print("|---|" + "---|" * len(sizes))
    for name in ctxs:
        print("| %s: Process start+join, /s | %s |" % (
            name, " | ".join(fmt(got[(s, "start", name)], ",.0f") for s in sizes)))
    for name in ctxs:
        print("| %s: CPU per start+join, all processes, ms | %s |" % (
            name, " | ".join(fmt(got[(s, "cpu", name)], ".1f") for s in sizes)))
    for name in ctxs:
        print("| %s: Pool(2).map of %s items, ms | %s |" % (
            name, "{:,}".format(o.items), " | ".join(fmt(got[(s, "pool", name)], ",.0f")
                                                    for s in sizes)))
    for other in ("forkserver", "fork"):
        print("| start+join: anyfork ÷ %s | %s |" % (other, " | ".join(
            fmt([a / b for a, b in zip(got[(s, "start", "anyfork")],
                                       got[(s, "start", other)])], ".2f") + " ×"
            for s in sizes)))
        print("| CPU per start+join: %s ÷ anyfork | %s |" % (other, " | ".join(
            fmt([b / a for a, b in zip(got[(s, "cpu", "anyfork")],
                                       got[(s, "cpu", other)])], ".2f") + " ×"
            for s in sizes)))
        print("| Pool(2).map: %s time ÷ anyfork time | %s |" % (other, " | ".join(
            fmt([b / a for a, b in zip(got[(s, "pool", "anyfork")],
                                       got[(s, "pool", other)])], ".2f") + " ×"
            for s in sizes)))


if __name__ == "__main__":
    main()
