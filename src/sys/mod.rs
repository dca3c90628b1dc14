//! The few raw system and libc calls that neither nix nor std wrap, each
//! behind a safe function: everything else goes through nix or std; the
//! brief spin before a blocking wait (`spin`); and what the loaded objects
//! say about fork handlers (`atfork`).

pub mod atfork;
pub mod dl;
pub mod fd;
pub mod proc;
pub mod spawn;
pub mod spin;
