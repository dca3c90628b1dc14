//! The Python binding (bindings/python): `python3 -m unittest` with
//! ANYFORK_LIB pointing at the freshly built libanyfork.
//!
//! The suite includes a test that holds 1 GB in the interpreter; it prints
//! creations/s of anyfork against os.fork() there (informational: run
//! with --nocapture to see it). No bytecode is written into the source
//! tree. The suite runs as the leader of a session of its own, so
//! templates and processes left behind are found and reported.

mod common;

use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(600);
const GRACE: Duration = Duration::from_secs(10);

#[test]
fn python_binding_tests_pass() {
    let have = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(have, "python3 is missing: `make deps` installs it");

    let tmp = common::lib_dir().join("python-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "unittest", "-v"])
        .current_dir(common::root().join("bindings").join("python"))
        .env("ANYFORK_LIB", common::libanyfork())
        .env("ANYFORK_SERVE", common::serve_exe())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("TMPDIR", &tmp)
        .env_remove("PYTHONPATH");
    let r = common::run_in_session(&mut cmd, LIMIT, GRACE);
    let all = r.describe();
    println!("{all}");
    assert!(r.status.success(), "the Python tests failed: {all}");
    assert!(
        r.stderr.contains("\nOK"),
        "unittest did not report OK: {all}"
    );
    assert!(
        !r.stderr.contains("ResourceWarning"),
        "a socket or file was left to the garbage collector: {all}"
    );
    assert!(r.leftovers.is_empty(), "processes left behind: {all}");
}
