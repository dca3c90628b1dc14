//! Functions the library ships for eval and run, under the reserved prefix
//! `anyfork_`. They are found before any `dlsym` lookup.

use crate::args::{ForkArg, ForkArgKind};

/// `anyfork_exit`: exits at once, with the first string argument parsed as
/// the status when there is one, else 0. What benchmarks and tests use as
/// "a process that does nothing".
unsafe extern "C" fn anyfork_exit(_fd: libc::c_int, args: *const ForkArg, n: usize) -> libc::c_int {
    // SAFETY: the server passes `n` valid arguments.
    let args = unsafe { std::slice::from_raw_parts(args, n) };
    args.iter()
        .find(|a| a.kind == ForkArgKind::FORK_ARG_STRING)
        .and_then(|a| {
            // SAFETY: a string argument's data holds len bytes.
            let s = unsafe { std::slice::from_raw_parts(a.data, a.len) };
            std::str::from_utf8(s).ok()?.trim().parse().ok()
        })
        .unwrap_or(0)
}

/// The builtin called `name`, as an untyped function pointer.
pub fn find(name: &[u8]) -> Option<*mut libc::c_void> {
    if !name.starts_with(b"anyfork_") {
        return None;
    }
    let f: *mut libc::c_void = match name {
        b"anyfork_exit" => anyfork_exit as *mut libc::c_void,
        _ => return None,
    };
    Some(f)
}
