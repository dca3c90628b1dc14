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

/// `main` of the exec'd `anyfork-serve`. With no arguments: a template
/// server on the socket in `ANYFORK_FD`, closing every other inherited fd
/// but 0, 1 and 2. `--stdio [-- SERVER ARGS…]`: the remote end of a link
/// on stdin/stdout (`ssh host anyfork-serve --stdio`), whose template is
/// a forked `anyfork-serve` or the custom server given. `--relay -- CMD
/// ARGS…`: the relay `fork_new_remote` starts beside the caller.
pub fn exec_main(args: Vec<std::ffi::CString>) -> ! {
    match args.get(1).map(|a| a.to_bytes()) {
        None => {}
        Some(b"--stdio") if args.len() == 2 => crate::remote::stdio::main(Vec::new()),
        Some(b"--stdio") if args.len() > 3 && args[2].to_bytes() == b"--" => {
            crate::remote::stdio::main(args[3..].to_vec())
        }
        Some(b"--relay") if args.len() > 3 && args[2].to_bytes() == b"--" => {
            let sock = socket_from_env();
            crate::sys::fd::close_others(sock.as_raw_fd());
            crate::remote::relay::main(sock, args[3..].to_vec())
        }
        Some(b"--version") if args.len() == 2 => {
            println!(
                "anyfork-serve {} (protocol {}, remote link {})",
                env!("CARGO_PKG_VERSION"),
                crate::protocol::wire::VERSION,
                crate::remote::link::LINK_VERSION
            );
            super::exit::exit(0)
        }
        Some(_) => die(
            2,
            "usage: anyfork-serve (started by libanyfork, socket in ANYFORK_FD) | \
             anyfork-serve --stdio [-- SERVER ARGS...] (the far end of fork_new_remote: \
             ssh host anyfork-serve --stdio) | \
             anyfork-serve --version",
        ),
    }
    let sock = socket_from_env();
    let fd = sock.as_raw_fd();
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

/// The socket named by `ANYFORK_FD`, blocking and close-on-exec; the
/// variable is removed so processes do not inherit it.
fn socket_from_env() -> OwnedFd {
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
    sock
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
