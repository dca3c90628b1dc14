//! The Go binding (bindings/go): `go test ./...` against the freshly
//! built libanyfork, and gofmt.
//!
//! cgo finds the header and the library through CGO_CFLAGS and
//! CGO_LDFLAGS (build tag anyfork_nopkgconfig), as bindings/go/README.md documents. Everything Go writes
//! (build cache, GOPATH, temporary files) goes under target/; the module
//! has no dependencies, and GOPROXY=off makes sure nothing is fetched.
//! The test runs as the leader of a session of its own, so templates and
//! processes left behind are found and reported.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Building with cgo and running every test on a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(600);
const GRACE: Duration = Duration::from_secs(10);

fn go_dir() -> PathBuf {
    common::root().join("bindings").join("go")
}

/// target/<profile>/go: Go's caches and a lib directory where
/// libanyfork.so and its SONAME (libanyfork.so.0, which cargo does not
/// make) both point at the fresh build.
fn work_dir(sub: &str) -> PathBuf {
    let d = common::lib_dir().join("go").join(sub);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn link(dir: &Path, name: &str, target: &Path) {
    let l = dir.join(name);
    if std::fs::read_link(&l).ok().as_deref() == Some(target) {
        return;
    }
    let _ = std::fs::remove_file(&l);
    std::os::unix::fs::symlink(target, &l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
}

fn go_command(args: &[&str]) -> Command {
    let lib = work_dir("lib");
    let so = common::libanyfork();
    link(&lib, "libanyfork.so", &so);
    link(&lib, "libanyfork.so.0", &so);
    let mut cmd = Command::new("go");
    cmd.args(args)
        .current_dir(go_dir())
        .env(
            "CGO_CFLAGS",
            format!("-I{}", common::root().join("include").display()),
        )
        .env(
            "CGO_LDFLAGS",
            format!("-L{0} -Wl,-rpath,{0}", lib.display()),
        )
        .env("CGO_ENABLED", "1")
        .env("ANYFORK_SERVE", common::serve_exe())
        .env("GOCACHE", work_dir("cache"))
        .env("GOPATH", work_dir("path"))
        .env("GOMODCACHE", work_dir("path").join("pkg").join("mod"))
        .env("TMPDIR", work_dir("tmp"))
        .env("GOFLAGS", "-mod=mod -tags=anyfork_nopkgconfig")
        .env("GOPROXY", "off")
        .env("GOENV", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "on")
        .env_remove("GOROOT_FINAL");
    cmd
}

fn have_go() -> bool {
    Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn go_binding_tests_pass() {
    assert!(
        have_go(),
        "the Go toolchain is missing: `make deps` installs golang-go"
    );
    let mut cmd = go_command(&["test", "-count=1", "-v", "./..."]);
    let r = common::run_in_session(&mut cmd, LIMIT, GRACE);
    let all = r.describe();
    println!("{all}");
    assert!(r.status.success(), "go test failed: {all}");
    assert!(
        !r.stdout.contains("--- SKIP: "),
        "a Go test was skipped: {all}"
    );
    assert!(
        r.stdout.contains("ok  \tanyfork\t") && r.stdout.contains("ok  \tanyfork/example\t"),
        "both packages should have passed: {all}"
    );
    assert!(r.leftovers.is_empty(), "processes left behind: {all}");
}

#[test]
fn go_binding_is_gofmt_clean() {
    assert!(
        have_go(),
        "the Go toolchain is missing: `make deps` installs golang-go"
    );
    let out = Command::new("gofmt")
        .args(["-l", "."])
        .current_dir(go_dir())
        .output()
        .expect("running gofmt");
    assert!(out.status.success(), "gofmt failed: {out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.trim().is_empty(), "not gofmt-formatted:\n{listed}");
}
