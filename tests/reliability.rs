//! Issue 17's reliability defects, each driven by a C program through the
//! public API:
//!
//! - item 2: a caller with standard fds closed (a daemon), every mask of
//!   closed 0, 1, 2, with each way of making a process
//!   (tests/c/closed_stdio.c);
//! - item 5: error details that name the caller's own fd or path and the
//!   real cause (tests/c/error_details.c);
//! - item 8: a process freed before anything was sent to it, or after; a
//!   detached exec that fails (tests/c/freed_and_detached.c);
//! - item 9: `fork_template_flags` / `fork_early_flags` with and without
//!   `FORK_TEMPLATE_KEEP_FDS` (tests/c/template_fds.c).
//!
//! The programs run as leaders of their own session
//! (`common::run_in_session`), which also proves they left no process
//! behind.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(10);

fn run_c(exe: &Path, args: &[&str]) -> SessionRun {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    run_in_session(&mut cmd, LIMIT, GRACE)
}

fn assert_clean(r: &SessionRun) {
    assert!(r.status.success(), "the program failed: {}", r.describe());
    assert!(
        r.leftovers.is_empty(),
        "processes left behind: {}",
        r.describe()
    );
}

// ---------------------------------------------------------------------
// Item 2: closed standard fds

/// Runs closed_stdio MODE MASK for every mask; the program cannot print
/// with stdout or stderr closed, so it says what failed in a log file and
/// exits with the failed step's number.
fn closed_stdio(mode: &str) {
    let exe = build("closed_stdio", Kind::Program, &["-rdynamic"]);
    let lib = build("stdio_child", Kind::Library, &[]);
    let mut failed = Vec::new();
    for mask in 0..8 {
        let log = own_dir().join(format!("closed_stdio.{mode}.{mask}.log"));
        let _ = std::fs::remove_file(&log);
        let r = run_c(
            &exe,
            &[
                mode,
                &mask.to_string(),
                &lib.display().to_string(),
                &log.display().to_string(),
            ],
        );
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if !r.status.success() || !r.leftovers.is_empty() {
            failed.push(format!(
                "mask {mask} (closed:{}{}{}): {}; log: {said}{}",
                if mask & 1 != 0 { " 0" } else { "" },
                if mask & 2 != 0 { " 1" } else { "" },
                if mask & 4 != 0 { " 2" } else { "" },
                r.status,
                r.describe()
            ));
        } else {
            assert!(said.contains("all checks held"), "mask {mask}: {said}");
        }
    }
    assert!(failed.is_empty(), "{mode}:\n{}", failed.join("\n"));
}

#[test]
fn a_caller_with_closed_stdio_works_with_fork_new() {
    closed_stdio("new");
}

#[test]
fn a_caller_with_closed_stdio_works_with_fork_new_exec() {
    closed_stdio("exec");
}

#[test]
fn a_caller_with_closed_stdio_works_with_fork_template() {
    closed_stdio("template");
}

#[test]
fn a_caller_with_closed_stdio_works_with_fork_early() {
    closed_stdio("early");
}

// ---------------------------------------------------------------------
// Item 5: error details

#[test]
fn errors_name_the_callers_fd_or_path_and_the_real_cause() {
    let exe = build("error_details", Kind::Program, &[]);
    let dir = own_dir().join("error_details.scratch");
    std::fs::create_dir_all(&dir).unwrap();
    let r = run_c(&exe, &[&dir.display().to_string()]);
    assert_clean(&r);
    assert!(r.stdout.contains("checks passed"), "{}", r.describe());
}

// ---------------------------------------------------------------------
// Item 8: freed and detached processes

#[test]
fn freed_processes_and_detached_failed_execs_end_as_documented() {
    let exe = build("freed_and_detached", Kind::Program, &[]);
    let r = run_c(&exe, &[]);
    assert_clean(&r);
    assert!(r.stdout.contains("checks passed"), "{}", r.describe());
}

// ---------------------------------------------------------------------
// Item 9: a template that keeps the program's fds

fn template_fds(mode: &str) {
    let exe = build("template_fds", Kind::Program, &["-rdynamic"]);
    let log = own_dir().join(format!("template_fds.{mode}.log"));
    let r = run_c(&exe, &[mode, &log.display().to_string()]);
    assert_clean(&r);
    assert!(r.stdout.contains("checks passed"), "{}", r.describe());
}

#[test]
fn a_template_with_keep_fds_keeps_the_programs_fds_and_none_of_the_librarys() {
    template_fds("keep");
}

#[test]
fn a_template_without_flags_closes_the_programs_fds() {
    template_fds("default");
}

#[test]
fn an_early_template_with_keep_fds_keeps_the_programs_fds() {
    template_fds("early-keep");
}

#[test]
fn an_early_template_without_flags_closes_the_programs_fds() {
    template_fds("early");
}
