"""anyfork.Pool against multiprocessing.Pool, side by side in one run.

    cd bindings/python && ANYFORK_LIB=../../target/release/libanyfork.so \\
        python3 bench/pool_bench.py [--reps 7] [--n 10000] [--slices 20]

Two workers each (multiprocessing with the fork start method; anyfork
with load=64, so that, as in multiprocessing, a worker may have many calls
in flight); the work is the same on both sides: work(i) = i + 1, one small
int in, one out, the function pickled by reference. Pairs of rows:

- round trips: submit one call, wait for its result, then the next
  (apply_async(work, (i,)).get() against submit(work, i).result());
- the same through the blocking calls, no future in between
  (apply(work, (i,)) against apply(work, i));
- many in flight: submit all n calls, then collect the results in order;
- map with chunksize 1.

Within a repetition the two sides of a pair alternate in --slices slices
of n/slices calls (so that both see the same share of the machine's other
load), and each side's calls per second is n over its summed time. Each
row gives the median [min-max] over --reps repetitions; each ratio is
taken repetition by repetition. One more row, anyfork alone: round trips
of 64 bytes to a bytes handler (no pickling). The load average is printed
before and after.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import anyfork  # noqa: E402


def work(x):
    return x + 1


def echo(b):
    return b


def check(got, lo, hi):
    """got is the sum of work(i) for i in [lo, hi)."""
    want = (hi * (hi + 1) - lo * (lo + 1)) // 2
    assert got == want, (got, want)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--slices", type=int, default=20)
    o = ap.parse_args()
    if o.n % o.slices:
        ap.error("--n must be a multiple of --slices")

    mp = multiprocessing.get_context("fork").Pool(2)
    # load=64: like multiprocessing's workers, each may have many calls in
    # flight (the default, AnyEvent::Fork::Pool's 2, limits the pipelined
    # rows; one call at a time is the same either way).
    af = anyfork.Pool(2, idle=2, load=64)
    raw = anyfork.Pool(2, idle=2, handler=echo, serializer=None)
    small = b"x" * 64

    def mp_trips(lo, hi):
        check(sum(mp.apply_async(work, (i,)).get() for i in range(lo, hi)), lo, hi)

    def af_trips(lo, hi):
        check(sum(af.submit(work, i).result() for i in range(lo, hi)), lo, hi)

    def mp_apply(lo, hi):
        check(sum(mp.apply(work, (i,)) for i in range(lo, hi)), lo, hi)

    def af_apply(lo, hi):
        check(sum(af.apply(work, i) for i in range(lo, hi)), lo, hi)

    def mp_all(lo, hi):
        rs = [mp.apply_async(work, (i,)) for i in range(lo, hi)]
        check(sum(r.get() for r in rs), lo, hi)

    def af_all(lo, hi):
        fs = [af.submit(work, i) for i in range(lo, hi)]
        check(sum(f.result() for f in fs), lo, hi)

    def mp_map(lo, hi):
        check(sum(mp.map(work, range(lo, hi), chunksize=1)), lo, hi)

    def af_map(lo, hi):
        check(sum(af.map(work, range(lo, hi))), lo, hi)

    def raw_trips(lo, hi):
        for _ in range(lo, hi):
            assert raw.call(small).result() == small

    pairs = [
        ("round trips, one at a time",
         "multiprocessing.Pool(2): apply_async(work, (i,)).get()", mp_trips,
         "anyfork.Pool(2, load=64): submit(work, i).result()", af_trips),
        ("round trips, blocking apply",
         "multiprocessing.Pool(2): apply(work, (i,))", mp_apply,
         "anyfork.Pool(2, load=64): apply(work, i)", af_apply),
        ("all in flight, then results",
         "multiprocessing.Pool(2): apply_async all, then get", mp_all,
         "anyfork.Pool(2, load=64): submit all, then result", af_all),
        ("map, chunksize 1",
         "multiprocessing.Pool(2): map(work, range(n), chunksize=1)", mp_map,
         "anyfork.Pool(2, load=64): map(work, range(n))", af_map),
    ]
    for _, _, a, _, b in pairs:         # warm up: every worker started
        a(0, 200)
        b(0, 200)
    raw_trips(0, 200)

    load0 = os.getloadavg()
    rates = {}                          # row name -> [calls/s per repetition]
    ratios = {}                         # pair name -> [anyfork / mp per repetition]
    step = o.n // o.slices
    for _ in range(o.reps):
        for pair, na, a, nb, b in pairs:
            ta = tb = 0.0
            for k in range(o.slices):
                lo, hi = k * step, (k + 1) * step
                t = time.perf_counter()
                a(lo, hi)
                t1 = time.perf_counter()
                b(lo, hi)
                t2 = time.perf_counter()
                ta += t1 - t
                tb += t2 - t1
            rates.setdefault(na, []).append(o.n / ta)
            rates.setdefault(nb, []).append(o.n / tb)
            ratios.setdefault(pair, []).append(ta / tb)
        t = time.perf_counter()
        raw_trips(0, o.n)
        rates.setdefault("anyfork.Pool(2): call(64 bytes).result(), bytes handler", []).append(
            o.n / (time.perf_counter() - t))
    load1 = os.getloadavg()
    mp.close()
    mp.join()
    for p in (af, raw):
        p.shutdown()

    def fmt(xs, f):
        return "%s [%s–%s]" % tuple(f.format(v) for v in
                                   (statistics.median(xs), min(xs), max(xs)))

    print("%d calls per row and repetition (%d interleaved slices), %d repetitions; "
          "load average %.1f before, %.1f after\n" % (o.n, o.slices, o.reps, load0[0], load1[0]))
    print("| calls per second, median [min–max] | |\n|---|---|")
    for k, xs in rates.items():
        print("| %s | %s |" % (k, fmt(xs, "{:,.0f}")))
    for pair, xs in ratios.items():
        print("| %s: anyfork ÷ multiprocessing | %s |" % (pair, fmt(xs, "{:.2f}")))


if __name__ == "__main__":
    main()
