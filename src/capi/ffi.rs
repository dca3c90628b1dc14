//! The panic boundary, the thread-local last error, and argument checks
//! shared by every exported function.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Errno, Error, Result};

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
    static LAST_ERRNO: std::cell::Cell<c_int> = const { std::cell::Cell::new(0) };
}

/// Stores `e` as this thread's last error.
pub fn set_error(e: &Error) {
    let text = CString::new(e.to_string().replace('\0', "\\0")).unwrap_or_default();
    LAST.with(|l| *l.borrow_mut() = text);
    LAST_ERRNO.with(|l| l.set(-(e.errno() as c_int)));
}

/// The negated errno of this thread's last error; 0 before any.
pub fn last_errno() -> c_int {
    LAST_ERRNO.with(|l| l.get())
}

/// The last error of this thread; valid until its next failing call.
pub fn last_error() -> *const c_char {
    LAST.with(|l| l.borrow().as_ptr())
}

fn panicked(call: &str) -> Error {
    Error::new(
        Errno::EIO,
        format!("{call}: internal error (a panic was caught at the C boundary)"),
    )
}

/// Runs `f` behind the panic boundary: `None` after an error or a panic,
/// which is then this thread's last error, prefixed with `call`.
pub fn boundary<T>(call: &str, f: impl FnOnce() -> Result<T>) -> std::result::Result<T, Errno> {
    let e = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) => e.context(call),
        Err(_) => panicked(call),
    };
    set_error(&e);
    Err(e.errno())
}

/// For a call that returns `int`: errors give their negated errno.
pub fn int_call(call: &str, f: impl FnOnce() -> Result<c_int>) -> c_int {
    boundary(call, f).unwrap_or_else(|e| -(e as c_int))
}

/// For a call that returns a pointer: errors give NULL.
pub fn ptr_call<T>(call: &str, f: impl FnOnce() -> Result<*mut T>) -> *mut T {
    boundary(call, f).unwrap_or(std::ptr::null_mut())
}

/// A `&mut` from a handle pointer, or `EINVAL` for NULL.
///
/// # Safety
/// `p` is NULL or a live handle from this library, used by one thread.
pub unsafe fn handle<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T> {
    // SAFETY: per the contract above.
    unsafe { p.as_mut() }.ok_or_else(|| Error::new(Errno::EINVAL, format!("{what} is NULL")))
}

/// A `&str` from a C string argument, or `EINVAL` for NULL or non-UTF-8.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string.
pub unsafe fn text<'a>(s: *const c_char, what: &str) -> Result<&'a str> {
    if s.is_null() {
        return Err(Error::new(Errno::EINVAL, format!("{what} is NULL")));
    }
    // SAFETY: per the contract above.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str().map_err(|_| {
        Error::new(
            Errno::EINVAL,
            format!("{what} {:?} is not UTF-8", c.to_string_lossy()),
        )
    })
}

/// A byte slice from a pointer and a length; NULL is allowed for length 0.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes.
pub unsafe fn bytes<'a>(data: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if data.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::new(
            Errno::EINVAL,
            format!("{what} is NULL but its length is {len}"),
        ));
    }
    if len > isize::MAX as usize {
        return Err(Error::new(
            Errno::E2BIG,
            format!("{what} cannot be {len} bytes long (a string holds less than 4 GiB)"),
        ));
    }
    // SAFETY: per the contract above; the length fits an object.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// Userdata handed back to a C callback on whatever thread dispatches.
#[derive(Clone, Copy)]
pub struct UserData(pub *mut std::ffi::c_void);
// SAFETY: the library never dereferences it; the C contract says the
// callback may run on the thread that calls dispatch.
unsafe impl Send for UserData {}
