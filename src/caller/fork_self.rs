//! Forking the caller itself: `fork_template` (the copy serves as a
//! template that can run the program's own functions) and `fork_early`
//! (that copy replaces exec'd servers from then on). The only places the
//! library forks the caller, and only because the caller asks.

use std::os::fd::AsRawFd;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::ForkResult;

use super::launch::pair;
use super::process::Process;
use super::state;
use crate::error::{Error, Result};
use crate::server::entry::{ServeOptions, serve};

impl Process {
    /// Forks the calling program now: the copy closes every fd but 0, 1, 2
    /// and its socket, forgets the library state it inherited, and serves
    /// as a template whose processes can run the program's own functions.
    ///
    /// # Safety
    /// The caller must have one thread: the copy has only the calling
    /// thread, and locks that others held (in libc, in the library, in the
    /// program) would stay locked in it for ever.
    pub unsafe fn template() -> Result<Process> {
        let (ours, theirs) = pair("creating the template's socket (socketpair)")?;
        // SAFETY: per this function's contract, the process has one thread,
        // so the child may run anything.
        let pid = match unsafe { nix::unistd::fork() } {
            Err(e) => return Err(Error::sys(e, "fork")),
            Ok(ForkResult::Child) => {
                drop(ours);
                state::reset();
                let fd = theirs.as_raw_fd();
                crate::sys::fd::close_others(fd);
                // Handles inherited from the caller now name closed (soon
                // reused) fd numbers: dropping one must not close anything.
                state::forget_inherited_fds();
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
            Ok(ForkResult::Parent { child }) => child.as_raw(),
        };
        drop(theirs);
        Process::direct_child(ours, pid)
    }
}

/// Forks the caller as the template that later `new_exec` calls (and so
/// the default template) fork instead of exec'ing `anyfork-serve`.
///
/// # Safety
/// As for [`Process::template`]: the caller has one thread.
pub unsafe fn early() -> Result<()> {
    // SAFETY: per this function's contract.
    let t = unsafe { Process::template() }?;
    *state::early_template() = Some(t);
    Ok(())
}
