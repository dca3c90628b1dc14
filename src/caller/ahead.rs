//! Processes forked ahead in the caller: a template keeps `n` children
//! already forked and waiting on their own sockets, and `fork` hands one
//! out, so a creation costs the new process's wake-up, not a fork.
//!
//! Unlike the template's warm pool (`anyfork_warm`, `server/pool.rs`),
//! which hands a fork request down to a waiting child, the caller holds
//! the waiting children's sockets itself: what it sends (arguments, the
//! run) goes straight to the child, and the template is not on the path.
//! A waiting child is a copy of the template as it was when forked, so
//! whatever the caller sends the template (a string, an fd, a require, an
//! eval) dismisses the waiting children (they read EOF and exit) and
//! forks new ones behind it.
//!
//! When to fork the replacement: a fork of the template while the child
//! just handed out runs would compete with it for the CPUs (on two CPUs,
//! the template's fork and the child's first steps take both). So after a
//! hand-out the replacement waits [`REFILL_DELAY`], on a timerfd in the
//! loop fd (the next dispatch after it forks); creations that come faster
//! than that (back to back) refill at once instead, and so does a fork
//! that finds the refill overdue (a program that does not dispatch).

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::conn::Conn;
use super::process::Process;
use super::reactor::{Reactor, Watcher};
use super::state::lock;
use crate::error::{Errno, Error, Result};

/// Most processes a template keeps forked ahead.
pub(crate) const MAX: usize = 64;

/// How long after a hand-out the replacement is forked, unless creations
/// come faster than this.
pub(crate) const REFILL_DELAY: Duration = Duration::from_millis(2);

/// A template's processes forked ahead: what `Process` holds once
/// [`Process::fork_ahead`] was called.
pub struct Ahead {
    shared: Arc<Shared>,
}

struct Shared {
    /// The template's connection (its fork requests go there).
    template: Arc<Conn>,
    remote: bool,
    /// The reactor whose loop fd holds the timer.
    reactor: &'static Reactor,
    timer: TimerFd,
    token: u64,
    st: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// How many to keep.
    want: usize,
    /// Forked (their requests sent), oldest first.
    ready: VecDeque<Process>,
    /// The last hand-out.
    handed: Option<Instant>,
    /// When the pending refill is due (the timer is set for then).
    refill_at: Option<Instant>,
}

impl Process {
    /// Keeps `n` processes forked ahead of [`Process::fork`] (0: none, the
    /// default): they are forked now, each fork hands out the oldest, and
    /// sending this process anything replaces them all (see the module
    /// documentation). Lowering `n` lets the extra ones exit. `EINVAL`
    /// above [`MAX`].
    pub fn fork_ahead(&self, n: usize) -> Result<()> {
        if n > MAX {
            return Err(Error::new(
                Errno::EINVAL,
                format!("fork_ahead: {n} processes is more than the {MAX} a template keeps ahead"),
            ));
        }
        self.materialize()
            .and_then(|()| {
                let mut slot = lock(&self.ahead);
                if slot.is_none() && n > 0 {
                    *slot = Some(Ahead::new(self.conn().clone(), self.remote)?);
                }
                match slot.as_ref() {
                    Some(a) => a.shared.set_want(n),
                    None => Ok(()),
                }
            })
            .map_err(|e| e.context("fork_ahead"))
    }

    /// A process forked ahead (its replacement forked now or later); None
    /// when none is kept or none is waiting.
    pub(super) fn take_ahead(&self) -> Result<Option<Process>> {
        match lock(&self.ahead).as_ref() {
            Some(a) => a.shared.take(),
            None => Ok(None),
        }
    }

    /// Something was sent to this process: the processes forked ahead,
    /// copies of it as it was, are let go (they read EOF and exit), and
    /// new ones are forked behind what was sent.
    pub(super) fn renew_ahead(&self) -> Result<()> {
        match lock(&self.ahead).as_ref() {
            Some(a) => a.shared.renew(),
            None => Ok(()),
        }
    }
}

impl Ahead {
    fn new(template: Arc<Conn>, remote: bool) -> Result<Ahead> {
        let r = Reactor::get()?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
        )
        .map_err(|e| Error::sys(e, "creating the refill timer (timerfd_create)"))?;
        // Never at 0, 1 or 2 (see `sys::fd::above_stdio`).
        let fd = crate::sys::fd::above_stdio(OwnedFd::from(timer))
            .map_err(|e| Error::io(&e, "moving the refill timer above fd 2"))?;
        // SAFETY: a timerfd, moved to another number.
        let timer = unsafe { TimerFd::from_owned_fd(fd) };
        let shared = Arc::new(Shared {
            template,
            remote,
            reactor: r,
            timer,
            token: r.token(),
            st: Mutex::new(State::default()),
        });
        let w = shared.clone();
        r.set_interest(
            shared.token,
            shared.timer.as_fd(),
            0,
            libc::EPOLLIN as u32,
            move || w,
        )?;
        Ok(Ahead { shared })
    }
}

impl Drop for Ahead {
    /// The template is freed or consumed: the waiting processes go (they
    /// read EOF), and the timer leaves the loop fd.
    fn drop(&mut self) {
        lock(&self.shared.st).ready.clear();
        // Only from the reactor it was put in: in a forked child the
        // token may name another watcher of the child's own reactor.
        if let Some(r) = super::state::reactor_if_any() {
            if std::ptr::eq(r, self.shared.reactor) {
                let _ = r.unwatch(self.shared.token, self.shared.timer.as_fd());
            }
        }
    }
}

impl Shared {
    fn set_want(&self, n: usize) -> Result<()> {
        let mut st = lock(&self.st);
        st.want = n;
        st.ready.truncate(n);
        self.fill(&mut st)
    }

    fn take(&self) -> Result<Option<Process>> {
        let mut st = lock(&self.st);
        if st.want == 0 {
            return Ok(None);
        }
        let now = Instant::now();
        let p = st.ready.pop_front();
        let fast = st.handed.is_some_and(|t| now - t < REFILL_DELAY);
        let overdue = st.refill_at.is_some_and(|t| t <= now);
        st.handed = Some(now);
        if fast || overdue {
            st.refill_at = None;
            self.fill(&mut st)?;
        } else if st.refill_at.is_none() {
            st.refill_at = Some(now + REFILL_DELAY);
            self.timer
                .set(
                    Expiration::OneShot(TimeSpec::from_duration(REFILL_DELAY)),
                    TimerSetTimeFlags::empty(),
                )
                .map_err(|e| Error::sys(e, "setting the refill timer"))?;
        }
        Ok(p)
    }

    fn renew(&self) -> Result<()> {
        let mut st = lock(&self.st);
        if st.want == 0 {
            return Ok(());
        }
        st.ready.clear();
        self.fill(&mut st)
    }

    fn fill(&self, st: &mut State) -> Result<()> {
        while st.ready.len() < st.want {
            let p = Process::fork_from(&self.template, self.remote)?;
            p.materialize()?;
            st.ready.push_back(p);
        }
        Ok(())
    }
}

impl Watcher for Shared {
    /// The refill timer expired: the replacements are forked now.
    fn on_ready(self: Arc<Self>, _events: u32) -> bool {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(&self.timer, &mut buf);
        let mut st = lock(&self.st);
        if st.refill_at.take().is_some() {
            // A failure shows on the next fork, which forks directly.
            let _ = self.fill(&mut st);
        }
        true
    }

    fn abandon(&self) {
        if let Ok(mut st) = self.st.try_lock() {
            std::mem::forget(std::mem::take(&mut st.ready));
        }
    }
}
