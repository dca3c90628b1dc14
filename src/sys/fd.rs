//! Raw fd calls: probing an fd number the caller names, and closing ranges.

use std::os::fd::RawFd;

/// True when `fd` names an open file descriptor of this process. The
/// caller's raw numbers cannot be borrowed as `BorrowedFd` before this.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed or
    // negative number gives EBADF.
    fd >= 0 && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
}

/// Closes the fds from `first` to `last` (inclusive); with `cloexec`,
/// marks them close-on-exec instead. A failure leaves fds open, which
/// costs nothing but the fds.
pub fn close_range(first: u32, last: u32, cloexec: bool) {
    let flags = if cloexec {
        libc::CLOSE_RANGE_CLOEXEC
    } else {
        0
    };
    // SAFETY: close_range takes plain integers; it closes only fds of this
    // process, which the callers own or no longer need.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
}

/// Closes every fd above 2 except `keep`.
pub fn close_others(keep: RawFd) {
    let keep = keep as u32;
    if keep > 3 {
        close_range(3, keep - 1, false);
    }
    close_range(keep + 1, u32::MAX, false);
}

/// `fd` itself when it is above 2, else a close-on-exec duplicate above 2
/// (the original closes). The library keeps none of its own fds at 0, 1
/// or 2: in a caller that closed its standard fds (a daemon), a socket
/// there would receive whatever the program, or a server inheriting it,
/// writes to stdout or stderr.
pub fn above_stdio(fd: std::os::fd::OwnedFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we own to the lowest free
    // number from 3; the result is checked.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns; `fd` closes on return.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Points fds 0 and 1 at `/dev/null` (a helper process that must not
/// hold its parent's stdin or stdout open).
pub fn null_stdin_stdout() {
    // SAFETY: open and dup2 on plain integers; a failure leaves the fds as
    // they were, which costs only a held pipe end.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            if null > 1 {
                libc::close(null);
            }
        }
    }
}

/// A nonblocking, close-on-exec unix stream socketpair, both ends above
/// fd 2 (see [`above_stdio`]).
pub fn socketpair_above_stdio() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    Ok((above_stdio(a)?, above_stdio(b)?))
}

/// Makes `fd` nonblocking, keeping its other status flags.
pub fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let fl = fcntl(fd, FcntlArg::F_GETFL).map_or(OFlag::empty(), OFlag::from_bits_retain);
    let _ = fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK));
}
