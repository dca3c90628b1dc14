//! `make install` into a temporary prefix gives a library that a C
//! program finds with pkg-config alone, and that finds its anyfork-serve.

mod common;

use std::process::Command;

#[test]
fn installed_library_builds_and_runs_an_example_via_pkg_config() {
    let root = common::root();
    let prefix = common::out_dir().join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    let out = Command::new("make")
        .arg("-s")
        .arg("install")
        .arg(format!("PREFIX={}", prefix.display()))
        .arg("PROFILE=debug")
        .current_dir(&root)
        .output()
        .expect("make");
    assert!(
        out.status.success(),
        "make install failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "lib/libanyfork.so.0",
        "lib/libanyfork.a",
        "include/anyfork.h",
        "libexec/anyfork-serve",
        "lib/pkgconfig/anyfork.pc",
    ] {
        assert!(prefix.join(f).exists(), "{f} was not installed");
    }

    let pc = Command::new("pkg-config")
        .args(["--cflags", "--libs", "anyfork"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config");
    assert!(
        pc.status.success(),
        "pkg-config failed: {}",
        String::from_utf8_lossy(&pc.stderr)
    );
    let flags = String::from_utf8(pc.stdout).unwrap();
    let dir = common::out_dir().join("installed");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("hello");
    let cc = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror"])
        .arg(root.join("c-examples/hello.c"))
        .arg("-o")
        .arg(&exe)
        .args(flags.split_whitespace())
        .status()
        .unwrap();
    assert!(
        cc.success(),
        "compiling hello.c with pkg-config flags failed"
    );
    let worker = dir.join("libhello_worker.so");
    let cc = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"])
        .arg(root.join("c-examples/hello_worker.c"))
        .arg("-o")
        .arg(&worker)
        .args(flags.split_whitespace().filter(|f| f.starts_with("-I")))
        .status()
        .unwrap();
    assert!(cc.success(), "compiling the worker failed");

    // No build-tree hints: the installed library must find the installed
    // anyfork-serve under ../libexec on its own.
    let run = Command::new(&exe)
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .env_remove("ANYFORK_SERVE")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the installed hello failed: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let ldd = Command::new("ldd")
        .arg(&exe)
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    assert!(
        ldd.contains(&prefix.join("lib").display().to_string()),
        "hello did not bind the installed library:\n{ldd}"
    );
}
