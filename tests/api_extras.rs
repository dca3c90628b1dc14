//! Smaller parts of the C API: byte-string eval arguments and a dispatcher
//! that passes names on to dlsym.

mod common;

use std::process::Command;

#[test]
fn eval_n_carries_nul_bytes_and_dispatch_pass_falls_back_to_dlsym() {
    let exe = common::executable("eval_n_pass", &["tests/c/eval_n_pass.c"], &["-rdynamic"]);
    let out = Command::new(&exe).output().unwrap();
    assert!(
        out.status.success(),
        "eval_n_pass failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
