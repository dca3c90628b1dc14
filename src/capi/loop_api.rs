//! The loop fd, dispatch, and wait.

use std::ffi::c_int;

/// The one fd a program's event loop watches for the whole library: it is
/// readable exactly while `fork_loop_dispatch` has work (bytes a socket
/// now takes, reports to read, a direct child to reap, callbacks due).
///
/// Watch it level-triggered (`ev_io`, `uv_poll_t`, `EPOLLIN` without
/// `EPOLLET`) and call `fork_loop_dispatch` whenever it is readable.
/// Edge-triggered watchers work only if each wake-up dispatches until
/// `fork_loop_dispatch` returns 0 and the fd is no longer readable. The fd
/// belongs to the library: do not read it or close it.
///
/// Returns the fd (the same for the life of the process), or `-errno`
/// with `fork_last_error()` set. Any thread may call.
#[unsafe(no_mangle)]
pub extern "C" fn fork_loop_fd() -> c_int {
    ffi!(fork_loop_fd, crate::loop_fd())
}

/// Does all the work that can be done now without blocking, then runs the
/// run and exit callbacks that were due when it started, on this thread
/// and with no library lock held. Callbacks may call any anyfork function,
/// including creating and running processes and dispatching again; what
/// they make due runs in a later dispatch.
///
/// Returns the number of callbacks run, or `-errno` with
/// `fork_last_error()` set. Any thread may call; callbacks run on the
/// thread that dispatches.
#[unsafe(no_mangle)]
pub extern "C" fn fork_loop_dispatch() -> c_int {
    ffi!(fork_loop_dispatch, {
        crate::dispatch().map(|n| n.min(c_int::MAX as usize) as c_int)
    })
}

/// For programs without an event loop: dispatches and waits on the loop fd
/// until at least one callback ran, `timeout_ms` passed (-1: no limit), or
/// no run or exit callback is waiting at all.
///
/// Returns the number of callbacks run (0: timeout, or nothing waits), or
/// `-errno` with `fork_last_error()` set. `while (fork_wait(-1) > 0) ;`
/// waits for everything. Any thread may call.
///
/// While RPC replies are awaited, the waiting thread first polls the loop
/// fd without blocking, yielding its CPU between looks, for up to 50 µs
/// (`ANYFORK_SPIN_US` sets the microseconds, 0 turns it off): a worker on
/// another CPU usually answers within that time, and a thread that is
/// still looking needs no cross-CPU wake-up, which costs more than the
/// round trip itself. `fork_loop_dispatch` never spins.
#[unsafe(no_mangle)]
pub extern "C" fn fork_wait(timeout_ms: c_int) -> c_int {
    ffi!(fork_wait, {
        crate::wait(timeout_ms).map(|n| n.min(c_int::MAX as usize) as c_int)
    })
}

/// The number of run and exit callbacks registered and not run yet.
/// Any thread may call.
#[unsafe(no_mangle)]
pub extern "C" fn fork_pending() -> usize {
    ffi!(fork_pending, Ok(crate::pending()))
}
