//! The JSON file (target/bench/spawn.json): its layout and number format, written with serde_json.

use serde::{Serialize, Serializer};

use crate::config::Config;
use crate::measure::{Memory, SizeResult};
use crate::methods::{BATCH, M, METHODS};
use crate::stats::{Stat, pct_us};
use crate::sys::{cpus, page_size};
use crate::table::{Check, Report};

/// A figure as the file shows it: an integer when it is one, else rounded
/// to 4 decimals; null when not finite (a NaN: nothing was measured).
pub fn num<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    if !x.is_finite() {
        s.serialize_none()
    } else if x.fract() == 0.0 && x.abs() < 1e15 {
        s.serialize_i64(*x as i64)
    } else {
        s.serialize_f64((x * 1e4).round() / 1e4)
    }
}

/// An f64 written by [`num`].
struct Num(f64);

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        num(&self.0, s)
    }
}

/// `false`, or why the 2 GB size was skipped.
fn false_or_reason<S: Serializer>(v: &Option<&str>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(why) => s.serialize_str(why),
        None => s.serialize_bool(false),
    }
}

/// An object whose keys come in this order (serde_json's own map would
/// sort them).
struct Ordered<V>(Vec<(&'static str, V)>);

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct Root<'a> {
    benchmark: &'static str,
    machine: Machine,
    floor_template_linkage: &'a str,
    repetitions: usize,
    runs_per_measurement: usize,
    seconds_per_measurement: Num,
    batch: usize,
    d_max_in_flight: usize,
    #[serde(serialize_with = "false_or_reason")]
    skipped_2g: Option<&'a str>,
    sizes: Vec<Size>,
    memory: &'a Memory,
    targets: &'a [Check],
    table_markdown: &'a str,
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    page_size: usize,
    kernel: String,
}

#[derive(Serialize)]
struct Size {
    label: &'static str,
    target_bytes: usize,
    rss_bytes: usize,
    /// By [`M::key`].
    methods: Ordered<Method>,
    big_template: BigTemplate,
    ratios: Ordered<Stat>,
}

#[derive(Serialize)]
struct Method {
    label: String,
    rate_per_s: Stat,
    caller_cpu_us_per_creation: Stat,
    rates_per_rep: Vec<Num>,
    creations: usize,
    /// Only for the methods that time each creation.
    #[serde(flatten)]
    timed: Option<Timed>,
}

#[derive(Serialize)]
struct Timed {
    latency_p50_us: Num,
    latency_p99_us: Num,
    phases_p50_us: Phases,
}

#[derive(Serialize)]
struct Phases {
    submit: Num,
    to_socket_in_hand: Num,
    to_eof: Num,
}

/// `{}` when the big template was not measured.
#[derive(Serialize)]
struct BigTemplate {
    #[serde(flatten)]
    figures: Option<BigFigures>,
}

#[derive(Serialize)]
struct BigFigures {
    p50_us_no_pool: Num,
    p99_us_no_pool: Num,
    p50_us_warm_pool: Num,
    p99_us_warm_pool: Num,
}

/// A ratio of each size: rates or p50 latencies, x ÷ y.
type RatioOf = fn(&SizeResult, M, M) -> Stat;
const RATE: RatioOf = SizeResult::ratio;
const P50: RatioOf = SizeResult::p50_ratio;
const BLOCKED: RatioOf = SizeResult::blocked_ratio;
const RATIOS: [(&str, RatioOf, M, M); 18] = [
    ("c_over_b", RATE, M::C, M::B),
    ("c_over_a", RATE, M::C, M::A),
    ("p50_c_over_p50_b", P50, M::C, M::B),
    ("d_over_c", RATE, M::D, M::C),
    ("f_over_posix_spawn", RATE, M::F, M::S),
    ("f_eof_at_exec_over_posix_spawn", RATE, M::Fx, M::S),
    ("e_over_c", RATE, M::E, M::C),
    ("floor_spawn_over_posix_spawn", RATE, M::Fs, M::S),
    ("f_over_floor_spawn", RATE, M::F, M::Fs),
    ("w_over_c", RATE, M::W, M::C),
    ("p50_w_over_p50_c", P50, M::W, M::C),
    ("b_pipelined_over_b", RATE, M::Bq, M::B),
    ("c_over_b_dynamic", RATE, M::C, M::Bd),
    ("p50_c_over_p50_b_dynamic", P50, M::C, M::Bd),
    ("c_lib_over_b_lib", RATE, M::Cl, M::Bl),
    ("c_lib_ahead_over_b_lib", RATE, M::Ca, M::Bl),
    ("blocked_exec_over_blocked_posix_spawn", BLOCKED, M::F, M::S),
    ("exec_1000_queued_over_posix_spawn_loop", RATE, M::Fq, M::Sq),
];

fn method(s: &SizeResult, m: M, cfg: &Config) -> Method {
    Method {
        label: m.label(cfg.window),
        rate_per_s: s.rate(m),
        caller_cpu_us_per_creation: s.cpu(m),
        rates_per_rep: s.rates(m).into_iter().map(Num).collect(),
        creations: s.creations(m),
        timed: m.timed().then(|| {
            let (p50, p99) = s.latency(m);
            let [submit, to_socket_in_hand, to_eof] = s.phases(m);
            Timed {
                latency_p50_us: Num(p50),
                latency_p99_us: Num(p99),
                phases_p50_us: Phases {
                    submit: Num(submit),
                    to_socket_in_hand: Num(to_socket_in_hand),
                    to_eof: Num(to_eof),
                },
            }
        }),
    }
}

fn size(s: &SizeResult, cfg: &Config) -> Size {
    Size {
        label: s.label,
        target_bytes: s.target,
        rss_bytes: s.rss,
        methods: Ordered(METHODS.map(|m| (m.key(), method(s, m, cfg))).into()),
        big_template: BigTemplate {
            figures: s.big.as_ref().map(|(cold, warm)| BigFigures {
                p50_us_no_pool: Num(pct_us(cold, 50)),
                p99_us_no_pool: Num(pct_us(cold, 99)),
                p50_us_warm_pool: Num(pct_us(warm, 50)),
                p99_us_warm_pool: Num(pct_us(warm, 99)),
            }),
        },
        ratios: Ordered(RATIOS.map(|(key, of, x, y)| (key, of(s, x, y))).into()),
    }
}

/// The whole file: the configuration, the machine, every size's figures,
/// the memory figures, the targets checked and the table.
pub fn json(
    cfg: &Config,
    floor: &str,
    sizes: &[SizeResult],
    mem: &Memory,
    rep: &Report,
    skipped: Option<&str>,
) -> String {
    let root = Root {
        benchmark: "anyfork spawn (issue 5)",
        machine: Machine {
            cpus: cpus(),
            page_size: page_size(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .into(),
        },
        floor_template_linkage: floor,
        repetitions: cfg.reps,
        runs_per_measurement: cfg.parts,
        seconds_per_measurement: Num(cfg.slice.as_secs_f64()),
        batch: BATCH,
        d_max_in_flight: cfg.window,
        skipped_2g: skipped,
        sizes: sizes.iter().map(|s| size(s, cfg)).collect(),
        memory: mem,
        targets: &rep.checks,
        table_markdown: &rep.table,
    };
    let mut text = serde_json::to_string_pretty(&root)
        .unwrap_or_else(|e| panic!("the benchmark's figures as JSON: {e}"));
    text.push('\n');
    text
}
