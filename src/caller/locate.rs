//! Finding `anyfork-serve`: `$ANYFORK_SERVE`, else beside the library (or
//! executable) that holds this code, else `../libexec/` from there, else
//! the path cargo built it at. The error lists every place tried.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::state;
use crate::error::{Errno, Error, Result};
use crate::protocol::env::SERVE_ENV;

/// The path of the `anyfork-serve` to start.
pub fn serve_path() -> Result<CString> {
    if let Some(env) = std::env::var_os(SERVE_ENV) {
        let p = PathBuf::from(&env);
        return match check(&p) {
            Ok(()) => Ok(cstring(&p)),
            Err((errno, why)) => Err(Error::new(
                errno,
                format!("{SERVE_ENV}={} {why}", p.display()),
            )),
        };
    }
    let found = state::serve_path();
    if let Some(p) = found.get() {
        return Ok(p.clone());
    }
    let mut tried = Vec::new();
    if let Some(dir) = crate::sys::dl::file_of(serve_path as *const libc::c_void)
        .as_deref()
        .and_then(Path::parent)
    {
        tried.push(dir.join("anyfork-serve"));
        tried.push(dir.join("../libexec/anyfork-serve"));
        tried.push(dir.join("../libexec/anyfork/anyfork-serve"));
    }
    if let Some(dir) = option_env!("ANYFORK_BUILD_DIR") {
        tried.push(Path::new(dir).join("anyfork-serve"));
    }
    for p in &tried {
        if check(p).is_ok() {
            return Ok(found.get_or_init(|| cstring(p)).clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(Error::new(
        Errno::ENOENT,
        format!(
            "anyfork-serve not found (set {SERVE_ENV}); tried: {}",
            list.join(", ")
        ),
    ))
}

/// Whether `p` is an executable file; else the errno and why not.
fn check(p: &Path) -> std::result::Result<(), (Errno, &'static str)> {
    let meta = std::fs::metadata(p).map_err(|e| {
        (
            crate::error::errno_of(&e),
            match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist",
                std::io::ErrorKind::PermissionDenied => "cannot be reached (permission denied)",
                _ => "cannot be read",
            },
        )
    })?;
    if meta.is_dir() {
        return Err((
            Errno::EISDIR,
            "is a directory, not the anyfork-serve program",
        ));
    }
    if !meta.is_file() {
        return Err((Errno::EACCES, "is not a regular file"));
    }
    let c = cstring(p);
    if meta.permissions().mode() & 0o111 == 0
        || nix::unistd::access(c.as_c_str(), nix::unistd::AccessFlags::X_OK).is_err()
    {
        return Err((Errno::EACCES, "is not executable"));
    }
    Ok(())
}

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}
