//! The RPC worker library of the tests (tests/c/rpc_worker.c), built
//! beside anyfork-serve for a benchmark run; shared by benches/rpc.rs and
//! benches/remote.rs.

/// Builds the worker library as `lib<name>.so` and returns its path.
pub fn worker_lib(name: &str) -> String {
    let out = std::path::PathBuf::from(env!("CARGO_BIN_EXE_anyfork-serve"))
        .parent()
        .unwrap()
        .join(format!("lib{name}.so"));
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/c/rpc_worker.c");
    let inc = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    let ok = std::process::Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-pthread", "-I", inc, src, "-o"])
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "building the worker library");
    out.display().to_string()
}
