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
