//! Raw process calls: pidfds and glibc's handler-free `_Fork`.

use std::os::fd::{FromRawFd, OwnedFd};

/// A pidfd of `pid` (Linux 5.3 and later; close-on-exec from birth), or
/// `None` where the kernel has none.
pub fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh fd that nothing else owns.
    let fd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })?;
    super::fd::above_stdio(fd).ok()
}

/// A function that forks, as `fork(2)` does.
pub type ForkFn = unsafe extern "C" fn() -> libc::pid_t;

/// glibc's `_Fork` (2.34 and later): fork without running fork handlers,
/// looked up at run time so that an older libc still gets `fork`.
pub fn bare_fork() -> Option<ForkFn> {
    let p = super::dl::symbol(c"_Fork")?;
    // SAFETY: glibc's `_Fork` has exactly this signature.
    Some(unsafe { std::mem::transmute::<*mut libc::c_void, ForkFn>(p) })
}

/// `waitpid(pid, WNOHANG)` (`pid` -1: any child) with the raw wait status,
/// which the protocol carries as it is: `Ok(None)` while the child runs.
/// (nix decodes the status and cannot give it back whole.)
pub fn reap(pid: libc::pid_t) -> Result<Option<(libc::pid_t, libc::c_int)>, nix::Error> {
    let mut status = 0;
    // SAFETY: waitpid with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match r {
        0 => Ok(None),
        r if r > 0 => Ok(Some((r, status))),
        _ => Err(crate::error::last_errno()),
    }
}

/// Waits for `pid`, a child of ours that is exiting, and forgets its
/// status.
pub fn reap_blocking(pid: libc::pid_t) {
    // SAFETY: waitpid with a NULL status pointer is allowed.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}
