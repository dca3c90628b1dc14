//! The caller's end of an RPC worker: calls queued without blocking,
//! replies matched by id, events, graceful close. Driven by the reactor
//! (the library's one loop fd) like every other socket.
//!
//! Every accepted call gets exactly one callback, its reply or an error;
//! each is counted as expected (`Reactor::expect_callback`) from the call
//! on, so `wait` waits for outstanding replies. Events are scheduled in
//! the order they arrive, interleaved with replies.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

use nix::sys::socket::{Shutdown, shutdown};

use super::frame::{self, CONTROL_ID, EVENT_ID, HEADER};
use super::send::{queue_rest, send2};
use crate::Process;
use crate::caller::reactor::{Reactor, Watcher};
use crate::caller::state::lock;
use crate::error::{Errno, Error, Result};

/// The callback of one call: the reply's bytes, or why there is none.
pub type Reply = Box<dyn FnOnce(Result<Vec<u8>>) + Send>;
/// Called with each event's bytes, in order.
pub type OnEvent = Arc<dyn Fn(Vec<u8>) + Send + Sync>;
/// Called once when the connection has ended (`None`: a clean EOF after
/// the caller closed its side; else why it ended).
pub type OnClose = Box<dyn FnOnce(Option<Error>) + Send>;
/// Called when the worker asks to be retired (a pool's control message).
pub type OnRetire = Box<dyn Fn() + Send + Sync>;

/// How much is read from the socket in one turn at most.
const READ_CHUNK: usize = 64 * 1024;

#[derive(PartialEq, Eq)]
enum Phase {
    /// Waiting for the run callback's socket.
    Starting,
    Open,
    /// Ended: every call was answered or failed.
    Closed,
}

struct Inner {
    phase: Phase,
    fd: Option<OwnedFd>,
    interest: u32,
    out: Vec<u8>,
    out_pos: usize,
    rx: Vec<u8>,
    calls: BTreeMap<u32, Reply>,
    next_id: u32,
    /// The user let go: shut our side once everything is written.
    freeing: bool,
    shut: bool,
    on_close: Option<OnClose>,
    /// The close callback was counted as expected when it was set.
    close_expected: bool,
    /// Why the connection ended, once it has.
    ended: Option<Error>,
    /// It ended with EOF after a free, every call answered.
    ended_clean: bool,
}

/// One RPC connection, shared by its handle and the reactor.
pub struct RpcConn {
    token: u64,
    me: Weak<RpcConn>,
    on_event: Option<OnEvent>,
    on_retire: Mutex<Option<OnRetire>>,
    st: Mutex<Inner>,
}

impl RpcConn {
    /// Runs `function` in `p` (consuming it) and returns the caller's end
    /// of its RPC channel; calls may be made at once and are written when
    /// the socket arrives.
    pub fn start(p: Process, function: &str, on_event: Option<OnEvent>) -> Result<Arc<RpcConn>> {
        let r = Reactor::get()?;
        let conn = Arc::new_cyclic(|me| RpcConn {
            token: r.token(),
            me: me.clone(),
            on_event,
            on_retire: Mutex::new(None),
            st: Mutex::new(Inner {
                phase: Phase::Starting,
                fd: None,
                interest: 0,
                out: Vec::new(),
                out_pos: 0,
                rx: Vec::new(),
                calls: BTreeMap::new(),
                next_id: 1,
                freeing: false,
                shut: false,
                on_close: None,
                close_expected: false,
                ended: None,
                ended_clean: false,
            }),
        });
        let c = conn.clone();
        p.run(function, move |fd| c.attach(fd))
            .map_err(|e| e.context("rpc_start"))?;
        Ok(conn)
    }

    /// Sets what a worker's retire request does (pools).
    pub(crate) fn set_on_retire(&self, f: OnRetire) {
        *lock(&self.on_retire) = Some(f);
    }

    /// Sets the close callback without freeing (pools watch their workers).
    pub(crate) fn set_on_close(&self, f: OnClose) {
        let mut st = lock(&self.st);
        if st.phase == Phase::Closed {
            let e = outcome(&st);
            drop(st);
            schedule(Box::new(move || f(e)), false);
        } else {
            st.on_close = Some(f);
        }
    }

    /// Calls in flight (sent or queued, not answered).
    pub fn in_flight(&self) -> usize {
        lock(&self.st).calls.len()
    }

    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.st).phase == Phase::Closed
    }

    /// Queues a request; `cb` gets its reply or an error, exactly once.
    /// Fails (and never calls `cb`) when the worker is already known to
    /// be gone or the handle was freed.
    pub fn call(&self, data: &[u8], cb: Reply) -> Result<u32> {
        let len = frame::len32(data, "rpc_call")?;
        let r = Reactor::get()?;
        let mut st = lock(&self.st);
        if st.phase == Phase::Closed {
            let why = st
                .ended
                .as_ref()
                .map_or("it ended".to_string(), |e| e.message().to_string());
            return Err(Error::new(
                Errno::EPIPE,
                format!("rpc_call: the worker can no longer be reached ({why})"),
            ));
        }
        if st.freeing {
            return Err(Error::new(
                Errno::EPIPE,
                "rpc_call: the RPC handle was freed; it takes no new calls",
            ));
        }
        let mut id = st.next_id;
        while st.calls.contains_key(&id) {
            id = bump(id);
        }
        st.next_id = bump(id);
        r.expect_callback();
        r.expect_replies(1);
        st.calls.insert(id, cb);
        let h = frame::header(id, len);
        if st.out_pos == st.out.len() && st.fd.is_some() {
            st.out.clear();
            st.out_pos = 0;
            let fd = st.fd.as_ref().expect("checked").as_raw_fd();
            match send2(fd, &h, data) {
                Ok(n) if n == HEADER + data.len() => return Ok(id),
                Ok(n) => queue_rest(&mut st.out, &h, data, n),
                Err(Errno::EAGAIN) => queue_rest(&mut st.out, &h, data, 0),
                Err(e) => {
                    self.end(&mut st, Error::sys(e, "writing a request to the worker"));
                    return Ok(id);
                }
            }
        } else {
            st.out.extend_from_slice(&h);
            st.out.extend_from_slice(data);
        }
        self.update_interest(&mut st);
        Ok(id)
    }

    /// Lets go: calls already made are still written and answered, then
    /// the worker reads EOF; `on_close` (counted as pending from now on)
    /// runs once the worker's side has closed too.
    pub fn free(&self, on_close: Option<OnClose>) {
        let mut st = lock(&self.st);
        if let Some(f) = on_close {
            if st.phase == Phase::Closed {
                let e = outcome(&st);
                drop(st);
                schedule(Box::new(move || f(e)), false);
                return;
            }
            if let Ok(r) = Reactor::get() {
                r.expect_callback();
            }
            st.on_close = Some(f);
            st.close_expected = true;
        }
        st.freeing = true;
        self.maybe_shut(&mut st);
    }

    /// The run callback: the socket, or why the worker never started.
    fn attach(&self, fd: Result<OwnedFd>) {
        let mut st = lock(&self.st);
        match fd {
            Err(e) => self.end(&mut st, e.context("starting the worker")),
            Ok(fd) => {
                st.fd = Some(fd);
                st.phase = Phase::Open;
                self.flush(&mut st);
                if st.phase == Phase::Open {
                    self.update_interest(&mut st);
                    self.maybe_shut(&mut st);
                }
            }
        }
    }

    /// Writes what the socket takes now.
    fn flush(&self, st: &mut Inner) {
        let Some(fd) = st.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        while st.out_pos < st.out.len() {
            match send2(fd, &st.out[st.out_pos..], &[]) {
                Ok(n) => st.out_pos += n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    self.end(st, Error::sys(e, "writing requests to the worker"));
                    return;
                }
            }
        }
        if st.out_pos == st.out.len() {
            st.out.clear();
            st.out_pos = 0;
            if st.out.capacity() > 1 << 20 {
                st.out.shrink_to(READ_CHUNK);
            }
        }
    }

    /// Shuts our side once freed and everything is written.
    fn maybe_shut(&self, st: &mut Inner) {
        if st.freeing && !st.shut && st.phase == Phase::Open && st.out.is_empty() {
            if let Some(fd) = &st.fd {
                let _ = shutdown(fd.as_raw_fd(), Shutdown::Write);
                st.shut = true;
            }
        }
    }

    fn update_interest(&self, st: &mut Inner) {
        let Some(fd) = &st.fd else { return };
        let mut want = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
        if !st.out.is_empty() {
            want |= libc::EPOLLOUT as u32;
        }
        if want == st.interest {
            return;
        }
        let Ok(r) = Reactor::get() else { return };
        let me = self.me.clone();
        let res = r.set_interest(self.token, fd.as_fd(), st.interest, want, || {
            me.upgrade().expect("registering a live connection") as Arc<dyn Watcher>
        });
        match res {
            Ok(()) => st.interest = want,
            Err(e) => self.end(st, e),
        }
    }

    /// The connection ended: every call waiting fails with `why`, the
    /// socket leaves the loop and closes, the close callback is scheduled.
    fn end(&self, st: &mut Inner, why: Error) {
        if st.phase == Phase::Closed {
            return;
        }
        st.phase = Phase::Closed;
        if let (Some(fd), Ok(r)) = (&st.fd, Reactor::get()) {
            if st.interest != 0 {
                let _ = r.set_interest(self.token, fd.as_fd(), st.interest, 0, || unreachable!());
                st.interest = 0;
            }
        }
        st.fd = None;
        st.out = Vec::new();
        st.out_pos = 0;
        st.rx = Vec::new();
        st.ended_clean = st.freeing && st.calls.is_empty() && why.errno() == Errno::EPIPE;
        if let Ok(r) = Reactor::get() {
            r.replies_done(st.calls.len());
        }
        for (id, cb) in std::mem::take(&mut st.calls) {
            let e = why.clone().context(format_args!("call {id} got no reply"));
            schedule(Box::new(move || cb(Err(e))), true);
        }
        st.ended = Some(why);
        let e = outcome(st);
        if let Some(f) = st.on_close.take() {
            let expected = st.close_expected;
            schedule(Box::new(move || f(e)), expected);
        }
    }

    /// Reads what arrived and schedules replies and events in order.
    fn read(&self, st: &mut Inner) {
        let Some(fd) = st.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        let start = st.rx.len();
        st.rx.reserve(READ_CHUNK);
        let spare = st.rx.spare_capacity_mut();
        // SAFETY: `spare` is writable memory of at least READ_CHUNK bytes.
        let n = unsafe {
            libc::recv(
                fd,
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            match Errno::last() {
                Errno::EAGAIN | Errno::EINTR => return,
                e => {
                    self.end(st, Error::sys(e, "reading from the worker"));
                    return;
                }
            }
        }
        if n == 0 {
            let why = if st.calls.is_empty() {
                "the worker exited"
            } else {
                "the worker exited or died before answering"
            };
            self.end(st, Error::new(Errno::EPIPE, why));
            return;
        }
        // SAFETY: the kernel wrote `n` bytes after the old length.
        unsafe { st.rx.set_len(start + n as usize) };
        let mut pos = 0;
        while let Some((id, body, end)) = frame::next(&st.rx[pos..]) {
            let data = st.rx[pos + body.start..pos + body.end].to_vec();
            pos += end;
            match id {
                EVENT_ID => {
                    if let Some(ev) = &self.on_event {
                        let ev = ev.clone();
                        schedule(Box::new(move || ev(data)), false);
                    }
                }
                CONTROL_ID => {
                    if let Some(me) = self.me.upgrade() {
                        schedule(
                            Box::new(move || {
                                if let Some(f) = lock(&me.on_retire).as_ref() {
                                    f()
                                }
                            }),
                            false,
                        );
                    }
                }
                id => match st.calls.remove(&id) {
                    Some(cb) => {
                        if let Ok(r) = Reactor::get() {
                            r.replies_done(1);
                        }
                        schedule(Box::new(move || cb(Ok(data))), true)
                    }
                    None => {
                        self.end(
                            st,
                            Error::new(
                                Errno::EPROTO,
                                format!("the worker replied to call {id}, which is not waiting"),
                            ),
                        );
                        return;
                    }
                },
            }
        }
        st.rx.drain(..pos);
        if st.rx.capacity() > 4 * READ_CHUNK && st.rx.len() < READ_CHUNK {
            st.rx.shrink_to(READ_CHUNK);
        }
    }
}

impl Watcher for RpcConn {
    fn on_ready(self: Arc<Self>, events: u32) -> bool {
        let mut st = lock(&self.st);
        if events & libc::EPOLLOUT as u32 != 0 {
            self.flush(&mut st);
        }
        let input = (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLRDHUP) as u32;
        if events & input != 0 && st.phase == Phase::Open {
            self.read(&mut st);
        }
        if st.phase == Phase::Open {
            self.update_interest(&mut st);
            self.maybe_shut(&mut st);
        }
        true
    }

    fn abandon(&self) {
        if let Ok(mut st) = self.st.try_lock() {
            if let Some(fd) = st.fd.take() {
                if crate::caller::state::inherited_fds_gone() {
                    std::mem::forget(fd);
                }
            }
            std::mem::forget(std::mem::take(&mut st.calls));
            st.on_close = None;
        }
    }
}

/// Schedules `cb` on the reactor; `expected`: it was counted already.
fn schedule(cb: Box<dyn FnOnce() + Send>, expected: bool) {
    if let Ok(r) = Reactor::get() {
        if !expected {
            r.expect_callback();
        }
        r.schedule(cb);
    }
}

/// What the close callback gets: nothing for a clean end after a free.
fn outcome(st: &Inner) -> Option<Error> {
    if st.ended_clean {
        None
    } else {
        st.ended.clone()
    }
}

fn bump(id: u32) -> u32 {
    if id >= CONTROL_ID - 1 { 1 } else { id + 1 }
}
