//! The panic boundary and this thread's last error: what every exported
//! function's body goes through (the `ffi!` macro).

use std::cell::{Cell, RefCell};
use std::ffi::{CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Errno, Error, Result};

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
    static LAST_ERRNO: Cell<c_int> = const { Cell::new(0) };
}

/// What an exported function returns on failure, by its return type.
pub trait Failure {
    fn failure(errno: Errno) -> Self;
}

impl Failure for c_int {
    /// The negated errno.
    fn failure(errno: Errno) -> c_int {
        -(errno as c_int)
    }
}

impl<T> Failure for *mut T {
    fn failure(_: Errno) -> *mut T {
        std::ptr::null_mut()
    }
}

impl<T> Failure for *const T {
    fn failure(_: Errno) -> *const T {
        std::ptr::null()
    }
}

impl Failure for () {
    fn failure(_: Errno) {}
}

impl Failure for usize {
    fn failure(_: Errno) -> usize {
        0
    }
}

/// Runs the body of the exported function `name` behind the panic
/// boundary: an error (or a caught panic) becomes this thread's last
/// error, prefixed with `name`, and the return type's failure value.
pub fn call<T: Failure>(name: &str, body: impl FnOnce() -> Result<T>) -> T {
    call_or(name, T::failure, body)
}

/// [`call`] with the failure value made by `fail` from the errno.
pub fn call_or<T>(
    name: &str,
    fail: impl FnOnce(Errno) -> T,
    body: impl FnOnce() -> Result<T>,
) -> T {
    // In the child of a fork, the first call resets the library there.
    crate::caller::state::check_fork();
    let e = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => e,
        Err(_) => Error::new(
            Errno::EIO,
            "internal error (a panic was caught at the C boundary)",
        ),
    };
    fail(record(&e, name))
}

/// Stores `e`, prefixed with `name`, as this thread's last error; returns
/// its errno. The Rust API names its own operation first (`send_arg: …`
/// for `fork_send_arg`): the C name replaces it, so the call is named once.
pub fn record(e: &Error, name: &str) -> Errno {
    let op = name.strip_prefix("fork_").unwrap_or(name);
    let msg = e.message();
    let msg = msg
        .strip_prefix(op)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(msg);
    let text = format!("{name}: {msg} ({:?})", e.errno()).replace('\0', "\\0");
    LAST.with(|l| *l.borrow_mut() = CString::new(text).unwrap_or_default());
    LAST_ERRNO.with(|l| l.set(-(e.errno() as c_int)));
    e.errno()
}

/// The negated errno of this thread's last error; 0 before any.
pub fn last_errno() -> c_int {
    LAST_ERRNO.with(|l| l.get())
}

/// The last error of this thread; valid until its next failing call.
pub fn last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}
