//! The other ways to make a process: template and early forks of the
//! caller, custom servers, the exec builtin, and handing a process object
//! to another process.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use super::convert::{UserData, strv};
use super::handle::{boxed, fork_proc, take};
use super::proc_api::{fork_run_cb, run_done};
use crate::Process;
use crate::error::{Errno, Error};

/// `fork_from_fd_flags`: accept a peer that runs as another user.
pub const FORK_FROM_FD_ANY_UID: c_uint = 1;

/// `fork_template_flags` and `fork_early_flags`: keep the caller's fds
/// open in the copy and in every process forked from it.
pub const FORK_TEMPLATE_KEEP_FDS: c_uint = 1;

/// `fork_template_flags(0)`.
#[unsafe(no_mangle)]
pub extern "C" fn fork_template() -> *mut fork_proc {
    ffi!(fork_template, Ok(fork_template_flags(0)))
}

/// Forks the calling program now. The copy forgets the library state it
/// inherited and serves as a template: processes forked from it
/// (`fork_fork`) can run the program's own functions and use the memory
/// it had prepared (link the program with `-rdynamic` so `dlsym` finds
/// its functions).
///
/// Its fds: with `flags` 0 the copy closes every fd but 0, 1, 2 and its
/// socket; send what processes need (fds) explicitly. With
/// `FORK_TEMPLATE_KEEP_FDS` the program's fds stay open, at the same
/// numbers, in the copy and in every process forked from it (a log file,
/// an interpreter's handles); only the library's own fds close there (its
/// sockets, loop fd, eventfds, pidfds, and those of handles the program
/// holds, which fail with `-EBADF` in the copy). Either way a standard fd
/// the program has closed is `/dev/null` in the copy.
///
/// Call it while the program has one thread (fork copies only the calling
/// thread; locks held by others would stay locked in the copy).
///
/// Returns a new handle owned by the caller, whose `fork_pid` is the
/// copy's pid (the library reaps it), or NULL with `fork_last_error()` set
/// (`-EINVAL` for unknown flags).
#[unsafe(no_mangle)]
pub extern "C" fn fork_template_flags(flags: c_uint) -> *mut fork_proc {
    ffi!(fork_template_flags, {
        let keep = template_flags(flags)?;
        // SAFETY: the caller promises one thread (see above).
        unsafe { Process::template_with(keep) }.map(boxed)
    })
}

/// `fork_early_flags(0)`.
#[unsafe(no_mangle)]
pub extern "C" fn fork_early() -> c_int {
    ffi!(fork_early, Ok(fork_early_flags(0)))
}

/// Forks the caller as the template that every later `fork_new_exec`
/// (and so the default template of `fork_new`) forks instead of exec'ing
/// `anyfork-serve`. Call it first thing in `main`, while the process is
/// small and has one thread. Processes made this way can run functions of
/// the program (link with `-rdynamic`). `flags` as for
/// `fork_template_flags`: with `FORK_TEMPLATE_KEEP_FDS` the program's fds
/// open at this call stay open in every such process.
///
/// Returns 0, or `-errno` with `fork_last_error()` set.
#[unsafe(no_mangle)]
pub extern "C" fn fork_early_flags(flags: c_uint) -> c_int {
    ffi!(fork_early_flags, {
        let keep = template_flags(flags)?;
        // SAFETY: the caller promises one thread (see above).
        unsafe { crate::early_with(keep) }.map(|()| 0)
    })
}

/// Whether `flags` (of `fork_template_flags`, `fork_early_flags`) keep fds.
fn template_flags(flags: c_uint) -> Result<bool, Error> {
    if flags & !FORK_TEMPLATE_KEEP_FDS != 0 {
        return Err(Error::new(
            Errno::EINVAL,
            format!("unknown flags 0x{flags:x}"),
        ));
    }
    Ok(flags & FORK_TEMPLATE_KEEP_FDS != 0)
}

/// Spawns a custom server with `posix_spawn`: `argv[0]` (searched in
/// `PATH` when it has no slash) with the NULL-terminated `argv`, its end
/// of the socket in the environment variable `ANYFORK_FD`. The server must
/// call `fork_serve` on that fd (an interpreter running a binding, say).
///
/// Returns a new handle owned by the caller (a direct child: `fork_pid`
/// works, the library reaps it), or NULL with `fork_last_error()` set.
/// Everything is copied.
///
/// # Safety
/// `argv` is NULL or a NULL-terminated array of C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_new_exec_argv(argv: *const *const c_char) -> *mut fork_proc {
    ffi!(fork_new_exec_argv, {
        // SAFETY: per the function contract.
        let argv = unsafe { strv(argv, "argv")? };
        crate::new_exec_argv(&argv).map(boxed)
    })
}

/// Starts a template on another machine: runs `argv` (NULL-terminated;
/// `argv[0]` searched in `PATH`), whose stdin and stdout must reach
/// `anyfork-serve --stdio` there, for example
/// `{"ssh", "-o", "BatchMode=yes", "host", "anyfork-serve", "--stdio", NULL}`
/// (or any command that connects them: `sh -c 'exec anyfork-serve --stdio'`
/// for a "remote" on this machine). Blocks until the far side has answered
/// (an ssh login), at most 30 seconds.
///
/// The handle is a template like `fork_new`'s: `fork_fork`,
/// `fork_send_arg`, `fork_require` and `fork_eval` (of libraries and
/// functions on the remote host), `fork_run`, `fork_exec` and
/// `fork_on_exit` work on it and on every process forked from it; pids
/// and exit statuses are the remote ones. Each remote process's comm
/// socket is a local socket here, so run callbacks, event loops, RPC and
/// pools work unchanged. The sockets of all its processes share the one
/// connection, each with its own flow control: a process that does not
/// read holds up only itself. `fork_send_fd` on these processes fails with
/// `-EOPNOTSUPP` (fds cannot cross machines) and sends nothing.
///
/// A local relay process (`anyfork-serve --relay`, a direct child:
/// `fork_pid` of the template is its pid) carries the connection on its
/// own, so a caller may block in reads of remote sockets without
/// dispatching. When the connection drops (the transport is killed, the
/// network fails) every remote socket here sees EOF and every pending
/// callback gets its error once; on the far side the template and the
/// processes see their sockets end. Nothing listens on either side: ssh
/// does the authentication and encryption.
///
/// Returns a new handle owned by the caller, or NULL with
/// `fork_last_error()` set: `-ECONNREFUSED` when the command failed or did
/// not reach `anyfork-serve --stdio` (the message gives its exit status,
/// what it wrote to stderr, and the likely cause: ssh could not connect or
/// log in, 127 for a command not found, a version mismatch, a timeout),
/// `-ENOENT` when `anyfork-serve` is not found here, `-EINVAL` for an
/// empty `argv`.
///
/// # Safety
/// `argv` is NULL or a NULL-terminated array of C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_new_remote(argv: *const *const c_char) -> *mut fork_proc {
    ffi!(fork_new_remote, {
        // SAFETY: per the function contract.
        let argv = unsafe { strv(argv, "argv")? };
        crate::new_remote(&argv).map(boxed)
    })
}

/// Makes the calling process a template server on `fd` (its end of the
/// socket, from `ANYFORK_FD`), as `anyfork-serve` is. Set a dispatcher
/// first with `fork_set_dispatch` to run interpreter code. Does not return
/// unless `fd` is unusable: the process exits when the caller goes away.
///
/// Returns only on failure: `-EBADF` or `-ENOTSOCK` with
/// `fork_last_error()` set.
#[unsafe(no_mangle)]
pub extern "C" fn fork_serve(fd: c_int) -> c_int {
    ffi!(fork_serve, {
        crate::serve_fd(fd).map(|never| match never {})
    })
}

/// Runs a program in the process through the `anyfork_exec` builtin: the
/// NULL-terminated `argv` follows any strings sent before (`argv[0]` is
/// searched in `PATH` when it has no slash); the fds sent become the
/// program's fds 0, 1, 2, … in order (standard fds not covered stay as
/// they are); with a non-NULL `envp` (NULL-terminated `NAME=VALUE`
/// strings) the environment is exactly `envp`. Before it, `fork_eval` with
/// the builtins `anyfork_setenv`, `anyfork_clearenv`, `anyfork_chdir`,
/// `anyfork_setsid` and `anyfork_comm_fd` (e.g. "2": the comm socket
/// becomes stderr) prepare the rest. An exec failure is written to the
/// comm socket and the process exits with status 127 (with a NULL `cb`
/// too: a message nobody reads raises no SIGPIPE).
///
/// When nothing was sent to `p` since `fork_new` or `fork_fork` made it
/// and `envp` is NULL, its template starts the program with `posix_spawn`
/// instead of copying itself first: the same program, fds and signal
/// state, at the cost of `posix_spawn` whatever the template's size. If
/// `cb` is NULL too, the request is one small write with no socket in it
/// (the program gets no socket of the caller's; where `anyfork_comm_fd`
/// asked for one, it gets a socket whose other end is closed): the
/// cheapest way for an event loop to start a program and learn its exit
/// (`fork_on_exit`).
///
/// Consumes `p` like `fork_run`, even on failure; `cb` as for `fork_run`.
/// Returns 0, or `-errno` with `fork_last_error()` set (then `cb` never
/// runs).
///
/// # Safety
/// `p` is NULL or a live handle, not used again; `argv` and `envp` are
/// NULL or NULL-terminated arrays of C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_exec(
    p: *mut fork_proc,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cb: fork_run_cb,
    userdata: *mut c_void,
) -> c_int {
    ffi!(fork_exec, {
        // SAFETY: per the function contract; consumed whatever happens next.
        let p = unsafe { take(p)? };
        // SAFETY: per the function contract.
        let argv = unsafe { strv(argv, "argv")? };
        let env = if envp.is_null() {
            None
        } else {
            // SAFETY: per the function contract.
            Some(unsafe { strv(envp, "envp")? })
        };
        let ud = UserData(userdata);
        match cb {
            None => p.exec_detached(&argv, env.as_deref()),
            Some(_) => p.exec(&argv, env.as_deref(), move |r| {
                run_done("fork_exec", cb, ud, r)
            }),
        }
        .map(|()| 0)
    })
}

/// Delivers everything queued to the process (waiting up to 10 s) and
/// gives up its socket, so that another process can adopt it with
/// `fork_from_fd` (pass the fd over a unix socket). Consumes `p`, even on
/// failure.
///
/// Returns the fd, now owned by the caller, or `-errno` with
/// `fork_last_error()` set.
///
/// # Safety
/// `p` is NULL or a live handle, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_to_fd(p: *mut fork_proc) -> c_int {
    ffi!(fork_to_fd, {
        // SAFETY: per the function contract; consumed whatever happens next.
        let p = unsafe { take(p)? };
        p.into_fd().map(IntoRawFd::into_raw_fd)
    })
}

/// `fork_from_fd_flags(fd, 0)`.
#[unsafe(no_mangle)]
pub extern "C" fn fork_from_fd(fd: c_int) -> *mut fork_proc {
    ffi!(fork_from_fd, Ok(fork_from_fd_flags(fd, 0)))
}

/// Makes a process object of a socket that `fork_to_fd` gave up (here or
/// in another process). It refuses a socket whose peer runs as another
/// user (`SO_PEERCRED`) unless `flags` has `FORK_FROM_FD_ANY_UID`. The
/// process's pid and exit status are not known to the new owner.
///
/// Returns a new handle that owns `fd`, or NULL with `fork_last_error()`
/// set (`fd` then stays the caller's).
#[unsafe(no_mangle)]
pub extern "C" fn fork_from_fd_flags(fd: c_int, flags: c_uint) -> *mut fork_proc {
    ffi!(fork_from_fd_flags, {
        if !crate::sys::fd::is_open(fd) {
            return Err(Error::new(Errno::EBADF, format!("fd {fd} is not open")));
        }
        if flags & !FORK_FROM_FD_ANY_UID != 0 {
            return Err(Error::new(
                Errno::EINVAL,
                format!("unknown flags 0x{flags:x}"),
            ));
        }
        // SAFETY: the fd is open; on failure ownership goes back to the
        // caller (into_raw_fd below).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        match Process::from_fd(owned, flags & FORK_FROM_FD_ANY_UID != 0) {
            Ok(p) => Ok(boxed(p)),
            Err((e, owned)) => {
                let _ = owned.into_raw_fd();
                Err(e)
            }
        }
    })
}

/// In a child process that the caller forked itself (not one made by
/// anyfork): closes the child's copies of the library's sockets and
/// forgets the parent's templates, queues and callbacks (none of them
/// runs), so the child can use anyfork afresh. Handles inherited from the
/// parent then fail with `-EBADF`; free them with `fork_free`.
///
/// A child made by `fork()` (libc's, or any fork that runs
/// `pthread_atfork` handlers: Python's `os.fork`, Ruby's and Perl's
/// `fork`) needs no call: the library notices the fork, the parent's
/// handles fail with `-EBADF` at once, and the child's first call into
/// the library resets it there. Call this after a raw `clone` or glibc's
/// `_Fork`, which run no fork handlers. Calling it in a process that did
/// not fork makes every existing handle fail with `-EBADF`.
#[unsafe(no_mangle)]
pub extern "C" fn fork_reset_after_fork() {
    ffi!(fork_reset_after_fork, {
        crate::reset_after_fork();
        Ok(())
    })
}
