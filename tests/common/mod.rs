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
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let mut f = after.split(' ');
        let state = f.next().unwrap_or("");
        let parent: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if parent == ppid && (zombies || state != "Z") {
            v.push(pid);
        }
    }
    v
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            !after.starts_with('Z') && !after.starts_with('X')
        }
        Err(_) => false,
    }
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
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        // After the command: state ppid pgrp session ...
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        let session: i32 = f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
        if session != sid || matches!(f.first(), Some(&"Z") | Some(&"X")) {
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
        let comm = &stat[stat.find('(').map_or(0, |i| i + 1)..close];
        v.push((pid, format!("{comm}: {cmd}")));
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
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
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
