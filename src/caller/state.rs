//! The library-wide state of the caller side, in one place: the reactor,
//! the default and early templates, the generation, and where
//! `anyfork-serve` was found; and the one reset, for a child the caller
//! forked itself.
//!
//! A forked child inherits copies of the library's fds and state: the
//! parent's templates, queues and callbacks. [`reset`] closes the child's
//! copies of those fds (so the parent's templates still see EOF when the
//! parent goes) and forgets the state without running any of the parent's
//! callbacks; the next call creates the child's own reactor and template.
//! Objects from before the reset refuse every command with `EBADF`.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::process::Process;
use super::reactor::Reactor;
use crate::error::Result;

struct Library {
    /// The generation; it changes with every [`reset`].
    epoch: AtomicU64,
    /// The fds of objects from before the reset were closed wholesale.
    fds_gone: AtomicBool,
    /// The reactor, created on first use; reactors are leaked, never freed
    /// (but in [`reset`], where no other thread exists).
    reactor: AtomicPtr<Reactor>,
    /// The default template of `fork_new`.
    default_template: Mutex<Option<Process>>,
    /// The early template, once `fork_early` ran.
    early_template: Mutex<Option<Process>>,
    /// Where `anyfork-serve` was found.
    serve_path: OnceLock<CString>,
}

static LIB: Library = Library {
    epoch: AtomicU64::new(0),
    fds_gone: AtomicBool::new(false),
    reactor: AtomicPtr::new(std::ptr::null_mut()),
    default_template: Mutex::new(None),
    early_template: Mutex::new(None),
    serve_path: OnceLock::new(),
};

/// Locks `m`, whatever a panicking holder left.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reactor, created on first use.
pub fn reactor() -> Result<&'static Reactor> {
    let p = LIB.reactor.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: reactors are freed only by `reset`, in a process with one
        // thread and no reference to it live.
        return Ok(unsafe { &*p });
    }
    let new = Box::into_raw(Box::new(Reactor::create()?));
    match LIB.reactor.compare_exchange(
        std::ptr::null_mut(),
        new,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: just stored; freed only as above.
        Ok(_) => Ok(unsafe { &*new }),
        Err(won) => {
            // SAFETY: `new` was never shared; `won` lives as above.
            drop(unsafe { Box::from_raw(new) });
            Ok(unsafe { &*won })
        }
    }
}

/// The reactor if one was created.
pub fn reactor_if_any() -> Option<&'static Reactor> {
    let p = LIB.reactor.load(Ordering::Acquire);
    // SAFETY: as in `reactor`.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The default template's slot.
pub fn default_template() -> MutexGuard<'static, Option<Process>> {
    lock(&LIB.default_template)
}

/// The early template's slot.
pub fn early_template() -> MutexGuard<'static, Option<Process>> {
    lock(&LIB.early_template)
}

/// Where `anyfork-serve` was found, once it was.
pub fn serve_path() -> &'static OnceLock<CString> {
    &LIB.serve_path
}

/// The current generation.
pub fn epoch() -> u64 {
    LIB.epoch.load(Ordering::Acquire)
}

/// Says that the fds of objects from before the reset were closed
/// wholesale (a template copy closes every fd it does not serve), so
/// dropping such an object must not close its fd number again.
pub fn forget_inherited_fds() {
    LIB.fds_gone.store(true, Ordering::Release);
}

/// True after [`forget_inherited_fds`].
pub fn inherited_fds_gone() -> bool {
    LIB.fds_gone.load(Ordering::Acquire)
}

/// Drops everything inherited from the parent (see the module docs).
///
/// # Safety
/// Only in a forked child, before it starts threads: another thread
/// holding a reference to the reactor would see it freed.
pub unsafe fn reset() {
    LIB.epoch.fetch_add(1, Ordering::AcqRel);
    let p = LIB.reactor.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: per the contract, no reference to the old reactor is
        // live: the box can be taken back and freed.
        let old = unsafe { Box::from_raw(p) };
        old.abandon();
    }
    // So do those of every other connection, the ones only the program's
    // handles hold included.
    super::conn::Conn::abandon_all();
    // Only our copies of the templates' sockets close (see `Conn::close`:
    // objects of an older generation are abandoned, not flushed). A lock
    // another thread held at the fork stays locked in the child: such a
    // slot is left as it is.
    for slot in [&LIB.default_template, &LIB.early_template] {
        if let Ok(mut s) = slot.try_lock() {
            drop(s.take());
        }
    }
}
