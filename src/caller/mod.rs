//! The caller side: the library inside the program that creates processes.
//!
//! - `process`: the process object; `ahead`: processes a template keeps
//!   forked ahead in the caller; `conn`: the caller's end of one
//!   process's socket; `record`: what is known of a process (pid, exit,
//!   callbacks); `outbox`: bytes and fds waiting for a socket.
//! - `reactor`: the loop fd, dispatch and wait; `direct`: direct children.
//! - `launch`, `locate`: starting servers and finding `anyfork-serve`;
//!   `default_template`: the shared template of `fork_new`; `fork_self`:
//!   template and early forks of the caller.
//! - `state`: the library-wide state, in one place, and its reset after
//!   a fork.

mod ahead;
mod conn;
pub mod default_template;
pub mod direct;
pub mod fork_self;
pub mod launch;
mod locate;
pub mod outbox;
pub mod process;
pub mod reactor;
mod record;
mod remote;
pub mod state;
mod waiters;
