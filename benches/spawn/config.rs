//! The benchmark's options: command-line flags and `ANYFORK_BENCH_*` environment variables.

use std::time::Duration;

use crate::methods::{DEFAULT_WINDOW, M, METHODS};

pub struct Config {
    pub reps: usize,
    pub slice: Duration,
    pub skip_2g: bool,
    /// Most anyfork creations of method d waiting for their run callback
    /// at once; 0 means no limit (all 1,000 queued at once).
    pub window: usize,
    /// Short runs each repetition of a method is made of.
    pub parts: usize,
    /// `--only M[,M2…]`: measure just these methods (a, b, bq, bd, c, d,
    /// e, f, fx, fs, s, w, c-lib, c-lib-ahead, b-lib, fq, sq) at 5 MB, taking
    /// turns in each repetition, and print their rates (and each
    /// repetition's ratio of the first to the second); for profiling with
    /// strace or perf, or a quick A/B of two methods. Empty: all methods.
    pub only: Vec<M>,
    /// Creations with and without a warm pool from a template as large as
    /// the caller (`ANYFORK_BENCH_BIG_ROUNDS`, default 15; 0 skips).
    pub big_rounds: usize,
    /// Sparse creations per repetition, without and with a warm pool
    /// (`ANYFORK_BENCH_SPARSE_ROUNDS`, default 100, 40 with `--quick`; 0
    /// skips); see [`crate::grow::sparse_latency`].
    pub sparse_rounds: usize,
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

impl Config {
    pub fn from_args() -> Config {
        let args: Vec<String> = std::env::args().skip(1).collect();
        // cargo passes `--bench`; anything else unknown is ignored too, so
        // filters meant for other benches do no harm.
        let has = |f: &str| args.iter().any(|a| a == f);
        let quick = has("--quick") || env_flag("ANYFORK_BENCH_QUICK");
        let (mut reps, mut ms) = if quick { (5, 150) } else { (7, 400) };
        if let Some(r) = env_num("ANYFORK_BENCH_REPS") {
            reps = r.max(5) as usize;
        }
        if let Some(m) = env_num("ANYFORK_BENCH_MS") {
            ms = m.max(20);
        }
        Config {
            reps,
            slice: Duration::from_millis(ms),
            skip_2g: has("--no-2g") || env_flag("ANYFORK_BENCH_SKIP_2G"),
            parts: env_num("ANYFORK_BENCH_PARTS").map_or(4, |p| p.clamp(1, 100) as usize),
            window: env_num("ANYFORK_BENCH_INFLIGHT").map_or(DEFAULT_WINDOW, |w| w as usize),
            big_rounds: env_num("ANYFORK_BENCH_BIG_ROUNDS")
                .map_or(if quick { 7 } else { 15 }, |n| n as usize),
            sparse_rounds: env_num("ANYFORK_BENCH_SPARSE_ROUNDS")
                .map_or(if quick { 40 } else { 100 }, |n| n as usize),
            only: args
                .iter()
                .position(|a| a == "--only")
                .and_then(|i| args.get(i + 1))
                .map(|list| {
                    list.split(',')
                        .map(|k| {
                            METHODS
                                .into_iter()
                                .find(|m| m.letter() == k)
                                .unwrap_or_else(|| panic!("--only: no method {k:?}"))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
