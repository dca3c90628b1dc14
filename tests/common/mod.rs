//! The one helper module of the integration tests (each test file says
//! `mod common;`): it re-exports the files below, one concern each, so a
//! test can `use common::*`.
#![allow(dead_code, unused_imports)]

mod build;
mod children;
mod fds;
mod memcheck;
mod procfs;
mod report;
mod session;
pub mod sshd;

pub use build::*;
pub use children::*;
pub use fds::*;
pub use memcheck::*;
pub use procfs::*;
pub use report::*;
pub use session::*;

/// Serialises the tests of one binary that must not overlap (fd and
/// memory measurements, process counts, killing the default template).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}
