//! Shared by the integration tests: compiling C with the system compiler
//! against include/anyfork.h and the freshly built libanyfork, and
//! watching processes through /proc.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The crate's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put libanyfork.so and anyfork-serve for this build.
///
/// `cargo test` builds the cdylib under `deps/` but copies it up beside
/// the binaries only in `cargo build`; the first call here brings the copy
/// up to date, so C tests never link a stale (or missing) library.
pub fn lib_dir() -> PathBuf {
    static FRESH: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_anyfork-serve"))
        .parent()
        .unwrap()
        .to_path_buf();
    FRESH.get_or_init(|| {
        let built = dir.join("deps/libanyfork.so");
        let used = dir.join("libanyfork.so");
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if let Some(b) = mtime(&built) {
            if mtime(&used).is_none_or(|u| u < b) {
                let tmp = dir.join(format!(".libanyfork.so.{}", std::process::id()));
                std::fs::copy(&built, &tmp).expect("copying the fresh libanyfork.so");
                std::fs::rename(&tmp, &used).expect("replacing libanyfork.so");
            }
        }
        let soname = dir.join("libanyfork.so.0");
        if std::fs::read_link(&soname).is_err() {
            let _ = std::os::unix::fs::symlink("libanyfork.so", &soname);
        }
    });
    dir
}

/// Where compiled C test artefacts go.
pub fn out_dir() -> PathBuf {
    let d = lib_dir().join("ctest");
    std::fs::create_dir_all(&d).unwrap();
    d
}

static CC: Mutex<()> = Mutex::new(());

fn cc(args: &[&str], out: &Path) -> PathBuf {
    let _g = CC.lock().unwrap_or_else(|p| p.into_inner());
    let inc = root().join("include");
    let lib = lib_dir();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg(format!("-I{}", inc.display()))
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lanyfork")
        .status()
        .expect("running the C compiler");
    assert!(status.success(), "compiling {args:?} failed");
    out.to_path_buf()
}

/// Compiles C sources (paths relative to the crate root) into a shared library.
pub fn shared_lib(name: &str, srcs: &[&str]) -> PathBuf {
    let out = out_dir().join(format!("lib{name}.so"));
    let mut args = vec!["-shared".to_string(), "-fPIC".to_string()];
    args.extend(srcs.iter().map(|s| root().join(s).display().to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    cc(&a, &out)
}

/// Compiles C sources into an executable, with extra flags after the sources.
pub fn executable(name: &str, srcs: &[&str], extra: &[&str]) -> PathBuf {
    let out = out_dir().join(name);
    let mut args: Vec<String> = srcs
        .iter()
        .map(|s| root().join(s).display().to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    cc(&a, &out)
}

/// Pids of live processes whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    children(ppid, false)
}

/// Pids of the children of `ppid`, zombies (exited, not reaped) included.
pub fn children_and_zombies_of(ppid: i32) -> Vec<i32> {
    children(ppid, true)
}

fn children(ppid: i32, zombies: bool) -> Vec<i32> {
    all_pids()
        .filter(|&pid| {
            proc_stat(pid)
                .is_some_and(|st| st.field(1) == Some(ppid) && (zombies || st.state() != Some('Z')))
        })
        .collect()
}

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

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    !matches!(state_of(pid), None | Some('Z') | Some('X'))
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

/// Open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Reads a nonblocking fd to EOF, waiting with poll.
pub fn read_to_eof(fd: std::os::fd::OwnedFd) -> Vec<u8> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("reading the comm socket");
    v
}

/// Runs the C compiler: `args` (sources and flags, in order), `-o out`,
/// then, when `link_anyfork`, `-L`/`-rpath` for `lib_dir()` and
/// `-lanyfork`. Libraries of child functions are built without
/// libanyfork, as the Makefile builds them: they are loaded into
/// `anyfork-serve`, which exports the child-side calls itself.
pub fn compile(out: &Path, args: &[String], link_anyfork: bool) -> PathBuf {
    let _g = CC.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args(["-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg(format!("-I{}", root().join("include").display()))
        .args(args)
        .arg("-o")
        .arg(out);
    if link_anyfork {
        let lib = lib_dir();
        cmd.arg(format!("-L{}", lib.display()))
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .arg("-lanyfork");
    }
    let status = cmd.status().expect("running the C compiler");
    assert!(status.success(), "compiling {args:?} failed");
    out.to_path_buf()
}

/// True when `program args` runs and succeeds (a tool is installed).
pub fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl SessionRun {
    /// Everything seen, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "pid {}, {}\n--- stdout\n{}--- stderr\n{}--- left behind\n{}",
            self.pid,
            self.status,
            self.stdout,
            self.stderr,
            self.leftovers.join("\n")
        )
    }
}

/// What [`run_in_session`] saw.
pub struct SessionRun {
    /// The pid of the program, which is also its session id.
    pub pid: i32,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Processes of its session still alive (not zombies) after it exited
    /// and a grace period passed: "pid command line" each. They were
    /// killed before this returned.
    pub leftovers: Vec<String>,
}

/// Live (non-zombie) processes in session `sid`: pid and command line.
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

/// Runs `cmd` as the leader of a new session (setsid), so that every
/// process it creates, directly or through templates, can be found by its
/// session id even after being reparented; those processes cannot leave
/// the session unless they call setsid themselves. Kills the whole session
/// and panics if the program runs longer than `limit`. After it exits,
/// waits up to `grace` for the rest of its session to go.
pub fn run_in_session(cmd: &mut Command, limit: Duration, grace: Duration) -> SessionRun {
    use std::io::Read;
    use std::process::Stdio;

    let mut child = in_new_session(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the program");
    let pid = child.id() as i32;
    // Readers hand their text over a channel, so that a process left
    // behind holding the pipes cannot hang the test.
    let reader = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            let _ = tx.send(String::from_utf8_lossy(&s).into_owned());
        });
        move || {
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| "<still open 10 s after the end>".into())
        }
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let kill_session = || {
        for (p, _) in session_members(pid) {
            // SAFETY: kill with a pid and a signal number.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    };

    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for the program") {
            break st;
        }
        if start.elapsed() > limit {
            kill_session();
            let _ = child.wait();
            let (o, e) = (out(), err());
            panic!("{cmd:?} ran longer than {limit:?}\n--- stdout\n{o}\n--- stderr\n{e}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut leftovers = Vec::new();
    if !eventually(grace, || session_members(pid).is_empty()) {
        leftovers = session_members(pid)
            .into_iter()
            .map(|(p, c)| format!("{p} {c}"))
            .collect();
        kill_session();
    }
    let (stdout, stderr) = (out(), err());
    SessionRun {
        pid,
        status,
        stdout,
        stderr,
        leftovers,
    }
}

/// Runs `body` in a fresh process of this test binary (the test `name`,
/// re-executed alone, in a session of its own): it gets the library to
/// itself (its own default template and loop fd), a hang fails the test
/// after `limit` instead of blocking the suite, and a failure cannot leave
/// broken process-wide state to other tests. `env` is set in the child.
pub fn isolated(name: &str, limit: Duration, env: &[(&str, String)], body: impl FnOnce()) {
    const ENV: &str = "ANYFORK_TEST_ISOLATED";
    if std::env::var(ENV).as_deref() == Ok(name) {
        body();
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--nocapture",
        "--include-ignored",
        "--test-threads=1",
    ])
    .env(ENV, name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let r = run_in_session(&mut cmd, limit, Duration::from_secs(10));
    assert!(
        r.status.success() && r.stdout.contains("1 passed"),
        "{name} (isolated, {}):\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
}

// ---------------------------------------------------------------------
// Callbacks of processes made in this test process, and shared limits

pub type RunRx = std::sync::mpsc::Receiver<anyfork::Result<std::os::fd::OwnedFd>>;
pub type ExitRx = std::sync::mpsc::Receiver<(i32, anyfork::Result<i32>)>;

/// Runs `function` in `p`; the receiver gets the run callback's result.
/// A callback may outlive a test that failed (another test's dispatch
/// then runs it): it must not panic there.
pub fn run_async(p: anyfork::Process, function: &str) -> RunRx {
    let (tx, rx) = std::sync::mpsc::channel();
    p.run(function, move |r| {
        let _ = tx.send(r);
    })
    .expect("Process::run");
    rx
}

/// Registers an exit callback; the receiver gets (pid, status).
pub fn exit_rx(p: &mut anyfork::Process) -> ExitRx {
    let (tx, rx) = std::sync::mpsc::channel();
    p.on_exit(move |pid, st| {
        let _ = tx.send((pid, st));
    });
    rx
}

/// Dispatches until `rx` has a value (panics after `limit`).
pub fn pump<T>(rx: &std::sync::mpsc::Receiver<T>, limit: Duration, what: &str) -> T {
    use std::sync::mpsc::TryRecvError;
    let t = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(v) => return v,
            Err(TryRecvError::Disconnected) => panic!("{what}: the callback was dropped unrun"),
            Err(TryRecvError::Empty) => {}
        }
        assert!(t.elapsed() < limit, "{what}: no callback within {limit:?}");
        anyfork::wait(20).expect("anyfork::wait");
    }
}

/// Dispatches until `cond` holds (panics after `limit`).
pub fn pump_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        anyfork::wait(20).expect("anyfork::wait");
    }
}

/// Serialises the tests of one binary that must not overlap (fd and
/// memory measurements, process counts, killing the default template).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// Raises the soft fd limit to the hard one (thousands of sockets at once).
pub fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// Runs a C test program (`exe args…`, stdin closed) that prints
/// "checks passed" when all its checks held; panics with its output
/// otherwise.
pub fn run_checks(exe: &Path, args: &[&str]) {
    let out = Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{stderr}",
        exe.display(),
        out.status
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
}

/// Makes `cmd` start a session of its own (`setsid` before exec).
pub fn in_new_session(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}
