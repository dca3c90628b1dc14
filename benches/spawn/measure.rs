//! Measuring: timed runs of one method, the interleaved repetitions at one caller size, memory figures.
//!
//! Memory: the RSS of the default template (`anyfork-serve`, a child of this
//! process) and the private memory of a process forked from it that has not
//! run user code yet (`smaps_rollup` Private_Clean + Private_Dirty).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyfork::Process;
use serde::Serialize;

use crate::config::Config;
use crate::grow::{Ballast, Sparse, big_template_latency, sparse_latency};
use crate::methods::{BATCH, Ctx, M, METHODS, ok};
use crate::stats::{Stat, pct_us, ratio, stat};
use crate::sys::{MB, cpu_self, proc_kb, self_rss};

/// One measurement of one method: creations, seconds, caller CPU seconds,
/// and per-creation latencies (ns) for the timed methods.
pub struct Sample {
    pub n: usize,
    secs: f64,
    cpu: f64,
    lat: Vec<u64>,
    /// Per timed creation, ns from its start: submitted, socket in hand,
    /// EOF seen.
    phases: Vec<[u64; 3]>,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.n as f64 / self.secs
    }
    pub fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.n as f64
    }
    fn p50_us(&self) -> f64 {
        pct_us(&self.lat, 50)
    }
    /// Median time inside the creating call(s), µs: how long the calling
    /// thread was blocked per creation.
    pub fn blocked_us(&self) -> f64 {
        let mut v: Vec<u64> = self.phases.iter().map(|p| p[0]).collect();
        v.sort_unstable();
        pct_us(&v, 50)
    }
    /// Adds another part of the same repetition.
    fn merge(&mut self, o: Sample) {
        self.n += o.n;
        self.secs += o.secs;
        self.cpu += o.cpu;
        self.lat.extend(o.lat);
        self.phases.extend(o.phases);
    }
}

/// Creations of `m`, one after the other (or a batch at a time), for at
/// least `slice`.
pub fn measure(ctx: &mut Ctx, m: M, slice: Duration) -> Sample {
    let mut lat = Vec::new();
    let mut phases = Vec::new();
    if m.timed() {
        lat.reserve(200_000);
        phases.reserve(200_000);
    }
    let mut n = 0;
    let cpu0 = cpu_self();
    let t0 = Instant::now();
    loop {
        if m.pipelined() {
            ctx.batch(m);
            n += BATCH;
        } else if m.timed() {
            let s = Instant::now();
            ctx.once(m);
            let total = s.elapsed().as_nanos() as u64;
            lat.push(total);
            let since = |t: Option<Instant>| t.map_or(0, |t| (t - s).as_nanos() as u64);
            phases.push([since(ctx.marks[0]), since(ctx.marks[1]), total]);
            n += 1;
        } else {
            ctx.once(m);
            n += 1;
        }
        if t0.elapsed() >= slice {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_self() - cpu0;
    Sample {
        n,
        secs,
        cpu,
        lat,
        phases,
    }
}

/// Everything measured with the caller at one size.
pub struct SizeResult {
    pub label: &'static str,
    pub target: usize,
    pub rss: usize,
    samples: HashMap<M, Vec<Sample>>,
    /// Latencies (ns, sorted) of single creations from a template as
    /// large as the caller, without and with a warm pool.
    pub big: Option<(Vec<u64>, Vec<u64>)>,
    /// Sparse creations from a small template, without and with a warm
    /// pool: p50 µs of each repetition (measured at the smallest size).
    pub sparse: Option<Vec<Sparse>>,
}

impl SizeResult {
    /// `f` of each repetition of `m`.
    fn per_rep(&self, m: M, f: fn(&Sample) -> f64) -> Vec<f64> {
        self.samples[&m].iter().map(f).collect()
    }
    pub fn rates(&self, m: M) -> Vec<f64> {
        self.per_rep(m, Sample::rate)
    }
    pub fn rate(&self, m: M) -> Stat {
        stat(&self.rates(m))
    }
    /// Caller CPU per creation, µs.
    pub fn cpu(&self, m: M) -> Stat {
        stat(&self.per_rep(m, Sample::cpu_us))
    }
    /// Creations of `m` over all repetitions.
    pub fn creations(&self, m: M) -> usize {
        self.samples[&m].iter().map(|s| s.n).sum()
    }
    /// p50 and p99 over every creation of `m` at this size, in µs.
    pub fn latency(&self, m: M) -> (f64, f64) {
        let mut all: Vec<u64> = self.samples[&m]
            .iter()
            .flat_map(|s| s.lat.iter().copied())
            .collect();
        all.sort_unstable();
        (pct_us(&all, 50), pct_us(&all, 99))
    }
    /// Medians over every creation of `m` at this size, in µs: time to
    /// submit, from there to the comm socket in hand, from there to EOF.
    pub fn phases(&self, m: M) -> [f64; 3] {
        let mut parts: [Vec<u64>; 3] = Default::default();
        for s in &self.samples[&m] {
            for ph in &s.phases {
                parts[0].push(ph[0]);
                parts[1].push(ph[1].saturating_sub(ph[0]));
                parts[2].push(ph[2].saturating_sub(ph[1]));
            }
        }
        parts.map(|mut v| {
            v.sort_unstable();
            pct_us(&v, 50)
        })
    }

    /// Rate of x ÷ rate of y, repetition by repetition.
    pub fn ratio(&self, x: M, y: M) -> Stat {
        ratio(&self.rates(x), &self.rates(y))
    }
    /// p50 latency of x ÷ that of y, repetition by repetition.
    pub fn p50_ratio(&self, x: M, y: M) -> Stat {
        ratio(
            &self.per_rep(x, Sample::p50_us),
            &self.per_rep(y, Sample::p50_us),
        )
    }
    /// Time blocked in the call per creation, µs (timed methods).
    pub fn blocked(&self, m: M) -> Stat {
        stat(&self.per_rep(m, Sample::blocked_us))
    }
    /// Blocked time of x ÷ that of y, repetition by repetition.
    pub fn blocked_ratio(&self, x: M, y: M) -> Stat {
        ratio(
            &self.per_rep(x, Sample::blocked_us),
            &self.per_rep(y, Sample::blocked_us),
        )
    }
    /// Caller CPU per creation of x ÷ that of y, repetition by repetition.
    pub fn cpu_ratio(&self, x: M, y: M) -> Stat {
        ratio(
            &self.per_rep(x, Sample::cpu_us),
            &self.per_rep(y, Sample::cpu_us),
        )
    }
}

/// Grows the caller to `target` bytes, then measures every method `reps`
/// times, interleaved, and the big template if asked to.
pub fn run_size(
    ctx: &mut Ctx,
    cfg: &Config,
    label: &'static str,
    target: usize,
    ballast: &mut Ballast,
) -> SizeResult {
    let t = Instant::now();
    ballast.grow_to(target);
    let rss = self_rss();
    eprintln!(
        "[spawn] {label}: RSS {:.1} MB (grown in {:.1} s); warming up",
        rss as f64 / MB as f64,
        t.elapsed().as_secs_f64()
    );
    for &m in &METHODS {
        measure(ctx, m, Duration::from_millis(30));
    }
    let mut samples: HashMap<M, Vec<Sample>> = METHODS.iter().map(|&m| (m, Vec::new())).collect();
    let part = cfg.slice / cfg.parts as u32;
    for rep in 0..cfg.reps {
        // Each repetition of each method is made of `parts` short runs, the
        // methods taking turns in a rotating order, so a burst of load from
        // elsewhere falls on all of them and no method always follows the
        // same one.
        let mut acc: HashMap<M, Sample> = HashMap::new();
        for k in 0..cfg.parts {
            for i in 0..METHODS.len() {
                let m = METHODS[(i + rep + k) % METHODS.len()];
                let s = measure(ctx, m, part);
                match acc.get_mut(&m) {
                    Some(a) => a.merge(s),
                    None => {
                        acc.insert(m, s);
                    }
                }
            }
        }
        for (m, mut s) in acc {
            s.lat.sort_unstable();
            samples.get_mut(&m).expect("every method").push(s);
        }
        eprintln!("[spawn] {label}: repetition {}/{} done", rep + 1, cfg.reps);
    }
    let big = (cfg.big_rounds > 0).then(|| big_template_latency(&ctx.grow, rss, cfg.big_rounds));
    let sparse = (cfg.sparse_rounds > 0 && target < 10 * MB)
        .then(|| sparse_latency(&ctx.grow, cfg.reps, cfg.sparse_rounds));
    SizeResult {
        label,
        target,
        rss,
        samples,
        big,
        sparse,
    }
}

/// The templates' memory, in kB, and the pids it was read from (named as
/// in the JSON file).
#[derive(Serialize)]
pub struct Memory {
    pub anyfork_serve_pid: Option<i32>,
    pub anyfork_serve_rss_kb: Option<u64>,
    /// The template of method e.
    pub template_e_rss_kb: Option<u64>,
    pub floor_rss_kb: Option<u64>,
    pub child_pid: Option<i32>,
    pub child_private_clean_kb: Option<u64>,
    pub child_private_dirty_kb: Option<u64>,
    /// Clean + dirty.
    pub child_private_kb: Option<u64>,
    pub child_rss_kb: Option<u64>,
}

pub fn memory(ctx: &Ctx) -> Memory {
    let tmpl_pid = ctx.tmpl.pid().ok();
    let rss = |pid: Option<i32>| proc_kb(&format!("/proc/{}/status", pid?), "VmRSS");
    // A process forked from the default template that has not run yet: it
    // sits in the server loop, reading its socket.
    let p = ok(Process::new(), "Process::new");
    let child_pid = p.pid().ok();
    // Its parent is the default template.
    let serve_pid = child_pid.and_then(|c| {
        let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).ok()?;
        stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
    });
    std::thread::sleep(Duration::from_millis(50));
    let rollup = |key| proc_kb(&format!("/proc/{}/smaps_rollup", child_pid?), key);
    let (clean, dirty) = (rollup("Private_Clean"), rollup("Private_Dirty"));
    let m = Memory {
        anyfork_serve_pid: serve_pid,
        anyfork_serve_rss_kb: rss(serve_pid),
        template_e_rss_kb: rss(tmpl_pid),
        floor_rss_kb: rss(Some(ctx.floor.child.id() as i32)),
        child_pid,
        child_private_clean_kb: clean,
        child_private_dirty_kb: dirty,
        child_private_kb: clean.zip(dirty).map(|(c, d)| c + d),
        child_rss_kb: rollup("Rss"),
    };
    drop(p);
    let _ = anyfork::dispatch();
    m
}
