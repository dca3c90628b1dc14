//! The caller's end of one process's socket: what is queued for it, which
//! forks it still owes a pid for, which of its children may still report an
//! exit, and where it is in its life (open, running, closing).
//!
//! A connection is shared by the user's handle and the reactor; the reactor
//! holds it only while it has bytes to write or reports to read. Held-back
//! forks are in `held.rs`, the reading of reports in `reports.rs`, giving
//! the socket up for `fork_to_fd` in `handover.rs`, and what a forked
//! child does with the parent's connections in `inherited.rs`.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{Shutdown, shutdown};
use std::sync::{Arc, Mutex, MutexGuard};

use super::outbox::Outbox;
use super::reactor::{Reactor, Watcher};
use super::record::Record;
use super::state;
use crate::error::{Errno, Error, Result};
use crate::protocol::wire;

mod handover;
mod held;
mod inherited;
mod reports;

use reports::wants_read;

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
    /// No socket yet: the fork that makes the process waits in its
    /// template's queue; commands wait here until [`Conn::attach`].
    lazy: bool,
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
    /// The latest fork, not sent yet: the child's connection (lazy: its
    /// socketpair is made when the fork is written) and its record. See
    /// [`Conn::fork`].
    pending: Option<(Arc<Conn>, Arc<Record>)>,
    /// Forks queued but not yet written, with the outbox mark they end at.
    unwritten: VecDeque<(u64, Arc<Record>)>,
    phase: Phase,
    interest: u32,
    dead: Option<Error>,
    /// A pidfd of the process when it is a direct child; see
    /// [`Conn::hung_up`].
    pidfd: Option<OwnedFd>,
}

/// One connection.
pub struct Conn {
    token: u64,
    /// The generation it was made in; see [`super::state`].
    epoch: u64,
    /// The record of the process at the other end.
    rec: Arc<Record>,
    st: Mutex<State>,
}

impl Conn {
    /// Wraps the caller's (nonblocking) end of a process's socket.
    pub fn new(fd: OwnedFd, rec: Arc<Record>) -> Result<Arc<Conn>> {
        Self::with_fd(Some(fd), rec)
    }

    /// A connection to a process whose fork is still held back: its
    /// socket is made when the fork is sent ([`Conn::attach`]), or, when
    /// the fork goes out with its run, handed to the record directly.
    pub fn new_lazy(rec: Arc<Record>) -> Result<Arc<Conn>> {
        Self::with_fd(None, rec)
    }

    fn with_fd(fd: Option<OwnedFd>, rec: Arc<Record>) -> Result<Arc<Conn>> {
        let conn = Arc::new(Conn {
            token: Reactor::get()?.token(),
            epoch: state::epoch(),
            rec,
            st: Mutex::new(State {
                lazy: fd.is_none(),
                fd,
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
                pidfd: None,
            }),
        });
        inherited::register(&conn);
        Ok(conn)
    }

    /// Gives a lazy connection its socket (its fork is being sent) and
    /// writes what waited for it.
    fn attach(self: &Arc<Self>, fd: OwnedFd) {
        let mut st = self.lock();
        if !st.lazy || st.dead.is_some() {
            return;
        }
        st.lazy = false;
        st.fd = Some(fd);
        self.flush_out(&mut st);
        self.settle(&mut st);
    }

    /// True once the connection has its socket (or failed).
    pub fn attached(&self) -> bool {
        !self.lock().lazy
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error that broke this connection, if any.
    pub fn dead(&self) -> Option<Error> {
        self.lock().dead.clone()
    }

    /// Remembers a pidfd of the process, a direct child (see
    /// [`Conn::hung_up`]); it closes with the connection.
    pub fn set_pidfd(&self, pidfd: Option<OwnedFd>) {
        self.lock().pidfd = pidfd;
    }

    /// True when the peer is known gone: an error was seen, the socket
    /// reports a hang-up, or the pidfd (when the process is a direct child)
    /// says it exited; one `poll` with no timeout. The pidfd matters
    /// because a child the template forked a moment ago may still hold a
    /// copy of the template's socket, hiding the hang-up for a while.
    pub fn hung_up(&self) -> bool {
        let st = self.lock();
        if st.dead.is_some() {
            return true;
        }
        let Some(fd) = st.fd.as_ref() else {
            return true;
        };
        let pidfd = st.pidfd.as_ref().map(AsFd::as_fd);
        let sock = PollFd::new(fd.as_fd(), rdhup());
        let (sock, exited) = match pidfd {
            Some(pidfd) => {
                let mut pfd = [sock, PollFd::new(pidfd, PollFlags::POLLIN)];
                let _ = poll(&mut pfd, PollTimeout::ZERO);
                (pfd[0].revents(), pfd[1].any() == Some(true))
            }
            None => {
                let mut pfd = [sock];
                let _ = poll(&mut pfd, PollTimeout::ZERO);
                (pfd[0].revents(), false)
            }
        };
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR | rdhup();
        exited || sock.is_some_and(|r| r.intersects(gone))
    }

    /// Waits up to `ms` milliseconds for this socket to become readable,
    /// or writable when bytes are queued.
    pub fn poll(&self, ms: u16) {
        let st = self.lock();
        let Some(fd) = st.fd.as_ref() else {
            return;
        };
        // Polled on a duplicate, so the lock is not held while waiting.
        let Ok(fd) = fd.try_clone() else {
            return;
        };
        let mut events = PollFlags::POLLIN;
        if !st.out.is_empty() {
            events |= PollFlags::POLLOUT;
        }
        drop(st);
        let _ = poll(
            &mut [PollFd::new(fd.as_fd(), events)],
            PollTimeout::from(ms),
        );
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
                "the process object belongs to the parent process (this process was forked since)",
            ));
        }
        if let Some(e) = &st.dead {
            return Err(e.clone());
        }
        match (&st.fd, st.phase) {
            (Some(_), Phase::Open) => Ok(()),
            (None, Phase::Open) if st.lazy => Ok(()),
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
        self.queue(st, |out, sock| match sock {
            Some(sock) => out.send(sock, parts, fds).map(drop),
            None => {
                out.hold(parts, fds);
                Ok(())
            }
        })
    }

    /// Queues one frame whose one fd `make` makes when it is written.
    fn write_later(
        self: &Arc<Self>,
        st: &mut State,
        frame: &[&[u8]],
        make: super::outbox::Later,
    ) -> Result<()> {
        self.queue(st, |out, sock| match sock {
            Some(sock) => out.send_later(sock, frame, make).map(drop),
            None => {
                out.hold_later(frame, make);
                Ok(())
            }
        })
    }

    /// Hands the outbox and the socket (`None` while the connection is
    /// lazy: hold, do not write) to `write`; a write error breaks the
    /// connection.
    fn queue(
        self: &Arc<Self>,
        st: &mut State,
        write: impl FnOnce(&mut Outbox, Option<RawFd>) -> std::result::Result<(), Errno>,
    ) -> Result<()> {
        let sock = st.fd.as_ref().map(AsRawFd::as_raw_fd);
        if sock.is_none() && !st.lazy {
            return Err(Error::new(Errno::EBADF, "the socket is gone"));
        }
        if let Err(e) = write(&mut st.out, sock) {
            let err = Error::sys(e, "writing to the process's socket");
            self.fail(st, err.clone());
            return Err(err);
        }
        Ok(())
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
        self.ready((libc::EPOLLIN | libc::EPOLLOUT) as u32);
    }

    /// The reactor saw `events` on this socket.
    fn ready(self: &Arc<Self>, events: u32) {
        if self.foreign() {
            return;
        }
        let mut st = self.lock();
        self.flush_out(&mut st);
        let readable = (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        if st.dead.is_none() && events & readable != 0 && wants_read(&st) {
            self.read_reports(&mut st);
        }
        self.settle(&mut st);
    }

    /// Writes what the socket takes of the queue now.
    fn flush_out(self: &Arc<Self>, st: &mut State) {
        if st.dead.is_none() && !st.out.is_empty() {
            let fd = st.fd.as_ref().map(AsRawFd::as_raw_fd);
            if let Some(fd) = fd {
                match st.out.flush(fd) {
                    Ok(_) => self.forks_written(st),
                    Err(e) => self.fail(st, Error::sys(e, "writing to the process's socket")),
                }
            }
        }
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
                            let _ = shutdown(fd.as_raw_fd(), Shutdown::Write);
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
        let Some(fd) = st.fd.as_ref() else {
            return;
        };
        let r = Reactor::get().and_then(|r| {
            r.set_interest(self.token, fd.as_fd(), st.interest, want, || {
                self.clone() as Arc<dyn Watcher>
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

    /// The connection is broken: every waiting party hears about it once.
    fn fail(self: &Arc<Self>, st: &mut State, err: Error) {
        if st.dead.is_some() {
            return;
        }
        st.dead = Some(err.clone());
        st.lazy = false;
        st.out = Outbox::default();
        if let Some((child, r)) = st.pending.take() {
            child.fail(&mut child.lock(), err.clone().context("no fork"));
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

impl Watcher for Conn {
    fn on_ready(self: Arc<Self>, events: u32) -> bool {
        self.ready(events);
        true
    }

    fn abandon(&self) {
        Conn::abandon(self)
    }
}

/// `POLLRDHUP`, which nix does not name.
fn rdhup() -> PollFlags {
    PollFlags::from_bits_retain(libc::POLLRDHUP)
}
