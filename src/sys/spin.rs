//! Looking again for a moment before sleeping: a thread that expects an
//! answer within microseconds (an RPC reply, the next request) polls
//! without blocking, yielding its CPU between looks, for up to
//! [`window`] before it blocks.
//!
//! Why: when the two processes of a round trip sit on different CPUs, a
//! blocked reader is woken by an inter-processor interrupt, and its CPU
//! may have to leave an idle state first; on a VM that costs tens of
//! microseconds per wake-up, several times the round trip itself. A
//! reader that is still looking when the bytes arrive pays none of it.
//! Yielding between looks keeps this cheap when both processes share one
//! CPU: the other process runs at once instead of waiting for the spinner's
//! time slice to end.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The window when `ANYFORK_SPIN_US` is unset.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(50);

/// How long to keep looking before blocking: `ANYFORK_SPIN_US`
/// microseconds (0 turns spinning off; at most one second), read once per
/// process; [`DEFAULT_WINDOW`] when unset or not a number.
pub fn window() -> Duration {
    static WINDOW: OnceLock<Duration> = OnceLock::new();
    *WINDOW.get_or_init(|| parse(std::env::var("ANYFORK_SPIN_US").ok().as_deref()))
}

fn parse(v: Option<&str>) -> Duration {
    match v.map(str::trim).map(str::parse::<u64>) {
        Some(Ok(us)) => Duration::from_micros(us.min(1_000_000)),
        _ => DEFAULT_WINDOW,
    }
}

/// Calls `look` until it returns `Some`, yielding the CPU between calls,
/// for at most `window`; `None` when the window passed with nothing found
/// (the caller then blocks). `look` runs at least once, even for a zero
/// window.
pub fn look_for<T>(window: Duration, mut look: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(found) = look() {
            return Some(found);
        }
        if start.elapsed() >= window {
            return None;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_comes_from_the_environment_value() {
        assert_eq!(parse(None), DEFAULT_WINDOW);
        assert_eq!(parse(Some("0")), Duration::ZERO);
        assert_eq!(parse(Some(" 20 ")), Duration::from_micros(20));
        assert_eq!(parse(Some("5000000")), Duration::from_secs(1));
        assert_eq!(parse(Some("fast")), DEFAULT_WINDOW);
    }

    #[test]
    fn looking_stops_at_the_first_find_or_when_the_window_passed() {
        let mut looks = 0;
        assert_eq!(
            look_for(Duration::from_secs(5), || {
                looks += 1;
                (looks == 3).then_some(looks)
            }),
            Some(3)
        );
        let mut looks = 0;
        assert_eq!(
            look_for(Duration::ZERO, || {
                looks += 1;
                None::<()>
            }),
            None
        );
        assert_eq!(looks, 1);
        let start = Instant::now();
        assert_eq!(look_for(Duration::from_millis(2), || None::<()>), None);
        assert!(start.elapsed() >= Duration::from_millis(2));
    }
}
