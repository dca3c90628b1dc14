//! What the template server does with each command: keep strings and
//! fds, load libraries, run evals, fork (or hand the request to the warm
//! pool), spawn programs, and enter the run function.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::args::Arg;
use super::call;
use super::exit::{LOST_FD, die, exit_now};
use super::serve_loop::Server;
use super::state;
use crate::protocol::wire::{self, Frame, Tag};

impl Server {
    pub(super) fn handle(&mut self, tag: Tag) {
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
            Frame::Fd => match self.take_fd() {
                Some(fd) => self.args.push(Arg::Fd(fd)),
                None => {
                    // The arguments are incomplete from here on: this
                    // process's forks and its run function fail.
                    self.lost += 1;
                    complain(format_args!(
                        "an fd argument could not be received: this process is at its \
                         open-file limit (EMFILE); its forks and its run function will fail"
                    ));
                }
            },
            Frame::Require(lib) => {
                self.resolved = None;
                call::require(lib);
                self.code_loaded();
            }
            Frame::Eval { name, args } => {
                // Code run here may load libraries or set a dispatcher.
                self.resolved = None;
                call::eval(name, &args, &self.args);
                self.code_loaded();
                if let Some(k) = state::take_warm() {
                    self.pool.want = k;
                }
            }
            Frame::Fork { run, detached } => 'req: {
                // A detached fork-and-run brought no socket: the process
                // gets one of ours whose peer is closed, as the caller's
                // would be once it closed its end.
                let fd = self
                    .request_socket("fork", detached)
                    .and_then(|comm| self.socket_or_lone(comm));
                let Some(fd) = fd else {
                    break 'req;
                };
                let head = wire::header(Tag::Fork, payload.len() as u32);
                if let Some(pid) = self.pool.hand_over(&head, &payload, fd.as_raw_fd()) {
                    drop(fd);
                    self.push_pid(pid);
                } else {
                    let target = run.and_then(|name| self.resolve_run(name));
                    if self.fork(fd) {
                        match run {
                            Some(name) => self.enter_resolved(name, false, target),
                            None => {
                                self.inherited = None;
                                state::set_comm(self.sock.as_raw_fd());
                            }
                        }
                    }
                }
            }
            Frame::Spawn { argv, detached } => 'req: {
                let Some(comm) = self.request_socket("spawn", detached) else {
                    break 'req;
                };
                self.spawn(&argv, comm);
            }
            Frame::Run { name, end } => self.enter(name, end),
            Frame::Pid(_) | Frame::Exit { .. } | Frame::End => die(
                125,
                format_args!("corrupt command stream: report frame {tag:?} sent to a server"),
            ),
        }
        self.rd.payload = payload;
    }

    /// After a `require` or `eval`: the code loaded may have registered
    /// fork handlers (pthread_atfork) that it relies on; if so, from now on
    /// they run. Asked only while the answer can still change how this
    /// server forks: once yes, always yes; without `_Fork`, `fork` anyway.
    fn code_loaded(&mut self) {
        if self.bare_fork.is_some() && !self.fork_handlers {
            self.fork_handlers = crate::sys::atfork::handlers_possible();
        }
    }

    /// The next fd of the queue; `None` when the kernel could not install
    /// it (this process was at its open-file limit).
    fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fdq.pop_front().unwrap_or_else(|| {
            die(
                125,
                "corrupt command stream: a frame needs an fd that was not passed",
            )
        })
    }

    /// The new process's socket for a fork or spawn request, or `None`
    /// when the request fails with `EMFILE` (reported as its pid): its
    /// socket was not received, or an fd argument of this process was
    /// not (the new process would lack it). A socket that did come is
    /// closed, so the caller sees EOF on its end.
    fn fork_fd(&mut self, what: &str) -> Option<OwnedFd> {
        let fd = self.take_fd();
        if fd.is_none() {
            self.refuse(
                what,
                "the new process's socket could not be received".to_string(),
            );
            return None;
        }
        self.args_complete(what).then_some(fd).flatten()
    }

    /// False, with the request refused (`EMFILE` as its pid), when an fd
    /// argument sent to this process was not received.
    fn args_complete(&mut self, what: &str) -> bool {
        if self.lost == 0 {
            return true;
        }
        let n = self.lost;
        self.refuse(
            what,
            format!("{n} fd argument(s) sent to this process were not received"),
        );
        false
    }

    /// The socket that came with a fork or spawn request (`None` for a
    /// detached one, which brings none); `None` outside when the request
    /// is refused (see [`Server::fork_fd`]).
    fn request_socket(&mut self, what: &str, detached: bool) -> Option<Option<OwnedFd>> {
        if detached {
            self.args_complete(what).then_some(None)
        } else {
            self.fork_fd(what).map(Some)
        }
    }

    /// `comm`, or else one of our own whose peer is closed
    /// ([`lone_socket`]); `None`, the failure reported as the request's
    /// pid, when none can be made.
    fn socket_or_lone(&mut self, comm: Option<OwnedFd>) -> Option<OwnedFd> {
        match comm.map_or_else(lone_socket, Ok) {
            Ok(fd) => Some(fd),
            Err(e) => {
                self.push_pid(-(e as libc::pid_t));
                None
            }
        }
    }

    fn refuse(&mut self, what: &str, why: String) {
        complain(format_args!(
            "{what} request refused: {why}: this process is at its open-file limit (EMFILE)"
        ));
        self.push_pid(-libc::EMFILE);
    }

    /// Starts `argv` with `posix_spawn`, or else in a forked child running
    /// the `anyfork_exec` builtin (which does or explains what posix_spawn
    /// could not). `comm` is the caller's socket to the program; a detached
    /// spawn has none, and gets one of ours (its peer closed at once) only
    /// where a socket is due: at the fds `anyfork_comm_fd` named, and for
    /// the forked child to serve.
    fn spawn(&mut self, argv: &[&[u8]], comm: Option<OwnedFd>) {
        let comm_to = state::comm_fds();
        let comm = match comm {
            None if comm_to != 0 => match self.socket_or_lone(None) {
                Some(fd) => Some(fd),
                None => return,
            },
            c => c,
        };
        let req = super::spawn::Request {
            held: &self.args,
            argv,
            comm: comm.as_ref().map(AsRawFd::as_raw_fd),
            comm_to,
            handled: self.signals.handled(),
        };
        if let Some(pid) = super::spawn::spawn(&req) {
            drop(comm);
            self.children += 1;
            return self.push_pid(pid);
        }
        let Some(fd) = self.socket_or_lone(comm) else {
            return;
        };
        if self.fork(fd) {
            for a in argv {
                self.args.push(Arg::string(a.to_vec()));
            }
            self.enter(b"anyfork_exec", false);
        }
    }

    /// Forks; true in the child, which now serves `fd`.
    ///
    /// Through the fork hook when the program set one
    /// (`fork_set_fork_hook`: an interpreter's own fork, whose after-fork
    /// work then runs in every new process).
    ///
    /// An exec'd `anyfork-serve` forks with `_Fork` while it has one
    /// thread and no loaded code may have registered fork handlers
    /// ([`Server::fork_fn`]): then glibc's `fork` adds only work (locks
    /// taken and reset, handler lists walked) whose every first write to a
    /// page costs both processes a copy-on-write fault.
    fn fork(&mut self, fd: OwnedFd) -> bool {
        if self.pooled {
            // Handed a request: become the process it asks for, as a
            // newly forked child would (the leash closes in `enter`).
            self.pooled = false;
            self.inherited = Some(std::mem::replace(&mut self.sock, fd));
            return true;
        }
        // SAFETY: this process is single-threaded (or forks with `fork`,
        // which handles other threads, or through the fork hook, which
        // forks as the program's own fork does), so the child may run
        // anything; both sides continue with consistent state below.
        let pid = unsafe { state::fork_with(self.fork_fn()) };
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
            -(crate::error::last_errno() as libc::pid_t)
        } else {
            pid
        };
        self.push_pid(report);
        false
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
    pub(super) fn fork_waiting(&mut self) {
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
        let pid = unsafe { state::fork_with(self.fork_fn()) };
        if pid == 0 {
            drop(ours);
            self.pool.forget();
            self.pooled = true;
            // The template's socket is closed now, before any request.
            self.sock = leash;
            self.inherited = None;
            state::set_comm(self.sock.as_raw_fd());
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

    /// The address of the run function `name` for a fork-and-run, looked
    /// up here before the fork, so that the new process does not: a lookup
    /// writes to the loader's state (its lock, the error slot, lazily
    /// bound entries), and each page a new process writes is a page it
    /// copies. The last name is remembered until a `require` or `eval`
    /// (which may load code). `None` for builtins, when a dispatcher is
    /// set (it goes first), and when nothing defines the name (the new
    /// process then looks for itself and explains).
    fn resolve_run(&mut self, name: &[u8]) -> Option<usize> {
        if name.starts_with(b"anyfork_") || state::dispatcher().is_some() {
            return None;
        }
        if let Some((n, addr)) = &self.resolved {
            if n == name {
                return Some(*addr);
            }
        }
        let c = std::ffi::CString::new(name).ok()?;
        let addr = crate::sys::dl::symbol(&c)? as usize;
        self.resolved = Some((name.to_vec(), addr));
        Some(addr)
    }

    /// Enters the run function: reports end, the process gets clean
    /// signal state, and the server is gone.
    fn enter(&mut self, name: &[u8], end: bool) -> ! {
        self.enter_resolved(name, end, None)
    }

    /// [`Server::enter`] with the function's address when the template
    /// looked it up already ([`Server::resolve_run`]).
    fn enter_resolved(&mut self, name: &[u8], end: bool, target: Option<usize>) -> ! {
        // Waiting children leave before the run function starts, reaped
        // here: user code finds no child of this process it did not make.
        for pid in self.pool.dismiss_all() {
            // Its leash just closed: it is exiting.
            crate::sys::proc::reap_blocking(pid);
            self.children = self.children.saturating_sub(1);
        }
        if end {
            self.reap();
            self.reports.extend_from_slice(&wire::header(Tag::End, 0));
        }
        self.flush_reports(true);
        if self.lost > 0 {
            die(
                LOST_FD,
                format_args!(
                    "run {:?}: {} fd argument(s) sent to this process could not be received: \
                     it is at its open-file limit (EMFILE)",
                    String::from_utf8_lossy(name),
                    self.lost
                ),
            );
        }
        if let Some(status) = super::builtins::exit_status(name, &self.args) {
            exit_now(status)
        }
        self.inherited = None;
        let sock = self.sock.as_raw_fd();
        state::set_comm(sock);
        // The run function gets a blocking comm socket.
        let _ = fcntl(&self.sock, FcntlArg::F_SETFL(OFlag::empty()));
        // The signalfd must not leak into user code.
        self.sigfd = None;
        if state::has_fork_hook() && !name.starts_with(b"anyfork_") {
            // Made by the program's own fork (the hook): its signal
            // handlers are the interpreter's, which relies on them
            // (Ruby's SIGCHLD and SIGVTALRM), as that fork leaves them.
            super::signals::clear_mask();
        } else {
            self.signals.reset();
        }
        for fd in self.fdq.drain(..) {
            drop(fd);
        }
        call::run(name, sock, &self.args, target)
    }
}

/// One line on this process's stderr, as `die` writes them.
fn complain(msg: std::fmt::Arguments<'_>) {
    eprintln!("anyfork[{}]: {msg}", std::process::id());
}

/// One end of a new socketpair whose other end is closed: what a process
/// reads from it is EOF, what it writes is lost (`EPIPE`).
fn lone_socket() -> nix::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let (ours, _peer) = socketpair(AddressFamily::Unix, SockType::Stream, None, flags)?;
    Ok(ours)
}
