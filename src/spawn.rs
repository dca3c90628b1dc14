//! Starting servers: `anyfork-serve` (or a custom command) with
//! `posix_spawn`, which is safe in multi-threaded callers (vfork semantics),
//! and finding `anyfork-serve` on disk.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

use crate::error::{Errno, Error, Result};
use crate::process::Process;
use crate::record::Record;
use crate::wire;

/// The environment variable that tells a server its socket's fd number.
pub const FD_ENV: &str = "ANYFORK_FD";
/// The environment variable that names the `anyfork-serve` to run.
pub const SERVE_ENV: &str = "ANYFORK_SERVE";

/// The early template, once [`early`] ran: what `new_exec` forks instead
/// of exec'ing a server.
static EARLY: Mutex<Option<Process>> = Mutex::new(None);

/// Spawns a fresh `anyfork-serve` and returns its process object; after
/// [`early`], forks the early template instead.
pub fn new_exec() -> Result<Process> {
    {
        let early = EARLY.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = early.as_ref().filter(|t| !t.is_dead()) {
            return t.fork().map_err(|e| e.context("new_exec (early template)"));
        }
    }
    let path = serve_path()?;
    let argv = [CString::new("anyfork-serve").expect("no NUL")];
    spawn_server(&path, &argv, false).map_err(|e| e.context("new_exec"))
}

/// Spawns a custom server: `argv[0]` (searched in `PATH` when it has no
/// slash) with `argv`, told its socket's fd in `ANYFORK_FD`. The server
/// is expected to call `fork_serve` on that fd.
pub fn new_exec_argv(argv: &[&[u8]]) -> Result<Process> {
    let Some(first) = argv.first() else {
        return Err(Error::new(Errno::EINVAL, "argv is empty"));
    };
    let c: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(*a))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::new(Errno::EINVAL, "an argv string contains a NUL byte"))?;
    let search = !first.contains(&b'/');
    spawn_server(&c[0], &c, search)
}

/// Forks the calling program now: the copy closes every fd but 0, 1, 2
/// and its socket, forgets the library state it inherited, and serves as a
/// template whose processes can run the program's own functions.
pub fn template() -> Result<Process> {
    let (ours, theirs) = pair("creating the template's socket (socketpair)")?;
    // SAFETY: the child only closes fds, resets library state and enters
    // the serve loop; see the thread caveat in fork_template's docs.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys(Errno::last(), "fork_template: fork"));
    }
    if pid == 0 {
        drop(ours);
        crate::after_fork::reset();
        let fd = theirs.as_raw_fd();
        crate::serve::close_others(fd);
        // Handles inherited from the caller now name closed (soon reused)
        // fd numbers: dropping one must not close anything.
        crate::after_fork::forget_inherited_fds();
        // SAFETY: plain fcntl/prctl on our own fd and process.
        unsafe {
            libc::fcntl(fd, libc::F_SETFL, 0);
            libc::prctl(libc::PR_SET_NAME, c"anyfork-tmpl".as_ptr());
        }
        crate::serve::serve(
            theirs,
            crate::serve::ServeOptions {
                expect_hello: false,
                scan_signals: true,
                threaded: false,
            },
        );
    }
    drop(theirs);
    let (mut p, rec) = Process::from_parts(ours, Record::direct(pid), None)?;
    crate::direct::watch(pid, rec);
    p.set_pidfd(pid);
    Ok(p)
}

/// Forks the caller as the template that later `new_exec` calls (and so
/// the default template) fork instead of exec'ing `anyfork-serve`.
pub fn early() -> Result<()> {
    let t = template().map_err(|e| e.context("fork_early"))?;
    *EARLY.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    Ok(())
}

/// In a forked child: drops the parent's early template.
pub fn forget_early() {
    if let Ok(mut slot) = EARLY.try_lock() {
        drop(slot.take());
    }
}

fn pair(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|e| Error::sys(e, what))
}

/// Spawns `path` with `argv`, its end of a fresh socketpair as `ANYFORK_FD`,
/// and sends the hello frame.
fn spawn_server(path: &CStr, argv: &[CString], search: bool) -> Result<Process> {
    let (ours, theirs) = pair("creating the server's socket (socketpair)")?;
    let pid = spawn(path, argv, &theirs, search)?;
    drop(theirs);
    let (mut p, rec) = Process::from_parts(ours, Record::direct(pid), None)?;
    crate::direct::watch(pid, rec);
    p.set_pidfd(pid);
    let mut hello = Vec::new();
    wire::push_hello(&mut hello);
    p.send_frames(&hello)?;
    Ok(p)
}

fn spawn(path: &CStr, argv: &[CString], sock: &OwnedFd, search: bool) -> Result<i32> {
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
            let spawner = if search {
                libc::posix_spawnp
            } else {
                libc::posix_spawn
            };
            rc = spawner(
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
