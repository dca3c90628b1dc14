//! Conversions of C arguments: strings, byte buffers, string vectors and
//! userdata.

use std::ffi::{CStr, c_char};

use crate::error::{Errno, Error, Result};

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

/// Collects a NULL-terminated array of C strings.
///
/// # Safety
/// `v` is NULL or a NULL-terminated array of C strings.
pub unsafe fn strv<'a>(v: *const *const c_char, what: &str) -> Result<Vec<&'a [u8]>> {
    if v.is_null() {
        return Err(Error::new(Errno::EINVAL, format!("{what} is NULL")));
    }
    let mut out = Vec::new();
    // SAFETY: per the contract, every element up to the NULL is a C string.
    unsafe {
        while !(*v.add(out.len())).is_null() {
            out.push(CStr::from_ptr(*v.add(out.len())).to_bytes());
        }
    }
    Ok(out)
}
