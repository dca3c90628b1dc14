//! The C ABI: conversions and checks only, over the safe Rust API.
//!
//! Every exported function catches panics, checks its pointers, and reports
//! failure as a negative errno (or NULL / -1) with a message for
//! `fork_last_error`.
#![allow(non_camel_case_types)]

mod child_api;
mod ffi;
mod loop_api;
mod modes_api;
mod proc_api;

pub use child_api::*;
pub use loop_api::*;
pub use modes_api::*;
pub use proc_api::*;
