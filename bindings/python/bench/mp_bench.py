"""anyfork.get_context() against multiprocessing's "fork" and "forkserver"
contexts, side by side in one run.

    cd bindings/python && ANYFORK_LIB=../../target/release/libanyfork.so \\
        python3 bench/mp_bench.py [--reps 5] [--procs 20] [--items 10000] [--grow-mb 1024]

Two rows per context: Process(target=f).start(); join() (--procs of them
in a row, as starts per second), and `with ctx.Pool(2) as pool:
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


def starts(ctx, n):
    """Process(target=f).start(); join(), n times: starts per second."""
    t = time.perf_counter()
    for _ in range(n):
        p = ctx.Process(target=f)
        p.start()
        p.join()
        assert p.exitcode == 0, p.exitcode
        p.close()
    return n / (time.perf_counter() - t)


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
    ap.add_argument("--procs", type=int, default=20)
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
                got.setdefault((size, "start", name), []).append(starts(ctx, o.procs))
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
        print("| %s: Pool(2).map of %s items, ms | %s |" % (
            name, "{:,}".format(o.items), " | ".join(fmt(got[(s, "pool", name)], ",.0f")
                                                    for s in sizes)))
    for other in ("forkserver", "fork"):
        print("| start+join: anyfork ÷ %s | %s |" % (other, " | ".join(
            fmt([a / b for a, b in zip(got[(s, "start", "anyfork")],
                                       got[(s, "start", other)])], ".2f") + " ×"
            for s in sizes)))
        print("| Pool(2).map: %s time ÷ anyfork time | %s |" % (other, " | ".join(
            fmt([b / a for a, b in zip(got[(s, "pool", "anyfork")],
                                       got[(s, "pool", other)])], ".2f") + " ×"
            for s in sizes)))


if __name__ == "__main__":
    main()
