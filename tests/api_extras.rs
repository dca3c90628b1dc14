//! Smaller parts of the C API: byte-string eval arguments and a dispatcher
//! that passes names on to dlsym.

mod common;

use std::process::Command;

#[test]
fn eval_n_carries_nul_bytes_and_dispatch_pass_falls_back_to_dlsym() {
    let exe = common::build("eval_n_pass", common::Kind::Program, &["-rdynamic"]);
    common::stdout_of(&mut Command::new(&exe));
}
