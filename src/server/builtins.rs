//! Functions the library ships for eval and run, under the reserved prefix
//! `anyfork_`. They are found before any dispatcher or `dlsym` lookup, and
//! only for the call they are made for (an eval builtin is no run function).
//!
//! Run builtins:
//! - `anyfork_exit`: exits at once, with the first string argument as the
//!   status (default 0): "a process that does nothing". The server handles
//!   it before it prepares the process for user code, and exits with
//!   `_exit`: the stdio buffers copied from the template are not written.
//! - `anyfork_exec`: the faster fork+exec. Every string received is argv
//!   (the first is the program, searched in `PATH` when it has no slash);
//!   the fds received become fds 0, 1, 2, … of the program in the order
//!   sent; standard fds not covered stay as the process has them; every
//!   other fd is closed by the exec. If the exec fails, the reason is
//!   written to the comm socket and the process exits with status 127.
//!
//! Eval builtins, to prepare what `anyfork_exec` (or any run function)
//! inherits:
//! - `anyfork_setenv`: each argument `NAME=VALUE` sets a variable, a bare
//!   `NAME` removes it;
//! - `anyfork_clearenv`: empties the environment;
//! - `anyfork_chdir`: changes the working directory to the argument;
//! - `anyfork_setsid`: starts a new session (`setsid`);
//! - `anyfork_warm`: the argument K (0 to 64) is how many children this
//!   process, as a template, keeps forked and waiting for its fork
//!   requests (the warm pool, see `server/pool.rs`); 0 ends the pool.
//! - `anyfork_comm_fd`: each argument is a number N; `anyfork_exec` makes
//!   the comm socket fd N of the program (e.g. "2" for stderr).

use std::ffi::{CStr, CString, c_int};

use super::args::{Arg, ForkArg, slice, strings};
use super::call::ForkCallKind;
use super::fdplan::FdPlan;
use super::state;

/// The builtin called `name` for `kind`, as an untyped function pointer.
pub fn find(name: &[u8], kind: ForkCallKind) -> Option<*mut libc::c_void> {
    if !name.starts_with(b"anyfork_") {
        return None;
    }
    let f: *mut libc::c_void = match (kind, name) {
        (ForkCallKind::FORK_CALL_RUN, b"anyfork_exec") => anyfork_exec as *mut libc::c_void,
        (ForkCallKind::FORK_CALL_EVAL, b"anyfork_setenv") => anyfork_setenv as *mut libc::c_void,
        (ForkCallKind::FORK_CALL_EVAL, b"anyfork_clearenv") => {
            anyfork_clearenv as *mut libc::c_void
        }
        (ForkCallKind::FORK_CALL_EVAL, b"anyfork_chdir") => anyfork_chdir as *mut libc::c_void,
        (ForkCallKind::FORK_CALL_EVAL, b"anyfork_setsid") => anyfork_setsid as *mut libc::c_void,
        (ForkCallKind::FORK_CALL_EVAL, b"anyfork_comm_fd") => anyfork_comm_fd as *mut libc::c_void,
        (ForkCallKind::FORK_CALL_EVAL, b"anyfork_warm") => anyfork_warm as *mut libc::c_void,
        _ => return None,
    };
    Some(f)
}

fn complain(what: std::fmt::Arguments<'_>) -> c_int {
    eprintln!("anyfork[{}]: {what}", std::process::id());
    1
}

/// `anyfork_exit`, which the server performs before it prepares the
/// process for user code (nothing runs after it): the exit status the
/// process gets, or `None` when `name` is another function. It exits with
/// `_exit`, so stdio buffers copied from the template are not written again.
pub fn exit_status(name: &[u8], args: &[Arg]) -> Option<c_int> {
    if name != b"anyfork_exit" {
        return None;
    }
    let first = args.iter().find_map(|a| match a {
        Arg::Str(b) => Some(&b[..b.len() - 1]),
        Arg::Fd(_) => None,
    });
    Some(
        first
            .and_then(|s| std::str::from_utf8(s).ok()?.trim().parse().ok())
            .unwrap_or(0),
    )
}

unsafe extern "C" fn anyfork_setenv(args: *const ForkArg, n: usize) -> c_int {
    // SAFETY: called by the server with its argument array.
    for s in strings(unsafe { slice(args, n) }) {
        let (name, value) = match s.iter().position(|&b| b == b'=') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let Ok(name) = CString::new(name) else {
            return complain(format_args!("anyfork_setenv: a name contains a NUL byte"));
        };
        // SAFETY: valid C strings. setenv races only with another thread
        // reading the environment: anyfork-serve and template copies have
        // one thread, and a custom server's other threads must not read
        // it during an eval (documented at fork_serve).
        let rc = unsafe {
            match value {
                Some(v) => match CString::new(v) {
                    Ok(v) => libc::setenv(name.as_ptr(), v.as_ptr(), 1),
                    Err(_) => -1,
                },
                None => libc::unsetenv(name.as_ptr()),
            }
        };
        if rc != 0 {
            return complain(format_args!(
                "anyfork_setenv: cannot set {:?}: {}",
                name,
                std::io::Error::last_os_error()
            ));
        }
    }
    0
}

unsafe extern "C" fn anyfork_clearenv(_args: *const ForkArg, _n: usize) -> c_int {
    // SAFETY: as for setenv in anyfork_setenv.
    unsafe { libc::clearenv() }
}

unsafe extern "C" fn anyfork_chdir(args: *const ForkArg, n: usize) -> c_int {
    // SAFETY: called by the server with its argument array.
    let Some(dir) = strings(unsafe { slice(args, n) }).next() else {
        return complain(format_args!("anyfork_chdir: no directory given"));
    };
    let Ok(c) = CString::new(dir) else {
        return complain(format_args!(
            "anyfork_chdir: the directory contains a NUL byte"
        ));
    };
    if let Err(e) = nix::unistd::chdir(c.as_c_str()) {
        return complain(format_args!("anyfork_chdir: {c:?}: {}", e.desc()));
    }
    0
}

unsafe extern "C" fn anyfork_setsid(_args: *const ForkArg, _n: usize) -> c_int {
    if let Err(e) = nix::unistd::setsid() {
        return complain(format_args!("anyfork_setsid: {}", e.desc()));
    }
    0
}

unsafe extern "C" fn anyfork_comm_fd(args: *const ForkArg, n: usize) -> c_int {
    // SAFETY: called by the server with its argument array.
    for s in strings(unsafe { slice(args, n) }) {
        match std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            Some(fd) if fd < 64 => state::add_comm_fd(fd),
            _ => {
                return complain(format_args!(
                    "anyfork_comm_fd: {:?} is not an fd number below 64",
                    String::from_utf8_lossy(s)
                ));
            }
        }
    }
    0
}

unsafe extern "C" fn anyfork_warm(args: *const ForkArg, n: usize) -> c_int {
    // SAFETY: called by the server with its argument array.
    let args = unsafe { slice(args, n) };
    let mut it = strings(args);
    let k = match (it.next(), it.next()) {
        (Some(s), None) => std::str::from_utf8(s)
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .filter(|&k| k <= super::pool::MAX),
        _ => None,
    };
    match k {
        Some(k) => {
            state::request_warm(k);
            0
        }
        None => complain(format_args!(
            "anyfork_warm: give one argument, the number of waiting children (0 to {})",
            super::pool::MAX
        )),
    }
}

/// Writes `msg` to `fd` (the comm socket) and exits 127, whether or not
/// anyone reads it: a detached process's socket has no reader, and
/// `MSG_NOSIGNAL` keeps the write from raising SIGPIPE (the process has
/// default signal dispositions), which would end it with signal 13
/// instead of 127.
fn exec_failed(fd: c_int, msg: String) -> ! {
    let line = format!("anyfork_exec: {msg}\n");
    // SAFETY: sends a live buffer; the process exits right after.
    let sent = unsafe { libc::send(fd, line.as_ptr().cast(), line.len(), libc::MSG_NOSIGNAL) };
    if sent < 0 && crate::error::last_errno() == nix::errno::Errno::ENOTSOCK {
        // Not a socket (never the case for a comm socket the library
        // made): a plain write, with SIGPIPE ignored for it.
        // SAFETY: setting a disposition and writing a live buffer; the
        // process exits right after.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            libc::write(fd, line.as_ptr().cast(), line.len());
        }
    }
    super::exit::exit(127)
}

unsafe extern "C" fn anyfork_exec(comm: c_int, args: *const ForkArg, n: usize) -> c_int {
    // SAFETY: called by the server with its argument array.
    let args = unsafe { slice(args, n) };
    let argv: Vec<CString> = match strings(args).map(CString::new).collect() {
        Ok(v) => v,
        Err(_) => exec_failed(comm, "an argv string contains a NUL byte".into()),
    };
    if argv.is_empty() {
        exec_failed(
            comm,
            "no program given (send its path and arguments as strings)".into(),
        );
    }
    let fds: Vec<c_int> = super::args::fds(args).collect();
    let plan = FdPlan::new(&fds, Some(comm), state::comm_fds())
        .unwrap_or_else(|(fd, e)| exec_failed(comm, format!("cannot move fd {fd}: {}", e.desc())));
    let comm = plan.comm.unwrap_or(comm);
    let dup2 = |src: c_int, target: c_int| {
        // SAFETY: dup2 onto a target number of the plan, whose sources no
        // earlier dup2 overwrote; dup2 clears close-on-exec on the target.
        if unsafe { libc::dup2(src, target) } < 0 {
            let e = crate::error::last_errno();
            exec_failed(comm, format!("cannot make fd {target}: {}", e.desc()));
        }
    };
    for (src, target) in plan.moves() {
        dup2(src, target);
    }
    // Everything above the mapped fds closes at exec (but stays open for
    // the error message should the exec fail)...
    crate::sys::fd::close_range(plan.first_free as u32, u32::MAX, true);
    // ...except the copies of the comm socket asked for.
    for target in plan.comm_targets() {
        dup2(comm, target);
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: a NULL-terminated argv of live C strings.
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    let err = std::io::Error::last_os_error();
    let prog = CStr::from_bytes_with_nul(argv[0].as_bytes_with_nul())
        .map(|c| c.to_string_lossy())
        .unwrap_or_default();
    exec_failed(comm, format!("cannot execute {prog:?}: {err}"))
}
