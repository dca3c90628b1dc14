//! Using anyfork in a child that the caller forked itself.
//!
//! A forked child inherits copies of the library's fds and state: the
//! parent's templates, queues and callbacks. [`reset`] closes the child's
//! copies of those fds (so the parent's templates still see EOF when the
//! parent goes) and forgets the state without running any of the parent's
//! callbacks; the next call creates the child's own reactor and template.
//! Objects from before the reset refuse every command with `EBADF`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static EPOCH: AtomicU64 = AtomicU64::new(0);
static FDS_GONE: AtomicBool = AtomicBool::new(false);

/// Says that the fds of objects from before the reset were closed
/// wholesale (a template copy closes every fd it does not serve), so
/// dropping such an object must not close its fd number again.
pub fn forget_inherited_fds() {
    FDS_GONE.store(true, Ordering::Release);
}

/// True after [`forget_inherited_fds`].
pub fn inherited_fds_gone() -> bool {
    FDS_GONE.load(Ordering::Acquire)
}

/// The current generation; it changes with every [`reset`].
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Drops everything inherited from the parent (see the module docs).
pub fn reset() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
    crate::reactor::Reactor::abandon();
    crate::direct::abandon_fallback();
    crate::template::forget_default();
    crate::spawn::forget_early();
}
