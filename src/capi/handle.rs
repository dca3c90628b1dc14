//! Handles: a `fork_proc *` is a boxed process object; borrowed by the
//! calls that keep it, taken by the calls that consume it.

use crate::caller::process::Process;
use crate::error::{Errno, Error, Result};

/// A process that has not entered its run function yet (opaque).
///
/// Created by `fork_new`, `fork_new_exec` or `fork_fork`; ended by
/// `fork_run` (which consumes it) or `fork_free`. One thread at a time may
/// use a given `fork_proc`; different ones may be used by different threads.
pub struct fork_proc {
    p: Process,
}

/// A new handle that owns `p`.
pub fn boxed(p: Process) -> *mut fork_proc {
    Box::into_raw(Box::new(fork_proc { p }))
}

fn null() -> Error {
    Error::new(Errno::EINVAL, "the process is NULL")
}

/// The process behind a handle the call keeps, or `EINVAL` for NULL.
///
/// # Safety
/// `h` is NULL or a live handle from this library, not used by another
/// thread meanwhile.
pub unsafe fn borrow<'a>(h: *const fork_proc) -> Result<&'a Process> {
    // SAFETY: per the contract above.
    unsafe { h.as_ref() }.map(|h| &h.p).ok_or_else(null)
}

/// Like [`borrow`], mutably.
///
/// # Safety
/// As for [`borrow`].
pub unsafe fn borrow_mut<'a>(h: *mut fork_proc) -> Result<&'a mut Process> {
    // SAFETY: per the contract above.
    unsafe { h.as_mut() }.map(|h| &mut h.p).ok_or_else(null)
}

/// The process behind a handle the call consumes (freeing the handle), or
/// `EINVAL` for NULL.
///
/// # Safety
/// `h` is NULL or a live handle from this library, never used again.
pub unsafe fn take(h: *mut fork_proc) -> Result<Process> {
    if h.is_null() {
        return Err(null());
    }
    // SAFETY: a live handle, consumed here whatever happens next.
    Ok(unsafe { Box::from_raw(h) }.p)
}
