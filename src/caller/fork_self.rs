//! Forking the caller itself: `fork_template` (the copy serves as a
//! template that can run the program's own functions) and `fork_early`
//! (that copy replaces exec'd servers from then on). The only places the
//! library forks the caller, and only because the caller asks.

use std::os::fd::AsRawFd;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::launch::pair;
use super::process::Process;
use super::state;
use crate::error::{Error, Result};
use crate::server::entry::{ServeOptions, serve};

impl Process {
    /// Forks the calling program now: the copy closes every fd but 0, 1, 2
    /// and its socket, forgets the library state it inherited, and serves
    /// as a template whose processes can run the program's own functions.
    /// [`Process::template_with`] with `keep_fds` false.
    ///
    /// # Safety
    /// The caller must have one thread: the copy has only the calling
    /// thread, and locks that others held (in libc, in the library, in the
    /// program) would stay locked in it for ever.
    pub unsafe fn template() -> Result<Process> {
        // SAFETY: the same contract.
        unsafe { Process::template_with(false) }
    }

    /// [`Process::template`], choosing what happens to the caller's fds in
    /// the copy. With `keep_fds` false every fd but 0, 1, 2 and the copy's
    /// socket closes. With `keep_fds` true the program's own fds stay open
    /// in the copy and in every process forked from it, at the same
    /// numbers (a log file an interpreter opened keeps working there);
    /// only the library's fds close (its sockets, loop fd, eventfds,
    /// pidfds, and those of handles the caller holds).
    ///
    /// Either way, a standard fd the caller has closed is `/dev/null` in
    /// the copy, so nothing written to stdout or stderr there (by the
    /// template, or a process that inherits them) reaches a socket.
    ///
    /// # Safety
    /// As for [`Process::template`]: the caller has one thread.
    pub unsafe fn template_with(keep_fds: bool) -> Result<Process> {
        let (ours, theirs) = pair("creating the template's socket (socketpair)")?;
        // SAFETY: per this function's contract, the process has one thread,
        // so the child may run anything.
        // (Through the fork hook, when the program set one.)
        let pid = match unsafe { crate::server::state::fork_with(libc::fork) } {
            -1 => return Err(Error::sys(crate::error::last_errno(), "fork")),
            0 => {
                drop(ours);
                // Closes the fds of the library's state (sockets, loop,
                // pidfds).
                state::reset();
                let fd = theirs.as_raw_fd();
                if !keep_fds {
                    crate::sys::fd::close_others(fd);
                    // Handles inherited from the caller now name closed
                    // (soon reused) fd numbers: dropping one must not close
                    // anything.
                    state::forget_inherited_fds();
                }
                stdio_or_dev_null();
                let _ = fcntl(&theirs, FcntlArg::F_SETFL(OFlag::empty()));
                let _ = nix::sys::prctl::set_name(c"anyfork-tmpl");
                serve(
                    theirs,
                    ServeOptions {
                        expect_hello: false,
                        scan_signals: true,
                        threaded: false,
                    },
                );
            }
            child => child,
        };
        drop(theirs);
        Process::direct_child(ours, pid)
    }
}

/// In a copy of the caller: opens `/dev/null` on each of fds 0, 1 and 2
/// that is closed (the caller is a daemon), so that neither the template's
/// complaints nor a process's output land in a socket that takes the
/// number later. A failure leaves the fd closed, as the caller had it.
fn stdio_or_dev_null() {
    for k in 0..=2 {
        if crate::sys::fd::is_open(k) {
            continue;
        }
        let Ok(null) = nix::fcntl::open(c"/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())
        else {
            return;
        };
        if null.as_raw_fd() != k {
            // SAFETY: dup2 onto a closed standard fd of this process; the
            // duplicate is owned by no Rust object, as 0, 1 and 2 never are.
            unsafe { libc::dup2(null.as_raw_fd(), k) };
        } else {
            // The lowest free fd was `k` itself: keep it open.
            let _ = std::os::fd::IntoRawFd::into_raw_fd(null);
        }
    }
}

/// Forks the caller as the template that later `new_exec` calls (and so
/// the default template) fork instead of exec'ing `anyfork-serve`.
///
/// # Safety
/// As for [`Process::template`]: the caller has one thread.
pub unsafe fn early() -> Result<()> {
    // SAFETY: per this function's contract.
    unsafe { early_with(false) }
}

/// [`early`], with `keep_fds` as for [`Process::template_with`].
///
/// # Safety
/// As for [`Process::template`]: the caller has one thread.
pub unsafe fn early_with(keep_fds: bool) -> Result<()> {
    // SAFETY: per this function's contract.
    let t = unsafe { Process::template_with(keep_fds) }?;
    *state::early_template() = Some(t);
    Ok(())
}
