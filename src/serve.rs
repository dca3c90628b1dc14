//! The template server loop: one thread, one socket, five commands.
//!
//! It reads frames exactly (a header, then the payload together with the
//! next header, never past a `Run`), so no byte meant for the run function
//! is ever consumed here. Received fds are close-on-exec from the moment
//! they arrive (`MSG_CMSG_CLOEXEC`); a truncated control message is fatal.
//! Children are reaped through a signalfd, and each fork's pid and later
//! its wait status are reported back on the socket that asked for the fork.
//!
//! Exit statuses of the server itself: 0 at EOF (the caller is gone or freed
//! the handle), 125 for a corrupt command stream, 127 for a library or
//! function that cannot be found; a failing eval exits with its own status.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::args::Arg;
use crate::child::{self, SignalState, die};
use crate::pool::Pool;
use crate::wire::{self, Frame, HEADER_LEN, Tag};

/// How long a pid report may wait for its process's exit report, so that
/// a short-lived process costs the caller one wake-up, not two. Nothing
/// waits for the pid but `fork_pid` (and the exit report, which needs it).
const PID_HOLD: Duration = Duration::from_millis(1);

/// Most payload bytes read (and so allocated) ahead of their arrival.
const READ_CHUNK: usize = 1 << 20;

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

struct Reader {
    hdr: [u8; HEADER_LEN],
    have: usize,
    cur: Option<(Tag, usize)>,
    payload: Vec<u8>,
    cmsg: Vec<u8>,
    /// The last read returned less than it asked for: the socket was empty
    /// then, so the next read waits for `poll` (which is level-triggered)
    /// instead of costing a syscall that would only say `EAGAIN`.
    dry: bool,
}

enum Next {
    Frame(Tag),
    Again,
    Eof,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            hdr: [0; HEADER_LEN],
            have: 0,
            cur: None,
            payload: Vec::new(),
            cmsg: nix::cmsg_space!([RawFd; wire::MAX_FDS_PER_MSG]),
            dry: false,
        }
    }

    /// Reads until a whole frame is in `payload`, the socket is dry, or EOF.
    fn next(&mut self, sock: RawFd, fdq: &mut VecDeque<OwnedFd>) -> Next {
        loop {
            match self.cur {
                None if self.have == HEADER_LEN => {
                    let (tag, len) = wire::parse_header(&self.hdr)
                        .unwrap_or_else(|e| die(125, format_args!("corrupt command stream: {e}")));
                    self.have = 0;
                    self.cur = Some((tag, len as usize));
                    self.payload.clear();
                    continue;
                }
                Some((tag, len)) if self.payload.len() == len => {
                    self.cur = None;
                    return Next::Frame(tag);
                }
                _ => {}
            }
            if self.dry {
                self.dry = false;
                return Next::Again;
            }
            let n = match self.cur {
                None => {
                    let want = HEADER_LEN - self.have;
                    let mut iov = [IoSliceMut::new(&mut self.hdr[self.have..])];
                    let n = recv(sock, &mut iov, &mut self.cmsg, fdq);
                    self.dry = matches!(n, Some(k) if k > 0 && k < want);
                    n
                }
                Some((tag, len)) => {
                    let old = self.payload.len();
                    let chunk = (len - old).min(READ_CHUNK);
                    self.payload.resize(old + chunk, 0);
                    let (p, h) = (&mut self.payload[old..], &mut self.hdr[self.have..]);
                    // The next header may be read along only with the last
                    // bytes of the payload, and never after a run frame.
                    let last = chunk == len - old;
                    let (n, want) = if tag == Tag::Run || !last {
                        let n = recv(sock, &mut [IoSliceMut::new(p)], &mut self.cmsg, fdq);
                        (n, chunk)
                    } else {
                        let want = chunk + h.len();
                        let mut iov = [IoSliceMut::new(p), IoSliceMut::new(h)];
                        (recv(sock, &mut iov, &mut self.cmsg, fdq), want)
                    };
                    let got = n.unwrap_or(0);
                    self.dry = got > 0 && got < want;
                    self.payload.truncate(old + got.min(chunk));
                    self.have += got.saturating_sub(chunk);
                    n
                }
            };
            match n {
                Some(0) => return Next::Eof,
                Some(n) if self.cur.is_none() => self.have += n,
                Some(_) => {}
                None => return Next::Again,
            }
        }
    }
}

/// One nonblocking `recvmsg`; received fds join `fdq`. `None` when dry.
fn recv(
    sock: RawFd,
    iov: &mut [IoSliceMut<'_>],
    cmsg: &mut [u8],
    fdq: &mut VecDeque<OwnedFd>,
) -> Option<usize> {
    loop {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        let r = match recvmsg::<()>(sock, iov, Some(cmsg), flags) {
            Ok(r) => r,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return None,
            Err(nix::errno::Errno::ECONNRESET) => return Some(0),
            Err(e) => die(
                125,
                format_args!("reading the command socket: {}", e.desc()),
            ),
        };
        let cmsgs = r.cmsgs().unwrap_or_else(|_| {
            die(
                125,
                "a control message was truncated (MSG_CTRUNC): too many fds at once",
            )
        });
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel just installed these fds for us.
                fdq.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        return Some(r.bytes);
    }
}

struct Server {
    sock: OwnedFd,
    /// In a new process, its copy of the template's socket until it is
    /// closed: in `enter`, or before serving the process's own commands
    /// (`anyfork_exit` leaves without spending a syscall on it).
    inherited: Option<OwnedFd>,
    sigfd: OwnedFd,
    signals: SignalState,
    fdq: VecDeque<OwnedFd>,
    args: Vec<Arg>,
    reports: Vec<u8>,
    rd: Reader,
    /// Forked and not yet reaped.
    children: usize,
    expect_hello: bool,
    /// Poll timeout in ms: -1, or a tick for [`ServeOptions::threaded`].
    tick: libc::c_int,
    /// Other code may run threads or fork here ([`ServeOptions::threaded`]).
    threaded: bool,
    /// How to fork: glibc's `_Fork` while nothing but this crate and libc
    /// is in the process, else `fork` (see [`Server::fork`]).
    fork_fn: unsafe extern "C" fn() -> libc::pid_t,
    /// Children forked ahead of time (`anyfork_warm`).
    pool: Pool,
    /// This process waits in a pool: its socket is a leash, and the fork
    /// request that comes down it makes it the requested process.
    pooled: bool,
    /// Since when `reports` holds nothing but pid reports (see [`PID_HOLD`]).
    pids_since: Option<Instant>,
}

/// Serves commands on `sock` until EOF or a run; never returns.
pub fn serve(sock: OwnedFd, opts: ServeOptions) -> ! {
    let signals = SignalState::capture(opts.scan_signals);
    // SAFETY: blocks SIGCHLD and opens a signalfd for it; results checked.
    let sigfd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            die(
                1,
                format_args!("signalfd: {}", std::io::Error::last_os_error()),
            );
        }
        // Out of the way of the low fd numbers that the code the server
        // hosts may expect to hand out or find (an interpreter's own).
        let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
        if high >= 0 {
            libc::close(fd);
            OwnedFd::from_raw_fd(high)
        } else {
            OwnedFd::from_raw_fd(fd)
        }
    };
    child::set_comm(sock.as_raw_fd());
    let mut s = Server {
        sock,
        inherited: None,
        sigfd,
        signals,
        fdq: VecDeque::new(),
        args: Vec::new(),
        reports: Vec::new(),
        rd: Reader::new(),
        children: 0,
        expect_hello: opts.expect_hello,
        tick: if opts.threaded { 50 } else { -1 },
        threaded: opts.threaded,
        fork_fn: if opts.scan_signals || opts.threaded {
            libc::fork
        } else {
            bare_fork().unwrap_or(libc::fork)
        },
        pool: Pool::default(),
        pooled: false,
        pids_since: None,
    };
    s.main_loop()
}

impl Server {
    fn main_loop(&mut self) -> ! {
        loop {
            loop {
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
            let (_, signals) = self.wait(libc::POLLIN, out, timeout);
            if signals != 0 || (self.tick >= 0 && self.children > 0) {
                self.reap();
            }
        }
    }

    /// The tick of a threaded server, or `None` (no timeout).
    fn tick(&self) -> Option<Duration> {
        u64::try_from(self.tick).ok().map(Duration::from_millis)
    }

    /// Waits for `events` on the socket (and `POLLOUT` with `out`) or a
    /// signal on the signalfd, at most `timeout`; the revents of both.
    fn wait(
        &self,
        events: libc::c_short,
        out: bool,
        timeout: Option<Duration>,
    ) -> (libc::c_short, libc::c_short) {
        let mut pfd = [
            libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: events | if out { libc::POLLOUT } else { 0 },
                revents: 0,
            },
            libc::pollfd {
                fd: self.sigfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: two valid pollfds; a live timespec or NULL.
        unsafe { libc::ppoll(pfd.as_mut_ptr(), 2, tsp, std::ptr::null()) };
        (pfd[0].revents, pfd[1].revents)
    }

    fn handle(&mut self, tag: Tag) {
        if self.expect_hello && tag != Tag::Hello {
            die(
                125,
                format_args!("corrupt command stream: expected hello, got frame {tag:?}"),
            );
        }
        let payload = std::mem::take(&mut self.rd.payload);
        let frame = wire::decode(tag, &payload)
            .unwrap_or_else(|e| die(125, format_args!("corrupt command stream: {e}")));
        if matches!(
            frame,
            Frame::Str(_) | Frame::Fd | Frame::Require(_) | Frame::Eval { .. }
        ) {
            // Waiting children are copies of this process as it was.
            self.pool.dismiss();
        }
        match frame {
            Frame::Hello { .. } => self.expect_hello = false,
            Frame::Str(_) => {
                self.args.push(Arg::string(payload));
                return;
            }
            Frame::Fd => {
                let fd = self.take_fd();
                self.args.push(Arg::Fd(fd));
            }
            Frame::Require(lib) => {
                // The library may register fork handlers (pthread_atfork)
                // that its code relies on: from now on they run.
                self.fork_fn = libc::fork;
                child::require(lib)
            }
            Frame::Eval { name, args } => {
                child::eval(name, &args, &self.args);
                if let Some(k) = crate::builtins::take_warm() {
                    self.pool.want = k;
                }
            }
            Frame::Fork { run } => {
                let fd = self.take_fd();
                let head = wire::header(Tag::Fork, payload.len() as u32);
                if let Some(pid) = self.pool.hand_over(&head, &payload, fd.as_raw_fd()) {
                    drop(fd);
                    self.push_pid(pid);
                } else if self.fork(fd) {
                    match run {
                        Some(name) => self.enter(name, false),
                        None => {
                            self.inherited = None;
                            child::set_comm(self.sock.as_raw_fd());
                        }
                    }
                }
            }
            Frame::Spawn { argv } => {
                let fd = self.take_fd();
                let req = crate::exec_spawn::Request {
                    held: &self.args,
                    argv: &argv,
                    comm: fd.as_raw_fd(),
                    comm_to: crate::builtins::comm_fds(),
                    handled: self.signals.handled(),
                };
                if let Some(pid) = crate::exec_spawn::spawn(&req) {
                    drop(fd);
                    self.children += 1;
                    self.push_pid(pid);
                } else if self.fork(fd) {
                    // Whatever posix_spawn could not do, the builtin does
                    // (or explains) in a forked child.
                    for a in &argv {
                        self.args.push(Arg::string(a.to_vec()));
                    }
                    self.enter(b"anyfork_exec", false);
                }
            }
            Frame::Run { name, end } => self.enter(name, end),
            Frame::Pid(_) | Frame::Exit { .. } | Frame::End => die(
                125,
                format_args!("corrupt command stream: report frame {tag:?} sent to a server"),
            ),
        }
        self.rd.payload = payload;
    }

    fn take_fd(&mut self) -> OwnedFd {
        self.fdq.pop_front().unwrap_or_else(|| {
            die(
                125,
                "corrupt command stream: a frame needs an fd that was not passed",
            )
        })
    }

    /// Forks; true in the child, which now serves `fd`.
    ///
    /// An exec'd `anyfork-serve` that has loaded no library forks with
    /// `_Fork`: with one thread and no fork handlers registered, glibc's
    /// `fork` adds only work (locks taken and reset, handler lists walked)
    /// whose every first write to a page costs both processes a
    /// copy-on-write fault.
    fn fork(&mut self, fd: OwnedFd) -> bool {
        if self.pooled {
            // Handed a request: become the process it asks for, as a
            // newly forked child would (the leash closes in `enter`).
            self.pooled = false;
            self.inherited = Some(std::mem::replace(&mut self.sock, fd));
            return true;
        }
        // SAFETY: this process is single-threaded (or forks with `fork`,
        // which handles other threads), so the child may run anything;
        // both sides continue with consistent state below.
        let pid = unsafe { (self.fork_fn)() };
        if pid == 0 {
            // The child serves its own socket from here on. What was read
            // or queued for the parent's socket is not ours. (It is still
            // nonblocking: `enter` makes it blocking for the run function.
            // Until then each write is a page the child need not copy.)
            self.inherited = Some(std::mem::replace(&mut self.sock, fd));
            self.forget_parent();
            return true;
        }
        // The caller sees EOF once the child and we closed the socket.
        drop(fd);
        if pid > 0 {
            self.children += 1;
        }
        let report = if pid < 0 {
            -std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EAGAIN)
        } else {
            pid
        };
        self.push_pid(report);
        false
    }

    /// Queues the pid report of a new process (a negative errno if the
    /// fork failed). A pid waits up to [`PID_HOLD`] to share one write
    /// with its process's exit; a failure goes out at once.
    fn push_pid(&mut self, pid: libc::pid_t) {
        if self.reports.is_empty() && pid > 0 {
            self.pids_since = Some(Instant::now());
        } else if pid <= 0 {
            self.pids_since = None;
        }
        wire::push_pid(&mut self.reports, pid);
    }

    /// In a new process: drops what belongs to the template it was copied
    /// from (its pool, unconsumed fds, reports, read state, children).
    fn forget_parent(&mut self) {
        self.pool.forget();
        self.fdq.clear();
        self.reports.clear();
        self.pids_since = None;
        self.rd.have = 0;
        self.rd.dry = false;
        self.children = 0;
    }

    /// Forks one child for the pool. In it, returns with this server
    /// serving the leash; if the fork fails, the pool stays smaller.
    #[cold]
    #[inline(never)]
    fn fork_waiting(&mut self) {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let Ok((ours, leash)) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        ) else {
            self.pool.want = self.pool.len();
            return;
        };
        // SAFETY: as in `fork`.
        let pid = unsafe { (self.fork_fn)() };
        if pid == 0 {
            drop(ours);
            self.pool.forget();
            self.pooled = true;
            // The template's socket is closed now, before any request.
            self.sock = leash;
            self.inherited = None;
            child::set_comm(self.sock.as_raw_fd());
            self.forget_parent();
            return;
        }
        if pid < 0 {
            self.pool.want = self.pool.len();
            return;
        }
        self.children += 1;
        self.pool.add(pid, ours);
    }

    // Kept out of line: its buffer would otherwise widen the main loop's
    // stack frame, and each stack page a new process writes is a fault.
    #[inline(never)]
    fn reap(&mut self) {
        let mut buf = [0u8; 8 * size_of::<libc::signalfd_siginfo>()];
        // SAFETY: drains the nonblocking signalfd into a local buffer; a
        // read that did not fill it took everything there was.
        while unsafe { libc::read(self.sigfd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
            == buf.len() as isize
        {}
        // SIGCHLDs merge, so one may stand for several exits: reap until
        // none is left, or (in a server no other code forks in) until
        // every child we made is accounted for.
        while self.children > 0 || self.threaded {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
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
    fn flush_reports(&mut self, block: bool) -> bool {
        while !self.reports.is_empty() {
            // SAFETY: sends from a live buffer.
            let n = unsafe {
                libc::send(
                    self.sock.as_raw_fd(),
                    self.reports.as_ptr().cast(),
                    self.reports.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n > 0 {
                self.reports.drain(..n as usize);
                if self.reports.is_empty() {
                    self.pids_since = None;
                }
                continue;
            }
            let e = std::io::Error::last_os_error().raw_os_error();
            match e {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) if block => {
                    let mut pfd = libc::pollfd {
                        fd: self.sock.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, -1) };
                }
                Some(libc::EAGAIN) => return true,
                _ => {
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
    fn drain_and_exit(&mut self) -> ! {
        self.pool.dismiss();
        let mut alive = self.flush_reports(true);
        while alive && self.children > 0 {
            let (sock, signals) = self.wait(0, !self.reports.is_empty(), self.tick());
            if sock & (libc::POLLHUP | libc::POLLERR) != 0 {
                break;
            }
            if signals != 0 || self.tick >= 0 {
                self.reap();
            }
            alive = self.flush_reports(false);
        }
        if alive {
            self.flush_reports(true);
        }
        child::exit(0)
    }

    /// Enters the run function: reports end, the process gets clean
    /// signal state, and the server is gone.
    fn enter(&mut self, name: &[u8], end: bool) -> ! {
        // Waiting children leave before the run function starts, reaped
        // here: user code finds no child of this process it did not make.
        for pid in self.pool.dismiss_all() {
            // SAFETY: waits for a child of ours that is exiting (its leash
            // just closed).
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            self.children = self.children.saturating_sub(1);
        }
        if end {
            self.reap();
            self.reports.extend_from_slice(&wire::header(Tag::End, 0));
        }
        self.flush_reports(true);
        if let Some(status) = crate::builtins::exit_status(name, &self.args) {
            // SAFETY: ends the process; nothing of it is needed any more.
            unsafe { libc::_exit(status) }
        }
        self.inherited = None;
        let sock = self.sock.as_raw_fd();
        child::set_comm(sock);
        // SAFETY: clears O_NONBLOCK on the socket we own: the run function
        // gets a blocking comm socket.
        unsafe { libc::fcntl(sock, libc::F_SETFL, 0) };
        // SAFETY: closes the signalfd we own; it must not leak into user code.
        unsafe { libc::close(self.sigfd.as_raw_fd()) };
        self.signals.reset();
        for fd in self.fdq.drain(..) {
            drop(fd);
        }
        child::run(name, sock, &self.args)
    }
}

/// `main` of the exec'd `anyfork-serve`: takes its socket from
/// `ANYFORK_FD`, closes every other inherited fd but 0, 1 and 2, serves.
pub fn exec_main() -> ! {
    let fd: RawFd = std::env::var(crate::spawn::FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&fd| fd > 2)
        .unwrap_or_else(|| {
            die(
                2,
                "anyfork-serve is started by libanyfork; ANYFORK_FD is not set to a socket fd",
            )
        });
    // SAFETY: single-threaded at this point; the fd is checked before use.
    unsafe {
        std::env::remove_var(crate::spawn::FD_ENV);
        if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            die(2, format_args!("ANYFORK_FD={fd} is not an open fd"));
        }
        libc::fcntl(fd, libc::F_SETFL, 0);
        close_others(fd);
        // An exec keeps the signals its caller ignored (SIGPIPE, often)
        // and the signal mask: put every signal back to its default once
        // here, so forked processes inherit a clean state.
        SignalState::capture(true).reset();
        serve(
            OwnedFd::from_raw_fd(fd),
            ServeOptions {
                expect_hello: true,
                scan_signals: false,
                threaded: false,
            },
        )
    }
}

/// Serves on `fd` in a process that was not exec'd as `anyfork-serve` (a
/// custom server): checks the fd, then never returns.
pub fn serve_custom(fd: RawFd) -> crate::error::Result<std::convert::Infallible> {
    use crate::error::{Errno, Error};
    // SAFETY: probes and adjusts flags of the given fd; ownership is taken
    // only once it proved to be a socket.
    unsafe {
        let mut ty: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        ) < 0
        {
            return Err(Error::sys(Errno::last(), format_args!("fd {fd}")));
        }
        if ty != libc::SOCK_STREAM {
            return Err(Error::new(
                Errno::ENOTSOCK,
                format!("fd {fd} is not a stream socket"),
            ));
        }
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(fd, libc::F_SETFL, 0);
        serve(
            OwnedFd::from_raw_fd(fd),
            ServeOptions {
                expect_hello: true,
                scan_signals: true,
                threaded: true,
            },
        )
    }
}

/// glibc's `_Fork` (2.34 and later): fork without fork handlers, looked
/// up at run time so that an older libc still gets `fork`.
fn bare_fork() -> Option<unsafe extern "C" fn() -> libc::pid_t> {
    // SAFETY: dlsym with a valid C string; a found `_Fork` has this type.
    unsafe {
        let p = libc::dlsym(libc::RTLD_DEFAULT, c"_Fork".as_ptr());
        (!p.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, _>(p))
    }
}

/// Closes every fd above 2 except `keep`.
pub fn close_others(keep: RawFd) {
    // SAFETY: close_range on fd ranges; failures leave fds open, no worse.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}
