//! The template server: one thread, one socket. Its loop reads commands,
//! reaps children through a signalfd, and writes each fork's pid and
//! later its wait status back on the socket that asked for the fork.
//! What each command does is in `request.rs`.
//!
//! Exit statuses of the server itself: 0 at EOF (the caller is gone or freed
//! the handle), 124 for a run without an fd argument that could not be
//! received (`EMFILE`), 125 for a corrupt command stream, 127 for a library
//! or function that cannot be found; a failing eval exits with its own status.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, ppoll};
use nix::sys::signalfd::SfdFlags;
use nix::sys::socket::{MsgFlags, send};
use nix::sys::time::TimeSpec;

use super::args::Arg;
use super::exit::{die, exit};
use super::pool::Pool;
use super::reader::{Next, Reader};
use super::signals::SignalState;
use super::state;
use crate::protocol::wire;
use crate::sys::proc::ForkFn;

/// How long a pid report may wait for its process's exit report, so that
/// a short-lived process costs the caller one wake-up, not two. Nothing
/// waits for the pid but `fork_pid` (and the exit report, which needs it).
const PID_HOLD: Duration = Duration::from_millis(1);

/// Most frames handled between two looks at children and reports.
const FRAMES_PER_TURN: usize = 64;

/// How a server was started.
pub struct ServeOptions {
    /// The first frame must be `Hello` (a freshly exec'd server).
    pub expect_hello: bool,
    /// Scan for signal handlers to reset in children (the process image
    /// may have installed some: a template fork of the caller, a custom
    /// server); an exec'd `anyfork-serve` starts with all at default.
    pub scan_signals: bool,
    /// Other threads may exist (a custom server calling `fork_serve`): one
    /// of them may take a SIGCHLD meant for the signalfd, so children are
    /// also reaped on a 50 ms tick.
    pub threaded: bool,
}

pub(super) struct Server {
    pub(super) sock: OwnedFd,
    /// In a new process, its copy of the template's socket until it is
    /// closed: in `enter`, or before serving the process's own commands
    /// (`anyfork_exit` leaves without spending a syscall on it).
    pub(super) inherited: Option<OwnedFd>,
    /// SIGCHLD arrives here; closed before user code runs.
    pub(super) sigfd: Option<OwnedFd>,
    pub(super) signals: SignalState,
    /// Received fds waiting for their frames; `None` for one the kernel
    /// could not install (this process was at its open-file limit).
    pub(super) fdq: VecDeque<Option<OwnedFd>>,
    /// Fd arguments this process failed to receive: its forks and its run
    /// function fail (`EMFILE`, exit status [`super::exit::LOST_FD`]).
    pub(super) lost: usize,
    pub(super) args: Vec<Arg>,
    pub(super) reports: Vec<u8>,
    pub(super) rd: Reader,
    /// Forked and not yet reaped.
    pub(super) children: usize,
    pub(super) expect_hello: bool,
    /// Poll timeout in ms: -1, or a tick for [`ServeOptions::threaded`].
    tick: libc::c_int,
    /// Other code may run threads or fork here ([`ServeOptions::threaded`]).
    threaded: bool,
    /// glibc's `_Fork`, if this server may fork with it at all: an exec'd
    /// `anyfork-serve` with no other code running threads in it (see
    /// `Server::fork_fn`).
    pub(super) bare_fork: Option<ForkFn>,
    /// Code loaded here may have registered fork handlers
    /// (`crate::sys::atfork::handlers_possible`, asked after a `require`
    /// or `eval` while `bare_fork` is set): only glibc's `fork` runs them.
    pub(super) fork_handlers: bool,
    /// Children forked ahead of time (`anyfork_warm`).
    pub(super) pool: Pool,
    /// This process waits in a pool: its socket is a leash, and the fork
    /// request that comes down it makes it the requested process.
    pub(super) pooled: bool,
    /// Since when `reports` holds nothing but pid reports (see [`PID_HOLD`]).
    pub(super) pids_since: Option<Instant>,
    /// The last run function looked up here for a fork-and-run: its name
    /// and address (see `Server::resolve_run`).
    pub(super) resolved: Option<(Vec<u8>, usize)>,
}

/// Serves commands on `sock` until EOF or a run; never returns.
pub fn serve(sock: OwnedFd, opts: ServeOptions) -> ! {
    let signals = SignalState::capture(opts.scan_signals);
    let mask = super::signals::block_sigchld();
    #[allow(deprecated)] // SignalFd cannot be moved to another fd number
    let sigfd = nix::sys::signalfd::signalfd(
        None::<std::os::fd::BorrowedFd<'_>>,
        &mask,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
    .unwrap_or_else(|e| die(1, format_args!("signalfd: {}", e.desc())));
    // Out of the way of the low fd numbers that the code the server hosts
    // may expect to hand out or find (an interpreter's own).
    let sigfd = match fcntl(&sigfd, FcntlArg::F_DUPFD_CLOEXEC(100)) {
        Ok(high) => {
            drop(sigfd);
            // SAFETY: a fresh fd that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(high) }
        }
        Err(_) => sigfd,
    };
    state::set_comm(sock.as_raw_fd());
    let bare_fork = if opts.scan_signals || opts.threaded {
        None
    } else {
        crate::sys::proc::bare_fork()
    };
    let mut s = Server {
        sock,
        inherited: None,
        sigfd: Some(sigfd),
        signals,
        fdq: VecDeque::new(),
        lost: 0,
        args: Vec::new(),
        reports: Vec::new(),
        rd: Reader::new(),
        children: 0,
        expect_hello: opts.expect_hello,
        tick: if opts.threaded { 50 } else { -1 },
        threaded: opts.threaded,
        bare_fork,
        fork_handlers: false,
        pool: Pool::default(),
        pooled: false,
        pids_since: None,
        resolved: None,
    };
    s.main_loop()
}

impl Server {
    fn main_loop(&mut self) -> ! {
        loop {
            // A caller that keeps the socket full must not starve reaping
            // and reports: after a turn's worth of frames, the loop polls
            // (at once, the socket being readable) and does both.
            for _ in 0..FRAMES_PER_TURN {
                match self.rd.next(self.sock.as_raw_fd(), &mut self.fdq) {
                    Next::Frame(tag) => self.handle(tag),
                    Next::Again => break,
                    Next::Eof => self.drain_and_exit(),
                }
            }
            let hold = self
                .pids_since
                .map(|t| PID_HOLD.saturating_sub(t.elapsed()))
                .filter(|d| !d.is_zero());
            if hold.is_none() {
                self.flush_reports(false);
            }
            // While the pool fills, one child per turn, a request that
            // arrived meanwhile is read first.
            if !self.pooled && self.pool.refill_in() == Some(Duration::ZERO) {
                self.fork_waiting();
            }
            let refill = if self.pooled {
                None
            } else {
                self.pool.refill_in()
            };
            let out = !self.reports.is_empty() && hold.is_none();
            let timeout = [self.tick(), refill, hold].into_iter().flatten().min();
            let (sock, signals) = self.wait(PollFlags::POLLIN, out, timeout);
            if signals || (self.tick >= 0 && self.children > 0) {
                self.reap();
            }
            // Woken for a signal, a refill or a timeout only: the next read
            // would find nothing, so it is not made (poll is level-triggered
            // and says so next time).
            if !sock.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                self.rd.dry = true;
            }
        }
    }

    /// How to fork now: glibc's `_Fork` while this server may use it, no
    /// loaded code may have registered fork handlers and no thread was
    /// ever started here; else `fork`, which runs the handlers and takes
    /// care of the locks of other threads.
    pub(super) fn fork_fn(&self) -> ForkFn {
        match self.bare_fork {
            Some(f) if !self.fork_handlers && crate::sys::atfork::single_threaded() => f,
            _ => libc::fork,
        }
    }

    /// The tick of a threaded server, or `None` (no timeout).
    fn tick(&self) -> Option<Duration> {
        u64::try_from(self.tick).ok().map(Duration::from_millis)
    }

    /// Waits for `events` on the socket (and `POLLOUT` with `out`) or a
    /// signal on the signalfd, at most `timeout`: the socket's revents,
    /// and whether a signal came.
    fn wait(&self, events: PollFlags, out: bool, timeout: Option<Duration>) -> (PollFlags, bool) {
        let events = events
            | if out {
                PollFlags::POLLOUT
            } else {
                PollFlags::empty()
            };
        let sigfd = self.sigfd.as_ref().expect("open until enter");
        let mut pfd = [
            PollFd::new(self.sock.as_fd(), events),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        let _ = ppoll(&mut pfd, timeout.map(TimeSpec::from_duration), None);
        let sock = pfd[0].revents().unwrap_or(PollFlags::empty());
        (sock, pfd[1].revents().is_some_and(|r| !r.is_empty()))
    }

    /// Queues the pid report of a new process (a negative errno if the
    /// fork failed). A pid waits up to [`PID_HOLD`] to share one write
    /// with its process's exit; a failure goes out at once.
    pub(super) fn push_pid(&mut self, pid: libc::pid_t) {
        if self.reports.is_empty() && pid > 0 {
            self.pids_since = Some(Instant::now());
        } else if pid <= 0 {
            self.pids_since = None;
        }
        wire::push_pid(&mut self.reports, pid);
    }

    // Kept out of line: its buffer would otherwise widen the main loop's
    // stack frame, and each stack page a new process writes is a fault.
    #[inline(never)]
    pub(super) fn reap(&mut self) {
        if let Some(sigfd) = &self.sigfd {
            let mut buf = [0u8; 8 * size_of::<libc::signalfd_siginfo>()];
            // A read that did not fill the buffer took everything there was.
            while nix::unistd::read(sigfd, &mut buf).is_ok_and(|n| n == buf.len()) {}
        }
        // SIGCHLDs merge, so one may stand for several exits: reap until
        // none is left, or (in a server no other code forks in) until
        // every child we made is accounted for.
        while self.children > 0 || self.threaded {
            let Ok(Some((pid, status))) = crate::sys::proc::reap(-1) else {
                break;
            };
            self.children = self.children.saturating_sub(1);
            if !self.pool.silent_exit(pid) {
                wire::push_exit(&mut self.reports, pid, status);
                self.pids_since = None;
            }
        }
    }

    /// Writes pending reports; `block` waits until all are written. A
    /// caller that went away is noticed as EOF on the next read.
    /// Returns false once the caller is gone (the socket is closed).
    pub(super) fn flush_reports(&mut self, block: bool) -> bool {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        while !self.reports.is_empty() {
            match send(self.sock.as_raw_fd(), &self.reports, flags) {
                Ok(n) => {
                    self.reports.drain(..n);
                    if self.reports.is_empty() {
                        self.pids_since = None;
                    }
                }
                Err(nix::Error::EINTR) => {}
                Err(nix::Error::EAGAIN) if block => {
                    let mut pfd = [PollFd::new(self.sock.as_fd(), PollFlags::POLLOUT)];
                    let _ = nix::poll::poll(&mut pfd, PollTimeout::NONE);
                }
                Err(nix::Error::EAGAIN) => return true,
                Err(_) => {
                    self.reports.clear();
                    self.pids_since = None;
                    return false;
                }
            }
        }
        true
    }

    /// EOF on the socket: the caller freed this template, or died. Reports
    /// owed still go out; while the caller keeps reading (it half-closed)
    /// the template stays to report the exits of its running children, and
    /// it leaves as soon as the caller's end is closed for good (POLLHUP).
    #[cold]
    #[inline(never)]
    pub(super) fn drain_and_exit(&mut self) -> ! {
        self.pool.dismiss();
        let mut alive = self.flush_reports(true);
        while alive && self.children > 0 {
            let (sock, signals) =
                self.wait(PollFlags::empty(), !self.reports.is_empty(), self.tick());
            if sock.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                break;
            }
            if signals || self.tick >= 0 {
                self.reap();
            }
            alive = self.flush_reports(false);
        }
        if alive {
            self.flush_reports(true);
        }
        exit(0)
    }
}
