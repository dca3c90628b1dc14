//! The process object: a handle on a process that has not run yet.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ahead::Ahead;
use super::conn::Conn;
use super::record::{ExitCallback, Record, RunCallback};
use crate::error::{Errno, Error, Result};
use crate::protocol::wire::{self, MAX_NAME, Tag};

/// How long [`Process::pid`] waits for a template to report a fork.
const PID_TIMEOUT: Duration = Duration::from_secs(10);

/// A process that has not entered its run function yet.
///
/// Commands queue in order and are written without blocking; what the socket
/// cannot take at once is written as the reactor turns ([`crate::dispatch`],
/// [`crate::wait`]). Dropping the handle lets the process exit once what was
/// queued is delivered (it sees EOF); [`Process::run`] consumes it instead.
pub struct Process {
    conn: Arc<Conn>,
    rec: Arc<Record>,
    /// The template that forked this process, which reports its pid.
    parent: Option<Arc<Conn>>,
    /// The fork may still be held back in the parent (see [`Conn::fork`]).
    unsent: AtomicBool,
    /// Reached through a remote link ([`Process::new_remote`]): fds
    /// cannot be sent to it.
    pub(super) remote: bool,
    /// Processes forked ahead of `fork` ([`Process::fork_ahead`]).
    pub(super) ahead: Mutex<Option<Ahead>>,
}

impl Process {
    /// Wraps the caller's end of a socket whose other end a server reads.
    fn from_parts(fd: OwnedFd, rec: Arc<Record>) -> Result<Process> {
        Ok(Process {
            conn: Conn::new(fd, rec.clone())?,
            rec,
            unsent: AtomicBool::new(false),
            parent: None,
            remote: false,
            ahead: Mutex::default(),
        })
    }

    /// A server that is a direct child of the caller (`pid`), reached
    /// through `fd`: the library watches it and reaps it.
    pub(crate) fn direct_child(fd: OwnedFd, pid: i32) -> Result<Process> {
        let rec = Record::direct(pid);
        let p = Process::from_parts(fd, rec.clone())?;
        super::direct::watch(pid, rec);
        p.conn.set_pidfd(crate::sys::proc::pidfd_open(pid));
        Ok(p)
    }

    /// Forks this process: everything sent to it so far is cloned into the
    /// child, which is returned as a new process object. With processes
    /// kept forked ahead ([`Process::fork_ahead`]), the oldest is handed
    /// out instead.
    pub fn fork(&self) -> Result<Process> {
        match self.take_ahead() {
            Ok(Some(p)) => Ok(p),
            Ok(None) => self.fork_now(),
            Err(e) => Err(e.context("fork")),
        }
    }

    /// Asks the template for a new fork now.
    pub(super) fn fork_now(&self) -> Result<Process> {
        self.materialize().map_err(|e| e.context("fork"))?;
        Process::fork_from(&self.conn, self.remote)
    }

    /// A new process forked by the template behind `template`, whose own
    /// fork went out already.
    pub(super) fn fork_from(template: &Arc<Conn>, remote: bool) -> Result<Process> {
        let rec = Record::forked();
        // The new process's socketpair is made when its request is
        // written (by the call that sends it, when nothing is queued
        // before it): a process that execs detached needs none, and
        // requests waiting in a queue hold no fds.
        let conn = Conn::new_lazy(rec.clone())?;
        template
            .fork(conn.clone(), rec.clone())
            .map_err(|e| e.context("fork"))?;
        Ok(Process {
            conn,
            rec,
            unsent: AtomicBool::new(true),
            parent: Some(template.clone()),
            remote,
            ahead: Mutex::default(),
        })
    }

    /// The caller's end of this process's socket.
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The fork that creates this process, if nothing was sent to it yet,
    /// goes out with what `send` asks its parent for (one frame); false
    /// when the fork went out before (or there is none).
    fn with_held_fork(&self, send: impl FnOnce(&Arc<Conn>) -> Result<bool>) -> Result<bool> {
        match &self.parent {
            Some(parent) if self.unsent.swap(false, Ordering::AcqRel) => {
                let sent = send(parent);
                if sent.is_err() {
                    // Still held (no fd for its socket, say): a later
                    // command sends it, or dropping `self` cancels it.
                    self.unsent.store(true, Ordering::Release);
                }
                sent
            }
            _ => Ok(false),
        }
    }

    /// Makes sure the fork that creates this process was sent.
    pub(super) fn materialize(&self) -> Result<()> {
        self.with_held_fork(|parent| parent.materialize(&self.rec).map(|()| true))
            .map(drop)
    }

    /// Queues already-encoded frames that consume no fds.
    pub(crate) fn send_frames(&self, frames: &[u8]) -> Result<()> {
        self.materialize()?;
        self.conn.send(&[frames], vec![])?;
        self.renew_ahead()
    }

    /// True when the process can no longer be reached.
    pub(crate) fn is_dead(&self) -> bool {
        self.conn.dead().is_some()
    }

    /// True when the process is gone, as far as one `poll` can tell now.
    pub(crate) fn hung_up(&self) -> bool {
        self.conn.hung_up()
    }

    /// Sends a duplicate of `fd` (made at once, close-on-exec; the caller
    /// keeps its own). It arrives as the next argument of the run function.
    pub fn send_fd(&mut self, fd: BorrowedFd<'_>) -> Result<()> {
        let dup = fd
            .try_clone_to_owned()
            .map_err(|e| Error::io(&e, format_args!("duplicating fd {}", fd.as_raw_fd())))?;
        self.send_owned_fd(dup)
    }

    /// Sends `fd` itself; the library closes it once it is passed.
    /// `EOPNOTSUPP` for a process of a remote template: nothing is sent.
    pub fn send_owned_fd(&mut self, fd: OwnedFd) -> Result<()> {
        if self.remote {
            return Err(Error::new(
                Errno::EOPNOTSUPP,
                "send_fd: this process was forked from a remote template \
                 (fork_new_remote), and fds cannot cross machines; nothing was sent",
            ));
        }
        let h = wire::header(Tag::Fd, 0);
        self.materialize()
            .and_then(|()| self.conn.send(&[&h], vec![fd]))
            .and_then(|()| self.renew_ahead())
            .map_err(|e| e.context("send_fd"))
    }

    /// Sends a byte string (up to 4 GiB - 1), the next argument of the run
    /// function. The bytes are copied only if the socket cannot take them.
    pub fn send_arg(&mut self, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| {
            Error::new(
                Errno::E2BIG,
                format!(
                    "send_arg: {} bytes exceed the 4 GiB frame limit",
                    data.len()
                ),
            )
        })?;
        self.materialize().map_err(|e| e.context("send_arg"))?;
        let h = wire::header(Tag::Str, len);
        self.conn
            .send(&[&h, data], vec![])
            .and_then(|()| self.renew_ahead())
            .map_err(|e| e.context("send_arg"))
    }

    /// Loads a shared library in the process (`dlopen` with `RTLD_NOW |
    /// RTLD_GLOBAL`); a failure makes the process exit with a message on
    /// its stderr.
    pub fn require(&mut self, library: &str) -> Result<()> {
        let name = check_name("require", "library", library)?;
        self.materialize()?;
        let h = wire::header(Tag::Require, name.len() as u32);
        self.conn.send(&[&h, name], vec![])?;
        self.renew_ahead()
    }

    /// Calls `int function(const fork_arg *args, size_t nargs)` in the
    /// process now, with `args`. A missing symbol or a non-zero return makes
    /// the process exit with a message on its stderr.
    pub fn eval(&mut self, function: &str, args: &[&[u8]]) -> Result<()> {
        let name = check_name("eval", "function", function)?;
        self.materialize()?;
        let mut frame = Vec::new();
        wire::push_eval(&mut frame, name, args).ok_or_else(|| {
            Error::new(
                Errno::E2BIG,
                "eval: the arguments exceed the 4 GiB frame limit",
            )
        })?;
        self.conn.send(&[&frame], vec![])?;
        self.renew_ahead()
    }

    /// Calls `cb` with the process's exit: its pid and wait status, or an
    /// error when the status cannot be known. Replaces an earlier callback.
    pub fn on_exit(&mut self, cb: impl FnOnce(i32, Result<i32>) + Send + 'static) {
        let cb: ExitCallback = Box::new(cb);
        self.rec.set_exit(cb);
    }

    /// Makes the process enter `int function(int fd, const fork_arg *args,
    /// size_t nargs)` and consumes the handle. Once everything for it is
    /// written to the kernel (its commands, and the fork request to its
    /// template), `cb` gets the comm socket; if that can no longer happen,
    /// it gets the error. `cb` does not wait for the template's pid report:
    /// a fork that fails after its request left (the template died, or
    /// fork failed there) shows as EOF on the socket, and the exit callback
    /// and [`Process::pid`] get the error. `cb` runs from dispatch or wait,
    /// never from inside `run`, and never when `run` itself returns an
    /// error.
    pub fn run(
        self,
        function: &str,
        cb: impl FnOnce(Result<OwnedFd>) + Send + 'static,
    ) -> Result<()> {
        self.run_with(function, Some(Box::new(cb)))
    }

    /// Like [`Process::run`] without a callback: the library closes its
    /// end of the comm socket as soon as everything is written. When
    /// nothing was sent to the process, no socket goes with the request at
    /// all: the template gives the process one whose peer is closed.
    pub fn run_detached(self, function: &str) -> Result<()> {
        self.run_with(function, None)
    }

    fn run_with(self, function: &str, cb: Option<RunCallback>) -> Result<()> {
        let name = check_name("run", "function", function)?;
        let detached = cb.is_none();
        match self.with_held_fork(|parent| parent.fork_run(&self.rec, name, detached)) {
            // Detached, it needs no socket: the process's own end closes
            // with `self`.
            Ok(true) if detached => return Ok(()),
            Ok(true) => self.conn.ran_remotely(),
            Ok(false) => self.conn.run(name).map_err(|e| e.context("run"))?,
            Err(e) => return Err(e.context("run")),
        }
        match cb {
            Some(cb) => self.rec.set_run(cb),
            None => self.rec.set_run_detached(),
        }
        Ok(())
    }

    /// Makes the process exec a program through the `anyfork_exec`
    /// builtin: `argv` follows any strings sent before (argv\[0\] is searched
    /// in `PATH` without a slash), the fds sent become its fds 0, 1, 2, …
    /// With `env`, the environment is replaced by those `NAME=VALUE` pairs.
    /// An exec failure is written to the comm socket (status 127).
    pub fn exec(
        self,
        argv: &[&[u8]],
        env: Option<&[&[u8]]>,
        cb: impl FnOnce(Result<OwnedFd>) + Send + 'static,
    ) -> Result<()> {
        self.exec_with(argv, env, Some(Box::new(cb)))
    }

    /// Like [`Process::exec`] without a callback: the library closes its
    /// end of the comm socket as soon as everything is written. When
    /// nothing was sent to the process and `env` is `None`, no socket goes
    /// with the request at all: the template spawns the program from one
    /// small frame (a socket whose peer is closed where `anyfork_comm_fd`
    /// asked for one).
    pub fn exec_detached(self, argv: &[&[u8]], env: Option<&[&[u8]]>) -> Result<()> {
        self.exec_with(argv, env, None)
    }

    fn exec_with(
        mut self,
        argv: &[&[u8]],
        env: Option<&[&[u8]]>,
        cb: Option<RunCallback>,
    ) -> Result<()> {
        if argv.is_empty() {
            return Err(Error::new(Errno::EINVAL, "exec: argv is empty"));
        }
        if env.is_none() {
            // Nothing else was sent to a process whose fork is held back:
            // its template is asked to spawn the program directly.
            // Detached, it needs no socket either: the process's own end
            // closes with `self`.
            let detached = cb.is_none();
            let sent = self.with_held_fork(|parent| parent.fork_exec(&self.rec, argv, detached));
            if sent.map_err(|e| e.context("exec"))? {
                if let Some(cb) = cb {
                    self.conn.ran_remotely();
                    self.rec.set_run(cb);
                }
                return Ok(());
            }
        }
        if let Some(env) = env {
            self.eval("anyfork_clearenv", &[])?;
            self.eval("anyfork_setenv", env)?;
        }
        for a in argv {
            self.send_arg(a)?;
        }
        self.run_with("anyfork_exec", cb)
    }

    /// Delivers what is queued (and waits for the pids of earlier forks),
    /// then gives up the socket, to be passed to another process and
    /// turned back into a process object there with [`Process::from_fd`].
    pub fn into_fd(self) -> Result<OwnedFd> {
        self.materialize()
            .and_then(|()| self.socket_made(Instant::now() + PID_TIMEOUT))
            .and_then(|()| self.conn.detach(PID_TIMEOUT))
            .map_err(|e| e.context("to_fd"))
    }

    /// Waits (flushing the template's queue) until the fork that makes
    /// this process was written and so its socket exists.
    fn socket_made(&self, deadline: Instant) -> Result<()> {
        let Some(parent) = &self.parent else {
            return Ok(());
        };
        while !self.conn.attached() {
            if let Some(e) = parent.dead() {
                return Err(e);
            }
            parent.pump();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    Errno::ETIMEDOUT,
                    "the template did not take the fork request within 10 s",
                ));
            }
            if !self.conn.attached() {
                parent.poll(left.as_millis().clamp(1, 100) as u16);
            }
        }
        Ok(())
    }

    /// A process object for a socket made by [`Process::into_fd`] in this
    /// or another process. The peer must run as the same user unless
    /// `any_uid`. Its pid and exit are not known here. On failure the fd
    /// is handed back with the error.
    pub fn from_fd(fd: OwnedFd, any_uid: bool) -> std::result::Result<Process, (Error, OwnedFd)> {
        if let Err(e) = check_peer(fd.as_fd(), any_uid) {
            return Err((e, fd));
        }
        // The only failure after this point: the reactor cannot be made.
        if let Err(e) = crate::caller::state::reactor() {
            return Err((e, fd));
        }
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        crate::sys::fd::set_nonblocking(fd.as_fd());
        let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        let p = Process::from_parts(fd, Record::unknown())
            .expect("Conn::new fails only without a reactor, which exists");
        p.conn.assume_forked();
        Ok(p)
    }

    /// The pid. A direct child's is known at once; a forked process's comes
    /// from its template, so this may wait (flushing the template's queue)
    /// up to 10 seconds for the report.
    pub fn pid(&self) -> Result<i32> {
        self.materialize().map_err(|e| e.context("pid"))?;
        let deadline = Instant::now() + PID_TIMEOUT;
        loop {
            if let Some(pid) = self.rec.pid()? {
                return Ok(pid);
            }
            let Some(parent) = &self.parent else {
                return Err(Error::new(Errno::ESRCH, "pid: the process has no pid"));
            };
            parent.pump();
            if let Some(pid) = self.rec.pid()? {
                return Ok(pid);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    Errno::ETIMEDOUT,
                    "pid: the template did not report the fork within 10 s",
                ));
            }
            parent.poll(left.as_millis().clamp(1, 100) as u16);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(parent) = &self.parent {
            if self.unsent.load(Ordering::Acquire) {
                // Nothing was asked of it: the process is never made.
                parent.cancel(&self.rec);
            }
        }
        self.conn.close();
    }
}

/// Checks that `fd` is a connected unix stream socket whose peer runs as
/// our uid (unless `any_uid`). Messages name `fd` as the caller knows it.
pub fn check_peer(fd: BorrowedFd<'_>, any_uid: bool) -> Result<()> {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname, sockopt};
    let n = fd.as_raw_fd();
    let ty = nix::sys::socket::getsockopt(&fd, sockopt::SockType).map_err(|e| match e {
        Errno::ENOTSOCK => Error::new(e, format!("fd {n} is not a socket")),
        e => Error::sys(e, format_args!("fd {n}: reading its socket type")),
    })?;
    let family = getsockname::<SockaddrStorage>(n)
        .ok()
        .and_then(|a| a.family());
    if family != Some(AddressFamily::Unix) {
        return Err(Error::new(
            Errno::EAFNOSUPPORT,
            format!("fd {n} is not a unix socket"),
        ));
    }
    if ty != nix::sys::socket::SockType::Stream {
        return Err(Error::new(
            Errno::EINVAL,
            format!("fd {n} is not a stream socket"),
        ));
    }
    let cred = nix::sys::socket::getsockopt(&fd, sockopt::PeerCredentials)
        .map_err(|e| Error::sys(e, format_args!("fd {n}: reading its peer's credentials")))?;
    if cred.pid() == 0 {
        return Err(Error::new(
            Errno::ENOTCONN,
            format!("fd {n} is not connected to a process"),
        ));
    }
    let me = nix::unistd::getuid().as_raw();
    if !any_uid && cred.uid() != me {
        return Err(Error::new(
            Errno::EPERM,
            format!(
                "the peer of fd {n} runs as uid {}, not {me} (pass FORK_FROM_FD_ANY_UID to allow)",
                cred.uid()
            ),
        ));
    }
    Ok(())
}

fn check_name<'a>(call: &str, what: &str, name: &'a str) -> Result<&'a [u8]> {
    if name.is_empty() {
        return Err(Error::new(
            Errno::EINVAL,
            format!("{call}: the {what} name is empty"),
        ));
    }
    if name.contains('\0') {
        return Err(Error::new(
            Errno::EINVAL,
            format!("{call}: the {what} name {name:?} contains a NUL byte"),
        ));
    }
    if name.len() > MAX_NAME {
        return Err(Error::new(
            Errno::ENAMETOOLONG,
            format!("{call}: the {what} name is longer than {MAX_NAME} bytes"),
        ));
    }
    Ok(name.as_bytes())
}
