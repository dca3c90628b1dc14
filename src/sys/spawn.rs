//! What every `posix_spawn` of the library starts from (a server by the
//! caller, a transport by the relay): this process's environment as C
//! strings, and attributes that give the program every signal at its
//! default and an empty mask.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use nix::spawn::{PosixSpawnAttr, PosixSpawnFlags};
use nix::sys::signal::SigSet;

/// This process's environment as `NAME=VALUE` strings, without `skip`
/// (entries with a NUL byte cannot be passed and are left out).
pub fn environment(skip: Option<&str>) -> Vec<CString> {
    std::env::vars_os()
        .filter(|(k, _)| skip.is_none_or(|s| k != s))
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect()
}

/// Attributes that reset every signal to its default and empty the mask
/// in the new program (the caller may ignore SIGPIPE or block signals).
pub fn clean_signals() -> nix::Result<PosixSpawnAttr> {
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_sigdefault(&SigSet::all())?;
    attr.set_sigmask(&SigSet::empty())?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK,
    )?;
    Ok(attr)
}
