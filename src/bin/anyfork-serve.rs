//! The exec'd template server. Everything lives in the library.
//!
//! It has its own C `main`, not Rust's: the runtime's setup (an alternate
//! signal stack with its guard page, SIGPIPE ignored) would only be undone
//! again, and its two mappings would be copied by every fork and torn
//! down by every exit.
#![cfg_attr(not(test), no_main)]

/// Child-side functions that code loaded into this server (with
/// `fork_require`) may call; kept so the linker exports them.
#[allow(dead_code)]
struct Keep([*const (); 7]);
// SAFETY: function addresses, never dereferenced here.
unsafe impl Sync for Keep {}

#[used]
static KEEP: Keep = Keep([
    anyfork::capi::fork_child_args as *const (),
    anyfork::capi::fork_set_dispatch as *const (),
    anyfork::capi::fork_set_fork_hook as *const (),
    anyfork::capi::fork_rpc_serve as *const (),
    anyfork::capi::fork_rpc_reply as *const (),
    anyfork::capi::fork_rpc_event as *const (),
    anyfork::capi::fork_pool_retire as *const (),
]);

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    // SAFETY: the C runtime passes `argc` valid NUL-terminated strings.
    let args = (0..argc.max(0) as usize)
        .map(|i| unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) }.to_owned())
        .collect();
    anyfork::server::entry::exec_main(args)
}
