//! The one pollable fd of the library, its dispatch, and `wait` for programs
//! without an event loop.
//!
//! The loop fd is an epoll set. In it: an eventfd that is readable while
//! callbacks are due, every connection that has bytes queued (`EPOLLOUT`) or
//! reports to read (`EPOLLIN`), and a pidfd for each direct child not yet
//! reaped. All registrations are level-triggered, so the loop fd is readable
//! exactly while [`Reactor::dispatch`] has work, and not while nothing can
//! progress.
//!
//! Callbacks run only inside `dispatch` (and so `wait`), on the calling
//! thread, with no library lock held: they may create processes, run them
//! and call `dispatch` again.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::conn::Conn;
use crate::direct::DirectChild;
use crate::error::{Errno, Error, Result};

/// Something registered in the epoll set.
#[derive(Clone)]
pub enum Source {
    Conn(Arc<Conn>),
    Child(Arc<DirectChild>),
}

struct Due {
    queue: VecDeque<Box<dyn FnOnce() + Send>>,
    signaled: bool,
}

/// The library-wide reactor.
pub struct Reactor {
    ep: OwnedFd,
    wake: OwnedFd,
    /// A timerfd that ticks while direct children without a pidfd wait to
    /// be reaped (see [`crate::direct`]).
    tick: OwnedFd,
    ticking: std::sync::atomic::AtomicBool,
    sources: Mutex<HashMap<u64, Source>>,
    next: AtomicU64,
    due: Mutex<Due>,
    waiting: AtomicUsize,
}

const WAKE: u64 = 0;
const TICK: u64 = u64::MAX;

thread_local! {
    /// This thread is processing events in `dispatch`: what it makes due
    /// runs before that dispatch returns, with no eventfd round trip.
    static IN_DISPATCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The reactor of this process; replaced (and the old one abandoned) by
/// [`Reactor::abandon`] in a forked child.
static REACTOR: AtomicPtr<Reactor> = AtomicPtr::new(std::ptr::null_mut());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reactor {
    /// The reactor, created on first use.
    pub fn get() -> Result<&'static Reactor> {
        let p = REACTOR.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: reactors are leaked, never freed: the pointer stays valid.
            return Ok(unsafe { &*p });
        }
        let new = Box::into_raw(Box::new(Reactor::create()?));
        match REACTOR.compare_exchange(
            std::ptr::null_mut(),
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // SAFETY: just stored; never freed.
            Ok(_) => Ok(unsafe { &*new }),
            Err(won) => {
                // SAFETY: `new` was never shared; `won` is leaked like all.
                drop(unsafe { Box::from_raw(new) });
                Ok(unsafe { &*won })
            }
        }
    }

    /// In a forked child: closes the inherited reactor's fds and every
    /// socket registered in it, and forgets it without running anything it
    /// held (those callbacks belong to the parent). The next use creates a
    /// fresh reactor.
    pub fn abandon() {
        let p = REACTOR.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if p.is_null() {
            return;
        }
        // SAFETY: in a forked child only this thread exists, and no
        // reference to the old reactor is live on its stack here: the box
        // can be taken back and freed (its fds close as it drops).
        let r = unsafe { Box::from_raw(p) };
        if let Ok(mut sources) = r.sources.try_lock() {
            for (_, src) in sources.drain() {
                match src {
                    Source::Conn(c) => c.abandon(),
                    Source::Child(c) => c.abandon(),
                }
            }
        }
        drop(r);
    }

    fn create() -> Result<Reactor> {
        // SAFETY: plain syscalls; each result is checked before use.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let ep =
            Errno::result(ep).map_err(|e| Error::sys(e, "creating the loop fd (epoll_create1)"))?;
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        let wake = Errno::result(wake).map_err(|e| Error::sys(e, "creating the loop's eventfd"))?;
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let tick = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        };
        let tick = Errno::result(tick).map_err(|e| Error::sys(e, "creating the loop's timerfd"))?;
        let tick = unsafe { OwnedFd::from_raw_fd(tick) };
        epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            tick.as_raw_fd(),
            libc::EPOLLIN as u32,
            TICK,
        )
        .map_err(|e| Error::sys(e, "adding the timerfd to the loop fd"))?;
        epoll_ctl(
            ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_raw_fd(),
            libc::EPOLLIN as u32,
            WAKE,
        )
        .map_err(|e| Error::sys(e, "adding the eventfd to the loop fd"))?;
        Ok(Reactor {
            ep,
            wake,
            tick,
            ticking: std::sync::atomic::AtomicBool::new(false),
            sources: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            due: Mutex::new(Due {
                queue: VecDeque::new(),
                signaled: false,
            }),
            waiting: AtomicUsize::new(0),
        })
    }

    /// The pollable fd.
    pub fn fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }

    /// A fresh token for a source.
    pub fn token(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Moves `fd` from interest `old` to `new` (epoll event bits; 0 means
    /// not registered). While registered, the reactor keeps `source` alive.
    pub fn set_interest(
        &self,
        token: u64,
        fd: RawFd,
        old: u32,
        new: u32,
        source: impl FnOnce() -> Source,
    ) -> Result<()> {
        let ep = self.ep.as_raw_fd();
        let r = match (old, new) {
            (a, b) if a == b => Ok(()),
            (0, _) => {
                lock(&self.sources).insert(token, source());
                epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, new, token).inspect_err(|_| {
                    lock(&self.sources).remove(&token);
                })
            }
            (_, 0) => return self.unwatch(token, fd),
            _ => epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, new, token),
        };
        r.map_err(|e| Error::sys(e, format_args!("registering fd {fd} in the loop fd")))
    }

    /// Takes a registered fd out of the loop fd.
    pub fn unwatch(&self, token: u64, fd: RawFd) -> Result<()> {
        let r = epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0, token);
        lock(&self.sources).remove(&token);
        r.map_err(|e| Error::sys(e, format_args!("removing fd {fd} from the loop fd")))
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

    /// Starts (every 20 ms) or stops the tick that makes the loop fd
    /// readable while children without a pidfd wait to be reaped.
    pub fn set_ticking(&self, on: bool) {
        if self.ticking.swap(on, Ordering::AcqRel) == on {
            return;
        }
        let period = libc::timespec {
            tv_sec: 0,
            tv_nsec: if on { 20_000_000 } else { 0 },
        };
        let spec = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        // SAFETY: arms or disarms our timerfd with a valid spec.
        unsafe { libc::timerfd_settime(self.tick.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
    }

    /// Makes the loop fd readable (callbacks are due), once until the next
    /// dispatch takes the queue.
    fn signal(&self, due: &mut Due) {
        if !due.signaled {
            due.signaled = true;
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer; an eventfd that
            // is already nonzero stays readable, so a failure loses nothing.
            unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
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
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: the buffer holds 64 events.
        let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), events.as_mut_ptr(), 64, 0) };
        let n = match Errno::result(n) {
            Ok(n) => n as usize,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(Error::sys(e, "polling the loop fd (epoll_wait)")),
        };
        IN_DISPATCH.set(true);
        for ev in &events[..n] {
            let (bits, token) = (ev.events, ev.u64);
            if token == WAKE {
                continue;
            }
            if token == TICK {
                let mut buf = [0u8; 8];
                // SAFETY: drains the timerfd's expiry count into `buf`.
                unsafe { libc::read(self.tick.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
                continue;
            }
            let src = lock(&self.sources).get(&token).cloned();
            match src {
                Some(Source::Conn(c)) => c.on_ready(bits),
                Some(Source::Child(c)) => c.on_ready(),
                None => {}
            }
        }
        crate::direct::poll_fallback();
        if !crate::direct::fallback_pending() {
            self.set_ticking(false);
        }
        IN_DISPATCH.set(false);
        let ready = {
            let mut due = lock(&self.due);
            let q = std::mem::take(&mut due.queue);
            if due.signaled {
                due.signaled = false;
                let mut buf = [0u8; 8];
                // SAFETY: reads 8 bytes into a live buffer.
                unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
            }
            q
        };
        let ran = ready.len();
        let mut ready = ready;
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
                -1
            } else {
                let spent = start.elapsed().as_millis().min(i32::MAX as u128) as i32;
                if spent >= timeout_ms {
                    return Ok(0);
                }
                timeout_ms - spent
            };
            let mut pfd = libc::pollfd {
                fd: self.ep.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left) };
            match Errno::result(r) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(Error::sys(e, "waiting on the loop fd (poll)")),
            }
        }
    }
}

fn epoll_ctl(
    ep: RawFd,
    op: i32,
    fd: RawFd,
    events: u32,
    token: u64,
) -> std::result::Result<(), Errno> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` outlives the call.
    Errno::result(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }).map(drop)
}
