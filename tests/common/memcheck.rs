//! Running a program under valgrind's memcheck in a session of its own,
//! and reading its reports.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What memcheck said about one run.
pub struct Memcheck {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Its reports (an error or a leak record each), its own notes about
    /// syscalls it does not know left out.
    pub reports: Vec<String>,
}

/// Runs `exe args` under memcheck in a session of its own and checks that
/// no process was left behind.
pub fn memcheck(exe: &Path, args: &[&str], limit: Duration) -> Memcheck {
    assert!(
        super::have("valgrind", &["--version"]),
        "valgrind is not installed (`make deps` installs it)"
    );
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "-q",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite",
        "--track-origins=yes",
    ])
    .arg(exe)
    .args(args);
    let r = super::run_in_session(&mut cmd, limit, Duration::from_secs(15));
    assert!(
        r.leftovers.is_empty(),
        "{} {args:?}: left behind {:?}",
        exe.display(),
        r.leftovers
    );
    // Reports are runs of "==PID== text" lines ended by a "==PID== " one.
    // (valgrind also notes, in "--PID--" lines, that it does not know
    // pidfd_open; the library then falls back to polling.)
    let mut reports = Vec::new();
    let mut cur = String::new();
    for line in r.stderr.lines().filter(|l| l.starts_with("==")) {
        let text = line.splitn(3, "==").nth(2).unwrap_or("").trim();
        if text.is_empty() {
            if !cur.is_empty() {
                reports.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push_str(text);
            cur.push('\n');
        }
    }
    if !cur.is_empty() {
        reports.push(cur);
    }
    Memcheck {
        code: r.status.code().unwrap_or(-1),
        stdout: r.stdout,
        stderr: r.stderr,
        reports,
    }
}
