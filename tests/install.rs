//! `make install` into a temporary prefix gives a library that a C
//! program finds with pkg-config alone, and that finds its anyfork-serve;
//! the headers (C and C++), the CMake package and the manual page that
//! names every function of the header; the Makefile follows
//! CARGO_TARGET_DIR. (tests/snippets.rs builds the README's quick start
//! against such a prefix with pkg-config and with CMake.)

mod common;

use std::process::Command;

#[test]
fn installed_library_builds_and_runs_an_example_via_pkg_config() {
    let root = common::root();
    let prefix = common::out_dir().join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    common::stdout_of(
        Command::new("make")
            .args(["-s", "install", "PROFILE=debug"])
            .arg(format!("PREFIX={}", prefix.display()))
            .current_dir(&root),
    );
    for f in [
        "lib/libanyfork.so.0.1.0",
        "lib/libanyfork.so.0",
        "lib/libanyfork.so",
        "lib/libanyfork.a",
        "include/anyfork.h",
        "include/anyfork.hpp",
        "libexec/anyfork-serve",
        "lib/pkgconfig/anyfork.pc",
        "lib/cmake/anyfork/anyforkConfig.cmake",
        "lib/cmake/anyfork/anyforkConfigVersion.cmake",
        "share/man/man3/anyfork.3",
    ] {
        assert!(prefix.join(f).exists(), "{f} was not installed");
    }
    // The links: libanyfork.so -> libanyfork.so.0 -> the versioned file,
    // whose SONAME is libanyfork.so.0.
    for (link, target) in [
        ("lib/libanyfork.so", "libanyfork.so.0"),
        ("lib/libanyfork.so.0", "libanyfork.so.0.1.0"),
    ] {
        let t = std::fs::read_link(prefix.join(link)).unwrap_or_else(|e| panic!("{link}: {e}"));
        assert_eq!(t, std::path::Path::new(target), "{link} points elsewhere");
    }
    let dynamic = Command::new("readelf")
        .arg("-d")
        .arg(prefix.join("lib/libanyfork.so.0.1.0"))
        .output()
        .expect("readelf");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        dynamic.contains("Library soname: [libanyfork.so.0]"),
        "the installed library's SONAME is not libanyfork.so.0:\n{dynamic}"
    );

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

    // No build-tree hints: the program finds the library through the
    // rpath that anyfork.pc carries outside /usr (no LD_LIBRARY_PATH), and
    // the installed library finds the installed anyfork-serve under
    // ../libexec on its own.
    assert!(
        flags.contains(&format!("-Wl,-rpath,{}", prefix.join("lib").display())),
        "pkg-config --libs has no rpath for a prefix outside /usr: {flags}"
    );
    let run = Command::new(&exe)
        .env_remove("LD_LIBRARY_PATH")
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
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    assert!(
        ldd.contains(&prefix.join("lib").display().to_string()),
        "hello did not bind the installed library:\n{ldd}"
    );
}

/// The C++ wrapper is installed and usable from the prefix alone.
#[test]
fn installed_cpp_header_builds_the_cpp_example() {
    let root = common::root();
    let prefix = common::own_dir().join("prefix-cpp");
    let _ = std::fs::remove_dir_all(&prefix);
    common::stdout_of(
        Command::new("make")
            .args(["-s", "install", "PROFILE=debug"])
            .arg(format!("PREFIX={}", prefix.display()))
            .current_dir(&root),
    );
    let dir = common::own_dir().join("cpp");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("cpp_hello");
    let cmd = format!(
        "c++ -std=c++17 -Wall -Wextra -Werror {} -o {} $(pkg-config --cflags --libs anyfork)",
        root.join("c-examples/cpp_hello.cpp").display(),
        exe.display()
    );
    let cc = Command::new("sh")
        .args(["-e", "-c", &cmd])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "compiling cpp_hello.cpp against the installed anyfork.hpp failed:\n{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let worker = dir.join("libhello_worker.so");
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC", "-I"])
        .arg(prefix.join("include"))
        .arg(root.join("c-examples/hello_worker.c"))
        .arg("-o")
        .arg(&worker)
        .status()
        .unwrap();
    assert!(cc.success(), "compiling the worker failed");
    let run = Command::new(&exe)
        .arg(&worker)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("ANYFORK_SERVE")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the installed cpp_hello failed: {}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

/// anyfork(3) names every function the header declares, in its synopsis
/// and in the text.
#[test]
fn the_manual_page_covers_every_function_of_the_header() {
    let root = common::root();
    let header = std::fs::read_to_string(root.join("include/anyfork.h")).unwrap();
    let page = std::fs::read_to_string(root.join("doc/anyfork.3")).unwrap();
    let mut names: Vec<String> = Vec::new();
    for line in header.lines() {
        let l = line.trim_start();
        if l.starts_with("typedef") || l.starts_with('*') || l.starts_with("/*") {
            continue;
        }
        if let Some(i) = l.find("fork_") {
            let rest = &l[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if rest[end..].starts_with('(') {
                names.push(rest[..end].to_string());
            }
        }
    }
    assert!(
        names.len() >= 30,
        "too few functions found in anyfork.h: {names:?}"
    );
    for n in &names {
        let in_synopsis = page.contains(&format!("{n}("));
        let in_text = page.matches(n.as_str()).count() >= 2;
        assert!(
            in_synopsis && in_text,
            "doc/anyfork.3 does not cover {n} (synopsis: {in_synopsis}, described: {in_text})"
        );
    }
    for section in [
        ".SH RETURN VALUE AND ERRORS",
        ".SH OWNERSHIP",
        ".SH DESCRIPTION",
    ] {
        assert!(page.contains(section), "doc/anyfork.3 lacks {section}");
    }
    // It renders without warnings.
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(root.join("doc/anyfork.3"))
        .output();
    if let Ok(out) = out {
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff warns about doc/anyfork.3:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// With CARGO_TARGET_DIR set, make takes the library from there (and makes
/// its SONAME link there), not from target/.
#[test]
fn make_follows_cargo_target_dir() {
    let text = common::stdout_of(
        Command::new("make")
            .args(["-n", "lib", "install", "PROFILE=debug", "PREFIX=/nowhere"])
            .env("CARGO_TARGET_DIR", "/elsewhere/t")
            .current_dir(common::root()),
    );
    assert!(
        text.contains("ln -sf libanyfork.so /elsewhere/t/debug/libanyfork.so.0")
            && text.contains("/elsewhere/t/debug/anyfork-serve"),
        "make does not use CARGO_TARGET_DIR:\n{text}"
    );
    assert!(
        !text.contains(" target/"),
        "make still refers to target/ with CARGO_TARGET_DIR set:\n{text}"
    );
}
