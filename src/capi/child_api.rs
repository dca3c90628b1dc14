//! Calls made inside a created process: its arguments and its dispatcher.

use std::ffi::c_void;

pub use crate::server::args::{ForkArg, ForkArgKind};
pub use crate::server::call::ForkCallKind;
use crate::server::state;
use std::ffi::{c_char, c_int};

/// Returned by a dispatcher for a name it does not handle: the call then
/// falls back to `dlsym` lookup.
pub const FORK_DISPATCH_PASS: c_int = -2147483647 - 1;
const _: () = assert!(FORK_DISPATCH_PASS == crate::server::call::DISPATCH_PASS);

/// A dispatcher: performs eval and run calls itself instead of looking
/// `name` up with `dlsym`, so an interpreter can run its own code. `kind`
/// says which call, `fd` is the comm socket (-1 for eval), `args` as for
/// the eval or run function. Its return value is what that function's
/// would be, or `FORK_DISPATCH_PASS` to let `dlsym` find `name` instead.
pub type fork_dispatch_fn = Option<
    unsafe extern "C" fn(
        kind: ForkCallKind,
        name: *const c_char,
        fd: c_int,
        args: *const ForkArg,
        nargs: usize,
        userdata: *mut c_void,
    ) -> c_int,
>;

/// Inside an eval or run function: the fds and strings this process has
/// received so far, in order; `*nargs` gets their number. The array stays
/// valid until the process exits. Elsewhere returns NULL and sets `*nargs`
/// to 0. `nargs` may be NULL.
///
/// # Safety
/// `nargs` is NULL or points to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_child_args(nargs: *mut usize) -> *const ForkArg {
    ffi!(fork_child_args, {
        let (p, n) = state::current_args();
        // SAFETY: per the function contract.
        if let Some(out) = unsafe { nargs.as_mut() } {
            *out = n;
        }
        Ok(p)
    })
}

/// Sets the dispatcher of the calling process (NULL restores `dlsym`
/// lookup). Used by a custom server before `fork_serve`, or by a program
/// before `fork_template`; forked children inherit it. Builtins
/// (`anyfork_*`) are still found first.
///
/// # Safety
/// `fn` must stay callable, and `userdata` valid, in every process that
/// inherits them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_set_dispatch(f: fork_dispatch_fn, userdata: *mut c_void) {
    ffi!(fork_set_dispatch, {
        state::set_dispatch(f.map(|f| state::Dispatcher(f, userdata)));
        Ok(())
    })
}

/// A fork hook: forks the calling process as `fork(2)` does and returns
/// as it does: 0 in the child, the child's pid in the parent, -1 with
/// `errno` set when no child was made.
pub type fork_fork_hook_fn = Option<unsafe extern "C" fn(userdata: *mut c_void) -> libc::pid_t>;

/// Sets the fork hook of the calling process (NULL restores the library's
/// own fork). Every fork the library makes in this process and the
/// processes copied from it goes through the hook instead of `fork()`:
/// each new process and each warm-pool child a server forks, and the copy
/// `fork_template` and `fork_early` make. It lets an interpreter's own
/// fork make them (Python's `os.fork`, Ruby's `Process._fork`, Perl's
/// `fork`), so that the interpreter's own before- and after-fork work
/// runs: its at-fork handlers, its locks, threads and timers reset.
/// Set it like the dispatcher: in a custom server before `fork_serve`, or
/// in a program before `fork_template` or `fork_early`; copies inherit it.
///
/// The hook must fork exactly once and return: 0 in the child (which the
/// library then goes on to serve or run), the child's pid in the parent,
/// or -1 with `errno` set when it made no child (reported to that
/// creation like a failed fork: its exit callback and `fork_pid` get the
/// errno, its comm socket EOF; `errno` 0 is reported as `EIO`). It runs
/// on the server's thread, inside the server loop, in both processes. It
/// may run code before and after the fork (at-fork handlers, reseeding),
/// open fds and start threads in the child. It must not close, move or
/// read fds it did not open (the server's socket and signalfd among
/// them), exit or exec in the child, wait for or reap the child in the
/// parent (the server reports its exit), leave signals blocked or
/// change signal handlers for good in the parent, nor call the library
/// (but `fork_last_error`, and `fork_reset_after_fork` in the child, which
/// an interpreter's at-fork handler may call). Processes made through
/// the hook start user code with an empty signal mask and the signal
/// dispositions the template had, as the interpreter's own fork leaves
/// them (an interpreter relies on its handlers); the builtins
/// (`anyfork_exec`) still start with every disposition at its default.
///
/// # Safety
/// `hook` must stay callable, and `userdata` valid, in every process that
/// inherits them, and the hook must keep the contract above.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_set_fork_hook(hook: fork_fork_hook_fn, userdata: *mut c_void) {
    ffi!(fork_set_fork_hook, {
        state::set_fork_hook(hook, userdata);
        Ok(())
    })
}
