//! The exec'd template server. Everything lives in the library.

/// Child-side functions that code loaded into this server (with
/// `fork_require`) may call; kept so the linker exports them.
#[allow(dead_code)]
struct Keep([*const (); 2]);
// SAFETY: function addresses, never dereferenced here.
unsafe impl Sync for Keep {}

#[used]
static KEEP: Keep = Keep([
    anyfork::capi::fork_child_args as *const (),
    anyfork::capi::fork_set_dispatch as *const (),
]);

fn main() {
    anyfork::serve::exec_main()
}
