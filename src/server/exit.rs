//! How a server process leaves: `exit` (stdio flushed, no atexit handlers),
//! `exit_after_run` (its fds closed first) and `die` (a message on stderr
//! first).

use nix::sys::socket::{MsgFlags, Shutdown, recv, shutdown};

/// Exit status of a process that was to enter its run function without
/// an fd argument the kernel could not give it (it was at its open-file
/// limit, `EMFILE`).
pub(super) const LOST_FD: i32 = 124;

/// Writes `msg` to stderr and exits with `status` without running atexit
/// handlers (they belong to whoever this process was copied from).
///
/// Commands already in the socket are read and dropped first, so that the
/// caller sees a plain EOF rather than a connection reset (which a socket
/// closed with unread data gives).
pub fn die(status: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("anyfork[{}]: {msg}", std::process::id());
    let sock = super::state::comm();
    if sock >= 0 {
        let mut buf = [0u8; 4096];
        let drain = |buf: &mut [u8]| {
            while recv(sock, buf, MsgFlags::MSG_DONTWAIT).is_ok_and(|n| n > 0) {}
        };
        drain(&mut buf);
        // No more can arrive (the caller's writes now fail with EPIPE), so
        // after one more drain nothing is left unread at exit.
        let _ = shutdown(sock, Shutdown::Read);
        drain(&mut buf);
    }
    exit(status)
}

/// Flushes C stdio and exits at once.
pub fn exit(status: i32) -> ! {
    // SAFETY: fflush(NULL) flushes every stdio stream; _exit never returns.
    unsafe {
        libc::fflush(std::ptr::null_mut());
        libc::_exit(status)
    }
}

/// Leaves after the run function returned: flushes C stdio, closes every
/// fd, the comm socket `sock` last, then exits. The caller reads EOF on
/// the comm socket as soon as the process is done (its output written,
/// its other fds closed: pipes, sockets and locks released), not after
/// the kernel has also taken its address space down, which for a copy of
/// a large interpreter takes a few hundred microseconds more; the exit
/// report still comes once the process is gone.
pub fn exit_after_run(status: i32, sock: libc::c_int) -> ! {
    use crate::sys::fd::close_range;
    // SAFETY: fflush(NULL) flushes every stdio stream.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    match u32::try_from(sock) {
        Ok(s) => {
            if s > 0 {
                close_range(0, s - 1, false);
            }
            close_range(s.saturating_add(1), u32::MAX, false);
            // SAFETY: the socket is this process's (if the function closed
            // it, the number is free, or reused by what the exit would
            // close too).
            unsafe { libc::close(sock) };
        }
        Err(_) => close_range(0, u32::MAX, false),
    }
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(status) }
}

/// Exits at once: nothing is flushed and no handler runs (a process that
/// never ran user code leaves nothing to write).
pub fn exit_now(status: i32) -> ! {
    // SAFETY: _exit ends the process; nothing of it is needed any more.
    unsafe { libc::_exit(status) }
}
