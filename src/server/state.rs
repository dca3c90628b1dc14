//! The per-process state of the server side, in one place: the socket
//! this process serves, its dispatcher and fork hook, the arguments
//! published to eval and run functions, and what the builtins asked for.
//!
//! A forked process starts with a copy of it; the server resets what
//! belongs to the template (see `Server::forget_parent`).

use std::ffi::c_void;
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use super::args::ForkArg;
use super::call::DispatchFn;

/// A fork hook: forks as `fork(2)` does, given its userdata.
pub type ForkHookFn = unsafe extern "C" fn(userdata: *mut c_void) -> libc::pid_t;

/// A dispatcher and its userdata.
#[derive(Clone, Copy)]
pub struct Dispatcher(pub DispatchFn, pub *mut c_void);
// SAFETY: the userdata pointer is only handed back to the dispatcher, in
// the process that set it; the library never dereferences it.
unsafe impl Send for Dispatcher {}

struct State {
    /// The socket this process serves (for `die`); -1 when none.
    comm: AtomicI32,
    dispatch: Mutex<Option<Dispatcher>>,
    /// The arguments received so far, while an eval or run function runs.
    args: AtomicPtr<ForkArg>,
    nargs: AtomicUsize,
    /// Fds (bit N = fd N) that `anyfork_exec` makes copies of the comm
    /// socket (`anyfork_comm_fd`).
    comm_fds: AtomicU64,
    /// The pool size the last `anyfork_warm` asked for, not yet taken
    /// (`usize::MAX`: none).
    warm: AtomicUsize,
    /// The fork hook (a `ForkHookFn`, or null) and its userdata. Two
    /// atomics, not a lock: a child forked while another thread held a
    /// lock must still be able to fork.
    hook: AtomicPtr<c_void>,
    hook_data: AtomicPtr<c_void>,
}

static STATE: State = State {
    comm: AtomicI32::new(-1),
    dispatch: Mutex::new(None),
    args: AtomicPtr::new(std::ptr::null_mut()),
    nargs: AtomicUsize::new(0),
    comm_fds: AtomicU64::new(0),
    warm: AtomicUsize::new(usize::MAX),
    hook: AtomicPtr::new(std::ptr::null_mut()),
    hook_data: AtomicPtr::new(std::ptr::null_mut()),
};

/// Records the socket this process serves.
pub fn set_comm(fd: RawFd) {
    STATE.comm.store(fd, Ordering::Relaxed);
}

/// The socket this process serves, or -1.
pub fn comm() -> RawFd {
    STATE.comm.load(Ordering::Relaxed)
}

/// Sets (or with `None` clears) the dispatcher of this process.
pub fn set_dispatch(d: Option<Dispatcher>) {
    *STATE.dispatch.lock().unwrap_or_else(|p| p.into_inner()) = d;
}

/// The dispatcher, if one is set.
pub fn dispatcher() -> Option<Dispatcher> {
    *STATE.dispatch.lock().unwrap_or_else(|p| p.into_inner())
}

/// Publishes the arguments received so far for [`current_args`]; the
/// array must stay alive until it is replaced (it does: the process exits
/// before the server frees it).
pub fn publish_args(v: &[ForkArg]) {
    STATE.args.store(v.as_ptr().cast_mut(), Ordering::Release);
    STATE.nargs.store(v.len(), Ordering::Release);
}

/// The fds and strings this process received so far, in order (inside an
/// eval or run function); NULL and 0 elsewhere.
pub fn current_args() -> (*const ForkArg, usize) {
    (
        STATE.args.load(Ordering::Acquire),
        STATE.nargs.load(Ordering::Acquire),
    )
}

/// Adds fd `n` to those that get a copy of the comm socket.
pub fn add_comm_fd(n: u32) {
    STATE.comm_fds.fetch_or(1 << n, Ordering::Relaxed);
}

/// The fds (bit N = fd N) that `anyfork_comm_fd` asked for so far.
pub fn comm_fds() -> u64 {
    STATE.comm_fds.load(Ordering::Relaxed)
}

/// Asks the server for a warm pool of `k` children.
pub fn request_warm(k: usize) {
    STATE.warm.store(k, Ordering::Release);
}

/// Takes the pool size an `anyfork_warm` eval just asked for.
pub fn take_warm() -> Option<usize> {
    match STATE.warm.swap(usize::MAX, Ordering::AcqRel) {
        usize::MAX => None,
        k => Some(k),
    }
}

/// Sets (or with `None` clears) the fork hook of this process.
pub fn set_fork_hook(f: Option<ForkHookFn>, userdata: *mut c_void) {
    STATE.hook.store(std::ptr::null_mut(), Ordering::Release);
    STATE.hook_data.store(userdata, Ordering::Release);
    if let Some(f) = f {
        STATE.hook.store(f as *mut c_void, Ordering::Release);
    }
}

/// True when a fork hook is set.
pub fn has_fork_hook() -> bool {
    !STATE.hook.load(Ordering::Acquire).is_null()
}

/// Forks through the fork hook if one is set, else with `fallback`: the
/// child's 0, the parent's pid, or -1 with errno set (EIO when the hook
/// failed without setting it).
///
/// # Safety
/// As `fork(2)`: the caller must be able to continue in the child (one
/// thread, or locks that fork handlers take care of).
pub unsafe fn fork_with(fallback: crate::sys::proc::ForkFn) -> libc::pid_t {
    let f = STATE.hook.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: per this function's contract.
        return unsafe { fallback() };
    }
    // SAFETY: only `set_fork_hook` stores here, and only a `ForkHookFn`.
    let f = unsafe { std::mem::transmute::<*mut c_void, ForkHookFn>(f) };
    let ud = STATE.hook_data.load(Ordering::Acquire);
    nix::errno::Errno::clear();
    // SAFETY: the hook's contract (fork_set_fork_hook): it forks as
    // fork(2) does.
    let pid = unsafe { f(ud) };
    if pid < 0 {
        // Errno 0 reads back as EIO (`last_errno`); keep that visible.
        return -1;
    }
    pid
}
