//! Process objects: create, feed, run, free.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::os::fd::{BorrowedFd, IntoRawFd};

use super::boundary;
use super::convert::{UserData, bytes, text};
use super::handle::{borrow, borrow_mut, boxed, fork_proc, take};
use crate::Process;
use crate::error::{Errno, Error, Result};

/// Called once a run's commands are all delivered: `fd` is the caller's
/// end of the comm socket, which the callback now owns (close it when
/// done; its EOF tells that the process ended). A negative `fd` is `-errno`
/// when the process can no longer be reached (e.g. `-EPIPE`, the template
/// died); `fork_last_error()` on the dispatching thread then describes why.
pub type fork_run_cb = Option<unsafe extern "C" fn(fd: c_int, userdata: *mut c_void)>;

/// Called once a process has exited: its pid and its wait status (decode
/// with `WIFEXITED`/`WEXITSTATUS`/`WIFSIGNALED`/`WTERMSIG`). A negative
/// `wait_status` is `-errno` when the status cannot be known (`-ECHILD`:
/// the template went away first, or a host loop reaped a direct child),
/// with `fork_last_error()` describing why.
pub type fork_exit_cb =
    Option<unsafe extern "C" fn(pid: libc::pid_t, wait_status: c_int, userdata: *mut c_void)>;

/// Creates a process by forking the default template, which is spawned on
/// first use (see `fork_new_exec`) and spawned again if it died.
///
/// Returns a new handle, or NULL with `fork_last_error()` set. The caller
/// owns the handle: end it with `fork_run` or `fork_free`. Any thread may
/// call; the default template is shared and locked.
#[unsafe(no_mangle)]
pub extern "C" fn fork_new() -> *mut fork_proc {
    ffi!(fork_new, Process::new().map(boxed))
}

/// Spawns a fresh template server (`anyfork-serve`, found through
/// `$ANYFORK_SERVE`, beside the shared library, `../libexec/`, or the build
/// directory) with `posix_spawn`: a direct child of the caller, whose pid
/// `fork_pid` gives and which the library reaps.
///
/// Returns a new handle owned by the caller, or NULL with
/// `fork_last_error()` set (naming every place searched when the server is
/// not found). Any thread may call.
#[unsafe(no_mangle)]
pub extern "C" fn fork_new_exec() -> *mut fork_proc {
    ffi!(fork_new_exec, Process::new_exec().map(boxed))
}

/// Forks the process `p`: the child starts with every fd, string and
/// library sent to `p` so far, and takes its own commands from then on.
/// `p` stays usable (it is a template) and is not consumed.
///
/// Returns a new handle owned by the caller, or NULL with
/// `fork_last_error()` set (NULL `p`, a dead process).
///
/// Like `fork_new`, this makes no fd: the new process's socket is made by
/// the call that sends its first command (`fork_run`, `fork_send_arg`,
/// …), which fails with `-EMFILE` if no fd is left, sending nothing; the
/// process then waits for a later command. After `fork_exec` with NULL
/// `envp` and NULL `cb` it needs no socket at all.
///
/// # Safety
/// `p` is NULL or a live handle not used by another thread meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_fork(p: *mut fork_proc) -> *mut fork_proc {
    ffi!(fork_fork, {
        // SAFETY: per the function contract.
        unsafe { borrow(p)? }.fork().map(boxed)
    })
}

/// Keeps `n` processes forked ahead from the template `p` (0, the
/// default: none). They are forked at once and wait, each on its own
/// socket; `fork_fork(p)` then hands out the oldest (already forked: what
/// the caller sends it goes straight to it, and its run starts with no
/// fork on the way). Its replacement is forked 2 ms later, by the dispatch
/// that follows (the loop fd becomes readable then), so that the
/// template's fork does not compete for the CPUs with the process just
/// handed out; when forks come less than 2 ms apart, or the refill is
/// overdue because nothing dispatched, `fork_fork` forks it at once. A
/// `fork_fork` that finds none waiting forks as usual. A process
/// forked ahead is a copy of `p` as it was then, so sending `p` anything
/// (`fork_send_arg`, `fork_send_fd`, `fork_require`, `fork_eval`) lets the
/// waiting ones exit and forks new ones behind it; lowering `n` lets the
/// extra ones exit, as does freeing or running `p`. Their pids show in
/// `ps` while they wait; their exits reach no callback.
///
/// For sparse creations (one now and then, each awaited) this takes the
/// template's fork and wake-up off the new process's path; `anyfork_warm`
/// (a pool kept by the template itself) saves only the fork.
///
/// Returns 0, or `-EINVAL` (NULL `p`, `n` above 64), `-EPIPE` (`p` is
/// gone), `-EMFILE` (no fds for the sockets), with `fork_last_error()` set.
///
/// # Safety
/// `p` is NULL or a live handle not used by another thread meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_ahead(p: *mut fork_proc, n: c_uint) -> c_int {
    ffi!(fork_ahead, {
        // SAFETY: per the function contract.
        let p = unsafe { borrow(p)? };
        p.fork_ahead(n as usize).map(|()| 0)
    })
}

/// Sends a file descriptor; it becomes the next argument of the run
/// function (`FORK_ARG_FD`). The library duplicates `fd` at once
/// (`F_DUPFD_CLOEXEC`): the caller keeps its own and may close it right
/// away; the library closes its duplicate once it is passed.
///
/// Returns 0, or `-EINVAL` (NULL `p`), `-EBADF` (negative or closed `fd`),
/// `-EMFILE` (no fd left for the duplicate), `-EPIPE` (the process is
/// gone), `-EOPNOTSUPP` (a process of a remote template, see
/// `fork_new_remote`: fds cannot cross machines), with
/// `fork_last_error()` set. Nothing is sent on failure.
///
/// # Safety
/// `p` is NULL or a live handle not used by another thread meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_send_fd(p: *mut fork_proc, fd: c_int) -> c_int {
    ffi!(fork_send_fd, {
        // SAFETY: per the function contract.
        let p = unsafe { borrow_mut(p)? };
        if fd < 0 {
            return Err(Error::new(Errno::EBADF, format!("fd {fd} is negative")));
        }
        if !crate::sys::fd::is_open(fd) {
            return Err(Error::new(Errno::EBADF, format!("fd {fd} is not open")));
        }
        // SAFETY: `fd` was just checked to be open; it is only borrowed
        // for the duration of the duplication.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        p.send_fd(fd).map(|()| 0)
    })
}

/// Sends a byte string of `len` bytes (`data` may be NULL when `len` is
/// 0); it becomes the next argument of the run function
/// (`FORK_ARG_STRING`). The bytes are copied if they cannot be written at
/// once: the caller keeps ownership of `data`.
///
/// Returns 0, or `-EINVAL` (NULL `p`, NULL `data` with a length),
/// `-E2BIG` (4 GiB or more), `-EPIPE` (the process is gone), with
/// `fork_last_error()` set.
///
/// # Safety
/// `p` as for `fork_send_fd`; `data` is NULL or points to `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_send_arg(
    p: *mut fork_proc,
    data: *const c_void,
    len: usize,
) -> c_int {
    ffi!(fork_send_arg, {
        // SAFETY: per the function contract.
        let p = unsafe { borrow_mut(p)? };
        // SAFETY: per the function contract.
        let b = unsafe { bytes(data.cast(), len, "data")? };
        p.send_arg(b).map(|()| 0)
    })
}

/// Loads the shared library `library` into the process (`dlopen` with
/// `RTLD_NOW | RTLD_GLOBAL`), so later eval and run functions can be found
/// in it. If it cannot be loaded, the process writes why to its stderr and
/// exits with status 127: the caller sees EOF on the comm socket, or
/// `-EPIPE` from a command or the run callback if it was still sending.
///
/// Fork handlers the library registers (`pthread_atfork`) run in every
/// process forked from this one afterwards. Until loaded code may have
/// registered one (some loaded object uses `pthread_atfork`) or started a
/// thread, an `anyfork-serve` process forks with glibc's `_Fork`, which
/// spares each new process `fork`'s bookkeeping.
///
/// Returns 0 once queued, or `-EINVAL` (NULL `p` or `library`, an empty
/// name) with `fork_last_error()` set. The string is copied.
///
/// # Safety
/// `p` as for `fork_send_fd`; `library` is NULL or a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_require(p: *mut fork_proc, library: *const c_char) -> c_int {
    ffi!(fork_require, {
        // SAFETY: per the function contract.
        let p = unsafe { borrow_mut(p)? };
        // SAFETY: per the function contract.
        let lib = unsafe { text(library, "the library name")? };
        p.require(lib).map(|()| 0)
    })
}

/// Calls `int function(const fork_arg *args, size_t nargs)` in the process
/// now, with the `nargs` strings `args` (as `FORK_ARG_STRING`). Inside it,
/// `fork_child_args` gives every fd and string received so far. A missing
/// function (status 127) or a non-zero return (that status) makes the
/// process write why to its stderr and exit.
///
/// Builtin evals: `anyfork_setenv`, `anyfork_clearenv`, `anyfork_chdir`,
/// `anyfork_setsid`, `anyfork_comm_fd` (see `fork_exec`) and
/// `anyfork_warm` ("K", 0 to 64): the process, as a template, keeps K
/// children forked and waiting, and hands each `fork_fork` request to one
/// of them (the warm pool; a string, fd, require or eval sent to the
/// template dismisses them, and new ones are forked when it is idle).
///
/// Returns 0 once queued, or `-EINVAL` (NULL `p` or `function`, an empty
/// name, NULL `args` with `nargs` > 0, a NULL string) with
/// `fork_last_error()` set. Everything is copied.
///
/// # Safety
/// `p` as for `fork_send_fd`; `function` is NULL or a C string; `args` is
/// NULL or points to `nargs` C string pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_eval(
    p: *mut fork_proc,
    function: *const c_char,
    args: *const *const c_char,
    nargs: usize,
) -> c_int {
    ffi!(fork_eval, {
        // SAFETY: per the function contract.
        let p = unsafe { borrow_mut(p)? };
        // SAFETY: per the function contract.
        let name = unsafe { text(function, "the function name")? };
        let size = nargs
            .checked_mul(size_of::<*const c_char>())
            .ok_or_else(|| {
                Error::new(
                    Errno::E2BIG,
                    format!("{nargs} arguments are more than memory holds"),
                )
            })?;
        // SAFETY: per the function contract.
        let ptrs = unsafe { bytes(args.cast::<u8>(), size, "args")? };
        let ptrs: &[*const c_char] = if nargs == 0 {
            &[]
        } else {
            // SAFETY: `ptrs` covers exactly `nargs` pointers.
            unsafe { std::slice::from_raw_parts(ptrs.as_ptr().cast(), nargs) }
        };
        let mut strs = Vec::with_capacity(nargs);
        for (i, &s) in ptrs.iter().enumerate() {
            if s.is_null() {
                return Err(Error::new(Errno::EINVAL, format!("args[{i}] is NULL")));
            }
            // SAFETY: a non-NULL C string, per the contract.
            strs.push(unsafe { std::ffi::CStr::from_ptr(s) }.to_bytes());
        }
        p.eval(name, &strs).map(|()| 0)
    })
}

/// Like `fork_eval`, for arguments that are byte strings (which may hold
/// NUL bytes): argument `i` is `lens[i]` bytes at `data[i]` (`data[i]`
/// may be NULL when `lens[i]` is 0).
///
/// Returns 0 once queued, or `-EINVAL` (NULL `p` or `function`, an empty
/// name, NULL `data` or `lens` with `nargs` > 0, a NULL string with a
/// length) with `fork_last_error()` set. Everything is copied.
///
/// # Safety
/// `p` as for `fork_send_fd`; `function` is NULL or a C string; `data` and
/// `lens` are NULL or point to `nargs` elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_eval_n(
    p: *mut fork_proc,
    function: *const c_char,
    data: *const *const c_void,
    lens: *const usize,
    nargs: usize,
) -> c_int {
    ffi!(fork_eval_n, {
        // SAFETY: per the function contract.
        let p = unsafe { borrow_mut(p)? };
        // SAFETY: per the function contract.
        let name = unsafe { text(function, "the function name")? };
        if nargs > 0 && (data.is_null() || lens.is_null()) {
            return Err(Error::new(
                Errno::EINVAL,
                format!("data or lens is NULL with {nargs} arguments"),
            ));
        }
        let mut args = Vec::with_capacity(nargs);
        for i in 0..nargs {
            // SAFETY: both arrays hold `nargs` elements, per the contract.
            let (d, l) = unsafe { (*data.add(i), *lens.add(i)) };
            // SAFETY: `d` is NULL or points to `l` bytes, per the contract.
            args.push(unsafe { bytes(d.cast(), l, &format!("data[{i}]"))? });
        }
        p.eval(name, &args).map(|()| 0)
    })
}

/// Makes the process enter `int function(int fd, const fork_arg *args,
/// size_t nargs)`: `fd` is its end of the comm socket, `args` every fd and
/// string sent to it and to the templates it was forked from, in the order
/// sent. When `function` returns, the process exits with its return value.
/// If the function does not exist, the process writes why to its stderr
/// and exits with status 127.
///
/// This consumes `p`, even when it fails: the library keeps the process
/// alive until everything is delivered. Then `cb` runs (from
/// `fork_loop_dispatch` or `fork_wait`, never from inside `fork_run`) with
/// the caller's end of the comm socket, which it then owns, or with
/// `-errno` if delivery failed. With a NULL `cb` the library closes its end
/// itself once everything is delivered; if nothing was sent to `p` since
/// `fork_new` or `fork_fork`, no socket is made at all: the request is one
/// small write, and the process's comm socket is one of its template's
/// whose other end is closed (what it would see anyway).
///
/// "Delivered" means written to the kernel: the process's commands, and
/// for a forked process the fork request to its template. `cb` does not
/// wait for the template to report the pid (that would cost a round trip
/// per process): if the fork fails after its request left (fork failed in
/// the template, or the template died first), reading the comm socket
/// ends at once (EOF, or `ECONNRESET` when commands written to it were lost
/// unread), and `fork_on_exit`'s callback gets pid -1 and the `-errno`.
///
/// Returns 0, or `-EINVAL` (NULL `p` or `function`, an empty name),
/// `-EPIPE` (the process is gone) with `fork_last_error()` set; after an
/// error `cb` is never called.
///
/// # Safety
/// `p` is NULL or a live handle, which must not be used again; `function`
/// is NULL or a C string; `cb` may run on any thread that dispatches.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_run(
    p: *mut fork_proc,
    function: *const c_char,
    cb: fork_run_cb,
    userdata: *mut c_void,
) -> c_int {
    ffi!(fork_run, {
        // SAFETY: per the function contract; consumed whatever happens next.
        let p = unsafe { take(p)? };
        // SAFETY: per the function contract.
        let name = unsafe { text(function, "the function name")? };
        let ud = UserData(userdata);
        match cb {
            None => p.run_detached(name),
            Some(_) => p.run(name, move |r| run_done("fork_run", cb, ud, r)),
        }
        .map(|()| 0)
    })
}

pub(super) fn run_done(name: &str, cb: fork_run_cb, ud: UserData, r: Result<std::os::fd::OwnedFd>) {
    let Some(cb) = cb else { return };
    let fd = match r {
        Ok(fd) => fd.into_raw_fd(),
        Err(e) => -(boundary::record(&e, name) as c_int),
    };
    // SAFETY: the caller registered `cb` with this signature and userdata.
    unsafe { cb(fd, ud.0) };
}

/// Registers `cb` to run once the process has exited, with its pid and
/// wait status. Works for every process: forked ones hear it from their
/// template, direct children through a pidfd. Call it before `fork_run`;
/// a second call replaces the first callback, which then runs (from
/// dispatch) with pid -1 and `-ECANCELED`. `cb` runs from
/// `fork_loop_dispatch` or `fork_wait`. No SIGCHLD handler is involved.
///
/// Returns 0, or `-EINVAL` (NULL `p` or `cb`) with `fork_last_error()` set.
///
/// # Safety
/// `p` as for `fork_send_fd`; `cb` may run on any thread that dispatches.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_on_exit(
    p: *mut fork_proc,
    cb: fork_exit_cb,
    userdata: *mut c_void,
) -> c_int {
    ffi!(fork_on_exit, {
        // SAFETY: per the function contract.
        let p = unsafe { borrow_mut(p)? };
        let Some(cb) = cb else {
            return Err(Error::new(Errno::EINVAL, "the exit callback is NULL"));
        };
        let ud = UserData(userdata);
        p.on_exit(move |pid, status| {
            let ud = ud;
            let status =
                status.unwrap_or_else(|e| -(boundary::record(&e, "fork_on_exit") as c_int));
            // SAFETY: the caller registered `cb` with this signature.
            unsafe { cb(pid, status, ud.0) };
        });
        Ok(0)
    })
}

/// The process's pid. Direct children (`fork_new_exec`) know it at once;
/// a forked process learns it from its template, so this call may wait
/// (up to 10 s) for the template's report.
///
/// Returns the pid, or -1 with `fork_last_error()` set (NULL `p`, the fork
/// failed, the template died, the report timed out).
///
/// # Safety
/// `p` is NULL or a live handle not used by another thread meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_pid(p: *const fork_proc) -> libc::pid_t {
    ffi!(fork_pid, on_error = -1, {
        // SAFETY: per the function contract.
        unsafe { borrow(p)? }.pid()
    })
}

/// Frees a handle that has not run. Two cases:
///
/// - Its fork request is still held back: nothing was asked of a process
///   that `fork_new` or `fork_fork` made (no `fork_send_fd`,
///   `fork_send_arg`, `fork_require`, `fork_eval`, `fork_fork` of it or
///   `fork_pid` since), and nothing of its template either (a fork request
///   waits only until the template's next command, another fork
///   included): the process is never made.
///   Its exit callback, if any, runs with pid -1 and `-ECANCELED`.
/// - Otherwise (and always for `fork_new_exec`, `fork_template` and
///   `fork_from_fd` handles, whose process exists already): what was
///   queued is still delivered, then the process sees EOF before any run
///   and exits with status 0, which its exit callback reports.
///
/// `fork_free(NULL)` does nothing.
///
/// # Safety
/// `p` is NULL or a live handle, which must not be used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fork_free(p: *mut fork_proc) {
    ffi!(fork_free, {
        if !p.is_null() {
            // SAFETY: a live handle, per the function contract.
            drop(unsafe { take(p)? });
        }
        Ok(())
    })
}

/// A message describing the last error on the calling thread: what was
/// called, on what, and why. The string belongs to the library and stays
/// valid until the next failing call on this thread; it is "" before any.
#[unsafe(no_mangle)]
pub extern "C" fn fork_last_error() -> *const c_char {
    ffi!(fork_last_error, Ok(boundary::last_error()))
}

/// The negative errno of the last failure on the calling thread (what an
/// `int` call would have returned), for calls that return a pointer or a
/// pid; 0 before any failure.
#[unsafe(no_mangle)]
pub extern "C" fn fork_last_errno() -> c_int {
    ffi!(fork_last_errno, Ok(boundary::last_errno()))
}
