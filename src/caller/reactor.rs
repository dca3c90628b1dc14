//! The one pollable fd of the library, its dispatch, and `wait` for programs
//! without an event loop.
//!
//! The loop fd is an epoll set. In it: an eventfd that is readable while
//! callbacks are due, every watcher's fd with the events it wants (a
//! connection with bytes queued or reports to read, a direct child's
//! pidfd), and a timerfd that ticks while fd-less watchers (children on
//! kernels without pidfds) must be polled. All registrations are
//! level-triggered, so the loop fd is readable exactly while
//! [`Reactor::dispatch`] has work, and not while nothing can progress.
//!
//! A watcher carries its own reaction ([`Watcher::on_ready`]): the reactor
//! knows no connection or child type.
//!
//! Callbacks run only inside `dispatch` (and so `wait`), on the calling
//! thread, with no library lock held: they may create processes, run them
//! and call `dispatch` again.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::state::lock;
use crate::error::{Errno, Error, Result};

/// Something the reactor watches: a connection, a direct child.
pub trait Watcher: Send + Sync {
    /// Its fd (or, for an fd-less watcher, the tick) reported `events`
    /// (epoll bits; 0 for a tick). Returns false once an fd-less watcher
    /// needs no more ticks.
    fn on_ready(self: Arc<Self>, events: u32) -> bool;
    /// In a forked child: closes our copies of its fds, runs nothing.
    fn abandon(&self);
}

struct Due {
    queue: VecDeque<Box<dyn FnOnce() + Send>>,
    signaled: bool,
}

/// The library-wide reactor.
pub struct Reactor {
    ep: Epoll,
    wake: EventFd,
    /// Ticks every 20 ms while fd-less watchers wait.
    tick: TimerFd,
    ticking: AtomicBool,
    watchers: Mutex<HashMap<u64, Arc<dyn Watcher>>>,
    /// Watchers without an fd, polled on every dispatch.
    polled: Mutex<Vec<Arc<dyn Watcher>>>,
    next: AtomicU64,
    due: Mutex<Due>,
    waiting: AtomicUsize,
}

const WAKE: u64 = 0;
const TICK: u64 = u64::MAX;
const TICK_PERIOD: Duration = Duration::from_millis(20);

thread_local! {
    /// This thread is processing events in `dispatch`: what it makes due
    /// runs before that dispatch returns, with no eventfd round trip.
    static IN_DISPATCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Reactor {
    /// The reactor of this process, created on first use.
    pub fn get() -> Result<&'static Reactor> {
        super::state::reactor()
    }

    pub(super) fn create() -> Result<Reactor> {
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| Error::sys(e, "creating the loop fd (epoll_create1)"))?;
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::sys(e, "creating the loop's eventfd"))?;
        let tick = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
        )
        .map_err(|e| Error::sys(e, "creating the loop's timerfd"))?;
        ep.add(&tick, EpollEvent::new(EpollFlags::EPOLLIN, TICK))
            .map_err(|e| Error::sys(e, "adding the timerfd to the loop fd"))?;
        ep.add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))
            .map_err(|e| Error::sys(e, "adding the eventfd to the loop fd"))?;
        Ok(Reactor {
            ep,
            wake,
            tick,
            ticking: AtomicBool::new(false),
            watchers: Mutex::new(HashMap::new()),
            polled: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            due: Mutex::new(Due {
                queue: VecDeque::new(),
                signaled: false,
            }),
            waiting: AtomicUsize::new(0),
        })
    }

    /// In a forked child: closes the inherited reactor's fds and has every
    /// watcher close its own, without running anything it held (those
    /// callbacks belong to the parent).
    pub(super) fn abandon(&self) {
        if let Ok(mut w) = self.watchers.try_lock() {
            for (_, w) in w.drain() {
                w.abandon();
            }
        }
        if let Ok(mut w) = self.polled.try_lock() {
            for w in w.drain(..) {
                w.abandon();
            }
        }
    }

    /// The pollable fd.
    pub fn fd(&self) -> RawFd {
        self.ep.0.as_raw_fd()
    }

    /// A fresh token for a watcher.
    pub fn token(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Moves `fd` from interest `old` to `new` (epoll event bits; 0 means
    /// not registered). While registered, the reactor keeps `watcher`
    /// alive.
    pub fn set_interest(
        &self,
        token: u64,
        fd: BorrowedFd<'_>,
        old: u32,
        new: u32,
        watcher: impl FnOnce() -> Arc<dyn Watcher>,
    ) -> Result<()> {
        let ev = EpollEvent::new(EpollFlags::from_bits_retain(new as i32), token);
        let r = match (old, new) {
            (a, b) if a == b => Ok(()),
            (0, _) => {
                lock(&self.watchers).insert(token, watcher());
                self.ep.add(fd, ev).inspect_err(|_| {
                    lock(&self.watchers).remove(&token);
                })
            }
            (_, 0) => return self.unwatch(token, fd),
            _ => {
                let mut ev = ev;
                self.ep.modify(fd, &mut ev)
            }
        };
        r.map_err(|e| {
            Error::sys(
                e,
                format_args!("registering fd {} in the loop fd", fd.as_raw_fd()),
            )
        })
    }

    /// Takes a registered fd out of the loop fd.
    pub fn unwatch(&self, token: u64, fd: BorrowedFd<'_>) -> Result<()> {
        let r = self.ep.delete(fd);
        lock(&self.watchers).remove(&token);
        r.map_err(|e| {
            Error::sys(
                e,
                format_args!("removing fd {} from the loop fd", fd.as_raw_fd()),
            )
        })
    }

    /// Polls `w` on every dispatch (and a tick makes the loop fd readable
    /// every 20 ms) until its `on_ready` returns false.
    pub fn poll_always(&self, w: Arc<dyn Watcher>) {
        lock(&self.polled).push(w);
        self.set_ticking(true);
    }

    /// Counts one more callback that will be scheduled later.
    pub fn expect_callback(&self) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
    }

    /// Forgets one expected callback that completed without running.
    pub fn cancel_callback(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// Callbacks registered and not yet run.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Starts or stops the tick.
    fn set_ticking(&self, on: bool) {
        if self.ticking.swap(on, Ordering::AcqRel) == on {
            return;
        }
        let _ = if on {
            self.tick.set(
                Expiration::Interval(TimeSpec::from_duration(TICK_PERIOD)),
                TimerSetTimeFlags::empty(),
            )
        } else {
            self.tick.unset()
        };
    }

    /// Makes the loop fd readable (callbacks are due), once until the next
    /// dispatch takes the queue.
    fn signal(&self, due: &mut Due) {
        if !due.signaled {
            due.signaled = true;
            // An eventfd that is already nonzero stays readable, so a
            // failure loses nothing.
            let _ = self.wake.write(1);
        }
    }

    /// Queues a callback for the next dispatch and makes the loop fd
    /// readable, unless this thread is inside dispatch and will run it
    /// before returning anyway.
    pub fn schedule(&self, cb: Box<dyn FnOnce() + Send>) {
        let mut due = lock(&self.due);
        due.queue.push_back(cb);
        if !IN_DISPATCH.get() {
            self.signal(&mut due);
        }
    }

    /// Does whatever can be done now without blocking: writes queued bytes,
    /// reads reports, reaps direct children, then runs the callbacks that
    /// were due when it started. Returns how many callbacks ran.
    pub fn dispatch(&self) -> Result<usize> {
        let mut events = [EpollEvent::empty(); 64];
        let n = match self.ep.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(Error::sys(e, "polling the loop fd (epoll_wait)")),
        };
        IN_DISPATCH.set(true);
        for ev in &events[..n] {
            match ev.data() {
                WAKE => {}
                TICK => {
                    let mut buf = [0u8; 8];
                    let _ = nix::unistd::read(&self.tick, &mut buf);
                }
                token => {
                    let w = lock(&self.watchers).get(&token).cloned();
                    if let Some(w) = w {
                        w.on_ready(ev.events().bits() as u32);
                    }
                }
            }
        }
        self.poll_fdless();
        IN_DISPATCH.set(false);
        let mut ready = {
            let mut due = lock(&self.due);
            let q = std::mem::take(&mut due.queue);
            if due.signaled {
                due.signaled = false;
                let _ = self.wake.read();
            }
            q
        };
        let ran = ready.len();
        while let Some(cb) = ready.pop_front() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb)) {
                // A Rust callback panicked: the others still run, in a
                // later dispatch, before the panic goes on to the caller.
                let mut due = lock(&self.due);
                while let Some(rest) = ready.pop_back() {
                    due.queue.push_front(rest);
                }
                self.signal(&mut due);
                drop(due);
                std::panic::resume_unwind(panic);
            }
        }
        Ok(ran)
    }

    /// Polls the fd-less watchers; stops the tick when none is left.
    fn poll_fdless(&self) {
        let mut polled = lock(&self.polled);
        if !polled.is_empty() {
            polled.retain(|w| w.clone().on_ready(0));
            if polled.is_empty() {
                self.set_ticking(false);
            }
        }
    }

    /// Dispatches until at least one callback ran, `timeout_ms` passed
    /// (negative: no limit), or no callback is waiting at all.
    pub fn wait(&self, timeout_ms: i32) -> Result<usize> {
        let start = Instant::now();
        loop {
            let ran = self.dispatch()?;
            if ran > 0 || self.waiting() == 0 {
                return Ok(ran);
            }
            let left = if timeout_ms < 0 {
                PollTimeout::NONE
            } else {
                let spent = start.elapsed().as_millis().min(i32::MAX as u128) as i32;
                if spent >= timeout_ms {
                    return Ok(0);
                }
                PollTimeout::try_from(timeout_ms - spent).unwrap_or(PollTimeout::MAX)
            };
            let mut pfd = [PollFd::new(self.ep.0.as_fd(), PollFlags::POLLIN)];
            match poll(&mut pfd, left) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::sys(e, "waiting on the loop fd (poll)")),
            }
        }
    }
}
