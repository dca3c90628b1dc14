//! Issue 6, sanitizers: the C examples and the C tests of bad input run
//! under valgrind's memcheck with no invalid access, no use of
//! uninitialised memory and no definitely-lost block, in the caller and in
//! every copy of it that fork_template and fork_early make (valgrind
//! follows a fork; anyfork-serve, started with exec, runs natively).
//! `make sanitize` runs the same programs built with AddressSanitizer and
//! UBSan.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// Exit 0, `last_line` in the output, and not a word from memcheck.
fn memcheck_ok(exe: &Path, args: &[&str], last_line: &str) {
    let m = memcheck(exe, args, Duration::from_secs(300));
    let what = format!("{} {args:?}", exe.display());
    assert!(
        m.reports.is_empty() && m.code != 99,
        "{what}: memcheck reports (exit {}):\n{}",
        m.code,
        m.stderr
    );
    for bad in [
        "definitely lost",
        "Invalid read",
        "Invalid write",
        "uninitialised",
    ] {
        assert!(!m.stderr.contains(bad), "{what}: {bad}:\n{}", m.stderr);
    }
    assert_eq!(
        m.code, 0,
        "{what} failed under valgrind:\n{}\n{}",
        m.stdout, m.stderr
    );
    assert!(
        m.stdout.contains(last_line),
        "{what}: {last_line:?} missing:\n{}",
        m.stdout
    );
}

#[test]
fn hello_is_clean_under_memcheck() {
    example("hello_worker");
    memcheck_ok(&example("hello"), &[], "hello: all good");
}

#[test]
fn spawn_is_clean_under_memcheck() {
    memcheck_ok(&example("spawn"), &[], "exited with status 0");
}

#[test]
fn template_is_clean_under_memcheck() {
    memcheck_ok(
        &example("template"),
        &[],
        "all 10 workers reported correctly",
    );
}

#[test]
fn early_is_clean_under_memcheck() {
    memcheck_ok(
        &example("early"),
        &[],
        "both children ran this program's functions",
    );
}

#[test]
fn prefork_server_is_clean_under_memcheck() {
    example("prefork_worker");
    memcheck_ok(&example("prefork_server"), &[], "all good");
}

/// api_errors.c expects fork_new_exec_argv of a missing program to fail
/// at once. Under valgrind it cannot: glibc's posix_spawn reports exec
/// failures through memory it shares with the vfork'd child, and valgrind
/// runs that child as a fork. So the checks about that call may fail here,
/// and the handle the program then does not free may be reported lost;
/// nothing else may.
#[test]
fn api_errors_is_clean_under_memcheck() {
    let exe = build("api_errors", Kind::Program, &["-pthread"]);
    let m = memcheck(&exe, &[child_lib()], Duration::from_secs(300));
    let failed: Vec<&str> = m.stderr.lines().filter(|l| l.starts_with("FAIL")).collect();
    for f in &failed {
        assert!(
            f.contains("fork_new_exec_argv"),
            "api_errors failed under valgrind: {f}\n{}",
            m.stderr
        );
    }
    for r in &m.reports {
        assert!(
            r.contains("definitely lost") && r.contains("fork_new_exec_argv"),
            "memcheck: {r}"
        );
    }
    if failed.is_empty() {
        assert_eq!(m.code, 0, "{}\n{}", m.stdout, m.stderr);
        assert!(m.stdout.contains("checks passed"), "{}", m.stdout);
    }
}

#[test]
fn bad_input_is_clean_under_memcheck() {
    let exe = build("bad_input", Kind::Program, &[]);
    memcheck_ok(&exe, &[child_lib()], "checks passed");
}

/// signal_probe's workload (the default template, a template killed under
/// queued writes, exit callbacks) and then fork_template: the template
/// copy of a caller that already used anyfork.
#[test]
fn a_template_copy_of_a_caller_that_used_anyfork_is_clean_under_memcheck() {
    let exe = build("signal_probe", Kind::Program, &["-rdynamic"]);
    memcheck_ok(&exe, &[child_lib(), "untouched"], "untouched ok");
}

/// The epoll example drives everything through its own epoll loop. Under
/// valgrind pidfd_open does not exist (as on kernels before 5.3), and the
/// exit of a direct child (the example's template) is then only noticed
/// when something else wakes the loop.
#[test]
fn epoll_is_clean_under_memcheck() {
    example("echo_worker");
    memcheck_ok(
        &example("epoll"),
        &[],
        "1000 of 1000 workers answered correctly",
    );
}
