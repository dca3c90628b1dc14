//! Every C example in c-examples/ compiled with -Wall -Wextra -Werror
//! against the freshly built libanyfork, run with a time limit, and checked
//! for its exit status, its output, and that it left no process behind.
//!
//! Each example runs as the leader of a session of its own: templates and
//! the processes they fork inherit that session even when they are
//! reparented, so "no process left" means no live process in that session
//! once the example has exited (and a short grace period for templates,
//! which exit on EOF, has passed). Tests running in parallel cannot
//! disturb that count.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Duration;

use common::*;

/// Time limits: the small examples, and the 1,000-process ones (a debug
/// build of the library on a loaded 2-core machine).
const SHORT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(180);
/// How long templates get to exit after the example did.
const GRACE: Duration = Duration::from_secs(10);

/// Builds `example` and `worker`, runs the example with `args`.
fn run(example: &str, worker: &str, args: &[&str], limit: Duration) -> SessionRun {
    common::example(worker);
    let exe = common::example(example);
    let mut cmd = Command::new(&exe);
    cmd.args(args);
    common::run_in_session(&mut cmd, limit, GRACE)
}

/// Exit status 0, nothing on stderr, no process left behind.
fn assert_clean_success(r: &SessionRun) {
    assert!(r.status.success(), "the example failed: {}", r.describe());
    assert!(r.stderr.is_empty(), "unexpected stderr: {}", r.describe());
    assert!(
        r.leftovers.is_empty(),
        "processes left behind: {}",
        r.describe()
    );
}

/// The number after `prefix` on the line starting with it.
fn number_after(text: &str, prefix: &str) -> Option<i64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(prefix))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn check_hello(r: &SessionRun) {
    assert_clean_success(r);
    let out = &r.stdout;
    assert!(
        out.contains("the child said on the comm socket: Hello, world!\n"),
        "{}",
        r.describe()
    );
    let piped = number_after(out, "the child wrote into the pipe: pid ");
    let exited = number_after(out, "the child (pid ");
    assert!(
        piped.is_some() && piped == exited && piped != Some(i64::from(r.pid)),
        "the pid in the pipe is not the child's: {}",
        r.describe()
    );
    assert!(out.ends_with("hello: all good\n"), "{}", r.describe());
}

#[test]
fn hello_finds_its_worker_beside_itself() {
    let r = run("hello", "hello_worker", &[], SHORT);
    check_hello(&r);
}

#[test]
fn hello_takes_the_worker_path_as_argument() {
    let lib = common::example("hello_worker");
    // Moved away from the default place, so only the argument can find it.
    let dir = examples_dir().join("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    let moved = dir.join("libhello_elsewhere.so");
    std::fs::copy(&lib, &moved).unwrap();
    let r = run("hello", "hello_worker", &[moved.to_str().unwrap()], SHORT);
    check_hello(&r);
}

#[test]
fn hello_reports_a_worker_that_cannot_be_loaded() {
    let r = run(
        "hello",
        "hello_worker",
        &["/nonexistent/libnothing.so"],
        SHORT,
    );
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains("/nonexistent/libnothing.so"),
        "the load failure is not reported: {}",
        r.describe()
    );
    assert!(!r.stdout.contains("all good"), "{}", r.describe());
    assert!(
        r.leftovers.is_empty(),
        "processes left behind: {}",
        r.describe()
    );
}

#[test]
fn prefork_server_answers_and_shuts_down() {
    let r = run("prefork_server", "prefork_worker", &[], SHORT);
    assert_clean_success(&r);
    let out = &r.stdout;
    assert!(
        out.starts_with("listening on 127.0.0.1:"),
        "{}",
        r.describe()
    );
    let answered: Vec<i64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("request "))
        .map(|l| {
            let id = l.rsplit(' ').next().unwrap();
            id.parse().unwrap_or_else(|_| panic!("bad line {l:?}"))
        })
        .collect();
    assert_eq!(answered.len(), 16, "{}", r.describe());
    assert!(
        answered.iter().all(|id| (1..=4).contains(id)),
        "{}",
        r.describe()
    );
    for id in 1..=4 {
        let line = format!("worker {id} (pid ");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&line) && l.ends_with(") exited with status 0")),
            "worker {id} did not exit cleanly: {}",
            r.describe()
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("template (pid ") && l.ends_with(") exited with status 0")),
        "{}",
        r.describe()
    );
    assert!(
        out.ends_with("prefork_server: 16 requests answered, pool shut down, all good\n"),
        "{}",
        r.describe()
    );
}

fn check_thousand(name: &str) {
    let r = run(name, "echo_worker", &[], LONG);
    assert_clean_success(&r);
    let last = format!("{name}: 1000 of 1000 workers answered correctly\n");
    assert!(r.stdout.ends_with(&last), "{}", r.describe());
}

#[test]
fn epoll_runs_a_thousand_workers() {
    check_thousand("epoll");
}

#[test]
fn libev_runs_a_thousand_workers() {
    check_thousand("libev");
}

#[test]
fn libuv_runs_a_thousand_workers() {
    check_thousand("libuv");
}

/// The leak check itself: a program that leaves a process behind is caught.
#[test]
fn a_process_left_behind_is_detected() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo started"]);
    let r = common::run_in_session(&mut cmd, SHORT, Duration::from_millis(300));
    assert!(r.status.success(), "{}", r.describe());
    assert_eq!(r.leftovers.len(), 1, "{}", r.describe());
    assert!(r.leftovers[0].contains("sleep 60"), "{}", r.describe());
    // run_in_session killed it.
    assert!(
        common::eventually(Duration::from_secs(5), || common::session_members(r.pid)
            .is_empty()),
        "the leftover was not killed"
    );
}

// ---------------------------------------------------------------------
// template.c, early.c and spawn.c (issue 4). template and early run the
// program's own functions, so they are linked with -rdynamic, as the
// Makefile does for them.

/// Builds c-examples/<name>.c ([`common::example`]) and runs it with
/// `args` (and `env`).
fn run_mode_example(name: &str, args: &[&str], env: &[(&str, &Path)]) -> SessionRun {
    let exe = common::example(name);
    let mut cmd = Command::new(&exe);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::run_in_session(&mut cmd, SHORT, GRACE)
}

#[test]
fn template_example_forks_ten_workers_that_use_the_prepared_state() {
    let r = run_mode_example("template", &[], &[]);
    assert_clean_success(&r);
    let out = &r.stdout;
    let tpid = number_after(out, "template: pid ").expect("the template's pid");
    let mut pids = Vec::new();
    for n in 1..=10 {
        let prefix = format!("worker {n:2} (pid ");
        let line = out
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no report of worker {n}: {}", r.describe()));
        pids.push(number_after(line, &prefix).unwrap());
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 10, "workers share a pid: {}", r.describe());
    assert!(!pids.contains(&tpid) && !pids.contains(&i64::from(r.pid)));
    // The primes below 200000, counted by the workers from the sieve that
    // only the template kept: 17984 in all.
    let total: i64 = out
        .lines()
        .filter(|l| l.starts_with("worker "))
        .map(|l| {
            let after = l.split("): ").nth(1).unwrap();
            after
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 17984, "{}", r.describe());
    assert!(
        out.contains(&format!("template: the template (pid {tpid}) exited\n")),
        "{}",
        r.describe()
    );
    assert!(
        out.ends_with("template: all 10 workers reported correctly\n"),
        "{}",
        r.describe()
    );
}

#[test]
fn early_example_runs_the_programs_functions_without_anyfork_serve() {
    let r = run_mode_example("early", &[], &[]);
    assert_clean_success(&r);
    let out = &r.stdout;
    let exe = examples_dir().join("early").canonicalize().unwrap();
    for (who, greeting) in [
        ("fork_new child", "Hello, world!"),
        ("fork_new_exec child", "Good morning, early bird!"),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{who} (pid ")))
            .unwrap_or_else(|| panic!("no report of the {who}: {}", r.describe()));
        assert!(
            line.ends_with(&format!(
                " says: {greeting} set_up_after_early=0 exe={}",
                exe.display()
            )),
            "{line}\n{}",
            r.describe()
        );
    }
    assert!(
        out.ends_with("early: both children ran this program's functions\n"),
        "{}",
        r.describe()
    );
}

/// A fresh TMPDIR for spawn's output file, which must be gone afterwards.
fn spawn_tmpdir(tag: &str) -> PathBuf {
    let d = examples_dir().join(format!("spawn-tmp-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn assert_empty_dir(d: &Path) {
    let left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "spawn left files behind: {left:?}");
}

#[test]
fn spawn_example_runs_echo_with_stdout_in_a_file_and_stderr_on_the_comm_socket() {
    let tmp = spawn_tmpdir("echo");
    let r = run_mode_example("spawn", &[], &[("TMPDIR", &tmp)]);
    assert_clean_success(&r);
    let out = &r.stdout;
    assert!(
        out.starts_with(
            "ran: /bin/echo hi\n\
             stdout, from the file (3 bytes):\n  | hi\n\
             stderr, from the comm socket (0 bytes):\npid "
        ),
        "{}",
        r.describe()
    );
    assert!(out.ends_with(" exited with status 0\n"), "{}", r.describe());
    assert_empty_dir(&tmp);
}

#[test]
fn spawn_example_shows_a_programs_stderr_and_exit_status() {
    let tmp = spawn_tmpdir("sh");
    let r = run_mode_example(
        "spawn",
        &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
        &[("TMPDIR", &tmp)],
    );
    assert_eq!(r.status.code(), Some(3), "{}", r.describe());
    assert!(r.leftovers.is_empty(), "{}", r.describe());
    assert!(
        r.stdout
            .contains("stdout, from the file (4 bytes):\n  | out\n"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout
            .contains("stderr, from the comm socket (4 bytes):\n  | err\n"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.ends_with(" exited with status 3\n"),
        "{}",
        r.describe()
    );
    assert_empty_dir(&tmp);
}

#[test]
fn spawn_example_reports_a_program_that_cannot_be_executed() {
    let tmp = spawn_tmpdir("missing");
    let r = run_mode_example("spawn", &["anyfork-no-such-program"], &[("TMPDIR", &tmp)]);
    assert_eq!(r.status.code(), Some(127), "{}", r.describe());
    assert!(r.leftovers.is_empty(), "{}", r.describe());
    assert!(
        r.stdout.contains(
            "  | anyfork_exec: cannot execute \"anyfork-no-such-program\": No such file or directory"
        ),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.ends_with(" exited with status 127\n"),
        "{}",
        r.describe()
    );
    assert_empty_dir(&tmp);
}

// ---------------------------------------------------------------------
// The C++ wrapper.

/// c-examples/cpp_hello.cpp builds with -std=c++17 -Wall -Wextra -Werror
/// against include/anyfork.hpp and runs: echo's line comes back through
/// the comm socket and its exit status through the exit callback.
#[test]
fn cpp_hello_builds_strictly_and_runs() {
    let out = common::compile_with(
        &std::env::var("CXX").unwrap_or_else(|_| "c++".into()),
        &examples_dir().join("cpp_hello"),
        &[
            "-std=c++17".into(),
            common::root()
                .join("c-examples/cpp_hello.cpp")
                .display()
                .to_string(),
        ],
        true,
    );
    let mut cmd = std::process::Command::new(&out);
    let r = common::run_in_session(&mut cmd, SHORT, GRACE);
    assert!(r.status.success(), "{}", r.describe());
    assert_eq!(r.stdout, "hello from C++\nok\n", "{}", r.describe());
    assert!(r.leftovers.is_empty(), "{}", r.describe());
}
