//! Starting servers: `anyfork-serve` (or a custom command) with
//! `posix_spawn`, which is safe in multi-threaded callers (vfork semantics),
//! and finding `anyfork-serve` on disk.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use crate::error::{Errno, Error, Result};
use crate::process::Process;
use crate::wire;

/// The environment variable that tells a server its socket's fd number.
pub const FD_ENV: &str = "ANYFORK_FD";
/// The environment variable that names the `anyfork-serve` to run.
pub const SERVE_ENV: &str = "ANYFORK_SERVE";

/// Spawns a fresh `anyfork-serve` and returns its process object.
pub fn new_exec() -> Result<Process> {
    let path = serve_path()?;
    let argv = [CString::new("anyfork-serve").expect("no NUL")];
    spawn_server(&path, &argv).map_err(|e| e.context("new_exec"))
}

/// Spawns `path` with `argv`, its end of a fresh socketpair as `ANYFORK_FD`,
/// and sends the hello frame.
pub fn spawn_server(path: &CStr, argv: &[CString]) -> Result<Process> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|e| Error::sys(e, "creating the server's socket (socketpair)"))?;
    let pid = spawn(path, argv, &theirs)?;
    drop(theirs);
    let (p, rec) = Process::from_parts(ours, Some(pid), None)?;
    crate::direct::watch(pid, rec);
    let mut hello = Vec::new();
    wire::push_hello(&mut hello);
    p.send_frames(&hello)?;
    Ok(p)
}

fn spawn(path: &CStr, argv: &[CString], sock: &OwnedFd) -> Result<i32> {
    let fd = sock.as_raw_fd();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != FD_ENV)
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{FD_ENV}={fd}")).expect("no NUL"));
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut argvp: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argvp.push(std::ptr::null());

    // SAFETY: the attribute and file-action objects are initialised before
    // use and destroyed on every path; all pointers outlive the call.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut at: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut fa);
        libc::posix_spawnattr_init(&mut at);
        // dup2 onto itself clears FD_CLOEXEC in the child (glibc >= 2.29,
        // musl): only this fd crosses the exec.
        let mut rc = libc::posix_spawn_file_actions_adddup2(&mut fa, fd, fd);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigemptyset(&mut none);
        if rc == 0 {
            rc = libc::posix_spawnattr_setsigdefault(&mut at, &all);
        }
        if rc == 0 {
            rc = libc::posix_spawnattr_setsigmask(&mut at, &none);
        }
        if rc == 0 {
            let flags = libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK;
            rc = libc::posix_spawnattr_setflags(&mut at, flags as libc::c_short);
        }
        let mut pid: libc::pid_t = 0;
        if rc == 0 {
            rc = libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &fa,
                &at,
                argvp.as_ptr() as *const *mut _,
                envp.as_ptr() as *const *mut _,
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut at);
        if rc != 0 {
            return Err(Error::sys(
                Errno::from_raw(rc),
                format_args!("spawning {}", path.to_string_lossy()),
            ));
        }
        Ok(pid)
    }
}

/// Where `anyfork-serve` is: `$ANYFORK_SERVE`, else beside the library
/// (or executable) that holds this code, else `../libexec/` from there,
/// else the path cargo built it at. The error lists every place tried.
pub fn serve_path() -> Result<CString> {
    static FOUND: OnceLock<CString> = OnceLock::new();
    if let Some(env) = std::env::var_os(SERVE_ENV) {
        let p = PathBuf::from(&env);
        return if is_executable(&p) {
            Ok(cstring(&p))
        } else {
            Err(Error::new(
                Errno::ENOENT,
                format!("{SERVE_ENV}={} is not an executable file", p.display()),
            ))
        };
    }
    if let Some(p) = FOUND.get() {
        return Ok(p.clone());
    }
    let mut tried = Vec::new();
    if let Some(dir) = own_dir() {
        tried.push(dir.join("anyfork-serve"));
        tried.push(dir.join("../libexec/anyfork-serve"));
        tried.push(dir.join("../libexec/anyfork/anyfork-serve"));
    }
    if let Some(dir) = option_env!("ANYFORK_BUILD_DIR") {
        tried.push(Path::new(dir).join("anyfork-serve"));
    }
    for p in &tried {
        if is_executable(p) {
            return Ok(FOUND.get_or_init(|| cstring(p)).clone());
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

/// The directory of the shared object (or executable) holding this code.
fn own_dir() -> Option<PathBuf> {
    // SAFETY: dladdr fills `info` for an address inside a loaded object;
    // dli_fname is a NUL-terminated string owned by the loader.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(serve_path as *const libc::c_void, &mut info) == 0
            || info.dli_fname.is_null()
        {
            return None;
        }
        let file = Path::new(OsStr::from_bytes(CStr::from_ptr(info.dli_fname).to_bytes()));
        let file = std::fs::canonicalize(file).ok()?;
        file.parent().map(Path::to_path_buf)
    }
}

fn is_executable(p: &Path) -> bool {
    let c = cstring(p);
    // SAFETY: access() with a valid C string.
    p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}
