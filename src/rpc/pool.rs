//! A pool of RPC workers forked from templates, with
//! AnyEvent::Fork::Pool's management: `max` workers at most, `idle` spare
//! ones kept (and started at once), `load` requests in flight per worker,
//! `start` seconds between starting workers while every one is busy,
//! `stop` seconds of idleness before a spare worker is let go; and
//! retirement (asked by the worker, or after `retire_after` requests).
//!
//! Each call goes to the least-loaded worker; calls wait in the pool's
//! queue while every worker is at its load. A worker that ends (crash,
//! kill, exit) fails its own calls once each (see `client.rs`) and is
//! replaced as the queue and `idle` require. Timers are a timerfd in the
//! loop fd, armed for the next deadline only.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::client::{OnClose, OnEvent, Reply, RpcConn};
use crate::Process;
use crate::caller::reactor::{Reactor, Watcher};
use crate::caller::state::lock;
use crate::error::{Errno, Error, Result};

/// A pool's settings (see the module docs for their meanings).
#[derive(Clone, Debug, PartialEq)]
pub struct PoolOpts {
    pub max: usize,
    pub idle: usize,
    pub load: usize,
    pub start: Duration,
    pub stop: Duration,
    /// Retire a worker once it was sent this many requests (0: never).
    pub retire_after: u64,
}

impl Default for PoolOpts {
    fn default() -> PoolOpts {
        PoolOpts {
            max: std::thread::available_parallelism().map_or(1, |n| n.get()),
            idle: 0,
            load: 2,
            start: Duration::from_millis(100),
            stop: Duration::from_secs(10),
            retire_after: 0,
        }
    }
}

struct Slot {
    id: u64,
    rpc: Arc<RpcConn>,
    load: usize,
    sent: u64,
    retiring: bool,
    idle_since: Instant,
}

struct State {
    templates: Vec<Process>,
    next_template: usize,
    workers: Vec<Slot>,
    queue: VecDeque<(Vec<u8>, Reply)>,
    next_worker: u64,
    last_start: Option<Instant>,
    freed: bool,
    on_destroyed: Option<Box<dyn FnOnce() + Send>>,
    destroyed: bool,
    armed: Option<Instant>,
}

/// The shared part of a pool: its handle, its workers' callbacks and the
/// reactor (through the timer) hold it.
pub struct PoolInner {
    token: u64,
    me: Weak<PoolInner>,
    function: String,
    opts: PoolOpts,
    on_event: Option<OnEvent>,
    timer: TimerFd,
    st: Mutex<State>,
}

/// A pool handle; dropping it frees the pool gracefully.
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    /// A pool whose workers are forked from `template` and enter
    /// `function` (which serves RPC on its comm socket). `idle` workers
    /// start at once.
    pub fn new(
        template: Process,
        function: &str,
        opts: PoolOpts,
        on_event: Option<OnEvent>,
    ) -> Result<Pool> {
        if opts.load == 0 || opts.max == 0 {
            return Err(Error::new(
                Errno::EINVAL,
                format!(
                    "pool_new: max ({}) and load ({}) must be at least 1",
                    opts.max, opts.load
                ),
            ));
        }
        if opts.idle > opts.max {
            return Err(Error::new(
                Errno::EINVAL,
                format!("pool_new: idle ({}) exceeds max ({})", opts.idle, opts.max),
            ));
        }
        if function.is_empty() || function.contains('\0') {
            return Err(Error::new(
                Errno::EINVAL,
                format!("pool_new: the function name {function:?} is empty or holds a NUL"),
            ));
        }
        let r = Reactor::get()?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK,
        )
        .map_err(|e| Error::sys(e, "pool_new: creating the pool's timerfd"))?;
        let inner = Arc::new_cyclic(|me| PoolInner {
            token: r.token(),
            me: me.clone(),
            function: function.to_string(),
            opts,
            on_event,
            timer,
            st: Mutex::new(State {
                templates: vec![template],
                next_template: 0,
                workers: Vec::new(),
                queue: VecDeque::new(),
                next_worker: 1,
                last_start: None,
                freed: false,
                on_destroyed: None,
                destroyed: false,
                armed: None,
            }),
        });
        let w = inner.clone();
        r.set_interest(
            inner.token,
            inner.timer.as_fd(),
            0,
            libc::EPOLLIN as u32,
            || w as Arc<dyn Watcher>,
        )
        .map_err(|e| e.context("pool_new"))?;
        {
            let mut st = lock(&inner.st);
            for _ in 0..inner.opts.idle {
                if let Err(e) = inner.start_worker(&mut st) {
                    drop(st);
                    inner.shutdown();
                    return Err(e.context("pool_new"));
                }
            }
        }
        Ok(Pool { inner })
    }

    /// Adds a template workers may be forked from (they are used in turn).
    pub fn add_template(&self, t: Process) -> Result<()> {
        let mut st = lock(&self.inner.st);
        if st.freed {
            return Err(Error::new(
                Errno::EPIPE,
                "pool_add_template: the pool was freed",
            ));
        }
        st.templates.push(t);
        Ok(())
    }

    /// Queues a call for the least-loaded worker; `cb` gets its reply or
    /// an error, exactly once.
    pub fn call(&self, data: &[u8], cb: Reply) -> Result<()> {
        super::frame::len32(data, "pool_call")?;
        let r = Reactor::get()?;
        let mut st = lock(&self.inner.st);
        if st.freed {
            return Err(Error::new(
                Errno::EPIPE,
                "pool_call: the pool was freed; it takes no new calls",
            ));
        }
        r.expect_callback();
        st.queue.push_back((data.to_vec(), cb));
        self.inner.pump(&mut st);
        Ok(())
    }

    /// Workers in the pool now (retiring ones included).
    pub fn workers(&self) -> usize {
        lock(&self.inner.st).workers.len()
    }

    /// Frees the pool: queued calls are still sent and answered, then the
    /// workers and templates exit, then `on_destroyed` runs (counted as
    /// pending from now on).
    pub fn free(self, on_destroyed: Option<Box<dyn FnOnce() + Send>>) {
        let mut st = lock(&self.inner.st);
        if let Some(f) = on_destroyed {
            if let Ok(r) = Reactor::get() {
                r.expect_callback();
            }
            st.on_destroyed = Some(f);
        }
        st.freed = true;
        self.inner.pump(&mut st);
        drop(st);
        // `self` drops here: already freed, so nothing more happens.
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let mut st = lock(&self.inner.st);
        if !st.freed {
            st.freed = true;
            self.inner.pump(&mut st);
        }
    }
}

impl PoolInner {
    /// Sends queued calls to workers with room, starts workers as the
    /// queue and `idle` require, lets spare workers go, re-arms the timer;
    /// when freed and done, ends the pool.
    fn pump(&self, st: &mut State) {
        let now = Instant::now();
        while !st.queue.is_empty() {
            let best = st
                .workers
                .iter_mut()
                .filter(|w| !w.retiring && w.load < self.opts.load)
                .min_by_key(|w| w.load);
            let Some(w) = best else { break };
            let (data, cb) = st.queue.pop_front().expect("not empty");
            let wid = w.id;
            let me = self.me.clone();
            let slot = Arc::new(Mutex::new(Some(cb)));
            let mine = slot.clone();
            let res = w.rpc.call(
                &data,
                Box::new(move |r| {
                    if let Some(p) = me.upgrade() {
                        p.answered(wid);
                    }
                    if let Ok(re) = Reactor::get() {
                        re.cancel_callback();
                    }
                    if let Some(cb) = lock(&mine).take() {
                        cb(r)
                    }
                }),
            );
            match res {
                Ok(_) => {
                    w.load += 1;
                    w.sent += 1;
                    if self.opts.retire_after > 0 && w.sent >= self.opts.retire_after {
                        w.retiring = true;
                        w.rpc.free(None);
                    }
                }
                Err(_) => {
                    // Gone but not yet noticed: the call goes back to the
                    // queue and the worker takes no more; its close
                    // callback removes it.
                    w.retiring = true;
                    let cb = lock(&slot)
                        .take()
                        .expect("a failed call keeps its callback");
                    st.queue.push_front((data, cb));
                }
            }
        }
        // Grow: calls wait and every worker is full, or too few are idle.
        let idle = st
            .workers
            .iter()
            .filter(|w| !w.retiring && w.load == 0)
            .count();
        let wanted = !st.queue.is_empty() || (!st.freed && idle < self.opts.idle);
        let mut next: Option<Instant> = None;
        if wanted && st.workers.len() < self.opts.max {
            let active = st.workers.iter().filter(|w| !w.retiring).count();
            let due = st.last_start.map(|t| t + self.opts.start);
            if active == 0 || due.is_none_or(|d| d <= now) {
                if let Err(e) = self.start_worker(st) {
                    if active == 0 {
                        self.fail_queue(st, e);
                    }
                } else if !st.queue.is_empty() {
                    // The new worker takes calls as soon as it exists.
                    return self.pump(st);
                }
            } else {
                next = due;
            }
        }
        // Shrink: spare idle workers past `stop`, or all once freed and
        // nothing is queued.
        let mut idle_now = idle;
        for w in st.workers.iter_mut().filter(|w| !w.retiring) {
            let finished = st.freed && st.queue.is_empty();
            if finished || (w.load == 0 && idle_now > self.opts.idle) {
                if finished || w.idle_since + self.opts.stop <= now {
                    if w.load == 0 {
                        idle_now -= 1;
                    }
                    w.retiring = true;
                    w.rpc.free(None);
                } else if w.load == 0 {
                    let d = w.idle_since + self.opts.stop;
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
        }
        if st.freed && st.queue.is_empty() && st.workers.is_empty() {
            self.destroy(st);
            return;
        }
        self.arm(st, next);
    }

    fn arm(&self, st: &mut State, at: Option<Instant>) {
        if st.armed == at {
            return;
        }
        st.armed = at;
        let _ = match at {
            None => self.timer.unset(),
            Some(t) => {
                let left = t
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(1));
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(left)),
                    TimerSetTimeFlags::empty(),
                )
            }
        };
    }

    fn start_worker(&self, st: &mut State) -> Result<()> {
        if st.templates.is_empty() {
            return Err(Error::new(Errno::EPIPE, "the pool has no template"));
        }
        let i = st.next_template % st.templates.len();
        st.next_template = i + 1;
        let p = st.templates[i]
            .fork()
            .map_err(|e| e.context("starting a pool worker"))?;
        let rpc = RpcConn::start(p, &self.function, self.on_event.clone())?;
        let id = st.next_worker;
        st.next_worker += 1;
        let me = self.me.clone();
        rpc.set_on_retire(Box::new(move || {
            if let Some(p) = me.upgrade() {
                p.retire(id);
            }
        }));
        let me = self.me.clone();
        let on_close: OnClose = Box::new(move |_| {
            if let Some(p) = me.upgrade() {
                p.gone(id);
            }
        });
        rpc.set_on_close(on_close);
        st.workers.push(Slot {
            id,
            rpc,
            load: 0,
            sent: 0,
            retiring: false,
            idle_since: Instant::now(),
        });
        st.last_start = Some(Instant::now());
        Ok(())
    }

    /// A call of worker `wid` was answered (or failed).
    fn answered(&self, wid: u64) {
        let mut st = lock(&self.st);
        if let Some(w) = st.workers.iter_mut().find(|w| w.id == wid) {
            w.load = w.load.saturating_sub(1);
            if w.load == 0 {
                w.idle_since = Instant::now();
            }
        }
        self.pump(&mut st);
    }

    /// Worker `wid` asked to retire.
    fn retire(&self, wid: u64) {
        let mut st = lock(&self.st);
        if let Some(w) = st.workers.iter_mut().find(|w| w.id == wid) {
            if !w.retiring {
                w.retiring = true;
                w.rpc.free(None);
            }
        }
        self.pump(&mut st);
    }

    /// Worker `wid`'s connection ended.
    fn gone(&self, wid: u64) {
        let mut st = lock(&self.st);
        st.workers.retain(|w| w.id != wid);
        self.pump(&mut st);
    }

    /// No worker can be started: the queued calls fail.
    fn fail_queue(&self, st: &mut State, e: Error) {
        let Ok(r) = Reactor::get() else { return };
        for (_, cb) in st.queue.drain(..) {
            let e = e.clone();
            // Expected since `call`: scheduling keeps the count.
            r.schedule(Box::new(move || cb(Err(e))));
        }
    }

    fn destroy(&self, st: &mut State) {
        if st.destroyed {
            return;
        }
        st.destroyed = true;
        st.templates.clear();
        self.arm(st, None);
        if let Ok(r) = Reactor::get() {
            let _ = r.set_interest(
                self.token,
                self.timer.as_fd(),
                libc::EPOLLIN as u32,
                0,
                || unreachable!(),
            );
            if let Some(f) = st.on_destroyed.take() {
                r.schedule(f);
            }
        }
    }

    /// Stops everything at once (a pool that could not be made).
    fn shutdown(&self) {
        let mut st = lock(&self.st);
        st.freed = true;
        for w in &st.workers {
            w.rpc.free(None);
        }
        self.destroy(&mut st);
    }
}

impl Watcher for PoolInner {
    fn on_ready(self: Arc<Self>, _events: u32) -> bool {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(&self.timer, &mut buf);
        let mut st = lock(&self.st);
        st.armed = None;
        self.pump(&mut st);
        true
    }

    fn abandon(&self) {
        if let Ok(mut st) = self.st.try_lock() {
            for w in st.workers.drain(..) {
                w.rpc.abandon();
            }
            std::mem::forget(std::mem::take(&mut st.queue));
            st.on_destroyed = None;
        }
    }
}
