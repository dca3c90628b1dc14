//! anyfork creates processes without forking the caller.
//!
//! A small template server process (`anyfork-serve`, or a fork of the
//! caller made early) forks on request. The caller sends it file
//! descriptors and byte strings over a unix socketpair and names the
//! function the new process enters. The crate is a C library first (see
//! `include/anyfork.h`); this Rust API drives the same engine.
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! let mut p = anyfork::Process::new()?;
//! p.send_arg(b"hello")?;
//! p.send_fd(std::io::stdout().as_fd())?;
//! p.run("anyfork_exit", |sock| drop(sock))?;
//! while anyfork::wait(-1)? > 0 {}
//! # Ok::<(), anyfork::Error>(())
//! ```
//!
//! Commands never block: what a socket cannot take at once is written as
//! the reactor turns, through [`loop_fd`] and [`dispatch`] in an event
//! loop, or [`wait`] without one. Callbacks run only from those two.
//!
//! The code is two programs that speak one protocol:
//! - [`caller`]: the library in the program that creates processes;
//! - [`server`]: the template server and what runs in each new process
//!   until user code takes over;
//! - [`protocol`]: the frames and environment names both share;
//! - [`rpc`]: request/reply channels to workers, and pools of them;
//! - [`remote`]: templates on other machines, over one ssh connection;
//! - [`capi`]: the C boundary, conversions only;
//! - `sys`: the few raw system calls that nix and std do not wrap.

pub mod caller;
pub mod capi;
pub mod error;
pub mod protocol;
pub mod remote;
pub mod rpc;
pub mod server;
mod sys;

pub use caller::process::Process;
pub use error::{Errno, Error, Result};
pub use protocol::wire;
pub use server::args::{ForkArg, ForkArgKind};

/// Forks the calling program now as a template (see `fork_template` in
/// the header for the rules).
///
/// # Safety
/// The program must have one thread (see [`Process::template`]).
pub unsafe fn template() -> Result<Process> {
    // SAFETY: per this function's contract.
    unsafe { Process::template() }
}

/// Forks the caller as the template that later [`Process::new_exec`]
/// calls fork instead of exec'ing `anyfork-serve`; call it first thing.
///
/// # Safety
/// The program must have one thread (see [`Process::template`]).
pub unsafe fn early() -> Result<()> {
    // SAFETY: per this function's contract.
    unsafe { caller::fork_self::early() }
}

/// [`early`], keeping the program's fds open in the early template and
/// its processes when `keep_fds` (see [`Process::template_with`]).
///
/// # Safety
/// The program must have one thread (see [`Process::template`]).
pub unsafe fn early_with(keep_fds: bool) -> Result<()> {
    // SAFETY: per this function's contract.
    unsafe { caller::fork_self::early_with(keep_fds) }
}

/// Spawns a custom server command that calls [`serve_fd`] on the fd it
/// finds in `ANYFORK_FD`.
pub fn new_exec_argv(argv: &[&[u8]]) -> Result<Process> {
    Process::new_exec_argv(argv)
}

/// A template on another machine, reached through `argv`'s stdin and
/// stdout (`ssh host anyfork-serve --stdio`); see [`remote`].
pub fn new_remote(argv: &[&[u8]]) -> Result<Process> {
    Process::new_remote(argv)
}

/// Turns the calling process into a template server on `fd` (the socket
/// from `ANYFORK_FD` in a custom server). Returns only on a bad fd.
pub fn serve_fd(fd: std::os::fd::RawFd) -> Result<std::convert::Infallible> {
    server::entry::serve_custom(fd)
}

/// In a child the caller forked itself: drops the parent's templates and
/// queues (see [`caller::state`]). A fork through libc's `fork` is noticed
/// without it; call it after a raw `clone` or `_Fork`.
pub fn reset_after_fork() {
    caller::state::reset()
}

/// The one fd of the library that an event loop watches for readability:
/// it is readable exactly while [`dispatch`] has work (level-triggered).
pub fn loop_fd() -> Result<std::os::fd::RawFd> {
    Ok(caller::state::reactor()?.fd())
}

/// Writes what can be written, reads reports, reaps direct children and
/// runs the callbacks that are due; never blocks. Returns the number of
/// callbacks run.
pub fn dispatch() -> Result<usize> {
    caller::state::reactor()?.dispatch()
}

/// Dispatches until at least one callback ran, `timeout_ms` passed
/// (negative: no limit) or nothing is [`pending`]. Returns the number run;
/// 0 means the timeout passed or nothing is pending. Any number of
/// threads may wait at once.
pub fn wait(timeout_ms: i32) -> Result<usize> {
    caller::state::reactor()?.wait(timeout_ms)
}

/// Work that only [`dispatch`] (or [`wait`]) does: run and exit callbacks
/// registered and not run yet, plus processes whose commands are still
/// queued (freed or run without a callback, but not yet delivered).
pub fn pending() -> usize {
    caller::state::reactor_if_any().map_or(0, |r| r.pending())
}
