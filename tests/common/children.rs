//! The child library tests/c/children.c and processes that load it:
//! building it, making a process with it, running its functions and
//! waiting for their callbacks, reading their comm sockets.

use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyfork::Process;

use super::build::{Kind, build};

/// The environment variable through which an `isolated` subprocess gets
/// its parent's build of the child library.
pub(super) const LIB_ENV: &str = "ANYFORK_TEST_CHILDREN_LIB";

/// The absolute path of libchildren.so (tests/c/children.c), built once
/// per test binary. An `isolated` subprocess reuses its parent's build
/// (it gets the path in the environment), so it compiles nothing again.
pub fn child_lib() -> &'static str {
    static LIB: OnceLock<String> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Ok(p) = std::env::var(LIB_ENV) {
            return p;
        }
        build("children", Kind::Library, &[]).display().to_string()
    })
}

/// A fresh process from the default template with libchildren loaded.
pub fn new_child() -> Process {
    let mut p = Process::new().expect("Process::new");
    p.require(child_lib()).expect("require");
    p
}

/// A fresh `anyfork-serve` template with libchildren loaded.
pub fn new_template() -> Process {
    let mut p = Process::new_exec().expect("Process::new_exec");
    p.require(child_lib()).expect("require");
    p
}

pub type RunRx = std::sync::mpsc::Receiver<anyfork::Result<OwnedFd>>;
pub type ExitRx = std::sync::mpsc::Receiver<(i32, anyfork::Result<i32>)>;

/// Runs `function` in `p`; the receiver gets the run callback's result.
/// A callback may outlive a test that failed (another test's dispatch
/// then runs it): it must not panic there.
pub fn run_async(p: Process, function: &str) -> RunRx {
    let (tx, rx) = std::sync::mpsc::channel();
    p.run(function, move |r| {
        let _ = tx.send(r);
    })
    .expect("Process::run");
    rx
}

/// Registers an exit callback; the receiver gets (pid, status).
pub fn exit_rx(p: &mut Process) -> ExitRx {
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

/// Dispatches until none of `pids` is alive (zombies count as gone),
/// panicking after 10 s.
pub fn all_gone(pids: &[i32], what: &str) {
    let what = format!("{what} (pids {pids:?}) to be gone");
    pump_until(Duration::from_secs(10), &what, || {
        pids.iter().all(|&p| !super::procfs::alive(p))
    });
}

/// Dispatches until `rx` has the run callback's result (30 s at most).
pub fn wait_run(rx: &RunRx) -> anyfork::Result<OwnedFd> {
    pump(rx, Duration::from_secs(30), "the run callback")
}

/// Dispatches until the exit callback reported (30 s at most).
pub fn wait_exit(rx: &ExitRx) -> (i32, anyfork::Result<i32>) {
    pump(rx, Duration::from_secs(30), "the exit callback")
}

/// Runs `function` in `p` and dispatches until the run callback fired;
/// returns what it got.
pub fn run(p: Process, function: &str) -> anyfork::Result<OwnedFd> {
    wait_run(&run_async(p, function))
}

/// Runs `function` and reads the comm socket to EOF.
pub fn run_output(p: Process, function: &str) -> Vec<u8> {
    read_to_eof(run(p, function).expect("the run callback got an error"))
}

/// Runs `function` and reads the comm socket to EOF, as text.
pub fn run_text(p: Process, function: &str) -> String {
    String::from_utf8(run_output(p, function)).expect("the child wrote text")
}

/// Reads a (nonblocking) comm socket until it ends, waiting up to 30 s
/// for each read; a reset is returned, not a panic.
pub fn read_all(fd: OwnedFd) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut v = Vec::new();
    s.read_to_end(&mut v).map(|_| v)
}

/// [`read_all`], panicking on an error.
pub fn read_to_eof(fd: OwnedFd) -> Vec<u8> {
    read_all(fd).expect("reading the comm socket")
}
