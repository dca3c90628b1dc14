"""anyfork.Pool against multiprocessing.Pool, side by side in one run.

    cd bindings/python && ANYFORK_LIB=../../target/release/libanyfork.so \\
        python3 bench/pool_bench.py [--reps 5] [--n 10000]

Two workers each; the work is a trivial function of one small int. Rows:
sequential round trips (submit, wait for the result, next), the same
calls all submitted then gathered (apply_async-style), and map with
chunksize 1. Each row runs --reps times, interleaved; the table gives
calls per second as median [min-max], and the ratios repetition by
repetition.
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


def timed(fn, n):
    t = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=10000)
    o = ap.parse_args()

    ctx = multiprocessing.get_context("fork")
    mp = ctx.Pool(2)
    af = anyfork.Pool(2, idle=2)
    af8 = anyfork.Pool(2, idle=2, load=8)
    raw = anyfork.Pool(2, idle=2, handler=echo, serializer=None)
    small = b"x" * 64

    def check(got, n):
        assert got == n * (n + 1) // 2, got

    rows = {
        "multiprocessing.Pool(2): apply_async(...).get(), one at a time":
            lambda n: check(sum(mp.apply_async(work, (i,)).get() for i in range(n)), n),
        "multiprocessing.Pool(2): apply_async all, then get":
            lambda n: check(sum(r.get() for r in [mp.apply_async(work, (i,)) for i in range(n)]), n),
        "multiprocessing.Pool(2): map, chunksize 1":
            lambda n: check(sum(mp.map(work, range(n), chunksize=1)), n),
        "anyfork.Pool(2): submit(...).result(), one at a time":
            lambda n: check(sum(af.submit(work, i).result() for i in range(n)), n),
        "anyfork.Pool(2): call(64 bytes).result(), bytes handler, one at a time":
            lambda n: [raw.call(small).result() for _ in range(n)],
        "anyfork.Pool(2): submit all, then result":
            lambda n: check(sum(f.result() for f in [af.submit(work, i) for i in range(n)]), n),
        "anyfork.Pool(2): map, chunksize 1":
            lambda n: check(sum(af.map(work, range(n))), n),
        "anyfork.Pool(2, load=8): map, chunksize 1":
            lambda n: check(sum(af8.map(work, range(n))), n),
    }
    for fn in rows.values():          # warm up: every worker started
        fn(200)
    got = {k: [] for k in rows}
    for _ in range(o.reps):
        for k, fn in rows.items():
            got[k].append(timed(fn, o.n))
    mp.close()
    mp.join()
    for p in (af, af8, raw):
        p.shutdown()

    def fmt(xs):
        return "%s [%s–%s]" % tuple("{:,.0f}".format(v) for v in
                                   (statistics.median(xs), min(xs), max(xs)))

    def ratio(a, b):
        rs = [x / y for x, y in zip(got[a], got[b])]
        return "%.2f [%.2f–%.2f]" % (statistics.median(rs), min(rs), max(rs))

    keys = list(rows)
    print("%d calls per repetition, %d repetitions, calls/s median [min–max]\n" % (o.n, o.reps))
    print("| | calls/s |\n|---|---|")
    for k in keys:
        print("| %s | %s |" % (k, fmt(got[k])))
    print("| round trips one at a time: anyfork ÷ multiprocessing | %s |" % ratio(keys[3], keys[0]))
    print("| submit all / apply_async all: anyfork ÷ multiprocessing | %s |" % ratio(keys[5], keys[1]))
    print("| map: anyfork ÷ multiprocessing | %s |" % ratio(keys[6], keys[2]))
    print("| map: anyfork (load=8) ÷ multiprocessing | %s |" % ratio(keys[7], keys[2]))


if __name__ == "__main__":
    main()
