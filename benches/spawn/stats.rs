//! Statistics: median, min and max of repetitions, ratios taken repetition by repetition, percentiles.

use serde::Serialize;

use crate::json::num;

/// Median, min and max of a set of repetitions.
#[derive(Clone, Copy, Serialize)]
pub struct Stat {
    #[serde(rename = "median", serialize_with = "num")]
    pub med: f64,
    #[serde(serialize_with = "num")]
    pub min: f64,
    #[serde(serialize_with = "num")]
    pub max: f64,
}

/// The median, min and max of the finite values of `v` (NaN when none is).
pub fn stat(v: &[f64]) -> Stat {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return Stat {
            med: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let k = s.len();
    let med = if k % 2 == 1 {
        s[k / 2]
    } else {
        (s[k / 2 - 1] + s[k / 2]) / 2.0
    };
    Stat {
        med,
        min: s[0],
        max: s[k - 1],
    }
}

/// x ÷ y repetition by repetition (both measured in the same seconds).
pub fn ratio(x: &[f64], y: &[f64]) -> Stat {
    stat(&x.iter().zip(y).map(|(a, b)| a / b).collect::<Vec<_>>())
}

/// The `p`th percentile of sorted values (NaN when there are none).
pub fn pct(sorted: &[u64], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i] as f64
}

/// The `p`th percentile of sorted nanoseconds, in µs.
pub fn pct_us(sorted_ns: &[u64], p: usize) -> f64 {
    pct(sorted_ns, p) / 1e3
}
