//! Helpers of the reliability and hygiene tests (issue 6): the C library of
//! child functions (tests/c/reliability_lib.c), C helper programs, running
//! a process and waiting for its callbacks, parsing a child's report, and
//! reading other processes' state from /proc.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyfork::Process;

use crate::common;
// Each test binary uses some of these.
#[allow(unused_imports)]
pub use crate::common::{
    ExitRx, RunRx, exit_rx, ppid_of, pump, pump_until, raise_nofile, run_async, serial, state_of,
};

/// A directory of this test binary's own, so that no other test binary
/// (run by cargo one after another, or by another session at the same
/// time) rewrites a file this one has loaded.
pub fn own_dir() -> PathBuf {
    let d = common::out_dir()
        .join("reliability")
        .join(env!("CARGO_CRATE_NAME"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles into a temporary name and renames it into place: a process
/// that has the old file mapped keeps the old inode.
fn build(out: &Path, args: &[String], link_anyfork: bool) -> PathBuf {
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    common::compile(&tmp, args, link_anyfork);
    std::fs::rename(&tmp, out).unwrap();
    out.to_path_buf()
}

/// The absolute path of libreliability.so, built once per test binary.
pub fn lib() -> &'static str {
    static LIB: OnceLock<String> = OnceLock::new();
    LIB.get_or_init(|| {
        let src = common::root().join("tests/c/reliability_lib.c");
        let args = vec![
            "-shared".to_string(),
            "-fPIC".to_string(),
            src.display().to_string(),
        ];
        build(&own_dir().join("libreliability.so"), &args, false)
            .display()
            .to_string()
    })
}

/// Builds tests/c/<name>.c into a shared library lib<name>.so (without
/// libanyfork), once per test binary.
pub fn shared_helper(name: &str, extra: &[&str]) -> PathBuf {
    static DONE: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = done.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let src = common::root().join(format!("tests/c/{name}.c"));
    let mut args = vec![
        "-shared".to_string(),
        "-fPIC".to_string(),
        src.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = build(&own_dir().join(format!("lib{name}.so")), &args, false);
    done.push((name.to_string(), p.clone()));
    p
}

/// Builds a C helper program from tests/c/<name>.c (plus `extra` flags)
/// against libanyfork, once per test binary.
pub fn helper(name: &str, extra: &[&str]) -> PathBuf {
    static DONE: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = done.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let src = common::root().join(format!("tests/c/{name}.c"));
    let mut args = vec![src.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = build(&own_dir().join(name), &args, true);
    done.push((name.to_string(), p.clone()));
    p
}

/// Runs `function` and reads the comm socket to EOF.
pub fn run_text(p: Process, function: &str) -> String {
    let rx = run_async(p, function);
    let sock = pump(&rx, Duration::from_secs(30), function).expect("the run callback got an error");
    String::from_utf8(common::read_to_eof(sock)).unwrap()
}

/// A process from the default template with libreliability loaded.
pub fn new_child() -> Process {
    let mut p = Process::new().expect("Process::new");
    p.require(lib()).expect("require");
    p
}

/// A fresh anyfork-serve template with libreliability loaded.
pub fn new_template() -> Process {
    let mut p = Process::new_exec().expect("Process::new_exec");
    p.require(lib()).expect("require");
    p
}

/// One argument as `rl_report` saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RArg {
    S(String),
    F { fd: i32, cloexec: bool },
}

/// What `rl_report` wrote.
#[derive(Debug, Default)]
pub struct Report {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub comm: i32,
    pub comm_cloexec: bool,
    pub args: Vec<RArg>,
    /// Open fds and what they point to.
    pub open: BTreeMap<i32, String>,
    /// SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt.
    pub sig: HashMap<String, u64>,
}

impl Report {
    pub fn sig(&self, k: &str) -> u64 {
        *self
            .sig
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in the report"))
    }
}

pub fn parse_report(text: &str) -> Report {
    let mut r = Report::default();
    for line in text.lines() {
        let mut w = line.splitn(2, ' ');
        let key = w.next().unwrap();
        let rest = w.next().unwrap_or("");
        let ce = |s: &str| s.ends_with("cloexec=1");
        match key {
            "pid" => r.pid = rest.parse().unwrap(),
            "ppid" => r.ppid = rest.parse().unwrap(),
            "uid" => r.uid = rest.parse().unwrap(),
            "comm" => {
                r.comm = rest.split(' ').next().unwrap().parse().unwrap();
                r.comm_cloexec = ce(rest);
            }
            "arg" => {
                let f: Vec<&str> = rest.splitn(4, ' ').collect();
                if f[1] == "S" {
                    r.args.push(RArg::S(f.get(3).unwrap_or(&"").to_string()));
                } else {
                    r.args.push(RArg::F {
                        fd: f[2].parse().unwrap(),
                        cloexec: ce(rest),
                    });
                }
            }
            "open" => {
                let (fd, target) = rest.split_once(' ').unwrap_or((rest, ""));
                r.open.insert(fd.parse().unwrap(), target.to_string());
            }
            "sig" => {
                let (k, v) = rest.split_once(' ').unwrap();
                r.sig
                    .insert(k.to_string(), u64::from_str_radix(v, 16).unwrap());
            }
            _ => panic!("unexpected report line {line:?}"),
        }
    }
    r
}

/// A line of /proc/PID/status as a number of kB (VmRSS, VmHWM, ...).
pub fn status_kb(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// Open fds of process `pid`: fd number and link target.
pub fn fds_of(pid: i32) -> BTreeMap<i32, String> {
    let mut m = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            if let Ok(n) = e.file_name().to_string_lossy().parse::<i32>() {
                let t = std::fs::read_link(e.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                m.insert(n, t);
            }
        }
    }
    m
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill with a pid and a signal number.
    unsafe { libc::kill(pid, sig) };
}

/// Waits until `pid` is gone or a zombie; false after `limit`.
pub fn gone_within(pid: i32, limit: Duration) -> bool {
    common::eventually(limit, || !common::alive(pid))
}

/// `WIFEXITED` status, if it exited.
pub fn exited(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// `WTERMSIG`, if it was killed by a signal.
pub fn signaled(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}

/// The raw fd of an fd-like value, for messages.
pub fn raw(fd: &impl AsRawFd) -> i32 {
    fd.as_raw_fd()
}

/// Runs `body` alone in a fresh process of this test binary
/// ([`common::isolated`]).
pub fn isolated(name: &str, limit: Duration, body: impl FnOnce()) {
    common::isolated(name, limit, &[], body)
}
