//! The Ruby binding (bindings/ruby): its minitest suite, run with
//! ANYFORK_LIB pointing at the freshly built libanyfork.
//!
//! The suite covers the exec builtin, args and fds arriving in order,
//! Ruby methods run in processes forked from a copy of the test program
//! (AnyFork.template) and from a fresh Ruby server (AnyFork.new_ruby),
//! the Ruby runtime working there (sleep, threads, Timeout, subprocesses,
//! signals, fork), errors raised with the library's message, and 1,000
//! creations without an fd leak, and the stress checklist of issue 19
//! (threads, SIGINT, exceptions in callbacks, Kernel#fork, the garbage
//! collector, exit statuses), and issue 13's RPC and pools (Ruby blocks
//! and methods as workers: order, events, exceptions, async workers,
//! killed workers, retire, scaling, graceful close); then
//! bindings/ruby/example.rb. No test may
//! skip. Each runs
//! as the leader of a session of its own, so templates and processes left
//! behind are found and reported.

mod common;

use std::process::Command;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(600);
const GRACE: Duration = Duration::from_secs(10);

#[test]
fn ruby_binding_tests_pass() {
    assert!(
        common::have("ruby", &["--version"]),
        "ruby is missing: `make deps` installs it"
    );
    assert!(
        common::have("ruby", &["-rffi", "-e", "exit 0"]),
        "the ffi gem is missing: `make deps` installs ruby-ffi"
    );

    let dir = common::root().join("bindings").join("ruby");
    let mut tests: Vec<String> = std::fs::read_dir(dir.join("test"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_test.rb"))
        .map(|n| format!("test/{n}"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no bindings/ruby/test/*_test.rb");

    let tmp = common::lib_dir().join("ruby-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new("ruby");
    cmd.args([
        "-w",
        "-Ilib",
        "-e",
        "ARGV.grep_v(/\\A-/).each { |f| require File.expand_path(f) }",
    ])
    .args(&tests)
    // Verbose: skip reasons are printed (see below).
    .arg("--verbose")
    .current_dir(&dir)
    .env("ANYFORK_LIB", common::libanyfork())
    .env("ANYFORK_SERVE", common::serve_exe())
    .env("TMPDIR", &tmp)
    .env_remove("RUBYOPT")
    .env_remove("RUBYLIB");
    let r = common::run_in_session(&mut cmd, LIMIT, GRACE);
    let all = r.describe();
    println!("{all}");
    assert!(r.status.success(), "the Ruby tests failed: {all}");
    assert!(
        r.stdout.contains(" 0 failures, 0 errors, "),
        "minitest did not report success: {all}"
    );
    assert!(
        r.stdout.contains(" 0 skips"),
        "a Ruby test was skipped: {all}"
    );
    assert!(r.leftovers.is_empty(), "processes left behind: {all}");
}

#[test]
fn ruby_example_runs() {
    assert!(
        common::have("ruby", &["-rffi", "-e", "exit 0"]),
        "ruby or the ffi gem is missing: `make deps` installs ruby and ruby-ffi"
    );
    let dir = common::root().join("bindings").join("ruby");
    let mut cmd = Command::new("ruby");
    cmd.args(["-w", "-Ilib", "example.rb"])
        .current_dir(&dir)
        .env("ANYFORK_LIB", common::libanyfork())
        .env("ANYFORK_SERVE", common::serve_exe())
        .env_remove("RUBYOPT")
        .env_remove("RUBYLIB");
    let r = common::run_in_session(&mut cmd, Duration::from_secs(120), GRACE);
    let all = r.describe();
    println!("{all}");
    assert!(r.status.success(), "example.rb failed: {all}");
    assert!(r.stdout.contains("example: all good"), "{all}");
    assert!(r.stderr.is_empty(), "example.rb wrote to stderr: {all}");
    assert!(r.leftovers.is_empty(), "processes left behind: {all}");
}
