//! `wait` for programs without an event loop: any number of threads wait
//! at once, one polls the loop fd and the others sleep on a condition
//! variable, and whoever makes the last pending work leave wakes them all.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::epoll::{EpollEvent, EpollTimeout};

use super::reactor::Reactor;
use super::state::lock;
use crate::error::Result;
use crate::sys::spin;

/// Threads in [`Reactor::wait`]: one polls the loop fd, the others wait on
/// a condition variable. Whoever makes the last expected callback leave
/// (runs it, or cancels it) wakes them all; the poller through `alarm`.
#[derive(Default)]
pub(super) struct Waiters {
    polling: bool,
    following: usize,
    /// The alarm was written and not read yet (the poller reads it).
    alarmed: bool,
}

impl Reactor {
    /// Dispatches until at least one callback ran, `timeout_ms` passed
    /// (negative: no limit), or nothing is pending ([`Reactor::pending`]).
    ///
    /// Any number of threads may wait at once. One of them polls: it
    /// blocks in `epoll_wait` on the loop fd itself and handles what that
    /// returns, so a reply costs one wake-up and no second look. The others
    /// sleep until it stops polling (and one takes over) or until nothing
    /// is pending any more, whoever made it so (see `work_done`: it rings
    /// the alarm for the poller). Each checks its conditions under the
    /// waiters' lock that the waking side takes, so no wake-up is lost.
    pub fn wait(&self, timeout_ms: i32) -> Result<usize> {
        let deadline = u64::try_from(timeout_ms)
            .ok()
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let mut events = [EpollEvent::empty(); 64];
        loop {
            if self.pending() == 0 {
                // Nothing can come: one look, whatever it finds.
                return self.dispatch();
            }
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return self.dispatch(),
                },
            };
            let mut w = lock(&self.waiters);
            if self.pending() == 0 {
                continue;
            }
            if w.polling {
                w.following += 1;
                w = match left {
                    None => self.turn.wait(w).unwrap_or_else(|p| p.into_inner()),
                    Some(left) => {
                        self.turn
                            .wait_timeout(w, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
                w.following -= 1;
                drop(w);
                // Another thread may have run callbacks, or stopped
                // polling: look without blocking before deciding again.
                let ran = self.dispatch()?;
                if ran > 0 || self.pending() == 0 {
                    return Ok(ran);
                }
                continue;
            }
            w.polling = true;
            drop(w);
            let r = self.poll_or_spin(&mut events, left);
            let mut w = lock(&self.waiters);
            w.polling = false;
            if w.alarmed {
                w.alarmed = false;
                let _ = self.alarm.read();
            }
            if w.following > 0 {
                self.turn.notify_all();
            }
            drop(w);
            let ran = self.handle(&events[..r?])?;
            if ran > 0 || self.pending() == 0 {
                return Ok(ran);
            }
        }
    }

    /// The poller's `epoll_wait`. While RPC replies are expected it first
    /// looks without blocking for up to the spin window (never past
    /// `left`), so a worker's prompt reply costs no wake-up of a sleeping
    /// thread; then, or otherwise, it blocks for up to `left`.
    fn poll_or_spin(&self, events: &mut [EpollEvent], left: Option<Duration>) -> Result<usize> {
        if self.replies.load(Ordering::Relaxed) > 0 {
            let window = left.map_or(spin::window(), |l| l.min(spin::window()));
            if !window.is_zero() {
                let found = spin::look_for(window, || {
                    match self.poll_events(events, EpollTimeout::ZERO) {
                        Ok(0) => None,
                        r => Some(r),
                    }
                });
                if let Some(r) = found {
                    return r;
                }
            }
        }
        self.poll_events(events, Self::epoll_timeout(left))
    }

    /// `left` as an `epoll_wait` timeout: rounded up to whole
    /// milliseconds, so a wait does not spin through its last fraction of
    /// a millisecond; none is no limit.
    fn epoll_timeout(left: Option<Duration>) -> EpollTimeout {
        left.map_or(EpollTimeout::NONE, |d| {
            let ms = d.as_micros().div_ceil(1000);
            EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
        })
    }

    /// Nothing is pending any more: the polling thread gets the alarm (it
    /// blocks in `epoll_wait`), the others the condition variable.
    pub(super) fn wake_waiters(&self) {
        let mut w = lock(&self.waiters);
        if w.polling && !w.alarmed {
            w.alarmed = true;
            let _ = self.alarm.write(1);
        }
        if w.following > 0 {
            self.turn.notify_all();
        }
    }
}
