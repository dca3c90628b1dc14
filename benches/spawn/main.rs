//! The spawn benchmark's entry point: it sets up, runs each caller size and writes the results.
//!
//! Issue 5: how fast anyfork creates processes, next to fork() from the
//! caller, to a minimal C template (the physical limit of the design) and to
//! posix_spawn, with the caller at 5 MB, 200 MB and 2 GB.
//!
//! Run it with `cargo bench --bench spawn` (or `make bench`). Options, after
//! `--` or as environment variables:
//! - `--no-2g` / `ANYFORK_BENCH_SKIP_2G=1`: skip the 2 GB size;
//! - `--quick` / `ANYFORK_BENCH_QUICK=1`: 5 repetitions of 0.15 s (a smoke test);
//! - `ANYFORK_BENCH_REPS=N` (default 7, at least 5), `ANYFORK_BENCH_MS=N`
//!   (milliseconds per measurement, default 400), `ANYFORK_BENCH_PARTS=N`
//!   (short runs a measurement is split into, default 4);
//! - `ANYFORK_BENCH_BIG_ROUNDS=N` (default 15, 7 with `--quick`, 0 skips):
//!   creations timed with and without a warm pool from a template as large
//!   as the caller (see [`grow::big_template_latency`]);
//! - `ANYFORK_BENCH_INFLIGHT=N`: most creations of method d waiting for
//!   their run callback at once (default 0: all 1,000, see
//!   [`methods::DEFAULT_WINDOW`]);
//! - `ANYFORK_BENCH_SPARSE_ROUNDS=N` (default 100, 40 with `--quick`, 0
//!   skips): creations per repetition of the sparse warm-pool case (see
//!   [`grow::sparse_latency`]); `--sparse` measures only that;
//! - `--only M[,M2…]` (each M one of a b bq bd c d e f fx fs s w c-lib
//!   c-lib-ahead b-lib fq sq): measure just these methods at 5 MB, taking
//!   turns, and print their rates and each repetition's ratio of the first
//!   two; for profiling with strace or perf, or a quick A/B.
//!
//! At each size the benchmark touches every page of its own heap until its
//! RSS is the size, then measures each method for the given time in each
//! repetition, split into short runs; the methods take turns run by run (in
//! a rotating order) so that noise from the rest of the machine hits them
//! all alike. Rates are medians of the repetitions with their min–max; the
//! ratios are computed repetition by repetition (both numbers of a ratio
//! were measured in the same seconds) and reported the same way. The table
//! goes to stdout, the same figures as JSON to `target/bench/spawn.json`.
//!
//! The files: `config.rs` (options), `sys.rs` (system calls), `floor.rs`
//! (the floor template), `methods.rs` (what each method does, listed
//! there), `grow.rs` (growing the caller, the template as large as it),
//! `measure.rs` (timing and memory figures), `stats.rs` (medians and
//! percentiles), `table.rs` (the markdown table and the targets), `json.rs`
//! (the JSON file).

mod config;
mod floor;
mod grow;
mod json;
mod measure;
mod methods;
mod stats;
mod sys;
mod table;

use std::path::PathBuf;
use std::time::Instant;

use config::Config;
use grow::Ballast;
use methods::{Ctx, M};
use sys::MB;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                sys::manifest_dir().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| sys::manifest_dir().join("target"))
}

fn main() {
    let started = Instant::now();
    let cfg = Config::from_args();
    // The anyfork-serve cargo built along with this bench, unless the user
    // names another. Set before anything else runs: single-threaded here.
    if std::env::var_os("ANYFORK_SERVE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("ANYFORK_SERVE", env!("CARGO_BIN_EXE_anyfork-serve")) };
    }
    // 1,000 queued creations hold 2,000 sockets for a moment.
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", out_dir.display()));

    // The bare template of method b-lib is a copy of this program made
    // while it has one thread and is small.
    let grow = grow::build_grow(&out_dir);
    let bare = floor::BareLib::start(&grow);
    let mut ctx = Ctx::new(&out_dir, cfg.window, grow, bare);
    // The default template is spawned here, while the caller is small.
    ctx.once(M::C);
    let linkage = ctx.floor.linkage;
    eprintln!(
        "[spawn] floor template linked {linkage}; {} repetitions × {:.2} s per method and size",
        cfg.reps,
        cfg.slice.as_secs_f64()
    );

    if std::env::args().any(|a| a == "--sparse") {
        for s in grow::sparse_latency(&ctx.grow, cfg.reps, cfg.sparse_rounds.max(20)) {
            println!(
                "sparse p50: plain {:.0} µs, warm pool of 2 {:.0} µs ({:.2}), 2 forked ahead {:.0} µs ({:.2})",
                s.cold,
                s.warm,
                s.warm / s.cold,
                s.ahead,
                s.ahead / s.cold
            );
        }
        return;
    }
    if !cfg.only.is_empty() {
        Ballast::default().grow_to(5 * MB);
        for rep in 0..cfg.reps {
            let mut rates = Vec::new();
            // The methods take turns, the first one changing each time.
            for k in 0..cfg.only.len() {
                let m = cfg.only[(rep + k) % cfg.only.len()];
                let s = measure::measure(&mut ctx, m, cfg.slice);
                let blocked = if m.timed() {
                    format!(", blocked {:.1} µs in the call", s.blocked_us())
                } else {
                    String::new()
                };
                println!(
                    "{}: {:.0}/s, caller CPU {:.1} µs per creation{blocked}",
                    m.letter(),
                    s.rate(),
                    s.cpu_us()
                );
                rates.push((m, s.rate()));
            }
            if let [a, b, ..] = cfg.only[..] {
                let rate = |m| rates.iter().find(|r| r.0 == m).map_or(0.0, |r| r.1);
                println!("{} ÷ {}: {:.3}", a.letter(), b.letter(), rate(a) / rate(b));
            }
        }
        return;
    }

    let mut sizes = vec![("5 MB", 5 * MB), ("200 MB", 200 * MB)];
    let avail = sys::proc_kb("/proc/meminfo", "MemAvailable").unwrap_or(0) as usize * 1024;
    let skipped: Option<String> = if cfg.skip_2g {
        Some("asked to (--no-2g / ANYFORK_BENCH_SKIP_2G)".into())
    } else if avail < 3 << 30 {
        Some(format!("only {} MB of memory available", avail / MB))
    } else {
        sizes.push(("2 GB", 2 << 30));
        None
    };
    let mut ballast = Ballast::default();
    let mut results = Vec::new();
    for (label, bytes) in sizes {
        results.push(measure::run_size(
            &mut ctx,
            &cfg,
            label,
            bytes,
            &mut ballast,
        ));
    }
    let mem = measure::memory(&ctx);

    let rep = table::report(&cfg, linkage, &results, &mem, skipped.as_deref());
    println!("{}", rep.table);
    let path = out_dir.join("spawn.json");
    let text = json::json(&cfg, linkage, &results, &mem, &rep, skipped.as_deref());
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("JSON: {}", path.display());
    eprintln!(
        "[spawn] done in {:.0} s (ballast {} MB)",
        started.elapsed().as_secs_f64(),
        ballast.bytes / MB
    );

    ctx.close();
}
