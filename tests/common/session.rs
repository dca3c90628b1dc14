//! Running programs and test bodies in sessions of their own: a C
//! program or another test binary run to its end with what it left
//! behind, a test body in a fresh process, a C checker program.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::children::{LIB_ENV, child_lib};
use super::procfs::{eventually, session_members, try_kill};

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
            try_kill(p, libc::SIGKILL);
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
/// broken process-wide state to other tests. The child is told where
/// this binary's libchildren.so is, so it compiles nothing again.
/// Returns the run (its stderr, what it left in its session) to the
/// parent test; `None` inside the child.
pub fn isolated(name: &str, limit: Duration, body: impl FnOnce()) -> Option<SessionRun> {
    const ENV: &str = "ANYFORK_TEST_ISOLATED";
    if std::env::var(ENV).as_deref() == Ok(name) {
        body();
        return None;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--nocapture",
        "--include-ignored",
        "--test-threads=1",
    ])
    .env(ENV, name)
    .env(LIB_ENV, child_lib());
    let r = run_in_session(&mut cmd, limit, Duration::from_secs(10));
    assert!(
        r.status.success() && r.stdout.contains("1 passed"),
        "{name} (isolated, {}):\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    Some(r)
}

/// Runs `cmd` to its end and returns its stdout; panics, showing the
/// command, its status, stdout and stderr, unless it exited 0.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a C test program (`exe args…`, stdin closed) that prints
/// "checks passed" when all its checks held; panics with its output
/// otherwise.
pub fn run_checks(exe: &Path, args: &[&str]) {
    let stdout = stdout_of(
        Command::new(exe)
            .args(args)
            .stdin(std::process::Stdio::null()),
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
