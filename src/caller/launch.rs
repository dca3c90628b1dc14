//! Starting servers: `anyfork-serve` (or a custom command) with
//! `posix_spawn`, which is safe in multi-threaded callers (vfork semantics),
//! told its socket's fd in `ANYFORK_FD` and greeted with the hello frame.
//! Finding `anyfork-serve` on disk is `locate.rs`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::spawn::{PosixSpawnFileActions, posix_spawn, posix_spawnp};
use nix::sys::stat::Mode;

use super::process::Process;
use super::state;
use crate::error::{Errno, Error, Result};
use crate::protocol::env::FD_ENV;
use crate::protocol::wire;

impl Process {
    /// Spawns a fresh `anyfork-serve` (or forks the early template, once
    /// [`crate::early`] ran): a direct child of the caller.
    pub fn new_exec() -> Result<Process> {
        {
            let early = state::early_template();
            if let Some(t) = early.as_ref().filter(|t| !t.is_dead()) {
                return t
                    .fork()
                    .map_err(|e| e.context("forking the early template"));
            }
        }
        let path = super::locate::serve_path()?;
        spawn_server(&path, &[c"anyfork-serve"], false)
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
}

/// A nonblocking, close-on-exec socketpair: the caller's end, the other.
/// Both are above fd 2 (see [`crate::sys::fd::above_stdio`]).
pub(super) fn pair(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    crate::sys::fd::socketpair_above_stdio().map_err(|e| Error::io(&e, what))
}

/// Spawns `path` with `argv`, its end of a fresh socketpair as `ANYFORK_FD`,
/// and sends the hello frame.
fn spawn_server(path: &CStr, argv: &[impl AsRef<CStr>], search: bool) -> Result<Process> {
    let (ours, theirs) = pair("creating the server's socket (socketpair)")?;
    let pid = spawn(path, argv, &ours, &theirs, search)?;
    drop(theirs);
    let p = Process::direct_child(ours, pid)?;
    let mut hello = Vec::new();
    wire::push_hello(&mut hello);
    p.send_frames(&hello)?;
    Ok(p)
}

/// Spawns `path` with `argv` and `theirs` as its `ANYFORK_FD`; its pid.
pub(super) fn spawn(
    path: &CStr,
    argv: &[impl AsRef<CStr>],
    ours: &OwnedFd,
    theirs: &OwnedFd,
    search: bool,
) -> Result<i32> {
    // `pair` put both ends above 2, and the library keeps none of its fds
    // at 0, 1 or 2: an open standard fd is the caller's own.
    let sock = theirs.as_raw_fd();
    debug_assert!(sock > 2 && ours.as_raw_fd() > 2);
    let mut env = crate::sys::spawn::environment(Some(FD_ENV));
    env.push(CString::new(format!("{FD_ENV}={sock}")).expect("no NUL"));

    let what = |e: Errno| Error::sys(e, "preparing posix_spawn");
    let mut fa = PosixSpawnFileActions::init().map_err(what)?;
    // dup2 onto itself clears FD_CLOEXEC in the child (glibc >= 2.29,
    // musl): only this fd crosses the exec.
    fa.add_dup2(sock, sock).map_err(what)?;
    // Standard fds the caller lacks (a daemon's) are /dev/null in the
    // server, so nothing it or its processes write reaches a socket.
    for fd in 0..=2 {
        if !crate::sys::fd::is_open(fd) {
            fa.add_open(fd, c"/dev/null", OFlag::O_RDWR, Mode::empty())
                .map_err(what)?;
        }
    }
    let attr = crate::sys::spawn::clean_signals().map_err(what)?;
    let r = if search {
        posix_spawnp(path, &fa, &attr, argv, &env)
    } else {
        posix_spawn(path, &fa, &attr, argv, &env)
    };
    r.map(|pid| pid.as_raw())
        .map_err(|e| Error::sys(e, format_args!("spawning {}", path.to_string_lossy())))
}
