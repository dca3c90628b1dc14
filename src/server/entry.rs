//! The ways into the server: `main` of the exec'd `anyfork-serve`, a
//! custom server's `fork_serve`, and (in `caller/fork_self.rs`) a template
//! forked from the caller, which calls [`serve`] directly.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::socket::{SockType, getsockopt, sockopt};

use super::exit::die;
pub use super::serve_loop::{ServeOptions, serve};
use super::signals::SignalState;
use crate::error::{Errno, Error, Result};
use crate::protocol::env::FD_ENV;

/// `main` of the exec'd `anyfork-serve`: takes its socket from
/// `ANYFORK_FD`, closes every other inherited fd but 0, 1 and 2, serves.
pub fn exec_main() -> ! {
    let fd: RawFd = std::env::var(FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&fd| fd > 2)
        .unwrap_or_else(|| {
            die(
                2,
                "anyfork-serve is started by libanyfork; ANYFORK_FD is not set to a socket fd above 2",
            )
        });
    if !crate::sys::fd::is_open(fd) {
        die(2, format_args!("ANYFORK_FD={fd} is not an open fd"));
    }
    // SAFETY: the fd is open and was handed to this program to own;
    // nothing else in the process refers to it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the process is single-threaded here (main of anyfork-serve),
    // so nothing reads the environment meanwhile.
    unsafe { std::env::remove_var(FD_ENV) };
    let _ = fcntl(&sock, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let _ = fcntl(&sock, FcntlArg::F_SETFL(OFlag::empty()));
    crate::sys::fd::close_others(fd);
    // An exec keeps the signals its caller ignored (SIGPIPE, often) and
    // the signal mask: put every signal back to its default once here, so
    // forked processes inherit a clean state.
    SignalState::capture(true).reset();
    serve(
        sock,
        ServeOptions {
            expect_hello: true,
            scan_signals: false,
            threaded: false,
        },
    )
}

/// Serves on `fd` in a process that was not exec'd as `anyfork-serve` (a
/// custom server): checks the fd, then never returns.
pub fn serve_custom(fd: RawFd) -> Result<std::convert::Infallible> {
    if !crate::sys::fd::is_open(fd) {
        return Err(Error::new(Errno::EBADF, format!("fd {fd} is not open")));
    }
    // SAFETY: the fd is open (checked above); it is only borrowed until
    // it proved to be a stream socket.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    match getsockopt(&borrowed, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(_) => {
            return Err(Error::new(
                Errno::ENOTSOCK,
                format!("fd {fd} is not a stream socket"),
            ));
        }
        Err(e) => return Err(Error::sys(e, format_args!("fd {fd} is not a socket"))),
    }
    // SAFETY: the caller hands the fd over (fork_serve's contract: it is
    // the server's socket, from ANYFORK_FD).
    let sock = unsafe { OwnedFd::from_raw_fd(borrowed.as_raw_fd()) };
    let _ = fcntl(sock.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let _ = fcntl(sock.as_fd(), FcntlArg::F_SETFL(OFlag::empty()));
    serve(
        sock,
        ServeOptions {
            expect_hello: true,
            scan_signals: true,
            threaded: true,
        },
    )
}
