//! Other processes, seen through /proc and signalled: parents, children,
//! states, sessions, open fds, memory; waiting for them to go.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Every pid in /proc.
fn all_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
}

/// `/proc/PID/stat` of a process: its command name and the fields after
/// it (state, ppid, pgrp, session, …).
pub struct ProcStat {
    pub comm: String,
    fields: Vec<String>,
}

impl ProcStat {
    /// The state letter (R, S, T, Z, X, …).
    pub fn state(&self) -> Option<char> {
        self.fields.first()?.chars().next()
    }

    /// Numeric field `i` after the command name (1: ppid, 3: session).
    pub fn field(&self, i: usize) -> Option<i32> {
        self.fields.get(i)?.parse().ok()
    }
}

/// The stat of `pid`, or `None` when it is gone.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    Some(ProcStat {
        comm: stat[open + 1..close].to_string(),
        fields: stat
            .get(close + 2..)?
            .split(' ')
            .map(String::from)
            .collect(),
    })
}

/// The parent pid of `pid`.
pub fn ppid_of(pid: i32) -> Option<i32> {
    proc_stat(pid)?.field(1)
}

/// The state letter of `pid` (R, S, T, Z, …).
pub fn state_of(pid: i32) -> Option<char> {
    proc_stat(pid)?.state()
}

/// The command name of `pid`.
pub fn comm_of(pid: i32) -> Option<String> {
    Some(proc_stat(pid)?.comm)
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    !matches!(state_of(pid), None | Some('Z') | Some('X'))
}

fn children(ppid: i32, zombies: bool) -> Vec<i32> {
    all_pids()
        .filter(|&pid| {
            proc_stat(pid)
                .is_some_and(|st| st.field(1) == Some(ppid) && (zombies || st.state() != Some('Z')))
        })
        .collect()
}

/// Pids of live processes whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    children(ppid, false)
}

/// Pids of the children of `ppid`, zombies (exited, not reaped) included.
pub fn children_and_zombies_of(ppid: i32) -> Vec<i32> {
    children(ppid, true)
}

/// Live children of `ppid` running anyfork-serve.
pub fn serve_children(ppid: i32) -> Vec<i32> {
    children_of(ppid)
        .into_iter()
        .filter(|&p| comm_of(p).as_deref() == Some("anyfork-serve"))
        .collect()
}

/// Live (non-zombie) processes in session `sid`: pid and
/// "command: command line".
pub fn session_members(sid: i32) -> Vec<(i32, String)> {
    let mut v = Vec::new();
    for pid in all_pids() {
        let Some(st) = proc_stat(pid) else {
            continue;
        };
        if st.field(3) != Some(sid) || matches!(st.state(), Some('Z') | Some('X')) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim_end()
                    .to_string()
            })
            .unwrap_or_default();
        v.push((pid, format!("{}: {cmd}", st.comm)));
    }
    v
}

/// Open fds of process `pid`: fd number and link target (the fd reading
/// the directory included).
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

/// The number of open fds of this process, as [`fds_of`] counts them.
pub fn open_fds() -> usize {
    fds_of(std::process::id() as i32).len()
}

/// A line of /proc/PID/status as a number of kB (VmRSS, VmHWM, ...).
pub fn status_kb(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// Every live descendant of `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            all.push(c);
            todo.push(c);
        }
    }
    all
}

/// Waits up to `limit` for `cond`.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Waits until `pid` is gone or a zombie; false after `limit`.
pub fn gone_within(pid: i32, limit: Duration) -> bool {
    eventually(limit, || !alive(pid))
}

/// [`gone_within`] 10 s.
pub fn gone(pid: i32) -> bool {
    gone_within(pid, Duration::from_secs(10))
}

/// Sends `sig` to `pid`; false when that failed (it is gone).
pub fn try_kill(pid: i32, sig: i32) -> bool {
    // SAFETY: kill with a pid and a signal number.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Sends `sig` to `pid`, which must exist.
pub fn kill(pid: i32, sig: i32) {
    assert!(
        try_kill(pid, sig),
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Stops `pid` with SIGSTOP and waits until it is stopped.
pub fn stop(pid: i32) {
    kill(pid, libc::SIGSTOP);
    let stopped = eventually(Duration::from_secs(5), || state_of(pid) == Some('T'));
    assert!(stopped, "pid {pid} did not stop");
}

/// The exit code in a wait status, if the process exited (a negative
/// status is an errno, not a wait status).
pub fn exited(status: i32) -> Option<i32> {
    (status >= 0 && libc::WIFEXITED(status)).then(|| libc::WEXITSTATUS(status))
}

/// The signal in a wait status, if the process was killed by one.
pub fn signaled(status: i32) -> Option<i32> {
    libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status))
}
