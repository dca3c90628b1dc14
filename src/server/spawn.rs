//! The template's side of a `Spawn` frame: a process that execs at once,
//! made with `posix_spawn` instead of a copy of the template.
//!
//! The program gets what the `anyfork_exec` builtin would give it in a
//! forked child: argv is the template's strings followed by the frame's,
//! the template's fds become fds 0, 1, 2, … in order, the comm socket
//! (blocking) goes where `anyfork_comm_fd` asked, every signal is at its
//! default and unblocked, and every other fd is closed. glibc's
//! `posix_spawn` clones with `CLONE_VM | CLONE_VFORK`: no page table is
//! copied, and the exec tears nothing down, whatever the template's size.
//!
//! Whatever this cannot do exactly (a NUL byte in an argument, a libc
//! without `posix_spawn_file_actions_addclosefrom_np`, a failed spawn)
//! gives `None`; the server then forks and runs `anyfork_exec`, which
//! reports the failure the usual way (a message on the comm socket, 127).

use std::ffi::{CStr, CString, c_int};
use std::os::fd::RawFd;

use super::args::Arg;
use super::fdplan::FdPlan;

unsafe extern "C" {
    static environ: *const *mut libc::c_char;
}

type CloseFrom = unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, c_int) -> c_int;

/// glibc 2.34's `posix_spawn_file_actions_addclosefrom_np`, if present
/// (looked up once).
fn closefrom_action() -> Option<CloseFrom> {
    static F: std::sync::OnceLock<Option<CloseFrom>> = std::sync::OnceLock::new();
    *F.get_or_init(|| {
        let p = crate::sys::dl::symbol(c"posix_spawn_file_actions_addclosefrom_np")?;
        // SAFETY: glibc's function has exactly this signature.
        Some(unsafe { std::mem::transmute::<*mut libc::c_void, CloseFrom>(p) })
    })
}

/// Everything a spawn needs from the server.
pub struct Request<'a> {
    /// What the template received (its strings and fds).
    pub held: &'a [Arg],
    /// The frame's argv, after the template's strings.
    pub argv: &'a [&'a [u8]],
    /// The new process's comm socket; a detached spawn has none (and
    /// then no fd asked for one: `comm_to` is 0).
    pub comm: Option<RawFd>,
    /// Fds (bit N = fd N) that get a copy of the comm socket.
    pub comm_to: u64,
    /// Signals the template has away from their default disposition.
    pub handled: &'a [c_int],
}

/// Spawns the program; its pid, or `None` to fall back to fork + exec.
pub fn spawn(req: &Request<'_>) -> Option<libc::pid_t> {
    let closefrom = closefrom_action()?;
    let mut argv: Vec<CString> = Vec::new();
    let mut fds: Vec<RawFd> = Vec::new();
    for a in req.held {
        match a {
            Arg::Str(b) => argv.push(CStr::from_bytes_with_nul(b).ok()?.to_owned()),
            Arg::Fd(fd) => fds.push(std::os::fd::AsRawFd::as_raw_fd(fd)),
        }
    }
    for a in req.argv {
        argv.push(CString::new(*a).ok()?);
    }
    if argv.is_empty() {
        return None;
    }
    let comm = match (req.comm, req.comm_to) {
        (_, 0) => None,
        (Some(comm), _) => Some(comm),
        (None, _) => return None,
    };
    if let Some(comm) = comm {
        // The program gets a blocking socket, as a run function does.
        // SAFETY: clears O_NONBLOCK on the socket handed to us.
        unsafe { libc::fcntl(comm, libc::F_SETFL, 0) };
    }
    let plan = FdPlan::new(&fds, comm, req.comm_to).ok()?;
    let mut ptrs: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    ptrs.push(std::ptr::null_mut());
    // SAFETY: the file actions and attributes are initialised before use
    // and destroyed after; every pointer passed lives until posix_spawn
    // returns (it returns only once the child has exec'd or failed).
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if libc::posix_spawn_file_actions_init(&mut fa) != 0 {
            return None;
        }
        if libc::posix_spawnattr_init(&mut attr) != 0 {
            libc::posix_spawn_file_actions_destroy(&mut fa);
            return None;
        }
        let mut ok = true;
        for (src, target) in plan.moves() {
            ok &= libc::posix_spawn_file_actions_adddup2(&mut fa, src, target) == 0;
        }
        if let Some(comm) = plan.comm {
            for target in plan.comm_targets() {
                ok &= libc::posix_spawn_file_actions_adddup2(&mut fa, comm, target) == 0;
            }
        }
        // An fd between the mapped ones and the floor that is open without
        // close-on-exec (code the template loaded may leave one) is closed;
        // so is every fd from the floor up.
        for fd in plan.first_free..plan.floor {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if req.comm_to & (1 << fd) == 0 && flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                ok &= libc::posix_spawn_file_actions_addclose(&mut fa, fd) == 0;
            }
        }
        ok &= closefrom(&mut fa, plan.floor) == 0;
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        let mut dfl: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut dfl);
        for &sig in req.handled {
            libc::sigaddset(&mut dfl, sig);
        }
        ok &= libc::posix_spawnattr_setsigmask(&mut attr, &none) == 0;
        ok &= libc::posix_spawnattr_setsigdefault(&mut attr, &dfl) == 0;
        let flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        ok &= libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short) == 0;
        let mut pid = 0;
        let rc = if !ok {
            -1
        } else if argv[0].as_bytes().contains(&b'/') {
            libc::posix_spawn(&mut pid, ptrs[0], &fa, &attr, ptrs.as_ptr(), environ)
        } else {
            libc::posix_spawnp(&mut pid, ptrs[0], &fa, &attr, ptrs.as_ptr(), environ)
        };
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut attr);
        (rc == 0).then_some(pid)
    }
}
