//! What the caller knows about one process: its pid, its exit status, and
//! the run and exit callbacks waiting for them.
//!
//! A record is shared between the process's own connection (which learns
//! when all commands are written) and the connection of the template that
//! forked it (which learns the pid and, later, the exit status). Each
//! callback is handed to the reactor exactly once, from whichever side
//! completes it; a record dropped with a callback still waiting hands it an
//! error, so no callback is ever lost.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};

use super::reactor::Reactor;
use crate::error::{Errno, Error, Result};

/// Called once the process has everything (`Ok` with the comm socket) or
/// can no longer get it (`Err`).
pub type RunCallback = Box<dyn FnOnce(Result<OwnedFd>) + Send>;
/// Called once with the pid and the wait status (`Err` when unknowable).
pub type ExitCallback = Box<dyn FnOnce(i32, Result<i32>) + Send>;

enum Pid {
    /// A template will report it.
    Pending,
    Known(i32),
    /// Nobody will report it (a process object received from elsewhere).
    Unknown,
    Failed(Error),
}

struct State {
    /// The generation it was made in; see [`super::state`].
    epoch: u64,
    /// The request that creates the process has left this process (always
    /// true but for forks still queued for their template).
    made: bool,
    pid: Pid,
    run: Option<RunCallback>,
    /// Run without a callback: the socket is closed once written.
    detached: bool,
    run_error: Option<Error>,
    sock: Option<OwnedFd>,
    exit: Option<ExitCallback>,
    status: Option<Result<i32>>,
}

/// The shared record of one process.
pub struct Record {
    st: Mutex<State>,
}

impl Record {
    fn with(pid: Pid, status: Option<Result<i32>>) -> Arc<Record> {
        Arc::new(Record {
            st: Mutex::new(State {
                epoch: super::state::epoch(),
                made: !matches!(pid, Pid::Pending),
                pid,
                run: None,
                detached: false,
                run_error: None,
                sock: None,
                exit: None,
                status,
            }),
        })
    }

    /// A direct child's record: its pid is known.
    pub fn direct(pid: i32) -> Arc<Record> {
        Record::with(Pid::Known(pid), None)
    }

    /// A forked process's record: its template will report the pid.
    pub fn forked() -> Arc<Record> {
        Record::with(Pid::Pending, None)
    }

    /// The record of a process whose pid and exit nobody will report.
    pub fn unknown() -> Arc<Record> {
        let e = Error::new(
            Errno::ESRCH,
            "the pid and exit of a process object received with fork_from_fd are not known",
        );
        Record::with(Pid::Unknown, Some(Err(e)))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pid: `Ok(None)` while the template has not reported it yet.
    pub fn pid(&self) -> Result<Option<i32>> {
        match &self.lock().pid {
            Pid::Pending => Ok(None),
            Pid::Known(p) => Ok(Some(*p)),
            Pid::Unknown => Err(Error::new(
                Errno::ESRCH,
                "the pid of a process object received with fork_from_fd is not known",
            )),
            Pid::Failed(e) => Err(e.clone()),
        }
    }

    /// The template reported the fork: a pid, or why there is no process.
    pub fn set_pid(&self, pid: Result<i32>) {
        let mut st = self.lock();
        if !matches!(st.pid, Pid::Pending) {
            return;
        }
        match pid {
            Ok(p) => st.pid = Pid::Known(p),
            Err(e) => {
                st.status = Some(Err(e.clone()));
                st.pid = Pid::Failed(e);
            }
        }
        poke(&mut st);
    }

    /// The fork request was written to the template's socket.
    pub fn fork_sent(&self) {
        let mut st = self.lock();
        st.made = true;
        poke(&mut st);
    }

    /// Registers the run callback.
    pub fn set_run(&self, cb: RunCallback) {
        let mut st = self.lock();
        expect();
        st.run = Some(cb);
        poke(&mut st);
    }

    /// Run without a callback: the library closes the socket as soon as the
    /// process's own commands are written (no pid confirmation, no
    /// dispatch needed).
    pub fn set_run_detached(&self) {
        let mut st = self.lock();
        expect();
        st.detached = true;
        poke(&mut st);
    }

    /// Registers the exit callback; a second one replaces the first, which
    /// then runs at once with `ECANCELED` (so its userdata can be freed).
    pub fn set_exit(&self, cb: ExitCallback) {
        let mut st = self.lock();
        expect();
        if let Some(old) = st.exit.replace(cb) {
            let e = Error::new(Errno::ECANCELED, "replaced by a later exit callback");
            schedule(Box::new(move || old(-1, Err(e))));
        }
        poke(&mut st);
    }

    /// All commands are written: the comm socket is the user's once the pid
    /// is confirmed.
    pub fn sock_ready(&self, fd: OwnedFd) {
        let mut st = self.lock();
        st.sock = Some(fd);
        poke(&mut st);
    }

    /// The commands can no longer reach the process.
    pub fn fail_run(&self, e: Error) {
        let mut st = self.lock();
        st.run_error.get_or_insert(e);
        st.sock = None;
        poke(&mut st);
    }

    /// The exit status is known (or can no longer be).
    pub fn set_status(&self, status: Result<i32>) {
        let mut st = self.lock();
        if st.status.is_none() {
            st.status = Some(status);
        }
        poke(&mut st);
    }
}

fn expect() {
    if let Ok(r) = Reactor::get() {
        r.expect_callback();
    }
}

fn unexpect() {
    if let Ok(r) = Reactor::get() {
        r.cancel_callback();
    }
}

/// Hands every callback that can complete now to the reactor. Callbacks
/// of a parent process, inherited across fork, are dropped uncalled.
fn poke(st: &mut State) {
    if st.epoch != super::state::epoch() {
        st.run = None;
        st.exit = None;
        return;
    }
    let failed = st.run_error.is_some() || matches!(st.pid, Pid::Failed(_));
    // A detached process's socket closes as soon as its own commands are
    // written: the bytes stay readable for the process, and the fork
    // request (if still queued for its template) needs no socket of ours.
    if st.detached && (st.sock.is_some() || failed) {
        st.detached = false;
        st.sock = None;
        unexpect();
    }
    if st.run.is_some() {
        let outcome = if let Some(e) = &st.run_error {
            Some(Err(e.clone()))
        } else if let Pid::Failed(e) = &st.pid {
            Some(Err(e.clone()))
        } else if st.made && st.sock.is_some() {
            // The run does not wait for the template's pid report: a fork
            // that fails after its request left shows as EOF on the comm
            // socket, and the exit callback gets the error.
            st.sock.take().map(Ok)
        } else {
            None
        };
        if let Some(outcome) = outcome {
            let cb = st.run.take().expect("checked above");
            st.sock = None;
            schedule(Box::new(move || cb(outcome)));
        }
    }
    if st.exit.is_some() && st.status.is_some() {
        let cb = st.exit.take().expect("checked above");
        let status = st.status.clone().expect("checked above");
        let pid = match st.pid {
            Pid::Known(p) => p,
            _ => -1,
        };
        schedule(Box::new(move || cb(pid, status)));
    }
}

fn schedule(cb: Box<dyn FnOnce() + Send>) {
    if let Ok(r) = Reactor::get() {
        r.schedule(cb);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let st = self.st.get_mut().unwrap_or_else(|p| p.into_inner());
        let gone = || {
            Error::new(
                Errno::ECANCELED,
                "the process record was dropped before it completed",
            )
        };
        if st.run.is_some() {
            st.run_error.get_or_insert_with(gone);
        }
        if st.exit.is_some() && st.status.is_none() {
            st.status = Some(Err(gone()));
        }
        poke(st);
    }
}
