//! `anyfork-serve --stdio`: the remote end of a link. Its stdin and
//! stdout are the link (an ssh session's, say); it forks a template
//! server on a socketpair and carries that socket, and the socket of
//! every process forked from it, over the link. It opens no port and
//! listens nowhere.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::{SigHandler, Signal, signal};

use super::link;
use super::mux::{Ended, Mux, Side};
use crate::server::entry::{ServeOptions, serve};
use crate::server::exit::{die, exit};
use crate::server::signals::SignalState;

/// `main` of `anyfork-serve --stdio [-- CMD ARGS…]`: with a command, the
/// template is that program (an interpreter serving with `fork_serve` on
/// the socket named by `ANYFORK_FD`, as `fork_new_exec_argv` starts one)
/// instead of a forked `anyfork-serve`.
pub fn main(server: Vec<std::ffi::CString>) -> ! {
    // The link moves off 0 and 1: what the template and its processes
    // write to stdout goes to stderr (which ssh carries back), and
    // nothing reads the link but us.
    let dup = |fd| {
        // SAFETY: F_DUPFD_CLOEXEC on a standard fd; the result is checked.
        let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if d < 0 {
            die(
                2,
                format_args!(
                    "anyfork-serve --stdio needs its stdin and stdout: fd {fd}: {}",
                    std::io::Error::last_os_error()
                ),
            );
        }
        // SAFETY: a fresh fd nothing else owns.
        unsafe { OwnedFd::from_raw_fd(d) }
    };
    let input = dup(0);
    let output = dup(1);
    crate::sys::fd::null_stdin_stdout();
    // SAFETY: dup2 of fd 2 onto fd 1; both are ours.
    unsafe { libc::dup2(2, 1) };
    let (ours, theirs) = match crate::sys::fd::socketpair_above_stdio() {
        Ok(p) => p,
        Err(e) => die(2, format_args!("making the template's socketpair: {e}")),
    };
    // SAFETY: this process is single-threaded (main of anyfork-serve).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop((ours, input, output));
            crate::sys::fd::close_others(theirs.as_raw_fd());
            let _ = nix::fcntl::fcntl(
                &theirs,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            );
            SignalState::capture(true).reset();
            if !server.is_empty() {
                exec_server(theirs, &server);
            }
            serve(
                theirs,
                ServeOptions {
                    expect_hello: true,
                    scan_signals: false,
                    threaded: false,
                },
            )
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {}
        Err(e) => die(2, format_args!("forking the template: {e}")),
    }
    drop(theirs);
    // A link that is gone shows as EPIPE on write, then EOF on read.
    // SAFETY: setting a disposition to SIG_IGN runs no code.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    let mut mux = Mux::new(Side::Remote, input, output, ours, Vec::new(), false);
    let mut hello = Vec::new();
    link::push_hello(&mut hello);
    mux.queue(&hello);
    match mux.run() {
        Ended::Drained | Ended::Dropped(_) => {}
        Ended::Corrupt(why) => {
            eprintln!("anyfork-serve --stdio[{}]: {why}", std::process::id());
        }
    }
    // Every socket closes: the template and the processes see EOF.
    mux.abandon();
    exit(0)
}

/// In the template's process: becomes `server`, told its socket in
/// `ANYFORK_FD`. Exits 127 with a message if it cannot be run.
fn exec_server(sock: OwnedFd, server: &[std::ffi::CString]) -> ! {
    let fd = sock.as_raw_fd();
    let _ = nix::fcntl::fcntl(
        &sock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    );
    std::mem::forget(sock);
    // SAFETY: this process is single-threaded (just forked from main).
    unsafe { std::env::set_var(crate::protocol::env::FD_ENV, fd.to_string()) };
    let e = nix::unistd::execvp(&server[0], server).unwrap_err();
    die(
        127,
        format_args!(
            "anyfork-serve --stdio: cannot run the template server {:?}: {e}",
            server[0]
        ),
    )
}
