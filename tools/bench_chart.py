#!/usr/bin/env python3
"""Draws the spawn benchmark as an SVG chart: creations per second against
the caller's size, both axes logarithmic.

    python3 tools/bench_chart.py [BENCH_DIR] [OUT.svg]

BENCH_DIR (default target/bench) holds spawn.json, written by
`cargo bench --bench spawn`, and may hold perl.md, the table printed by
bindings/perl/bench/fork-vs-anyevent.pl, and python.json, ruby.json and
go.json, written by the bindings' own benchmarks (bindings/python/bench/
fork_bench.py, bindings/ruby/bench/fork_bench.rb, bindings/go/bench):
each language's own fork (Go: os/exec) against anyfork at the plain size
and grown; and load.txt, the load average before and after the run.
`make bench` writes them all. The SVG is written by hand (no plotting
library): one polyline per method through the medians, a bar from min to
max at each size, a legend, and a caption saying which run the figures
come from, the load, and which bindings had no figures.
"""

import html
import json
import math
import os
import re
import sys

# The methods of spawn.json drawn, in legend order: key, legend text,
# colour, dash pattern.
SPAWN_SERIES = [
    ("c_anyfork", "anyfork: fork_new + run, one at a time", "#d62728", ""),
    ("d_anyfork_pipelined", "anyfork: 1,000 queued", "#ff7f0e", ""),
    ("b_floor", "floor template (tiny static C server)", "#7f7f7f", "6 3"),
    ("a_fork", "fork() + _exit + waitpid from the caller", "#1f77b4", ""),
    ("f_exec_true", "anyfork: exec /bin/true", "#9467bd", ""),
    ("posix_spawn_true", "posix_spawn(/bin/true) from the caller", "#2ca02c", "6 3"),
]
PERL_SERIES = [
    ("AnyFork", "Perl: AnyFork ->new->run", "#8c564b", "2 3"),
    ("AnyEvent::Fork", "Perl: AnyEvent::Fork ->new->run", "#17becf", "2 3"),
]
# The bindings' benchmarks: file in BENCH_DIR, language, then per method
# drawn its key in the file, colour, dash pattern (the legend is the
# language and the method's name in the file). Python and Ruby: the
# template as made by default (warm pool of 2, 2 forked ahead); Go:
# anyfork.Command, the
# os/exec look-alike.
BINDING_SERIES = [
    ("python.json", "Python", [
        ("own", "#e377c2", "6 3"),
        ("anyfork_default", "#e377c2", ""),
    ]),
    ("ruby.json", "Ruby", [
        ("own", "#bcbd22", "6 3"),
        ("anyfork_default", "#bcbd22", ""),
    ]),
    ("go.json", "Go", [
        ("own", "#393b79", "6 3"),
        ("anyfork", "#393b79", ""),
    ]),
]

MB = 1 << 20
W = 860
PLOT_L, PLOT_T, PLOT_R = 78, 50, 500
LEGEND_STEP = 36
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def fail(msg):
    sys.exit(f"bench_chart: {msg}")


def load_spawn(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror} (run `make bench` first)")
    except ValueError as e:
        fail(f"{path} is not JSON: {e}")
    series = []
    for key, label, colour, dash in SPAWN_SERIES:
        points = []
        for size in data.get("sizes", []):
            m = size.get("methods", {}).get(key)
            if not m:
                continue
            r = m["rate_per_s"]
            if r.get("median") is None:
                continue
            points.append((size["rss_bytes"], r["median"], r["min"], r["max"]))
        if points:
            series.append((label, colour, dash, points))
    if not series:
        fail(f"{path} holds no rates of the methods drawn")
    return data, series


def load_perl(path):
    """The `->new->run("CORE::exit")` rows of the Perl benchmark's table:
    per module, (caller RSS, median, min, max)."""
    if not os.path.exists(path):
        return []
    row = re.compile(
        r"^\|\s*`->new->run\(\"CORE::exit\"\)`\s*\|\s*\w+ \((\d+) MB\)\s*\|"
        r"\s*([\d.]+) \(([\d.]+)–([\d.]+)\)\s*\|\s*([\d.]+) \(([\d.]+)–([\d.]+)\)\s*\|"
    )
    ae, af = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = row.match(line)
            if not m:
                continue
            rss = int(m.group(1)) * 1024 * 1024
            v = [float(x) for x in m.groups()[1:]]
            ae.append((rss, v[0], v[1], v[2]))
            af.append((rss, v[3], v[4], v[5]))
    if not ae:
        fail(f"{path} has no `->new->run(\"CORE::exit\")` rows: is it the output of fork-vs-anyevent.pl?")
    by = {"AnyEvent::Fork": ae, "AnyFork": af}
    return [(label, colour, dash, by[k]) for k, label, colour, dash in PERL_SERIES]


def load_binding(path, language, drawn):
    """A binding benchmark's JSON: per method drawn, (caller RSS, median,
    min, max) at each size; and the file's load averages."""
    if not os.path.exists(path):
        return [], None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        out = []
        for key, colour, dash in drawn:
            pts = []
            for size in data["sizes"]:
                m = size["methods"][key]
                r = m["rate_per_s"]
                pts.append((size["rss_bytes"], r["median"], r["min"], r["max"]))
            out.append((f"{language}: {m['name']}", colour, dash, sorted(pts)))
    except (ValueError, KeyError, TypeError) as e:
        fail(f"{path}: not the JSON of {language}'s benchmark ({type(e).__name__}: {e})")
    return out, data.get("load_average")


def load_load(path):
    """load.txt: lines `start 1.23 0.98 0.50` and `end ...`, from /proc/loadavg."""
    got = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    got[parts[0]] = parts[1]
    return got


def decade_range(lo, hi):
    return math.floor(math.log10(lo)), math.ceil(math.log10(hi))


def fmt_count(v):
    return f"{v:,.0f}"


def fmt_mb(b):
    return f"{b / MB:,.0f} MB"


def text(x, y, s, size=12, anchor="start", weight="normal", fill="#222", extra=""):
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' {FONT} font-size='{size}' text-anchor='{anchor}' "
        f"font-weight='{weight}' fill='{fill}' {extra}>{html.escape(s)}</text>"
    )


def chart(data, series, perl_found, bindings_found, load, source):
    # The plot is tall enough for the legend beside it.
    plot_b = PLOT_T + max(370, LEGEND_STEP * len(series) + 30)
    xs = [p[0] / MB for _, _, _, pts in series for p in pts]
    ys = [v for _, _, _, pts in series for p in pts for v in p[1:] if v and v > 0]
    # x: decades of MB, at least 1 MB to 10,000 MB; y: decades of rates.
    x0, x1 = decade_range(min(xs), max(xs))
    x0, x1 = min(x0, 0), max(x1, 4)
    y0, y1 = decade_range(min(ys), max(ys))

    def px(b):
        return PLOT_L + (math.log10(b / MB) - x0) / (x1 - x0) * (PLOT_R - PLOT_L)

    def py(v):
        return plot_b - (math.log10(v) - y0) / (y1 - y0) * (plot_b - PLOT_T)

    out = [
        "",  # the <svg> element, once the height is known
        "",
        text(PLOT_L, 28, "Processes created per second against the caller's size", 16, weight="bold"),
    ]
    # Grid and ticks: every decade labelled, 2..9 as minor lines.
    for d in range(y0, y1 + 1):
        y = py(10**d)
        out.append(f"<line x1='{PLOT_L}' y1='{y:.1f}' x2='{PLOT_R}' y2='{y:.1f}' stroke='#ccc'/>")
        out.append(text(PLOT_L - 8, y + 4, fmt_count(10**d), 11, "end"))
        if d < y1:
            for k in range(2, 10):
                yy = py(k * 10**d)
                out.append(f"<line x1='{PLOT_L}' y1='{yy:.1f}' x2='{PLOT_R}' y2='{yy:.1f}' stroke='#eee'/>")
                out.append(f"<line x1='{PLOT_L - 4}' y1='{yy:.1f}' x2='{PLOT_L}' y2='{yy:.1f}' stroke='#888'/>")
    for d in range(x0, x1 + 1):
        x = px(10**d * MB)
        out.append(f"<line x1='{x:.1f}' y1='{PLOT_T}' x2='{x:.1f}' y2='{plot_b}' stroke='#ccc'/>")
        out.append(text(x, plot_b + 18, fmt_count(10**d), 11, "middle"))
        if d < x1:
            for k in range(2, 10):
                xx = px(k * 10**d * MB)
                out.append(f"<line x1='{xx:.1f}' y1='{PLOT_T}' x2='{xx:.1f}' y2='{plot_b}' stroke='#eee'/>")
                out.append(f"<line x1='{xx:.1f}' y1='{plot_b}' x2='{xx:.1f}' y2='{plot_b + 4}' stroke='#888'/>")
    out.append(
        f"<rect x='{PLOT_L}' y='{PLOT_T}' width='{PLOT_R - PLOT_L}' height='{plot_b - PLOT_T}' fill='none' stroke='#444'/>"
    )
    out.append(text((PLOT_L + PLOT_R) / 2, plot_b + 40, "caller's resident memory, MB (log scale)", 12, "middle"))
    out.append(
        text(
            20,
            (PLOT_T + plot_b) / 2,
            "creations per second (log scale)",
            12,
            "middle",
            extra=f"transform='rotate(-90 20 {(PLOT_T + plot_b) / 2:.1f})'",
        )
    )
    # Series: min–max bars, then the median line and dots.
    for label, colour, dash, pts in series:
        for b, med, lo, hi in pts:
            x = px(b)
            out.append(
                f"<line x1='{x:.1f}' y1='{py(lo):.1f}' x2='{x:.1f}' y2='{py(hi):.1f}' stroke='{colour}' stroke-width='1.5' opacity='0.6'/>"
            )
        path = " ".join(f"{px(b):.1f},{py(med):.1f}" for b, med, _, _ in pts)
        d = f" stroke-dasharray='{dash}'" if dash else ""
        out.append(f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2.2'{d}/>")
        for b, med, _, _ in pts:
            out.append(f"<circle cx='{px(b):.1f}' cy='{py(med):.1f}' r='3.5' fill='{colour}'/>")
    # The ratio that matters, beside fork()'s last point.
    by = {label: pts for label, _, _, pts in series}
    fork, af = by.get(SPAWN_SERIES[3][1]), by.get(SPAWN_SERIES[0][1])
    if fork and af and fork[-1][0] == af[-1][0] and fork[-1][1] > 0:
        b, f = fork[-1][0], fork[-1][1]
        # The benchmark's own ratio (taken repetition by repetition) when
        # the file has it, else the ratio of the medians.
        sizes = data.get("sizes") or [{}]
        ratio = (sizes[-1].get("ratios", {}).get("c_over_a") or {}).get("median") or af[-1][1] / f
        out.append(text(px(b) - 10, py(f) + 4, f"anyfork {ratio:,.0f}× fork() at {fmt_mb(b)}", 11, "end", "bold", "#1f77b4"))
    # Legend, right of the plot, each entry ending with its rate at the
    # largest size so that the numbers can be read too.
    lx, ly = PLOT_R + 18, PLOT_T + 6
    out.append(text(lx, ly, "median; bar: min–max", 11, fill="#555"))
    ly += 22
    for label, colour, dash, pts in series:
        d = f" stroke-dasharray='{dash}'" if dash else ""
        out.append(f"<line x1='{lx}' y1='{ly - 4}' x2='{lx + 26}' y2='{ly - 4}' stroke='{colour}' stroke-width='2.5'{d}/>")
        out.append(f"<circle cx='{lx + 13}' cy='{ly - 4}' r='3.5' fill='{colour}'/>")
        out.append(text(lx + 34, ly, label, 11))
        b, med = pts[-1][0], pts[-1][1]
        out.append(text(lx + 34, ly + 14, f"{fmt_count(med)}/s at {fmt_mb(b)}", 10, fill="#555"))
        ly += LEGEND_STEP
    # Caption: where the figures come from, and what is missing.
    m = data.get("machine", {})
    reps = data.get("repetitions")
    secs = data.get("seconds_per_measurement", 0)
    quick = ", --quick" if secs < 0.2 else ""  # --quick measures 0.15 s at a time
    lines = [
        f"Source: {source}{quick}: {reps} repetitions of {secs:g} s each, {m.get('cpus', '?')} CPUs, Linux {m.get('kernel', '?')}.",
        "fork() copies the caller's page tables; anyfork asks a small template to fork, so its rate does not",
        "depend on the caller's size. exec and posix_spawn start /bin/true and wait for it.",
    ]
    missing = []
    if perl_found:
        lines.append(
            "Perl: bindings/perl/bench/fork-vs-anyevent.pl, its exit workload: AnyFork against AnyEvent::Fork (not Perl's fork)."
        )
    else:
        missing.append("Perl")
    if "Python" in bindings_found or "Ruby" in bindings_found:
        lines.append(
            "Python, Ruby: bindings/*/bench/fork_bench: the interpreter's own fork (dashed) against anyfork from a template"
        )
        lines.append(
            "of the program made at the plain size as made by default: a warm pool of 2, 2 forked ahead (solid); each creation"
        )
        lines.append(
            "waits for the end."
        )
    if "Go" in bindings_found:
        lines.append(
            "Go (cannot fork without exec): bindings/go/bench: os/exec (dashed) against anyfork.Command, both starting /bin/true."
        )
    missing += [lang for _, lang, _ in BINDING_SERIES if lang not in bindings_found]
    if missing:
        lines.append(
            f"Not drawn: {', '.join(missing)}: no benchmark output of these bindings (their own fork against anyfork) was found."
        )
    if load:
        lines.append(
            "Shared machine: load average (1 min) "
            + ", ".join(f"{v} at the {k}" for k, v in load.items())
            + " of the run; other jobs ran meanwhile."
        )
    cy = plot_b + 66
    for line in lines:
        out.append(text(PLOT_L - 50, cy, line, 11, fill="#444"))
        cy += 16
    h = int(cy + 4)
    out[0] = f"<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{h}' viewBox='0 0 {W} {h}'>"
    out[1] = f"<rect width='{W}' height='{h}' fill='white'/>"
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    bench = sys.argv[1] if len(sys.argv) > 1 else "target/bench"
    dest = sys.argv[2] if len(sys.argv) > 2 else "doc/spawn.svg"
    spawn = os.path.join(bench, "spawn.json")
    data, series = load_spawn(spawn)
    perl = load_perl(os.path.join(bench, "perl.md"))
    bindings, found = [], []
    for name, language, drawn in BINDING_SERIES:
        got, _load = load_binding(os.path.join(bench, name), language, drawn)
        if got:
            bindings += got
            found.append(language)
    load = load_load(os.path.join(bench, "load.txt"))
    svg = chart(data, series + perl + bindings, bool(perl), found, load, "cargo bench --bench spawn")
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = dest + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(svg)
    os.replace(tmp, dest)
    drawn = (["Perl"] if perl else []) + found
    print(f"bench_chart: wrote {dest} ({len(series)} methods{', ' if drawn else ''}{', '.join(drawn)})")


if __name__ == "__main__":
    main()
