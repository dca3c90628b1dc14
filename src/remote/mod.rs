//! Remote templates: a template on another machine, reached through the
//! stdin and stdout of a command (ssh). A relay process beside the caller
//! ([`relay`]) and `anyfork-serve --stdio` on the far side ([`stdio`])
//! carry the template's socket and every forked process's socket over
//! that one stream ([`link`], [`mux`]), so each remote process appears in
//! the caller as a local socket.

mod channel;
mod commands;
pub mod link;
mod mux;
pub mod relay;
pub mod stdio;
mod watch;
