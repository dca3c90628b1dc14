//! The C ABI: conversions and checks only, over the safe Rust API.
//!
//! Every exported function has one form: its signature written out (so
//! cbindgen sees it) and a body that is one `ffi!(name, …)` expression.
//! The macro runs the body behind the panic boundary, records a failure
//! once as this thread's last error with the function's name in front,
//! and returns the failure value of the return type (`-errno`, NULL, …).
//! Handles are taken or borrowed through `handle.rs` alone. A test
//! (`tests/capi_boundary.rs`) checks that every exported function has
//! this form.
#![allow(non_camel_case_types)]

/// The body of an exported function: `ffi!(name, body)` or
/// `ffi!(name, on_error = value, body)`, `body` an expression of type
/// `Result<T>`.
macro_rules! ffi {
    ($name:ident, on_error = $fail:expr, $body:expr) => {
        $crate::capi::boundary::call_or(stringify!($name), |_| $fail, || $body)
    };
    ($name:ident, $body:expr) => {
        $crate::capi::boundary::call(stringify!($name), || $body)
    };
}

mod boundary;
mod child_api;
mod convert;
mod handle;
mod loop_api;
mod modes_api;
mod pool_api;
mod proc_api;
mod rpc_api;

pub use child_api::*;
pub use handle::fork_proc;
pub use loop_api::*;
pub use modes_api::*;
pub use pool_api::*;
pub use proc_api::*;
pub use rpc_api::*;
