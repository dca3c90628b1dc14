//! The dynamic loader: symbols by name, libraries by path, and the file
//! this code was loaded from.

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// `dlsym(RTLD_DEFAULT, name)`: the address, or `None` when no loaded
/// object defines it.
pub fn symbol(name: &CStr) -> Option<*mut libc::c_void> {
    // SAFETY: dlsym with a valid C string.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

/// Like [`symbol`], with the loader's reason when there is none.
pub fn lookup(name: &CStr) -> Result<*mut libc::c_void, String> {
    // SAFETY: clears the loader's error state before the lookup.
    unsafe { libc::dlerror() };
    symbol(name).ok_or_else(|| last_error().unwrap_or_else(|| "the symbol is NULL".into()))
}

/// Loads `library` with `RTLD_NOW | RTLD_GLOBAL`; the loader's reason on
/// failure.
pub fn open_global(library: &CStr) -> Result<(), String> {
    // SAFETY: dlopen with a valid C string; the handle is kept for the
    // life of the process (never closed).
    let h = unsafe { libc::dlopen(library.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        return Err(last_error().unwrap_or_default());
    }
    Ok(())
}

/// The loader's last error message, copied.
fn last_error() -> Option<String> {
    // SAFETY: dlerror returns NULL or a C string that stays valid until
    // the next dl call on this thread; it is copied at once.
    unsafe {
        let e = libc::dlerror();
        (!e.is_null()).then(|| CStr::from_ptr(e).to_string_lossy().into_owned())
    }
}

/// The canonical path of the shared object (or executable) that holds
/// `addr`.
pub fn file_of(addr: *const libc::c_void) -> Option<PathBuf> {
    // SAFETY: dladdr fills `info` for an address inside a loaded object;
    // dli_fname is a C string owned by the loader, copied at once.
    let file = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(addr, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        PathBuf::from(OsStr::from_bytes(CStr::from_ptr(info.dli_fname).to_bytes()))
    };
    std::fs::canonicalize(file).ok()
}
