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

pub mod after_fork;
pub mod args;
pub mod builtins;
pub mod capi;
pub mod child;
mod conn;
mod direct;
pub mod error;
mod exec_spawn;
pub mod outbox;
mod pool;
mod process;
mod reactor;
mod record;
pub mod serve;
pub mod spawn;
mod template;
pub mod wire;

pub use args::{ForkArg, ForkArgKind};
pub use error::{Errno, Error, Result};
pub use process::Process;

/// Forks the calling program now as a template (see `fork_template` in
/// the header for the rules; call it before starting threads).
pub fn template() -> Result<Process> {
    spawn::template()
}

/// Forks the caller as the template that later [`Process::new_exec`]
/// calls fork instead of exec'ing `anyfork-serve`; call it first thing.
pub fn early() -> Result<()> {
    spawn::early()
}

/// Spawns a custom server command that calls [`serve_fd`] on the fd it
/// finds in `ANYFORK_FD`.
pub fn new_exec_argv(argv: &[&[u8]]) -> Result<Process> {
    spawn::new_exec_argv(argv)
}

/// Turns the calling process into a template server on `fd` (the socket
/// from `ANYFORK_FD` in a custom server). Returns only on a bad fd.
pub fn serve_fd(fd: std::os::fd::RawFd) -> Result<std::convert::Infallible> {
    serve::serve_custom(fd)
}

/// In a child the caller forked itself: drops the parent's templates and
/// queues (see [`after_fork`]).
pub fn reset_after_fork() {
    after_fork::reset()
}

/// The one fd of the library that an event loop watches for readability:
/// it is readable exactly while [`dispatch`] has work (level-triggered).
pub fn loop_fd() -> Result<std::os::fd::RawFd> {
    Ok(reactor::Reactor::get()?.fd())
}

/// Writes what can be written, reads reports, reaps direct children and
/// runs the callbacks that are due; never blocks. Returns the number of
/// callbacks run.
pub fn dispatch() -> Result<usize> {
    reactor::Reactor::get()?.dispatch()
}

/// Dispatches until at least one callback ran, `timeout_ms` passed
/// (negative: no limit) or no callback is waiting. Returns the number run;
/// 0 means the timeout passed or nothing is waiting.
pub fn wait(timeout_ms: i32) -> Result<usize> {
    reactor::Reactor::get()?.wait(timeout_ms)
}

/// Callbacks registered (run and exit) that have not run yet.
pub fn pending() -> usize {
    reactor::Reactor::get().map_or(0, |r| r.waiting())
}
