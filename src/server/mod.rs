//! The server side: the program that forks on request (`anyfork-serve`, a
//! template copy of the caller, or a custom server calling `fork_serve`),
//! and what runs in each process it makes until user code takes over.
//!
//! - `entry`: the ways in; `serve_loop`: the loop, reaping and reports;
//!   `reader`: frames off the socket; `request`: what each command does.
//! - `call`: eval and run (builtins, the dispatcher, `dlsym`); `builtins`:
//!   the `anyfork_*` functions; `args`: arguments as a process sees them.
//! - `spawn` and `fdplan`: programs started without a copy of the template.
//! - `pool`: the warm pool; `signals`: signal state; `exit`: leaving;
//!   `state`: this process's server-side state in one place.

pub mod args;
mod builtins;
pub mod call;
pub mod entry;
pub(crate) mod exit;
mod fdplan;
mod pool;
mod reader;
mod request;
mod serve_loop;
pub(crate) mod signals;
mod spawn;
pub mod state;
