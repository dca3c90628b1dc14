//! The one pollable fd of the library, its dispatch, and `wait` for programs
//! without an event loop.
//!
//! The loop fd is an epoll set. In it: an eventfd that is readable while
//! callbacks are due, every watcher's fd with the events it wants (a
//! connection with bytes queued or reports to read, a direct child's
//! pidfd), a timerfd that ticks while fd-less watchers (children on
//! kernels without pidfds) must be polled, and the waiters' alarm (see
//! [`Reactor::wait`], in `waiters.rs`). All registrations are level-triggered, so the loop
//! fd is readable exactly while [`Reactor::dispatch`] has work, and not
//! while nothing can progress (but for the moment between an alarm and
//! the waiting thread's wake-up).
//!
//! A watcher carries its own reaction ([`Watcher::on_ready`]): the reactor
//! knows no connection or child type.
//!
//! Callbacks run only inside `dispatch` (and so `wait`), on the calling
//! thread, with no library lock held: they may create processes, run them
//! and call `dispatch` again.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::state::lock;
use super::waiters::Waiters;
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
    queue: VecDeque<Callback>,
    /// The queue a dispatch emptied last, kept to become the next
    /// `queue`, so scheduling allocates no new one on every turn.
    spare: VecDeque<Callback>,
    signaled: bool,
}

/// The library-wide reactor.
pub struct Reactor {
    ep: Epoll,
    wake: EventFd,
    /// Ticks every 20 ms while fd-less watchers wait.
    tick: TimerFd,
    ticking: AtomicBool,
    /// By token (a B-tree: no hashing on every event).
    watchers: Mutex<BTreeMap<u64, Arc<dyn Watcher>>>,
    /// Watchers without an fd, polled on every dispatch.
    polled: Mutex<Vec<Arc<dyn Watcher>>>,
    next: AtomicU64,
    due: Mutex<Due>,
    /// Run and exit callbacks expected and not run yet.
    waiting: AtomicUsize,
    /// Watchers registered for `EPOLLOUT`: sockets with bytes queued,
    /// which only dispatch delivers.
    writing: AtomicUsize,
    /// RPC replies expected (calls sent or queued, not answered): while
    /// there are any, the thread polling in `wait` looks again for a
    /// moment before it sleeps (`sys::spin`).
    pub(super) replies: AtomicUsize,
    pub(super) waiters: Mutex<Waiters>,
    pub(super) turn: Condvar,
    /// Wakes the thread polling in `wait`. It is in the epoll set (so that
    /// thread blocks in one `epoll_wait`), written only while a thread
    /// polls there, and read only by that thread: `dispatch` skips it.
    pub(super) alarm: EventFd,
}

const WAKE: u64 = 0;
const TICK: u64 = u64::MAX;
const ALARM: u64 = u64::MAX - 1;
const TICK_PERIOD: Duration = Duration::from_millis(20);

/// A callback queued for the next dispatch.
type Callback = Box<dyn FnOnce() + Send>;

/// The most callbacks a spare queue keeps room for.
const SPARE_MAX: usize = 4096;

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
        let alarm =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| Error::sys(e, "creating the waiters' eventfd"))?;
        // None of the library's fds stays at 0, 1 or 2 (see
        // `sys::fd::above_stdio`).
        let lift = |fd: std::os::fd::OwnedFd| {
            crate::sys::fd::above_stdio(fd)
                .map_err(|e| Error::io(&e, "moving the loop's fds above fd 2"))
        };
        let ep = Epoll(lift(ep.0)?);
        // SAFETY (three times): the same kind of fd, moved to another number.
        let wake = unsafe { EventFd::from_owned_fd(lift(wake.into())?) };
        let tick = unsafe { TimerFd::from_owned_fd(lift(tick.into())?) };
        let alarm = unsafe { EventFd::from_owned_fd(lift(alarm.into())?) };
        ep.add(&tick, EpollEvent::new(EpollFlags::EPOLLIN, TICK))
            .map_err(|e| Error::sys(e, "adding the timerfd to the loop fd"))?;
        ep.add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))
            .map_err(|e| Error::sys(e, "adding the eventfd to the loop fd"))?;
        ep.add(&alarm, EpollEvent::new(EpollFlags::EPOLLIN, ALARM))
            .map_err(|e| Error::sys(e, "adding the waiters' eventfd to the loop fd"))?;
        Ok(Reactor {
            ep,
            wake,
            tick,
            ticking: AtomicBool::new(false),
            watchers: Mutex::new(BTreeMap::new()),
            polled: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            due: Mutex::new(Due {
                queue: VecDeque::new(),
                spare: VecDeque::new(),
                signaled: false,
            }),
            waiting: AtomicUsize::new(0),
            writing: AtomicUsize::new(0),
            replies: AtomicUsize::new(0),
            waiters: Mutex::new(Waiters::default()),
            turn: Condvar::new(),
            alarm,
        })
    }

    /// In a forked child: closes the inherited reactor's fds and has every
    /// watcher close its own, without running anything it held (those
    /// callbacks belong to the parent).
    ///
    /// The reactor itself is then leaked, not freed (a dispatch running
    /// when the program forked may still use it in the child); its own
    /// fds are closed here.
    pub(super) fn abandon(&self) {
        if let Ok(mut w) = self.watchers.try_lock() {
            for (_, w) in std::mem::take(&mut *w) {
                w.abandon();
            }
        }
        if let Ok(mut w) = self.polled.try_lock() {
            for w in w.drain(..) {
                w.abandon();
            }
        }
        if !super::state::inherited_fds_gone() {
            for fd in [
                self.ep.0.as_raw_fd(),
                self.wake.as_fd().as_raw_fd(),
                self.tick.as_fd().as_raw_fd(),
                self.alarm.as_fd().as_raw_fd(),
            ] {
                // SAFETY: the reactor is leaked and its owned fds are never
                // dropped, so each number is closed exactly once, here. A
                // dispatch still running on it afterwards gets EBADF.
                unsafe { libc::close(fd) };
            }
        }
    }

    /// The pollable fd.
    pub fn fd(&self) -> RawFd {
        self.ep.0.as_raw_fd()
    }

    /// A fresh token for a watcher (never `TICK` or `ALARM`: 2^64 - 2
    /// tokens would take centuries).
    pub fn token(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Moves `fd` from interest `old` to `new` (epoll event bits; 0 means
    /// not registered). While registered, the reactor keeps `watcher`
    /// alive; while `EPOLLOUT` is in the interest, it counts as work for
    /// the loop ([`Reactor::pending`]).
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
            (a, b) if a == b => return Ok(()),
            (0, _) => {
                lock(&self.watchers).insert(token, watcher());
                self.ep.add(fd, ev).inspect_err(|_| {
                    lock(&self.watchers).remove(&token);
                })
            }
            (_, 0) => {
                let r = self.ep.delete(fd);
                lock(&self.watchers).remove(&token);
                r
            }
            _ => {
                let mut ev = ev;
                self.ep.modify(fd, &mut ev)
            }
        };
        let out = libc::EPOLLOUT as u32;
        match (old & out != 0, new & out != 0) {
            (false, true) if r.is_ok() => {
                self.writing.fetch_add(1, Ordering::SeqCst);
            }
            (true, false) => self.work_done(&self.writing),
            _ => {}
        }
        r.map_err(|e| {
            Error::sys(
                e,
                format_args!("registering fd {} in the loop fd", fd.as_raw_fd()),
            )
        })
    }

    /// Takes a registered fd out of the loop fd (not one with `EPOLLOUT`
    /// interest: that goes through [`Reactor::set_interest`]).
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
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    /// `n` more RPC replies are expected (see `replies`).
    pub fn expect_replies(&self, n: usize) {
        self.replies.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` expected RPC replies came, or will not come.
    pub fn replies_done(&self, n: usize) {
        self.replies.fetch_sub(n, Ordering::Relaxed);
    }

    /// Forgets one expected callback that completed without running.
    pub fn cancel_callback(&self) {
        self.work_done(&self.waiting);
    }

    /// One unit of `counter` (an expected callback, a socket with bytes
    /// queued) is done: when it was the last work of the loop, every
    /// thread in `wait` learns that nothing is pending any more.
    fn work_done(&self, counter: &AtomicUsize) {
        counter.fetch_sub(1, Ordering::SeqCst);
        if self.pending() == 0 {
            self.wake_waiters();
        }
    }

    /// Callbacks registered and not yet run.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Work only dispatch does: callbacks not yet run, and sockets with
    /// bytes or fds still queued (processes freed or run detached that are
    /// not fully delivered, among them).
    pub fn pending(&self) -> usize {
        self.waiting() + self.writing.load(Ordering::SeqCst)
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
    pub fn schedule(&self, cb: Callback) {
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
        let n = self.poll_events(&mut events, EpollTimeout::ZERO)?;
        self.handle(&events[..n])
    }

    /// Reads the loop fd's ready events, waiting up to `timeout` for one.
    pub(super) fn poll_events(
        &self,
        events: &mut [EpollEvent],
        timeout: EpollTimeout,
    ) -> Result<usize> {
        match self.ep.wait(events, timeout) {
            Ok(n) => Ok(n),
            Err(Errno::EINTR) => Ok(0),
            Err(e) => Err(Error::sys(e, "polling the loop fd (epoll_wait)")),
        }
    }

    /// Reacts to `events` (from the loop fd), then runs the callbacks that
    /// were due: the second half of [`Reactor::dispatch`].
    pub(super) fn handle(&self, events: &[EpollEvent]) -> Result<usize> {
        IN_DISPATCH.set(true);
        for ev in events {
            match ev.data() {
                WAKE | ALARM => {}
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
            let spare = std::mem::take(&mut due.spare);
            let q = std::mem::replace(&mut due.queue, spare);
            if due.signaled {
                due.signaled = false;
                let _ = self.wake.read();
            }
            q
        };
        let ran = ready.len();
        let epoch = super::state::epoch();
        while let Some(cb) = ready.pop_front() {
            if super::state::epoch() != epoch {
                // A callback forked and this is the child: the rest
                // belong to the parent.
                std::mem::forget(ready);
                return Ok(ran);
            }
            self.work_done(&self.waiting);
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
        if ready.capacity() > 0 && ready.capacity() <= SPARE_MAX {
            let mut due = lock(&self.due);
            if due.spare.capacity() == 0 {
                due.spare = ready;
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
}
