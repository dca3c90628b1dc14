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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::SessionRun;

/// Time limits: the small examples, and the 1,000-process ones (a debug
/// build of the library on a loaded 2-core machine).
const SHORT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(180);
/// How long templates get to exit after the example did.
const GRACE: Duration = Duration::from_secs(10);

/// Where the examples and their worker libraries are built: a directory
/// of their own, so an example finds `lib<name>_worker.so` beside itself
/// as it does after `make examples`.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = common::out_dir().join("examples");
        std::fs::create_dir_all(&d).unwrap();
        // The library carries a versioned SONAME (libanyfork.so.0) that
        // cargo does not create: a link beside the examples, which are
        // linked with an rpath to this directory, stands in for it.
        let link = d.join("libanyfork.so.0");
        let target = common::lib_dir().join("libanyfork.so");
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&link);
            if let Err(e) = std::os::unix::fs::symlink(&target, &link) {
                assert!(
                    e.kind() == std::io::ErrorKind::AlreadyExists,
                    "{link:?}: {e}"
                );
            }
        }
        d
    })
}

/// Builds c-examples/<name>.c once per test binary: an executable, or for
/// `*_worker` a shared library `lib<name>.so`. Returns its path.
fn build(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let dir = examples_dir();
    let src = common::root()
        .join("c-examples")
        .join(format!("{name}.c"))
        .display()
        .to_string();
    let path = if name.ends_with("_worker") {
        let args = ["-shared".to_string(), "-fPIC".to_string(), src];
        common::compile(&dir.join(format!("lib{name}.so")), &args, false)
    } else {
        let mut args = vec![src, format!("-Wl,-rpath,{}", dir.display())];
        match name {
            "libev" => args.push("-lev".into()),
            "libuv" => args.push("-luv".into()),
            _ => {}
        }
        common::compile(&dir.join(name), &args, true)
    };
    built.insert(name.to_string(), path.clone());
    path
}

/// Builds `example` and `worker`, runs the example with `args`.
fn run(example: &str, worker: &str, args: &[&str], limit: Duration) -> SessionRun {
    build(worker);
    let exe = build(example);
    let mut cmd = Command::new(&exe);
    cmd.args(args);
    common::run_in_session(&mut cmd, limit, GRACE)
}

fn describe(r: &SessionRun) -> String {
    format!(
        "pid {}, {}\n--- stdout\n{}--- stderr\n{}--- left behind\n{}",
        r.pid,
        r.status,
        r.stdout,
        r.stderr,
        r.leftovers.join("\n")
    )
}

/// Exit status 0, nothing on stderr, no process left behind.
fn assert_clean_success(r: &SessionRun) {
    assert!(r.status.success(), "the example failed: {}", describe(r));
    assert!(r.stderr.is_empty(), "unexpected stderr: {}", describe(r));
    assert!(
        r.leftovers.is_empty(),
        "processes left behind: {}",
        describe(r)
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
        describe(r)
    );
    let piped = number_after(out, "the child wrote into the pipe: pid ");
    let exited = number_after(out, "the child (pid ");
    assert!(
        piped.is_some() && piped == exited && piped != Some(i64::from(r.pid)),
        "the pid in the pipe is not the child's: {}",
        describe(r)
    );
    assert!(out.ends_with("hello: all good\n"), "{}", describe(r));
}

#[test]
fn hello_finds_its_worker_beside_itself() {
    let r = run("hello", "hello_worker", &[], SHORT);
    check_hello(&r);
}

#[test]
fn hello_takes_the_worker_path_as_argument() {
    let lib = build("hello_worker");
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
    assert_eq!(r.status.code(), Some(1), "{}", describe(&r));
    assert!(
        r.stderr.contains("/nonexistent/libnothing.so"),
        "the load failure is not reported: {}",
        describe(&r)
    );
    assert!(!r.stdout.contains("all good"), "{}", describe(&r));
    assert!(
        r.leftovers.is_empty(),
        "processes left behind: {}",
        describe(&r)
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
        describe(&r)
    );
    let answered: Vec<i64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("request "))
        .map(|l| {
            let id = l.rsplit(' ').next().unwrap();
            id.parse().unwrap_or_else(|_| panic!("bad line {l:?}"))
        })
        .collect();
    assert_eq!(answered.len(), 16, "{}", describe(&r));
    assert!(
        answered.iter().all(|id| (1..=4).contains(id)),
        "{}",
        describe(&r)
    );
    for id in 1..=4 {
        let line = format!("worker {id} (pid ");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&line) && l.ends_with(") exited with status 0")),
            "worker {id} did not exit cleanly: {}",
            describe(&r)
        );
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("template (pid ") && l.ends_with(") exited with status 0")),
        "{}",
        describe(&r)
    );
    assert!(
        out.ends_with("prefork_server: 16 requests answered, pool shut down, all good\n"),
        "{}",
        describe(&r)
    );
}

fn check_thousand(name: &str) {
    let r = run(name, "echo_worker", &[], LONG);
    assert_clean_success(&r);
    let last = format!("{name}: 1000 of 1000 workers answered correctly\n");
    assert!(r.stdout.ends_with(&last), "{}", describe(&r));
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
    assert!(r.status.success(), "{}", describe(&r));
    assert_eq!(r.leftovers.len(), 1, "{}", describe(&r));
    assert!(r.leftovers[0].contains("sleep 60"), "{}", describe(&r));
    // run_in_session killed it.
    assert!(
        common::eventually(Duration::from_secs(5), || common::session_members(r.pid)
            .is_empty()),
        "the leftover was not killed"
    );
}
