//! The caller's end of one process's socket: what is queued for it, which
//! forks it still owes a pid for, which of its children may still report an
//! exit, and where it is in its life (open, running, closing).
//!
//! A connection is shared by the user's handle and the reactor; the reactor
//! holds it only while it has bytes to write or reports to read.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Errno, Error, Result};
use crate::outbox::Outbox;
use crate::reactor::{Reactor, Source};
use crate::record::Record;
use crate::wire::{self, Frame, HEADER_LEN, Tag};

/// Bytes of reports read at once (a pid report is 9 bytes, an exit 13).
const REPORT_READ: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// The user's handle may queue commands.
    Open,
    /// `Run` is queued: flush, then hand the socket to the run callback.
    Running,
    /// The handle was freed: flush, then let the process see EOF.
    Closing,
}

struct State {
    fd: Option<OwnedFd>,
    out: Outbox,
    rx: Vec<u8>,
    /// Records of forks sent (or queued) whose pid is not reported yet.
    forks: VecDeque<Arc<Record>>,
    /// Records of forked children whose exit is not reported yet.
    children: HashMap<i32, Arc<Record>>,
    /// Reports may still come on this socket (a fork was requested here,
    /// or the socket came from elsewhere): run asks for `End` and reads
    /// up to it before handing the socket over.
    forked: bool,
    end_seen: bool,
    shut: bool,
    /// Forks since reports were last read; see [`Conn::fork`].
    unread: u32,
    /// The latest fork, not sent yet: the child's end of its socket and
    /// its record. See [`Conn::fork`].
    pending: Option<(OwnedFd, Arc<Record>)>,
    /// Forks queued but not yet written, with the outbox mark they end at.
    unwritten: VecDeque<(u64, Arc<Record>)>,
    phase: Phase,
    interest: u32,
    dead: Option<Error>,
}

/// One connection.
pub struct Conn {
    token: u64,
    /// The generation it was made in; see [`crate::after_fork`].
    epoch: u64,
    /// The record of the process at the other end.
    rec: Arc<Record>,
    st: Mutex<State>,
}

impl Conn {
    /// Wraps the caller's (nonblocking) end of a process's socket.
    pub fn new(fd: OwnedFd, rec: Arc<Record>) -> Result<Arc<Conn>> {
        Ok(Arc::new(Conn {
            token: Reactor::get()?.token(),
            epoch: crate::after_fork::epoch(),
            rec,
            st: Mutex::new(State {
                fd: Some(fd),
                out: Outbox::default(),
                rx: Vec::new(),
                forks: VecDeque::new(),
                children: HashMap::new(),
                forked: false,
                end_seen: false,
                shut: false,
                unread: 0,
                pending: None,
                unwritten: VecDeque::new(),
                phase: Phase::Open,
                interest: 0,
                dead: None,
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error that broke this connection, if any.
    pub fn dead(&self) -> Option<Error> {
        self.lock().dead.clone()
    }

    /// True when the peer is known gone: an error was seen, the socket
    /// reports a hang-up, or `pidfd` (the process's, when it is a direct
    /// child) says it exited; one `poll` with no timeout. The pidfd matters
    /// because a child the template forked a moment ago may still hold a
    /// copy of the template's socket, hiding the hang-up for a while.
    pub fn hung_up(&self, pidfd: Option<RawFd>) -> bool {
        let st = self.lock();
        if st.dead.is_some() {
            return true;
        }
        let Some(fd) = st.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return true;
        };
        let mut pfd = [
            libc::pollfd {
                fd,
                events: libc::POLLRDHUP,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two pollfds (a negative fd is ignored), no timeout.
        unsafe { libc::poll(pfd.as_mut_ptr(), 2, 0) };
        pfd[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP) != 0
            || pfd[1].revents != 0
    }

    /// Waits up to `ms` milliseconds for this socket to become readable,
    /// or writable when bytes are queued.
    pub fn poll(&self, ms: i32) {
        let (fd, events) = {
            let st = self.lock();
            let Some(fd) = st.fd.as_ref().map(AsRawFd::as_raw_fd) else {
                return;
            };
            let out = if st.out.is_empty() { 0 } else { libc::POLLOUT };
            (fd, libc::POLLIN | out)
        };
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one pollfd; should the fd be closed meanwhile, poll at
        // worst returns early and the caller looks again.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }

    /// Queues whole frames (`parts`) with the fds they consume.
    pub fn send(self: &Arc<Self>, parts: &[&[u8]], fds: Vec<OwnedFd>) -> Result<()> {
        let mut st = self.lock();
        self.send_locked(&mut st, parts, fds)?;
        self.settle(&mut st);
        Ok(())
    }

    fn send_locked(
        self: &Arc<Self>,
        st: &mut State,
        parts: &[&[u8]],
        fds: Vec<OwnedFd>,
    ) -> Result<()> {
        self.check(st)?;
        self.flush_pending(st)?;
        self.write_locked(st, parts, fds)
    }

    /// Whether commands may be queued now.
    fn check(&self, st: &State) -> Result<()> {
        if self.foreign() {
            return Err(Error::new(
                Errno::EBADF,
                "the process object belongs to the parent process (fork_reset_after_fork ran since)",
            ));
        }
        if let Some(e) = &st.dead {
            return Err(e.clone());
        }
        match (&st.fd, st.phase) {
            (Some(_), Phase::Open) => Ok(()),
            _ => Err(Error::new(
                Errno::EINVAL,
                "the process no longer takes commands",
            )),
        }
    }

    /// Queues bytes and fds as they are (the checks were made).
    fn write_locked(
        self: &Arc<Self>,
        st: &mut State,
        parts: &[&[u8]],
        fds: Vec<OwnedFd>,
    ) -> Result<()> {
        let Some(fd) = st.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return Err(Error::new(Errno::EBADF, "the socket is gone"));
        };
        if let Err(e) = st.out.send(fd, parts, fds) {
            let err = Error::sys(e, "writing to the process's socket");
            self.fail(st, err.clone());
            return Err(err);
        }
        Ok(())
    }

    /// Asks the process at the other end to fork: `child` is the new
    /// process's end of its socket, `rec` its record.
    ///
    /// The fork is held back until the next command to this process or to
    /// the child: when that is the child's run, one frame asks for both
    /// (fork and enter the function), which spares a write here and two
    /// reads in the child. Any other command sends the plain fork first,
    /// so the order of commands is what the caller wrote.
    pub fn fork(self: &Arc<Self>, child: OwnedFd, rec: Arc<Record>) -> Result<()> {
        let mut st = self.lock();
        self.check(&st)?;
        self.flush_pending(&mut st)?;
        st.forked = true;
        st.pending = Some((child, rec));
        // A caller that creates without dispatching still has its reports
        // read now and then, so neither socket buffer fills with them.
        st.unread += 1;
        if st.unread >= 16 {
            st.unread = 0;
            self.read_reports(&mut st);
        }
        self.settle(&mut st);
        Ok(())
    }

    /// Sends the held-back fork, if any, as a plain fork.
    fn flush_pending(self: &Arc<Self>, st: &mut State) -> Result<()> {
        self.send_pending(st, &[&wire::header(Tag::Fork, 0)])
    }

    /// Sends the held-back fork, if any, as `frame` (a frame that asks
    /// for a fork), with the new process's socket.
    fn send_pending(self: &Arc<Self>, st: &mut State, frame: &[&[u8]]) -> Result<()> {
        let Some((child, rec)) = st.pending.take() else {
            return Ok(());
        };
        st.forks.push_back(rec.clone());
        self.write_locked(st, frame, vec![child])?;
        self.track_fork(st, rec);
        Ok(())
    }

    /// True when the fork held back is the one of `rec`.
    fn holds(st: &State, rec: &Arc<Record>) -> bool {
        matches!(&st.pending, Some((_, r)) if Arc::ptr_eq(r, rec))
    }

    /// Tells `rec` when its fork request has been written.
    fn track_fork(&self, st: &mut State, rec: Arc<Record>) {
        let mark = st.out.mark();
        if st.out.past(mark) {
            rec.fork_sent();
        } else {
            st.unwritten.push_back((mark, rec));
        }
    }

    /// Tells the records whose fork requests were written since.
    fn forks_written(&self, st: &mut State) {
        while let Some((mark, _)) = st.unwritten.front() {
            if !st.out.past(*mark) {
                break;
            }
            let (_, rec) = st.unwritten.pop_front().expect("checked above");
            rec.fork_sent();
        }
    }

    /// The child whose record is `rec` needs its process now: sends its
    /// fork if it is still held back.
    pub fn materialize(self: &Arc<Self>, rec: &Arc<Record>) -> Result<()> {
        let mut st = self.lock();
        if !Self::holds(&st, rec) {
            return Ok(());
        }
        self.check(&st)?;
        self.flush_pending(&mut st)?;
        self.settle(&mut st);
        Ok(())
    }

    /// The child whose record is `rec` runs `name` before anything else was
    /// sent to it: if its fork is still held back, one fork-and-run frame
    /// does both and this returns true; false means the fork went out
    /// already and the child needs an ordinary run.
    pub fn fork_run(self: &Arc<Self>, rec: &Arc<Record>, name: &[u8]) -> Result<bool> {
        self.send_held(rec, &[&wire::fork_run_head(name.len()), name])
    }

    /// The child whose record is `rec` execs `argv` before anything else
    /// was sent to it: if its fork is still held back, one spawn frame asks
    /// for both (the template may then spawn without copying itself) and
    /// this returns true; false means the fork went out already.
    pub fn fork_exec(self: &Arc<Self>, rec: &Arc<Record>, argv: &[&[u8]]) -> Result<bool> {
        if !Self::holds(&self.lock(), rec) {
            return Ok(false);
        }
        let mut frame = Vec::new();
        wire::push_spawn(&mut frame, argv)
            .ok_or_else(|| Error::new(Errno::E2BIG, "exec: argv exceeds the 4 GiB frame limit"))?;
        self.send_held(rec, &[&frame])
    }

    /// Sends the fork of `rec`, if it is still held back, as `frame`;
    /// false when it went out already.
    fn send_held(self: &Arc<Self>, rec: &Arc<Record>, frame: &[&[u8]]) -> Result<bool> {
        let mut st = self.lock();
        if !Self::holds(&st, rec) {
            return Ok(false);
        }
        self.check(&st)?;
        self.send_pending(&mut st, frame)?;
        self.settle(&mut st);
        Ok(true)
    }

    /// The child whose record is `rec` was freed before anything was sent
    /// to it: its process is never made.
    pub fn cancel(&self, rec: &Arc<Record>) {
        let mut st = self.lock();
        if Self::holds(&st, rec) {
            st.pending = None;
        }
    }

    /// This process was made and entered its run function by its
    /// template's fork-and-run frame: nothing is left to send.
    pub fn ran_remotely(self: &Arc<Self>) {
        let mut st = self.lock();
        st.phase = Phase::Running;
        self.settle(&mut st);
    }

    /// Queues the run frame; the socket goes to the record once written.
    pub fn run(self: &Arc<Self>, name: &[u8]) -> Result<()> {
        let mut st = self.lock();
        let hdr = wire::run_head(name.len(), st.forked);
        self.send_locked(&mut st, &[&hdr, name], vec![])?;
        st.phase = Phase::Running;
        self.settle(&mut st);
        Ok(())
    }

    /// Reports of earlier forks may arrive on this socket (it came from
    /// another process): run must ask for `End`.
    pub fn assume_forked(&self) {
        self.lock().forked = true;
    }

    /// Delivers everything queued and every pid still owed, then gives up
    /// the socket (blocking up to `limit`). Exit callbacks of children
    /// forked here fail with `ECHILD`: their reports now go to the new
    /// owner.
    pub fn detach(self: &Arc<Self>, limit: std::time::Duration) -> Result<OwnedFd> {
        let deadline = std::time::Instant::now() + limit;
        {
            let mut st = self.lock();
            self.flush_pending(&mut st)?;
        }
        loop {
            self.pump();
            {
                let mut st = self.lock();
                if let Some(e) = &st.dead {
                    return Err(e.clone());
                }
                if st.out.is_empty() && st.forks.is_empty() {
                    let fd = self
                        .release(&mut st)
                        .ok_or_else(|| Error::new(Errno::EBADF, "the socket is gone"))?;
                    for (pid, r) in st.children.drain() {
                        r.set_status(Err(Error::new(
                            Errno::ECHILD,
                            format!("the template was handed over before pid {pid} exited"),
                        )));
                    }
                    st.dead = Some(Error::new(
                        Errno::EBADF,
                        "the process object was handed over (fork_to_fd)",
                    ));
                    return Ok(fd);
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    Errno::ETIMEDOUT,
                    "the process did not take its queued commands in time",
                ));
            }
            self.poll(left.as_millis().clamp(1, 100) as i32);
        }
    }

    /// Made before the last [`crate::after_fork::reset`]: the socket is a
    /// copy of the parent's, and nothing may be sent or reported on it.
    fn foreign(&self) -> bool {
        self.epoch != crate::after_fork::epoch()
    }

    /// In a forked child: closes our copy of the socket and nothing else.
    pub fn abandon(&self) {
        if let Ok(mut st) = self.st.try_lock() {
            st.interest = 0;
            st.dead.get_or_insert_with(|| {
                Error::new(Errno::EBADF, "inherited from the parent process")
            });
            if let Some(fd) = st.fd.take() {
                if crate::after_fork::inherited_fds_gone() {
                    // Closed already; the number may be someone else's now.
                    let _ = std::os::fd::IntoRawFd::into_raw_fd(fd);
                }
            }
            // So are the child's end of a fork held back and queued fds.
            if crate::after_fork::inherited_fds_gone() {
                if let Some((fd, _)) = st.pending.take() {
                    let _ = std::os::fd::IntoRawFd::into_raw_fd(fd);
                }
                std::mem::forget(std::mem::take(&mut st.out));
            }
        }
    }

    /// The user's handle is gone: deliver what is queued, then close.
    pub fn close(self: &Arc<Self>) {
        if self.foreign() {
            return self.abandon();
        }
        let mut st = self.lock();
        if st.phase == Phase::Open {
            // A child forked last is still owed its fork.
            let _ = self.flush_pending(&mut st);
            st.phase = Phase::Closing;
        }
        self.settle(&mut st);
    }

    /// Flushes and reads whatever can be, without blocking.
    pub fn pump(self: &Arc<Self>) {
        self.on_ready((libc::EPOLLIN | libc::EPOLLOUT) as u32);
    }

    /// The reactor saw `events` on this socket.
    pub fn on_ready(self: &Arc<Self>, events: u32) {
        if self.foreign() {
            return;
        }
        let mut st = self.lock();
        if st.dead.is_none() && !st.out.is_empty() {
            let fd = st.fd.as_ref().map(AsRawFd::as_raw_fd);
            if let Some(fd) = fd {
                match st.out.flush(fd) {
                    Ok(_) => self.forks_written(&mut st),
                    Err(e) => self.fail(&mut st, Error::sys(e, "writing to the process's socket")),
                }
            }
        }
        let readable = (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        if st.dead.is_none() && events & readable != 0 && wants_read(&st) {
            self.read_reports(&mut st);
        }
        self.settle(&mut st);
    }

    /// Moves the connection along its phase and fixes its registration.
    fn settle(self: &Arc<Self>, st: &mut State) {
        if st.dead.is_none() && st.out.is_empty() {
            match st.phase {
                Phase::Open => {}
                Phase::Running if !st.forked || st.end_seen => {
                    let fd = self.release(st);
                    let err = || {
                        Error::new(
                            Errno::ECHILD,
                            "its parent entered its run function before the child exited",
                        )
                    };
                    for (_, r) in st.children.drain() {
                        r.set_status(Err(err()));
                    }
                    if let Some(fd) = fd {
                        self.rec.sock_ready(fd);
                    }
                    return;
                }
                Phase::Running => {}
                Phase::Closing => {
                    if st.forks.is_empty() && st.children.is_empty() {
                        drop(self.release(st));
                        return;
                    }
                    if !st.shut {
                        st.shut = true;
                        if let Some(fd) = &st.fd {
                            // SAFETY: shutdown of a socket we own.
                            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
                        }
                    }
                }
            }
        }
        let mut want = 0;
        if st.dead.is_none() && st.fd.is_some() {
            if !st.out.is_empty() {
                want |= libc::EPOLLOUT as u32;
            }
            if wants_read(st) {
                want |= libc::EPOLLIN as u32;
            }
        }
        self.register(st, want);
    }

    fn register(self: &Arc<Self>, st: &mut State, want: u32) {
        if want == st.interest {
            return;
        }
        let Some(fd) = st.fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let r = Reactor::get().and_then(|r| {
            r.set_interest(self.token, fd, st.interest, want, || {
                Source::Conn(self.clone())
            })
        });
        match r {
            Ok(()) => st.interest = want,
            Err(e) if want != 0 => self.fail(st, e),
            Err(_) => st.interest = 0,
        }
    }

    /// Takes the socket out of the loop and out of the connection.
    fn release(self: &Arc<Self>, st: &mut State) -> Option<OwnedFd> {
        self.register(st, 0);
        st.interest = 0;
        st.fd.take()
    }

    /// Reads reports (pids, exits, the end marker) until the socket is dry.
    fn read_reports(self: &Arc<Self>, st: &mut State) {
        loop {
            let Some(fd) = st.fd.as_ref().map(AsRawFd::as_raw_fd) else {
                return;
            };
            // Once the process may enter its run function, read no byte past
            // the end marker: what follows belongs to the user.
            let exact = st.phase == Phase::Running;
            let want = if !exact {
                REPORT_READ
            } else if st.rx.len() < HEADER_LEN {
                HEADER_LEN - st.rx.len()
            } else {
                let h = st.rx.first_chunk::<HEADER_LEN>().expect("length checked");
                let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
                (HEADER_LEN + len).saturating_sub(st.rx.len()).max(1)
            };
            let mut buf = [0u8; REPORT_READ];
            // SAFETY: receives at most `want` <= REPORT_READ bytes into `buf`.
            let n = unsafe {
                libc::recv(
                    fd,
                    buf.as_mut_ptr().cast(),
                    want.min(REPORT_READ),
                    libc::MSG_DONTWAIT,
                )
            };
            let n = Errno::result(n);
            if let Ok(k) = n {
                st.rx.extend_from_slice(&buf[..k as usize]);
            }
            match n {
                Ok(0) => return self.on_eof(st),
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => return self.fail(st, Error::sys(e, "reading reports from a template")),
            }
            if let Err(e) = self.parse_reports(st) {
                return self.fail(
                    st,
                    Error::new(
                        Errno::EPROTO,
                        format!("corrupt report from a template: {e}"),
                    ),
                );
            }
            if st.end_seen {
                return;
            }
            // A short read emptied the socket: the level-triggered loop fd
            // says when more comes, so no read is spent to hear EAGAIN.
            if !exact && n.is_ok_and(|k| (k as usize) < want) {
                return;
            }
        }
    }

    fn parse_reports(self: &Arc<Self>, st: &mut State) -> std::result::Result<(), wire::WireError> {
        let mut used = 0;
        while let Some((tag, p, n)) = wire::split(&st.rx[used..])? {
            used += n;
            match wire::decode(tag, p)? {
                Frame::Pid(pid) => {
                    let Some(rec) = st.forks.pop_front() else {
                        return Err(wire::WireError::UnknownTag(tag as u8));
                    };
                    if pid > 0 {
                        rec.set_pid(Ok(pid));
                        st.children.insert(pid, rec);
                    } else {
                        let e = Errno::from_raw(-pid);
                        rec.set_pid(Err(Error::sys(e, "the template could not fork")));
                    }
                }
                Frame::Exit { pid, status } => {
                    if let Some(rec) = st.children.remove(&pid) {
                        rec.set_status(Ok(status));
                    }
                }
                Frame::End => {
                    st.end_seen = true;
                    break;
                }
                _ => return Err(wire::WireError::UnknownTag(tag as u8)),
            }
        }
        st.rx.drain(..used);
        Ok(())
    }

    fn on_eof(self: &Arc<Self>, st: &mut State) {
        let closing = st.phase == Phase::Closing;
        let err = Error::new(
            Errno::EPIPE,
            if closing {
                "the template exited before answering"
            } else {
                "the process closed its socket (it exited or was killed)"
            },
        );
        self.fail(st, err);
    }

    /// The connection is broken: every waiting party hears about it once.
    fn fail(self: &Arc<Self>, st: &mut State, err: Error) {
        if st.dead.is_some() {
            return;
        }
        st.dead = Some(err.clone());
        st.out = Outbox::default();
        if let Some((_, r)) = st.pending.take() {
            st.forks.push_back(r);
        }
        st.unwritten.clear();
        drop(self.release(st));
        for r in st.forks.drain(..) {
            r.set_pid(Err(err.clone().context("no fork")));
        }
        for (pid, r) in st.children.drain() {
            r.set_status(Err(Error::new(
                Errno::ECHILD,
                format!("the template went away before reporting the exit of pid {pid}"),
            )));
        }
        if st.phase == Phase::Running {
            self.rec.fail_run(err);
        }
    }
}

/// Whether reports may come that someone waits for. A template that is
/// still open stays registered between forks, so creating one process
/// after another does not add and remove it from the epoll set each time.
fn wants_read(st: &State) -> bool {
    !st.forks.is_empty()
        || !st.children.is_empty()
        || (st.phase == Phase::Open && st.forked)
        || (st.phase == Phase::Running && st.forked && !st.end_seen)
}
