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
//!
//! The library notices a fork by itself: a `pthread_atfork` child handler
//! (registered with the first reactor) sets a flag, from which on objects
//! of the parent count as foreign at once, and the next call into the
//! library resets ([`check_fork`]). `fork_reset_after_fork` does the same
//! explicitly (for a child made by a raw `clone` or `_Fork`, which run no
//! fork handlers).

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};

use super::process::Process;
use super::reactor::Reactor;
use crate::error::Result;

struct Library {
    /// The generation; it changes with every [`reset`].
    epoch: AtomicU64,
    /// Set in the child of a fork (a `pthread_atfork` handler); cleared by
    /// [`reset`]. While set, [`epoch`] is already the next generation.
    forked: AtomicBool,
    /// The fds of objects from before the reset were closed wholesale.
    fds_gone: AtomicBool,
    /// The reactor, created on first use. Reactors are never freed: one
    /// abandoned by [`reset`] closes its fds and is leaked, because a
    /// dispatch that was running when the program forked (a callback that
    /// forks) may still hold a reference to it in the child.
    reactor: AtomicPtr<Reactor>,
    /// The default template of `fork_new`.
    default_template: Mutex<Option<Process>>,
    /// The early template, once `fork_early` ran.
    early_template: Mutex<Option<Process>>,
    /// Where `anyfork-serve` was found.
    serve_path: OnceLock<CString>,
    /// Reactors abandoned by [`reset`], kept reachable (they are never
    /// freed, and a leak checker should not call them lost).
    abandoned: Mutex<Vec<&'static Reactor>>,
}

static LIB: Library = Library {
    epoch: AtomicU64::new(0),
    forked: AtomicBool::new(false),
    fds_gone: AtomicBool::new(false),
    reactor: AtomicPtr::new(std::ptr::null_mut()),
    default_template: Mutex::new(None),
    early_template: Mutex::new(None),
    serve_path: OnceLock::new(),
    abandoned: Mutex::new(Vec::new()),
};

/// Locks `m`, whatever a panicking holder left.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reactor, created on first use.
pub fn reactor() -> Result<&'static Reactor> {
    check_fork();
    let p = LIB.reactor.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: reactors are never freed (see `Library::reactor`).
        return Ok(unsafe { &*p });
    }
    let new = Box::into_raw(Box::new(Reactor::create()?));
    match LIB.reactor.compare_exchange(
        std::ptr::null_mut(),
        new,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            watch_forks();
            // SAFETY: just stored; never freed.
            Ok(unsafe { &*new })
        }
        Err(won) => {
            // SAFETY: `new` was never shared; `won` is never freed.
            drop(unsafe { Box::from_raw(new) });
            Ok(unsafe { &*won })
        }
    }
}

/// Registers the fork handler once per process image: done when complete.
static WATCHING_FORKS: Once = Once::new();

/// Whether this copy of the library registered its fork handler (it does
/// with the first reactor): a server that hosts code using the caller's
/// side must then fork with glibc's `fork`, which runs it.
pub fn watches_forks() -> bool {
    WATCHING_FORKS.is_completed()
}

/// Registers the fork handler, once per process image.
fn watch_forks() {
    extern "C" fn in_child() {
        // Async-signal-safe: one atomic store.
        LIB.forked.store(true, Ordering::Release);
    }
    WATCHING_FORKS.call_once(|| {
        // SAFETY: registers a handler that only stores to an atomic. If it
        // cannot be registered (ENOMEM), forks are only noticed through
        // fork_reset_after_fork, as before.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
}

/// In the child of a fork that did not reset yet: resets now. Called where
/// the library is entered (the C boundary, constructors, the reactor).
pub fn check_fork() {
    if LIB.forked.load(Ordering::Acquire) {
        reset();
    }
}

/// The reactor if one was created.
pub fn reactor_if_any() -> Option<&'static Reactor> {
    check_fork();
    let p = LIB.reactor.load(Ordering::Acquire);
    // SAFETY: as in `reactor`.
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The default template's slot.
pub fn default_template() -> MutexGuard<'static, Option<Process>> {
    check_fork();
    lock(&LIB.default_template)
}

/// The early template's slot.
pub fn early_template() -> MutexGuard<'static, Option<Process>> {
    check_fork();
    lock(&LIB.early_template)
}

/// Where `anyfork-serve` was found, once it was.
pub fn serve_path() -> &'static OnceLock<CString> {
    &LIB.serve_path
}

/// The current generation: in a forked child that did not reset yet,
/// already the next one, so the parent's objects are foreign at once.
pub fn epoch() -> u64 {
    LIB.epoch.load(Ordering::Acquire) + u64::from(LIB.forked.load(Ordering::Acquire))
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

/// Drops everything inherited from the parent (see the module docs). In
/// the process that owns the state (no fork happened) it changes nothing
/// but the generation: that process's own objects then refuse commands.
pub fn reset() {
    // The new generation is the one `epoch` already gave since the fork.
    LIB.epoch.fetch_add(1, Ordering::AcqRel);
    LIB.forked.store(false, Ordering::Release);
    let p = LIB.reactor.swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: reactors are never freed (see `Library::reactor`).
        let old: &'static Reactor = unsafe { &*p };
        old.abandon();
        if let Ok(mut v) = LIB.abandoned.try_lock() {
            v.push(old);
        }
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
