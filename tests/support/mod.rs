//! Helpers of the engine, event-loop and destructive tests: the C library
//! of child functions (tests/c/children.c), running a process and waiting
//! for its callback, and parsing what the children write back.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyfork::Process;

use crate::common;
// Each test binary uses some of these.
#[allow(unused_imports)]
pub use crate::common::{
    ExitRx, RunRx, exit_rx, ppid_of, pump_until, raise_nofile, run_async, serial, state_of,
};

/// The absolute path of libchildren.so, compiled once per test binary.
/// An `isolated` subprocess reuses its parent's build (it gets the path in
/// the environment), so that no process rewrites the library while another
/// one's children load it.
pub fn lib() -> &'static str {
    static LIB: OnceLock<String> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Ok(p) = std::env::var(LIB_ENV) {
            return p;
        }
        common::shared_lib("children", &["tests/c/children.c"])
            .display()
            .to_string()
    })
}

const LIB_ENV: &str = "ANYFORK_TEST_CHILDREN_LIB";

/// Compiles a C test program once per test binary (so that no test
/// rewrites an executable another one is running).
pub fn exe(name: &str, srcs: &[&str], extra: &[&str]) -> std::path::PathBuf {
    static DONE: Mutex<Vec<(String, std::path::PathBuf)>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = done.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let p = common::executable(name, srcs, extra);
    done.push((name.to_string(), p.clone()));
    p
}

/// Runs `function` in `p` and dispatches until the run callback fired;
/// returns what it got.
pub fn run(p: Process, function: &str) -> anyfork::Result<OwnedFd> {
    let rx = run_async(p, function);
    wait_run(&rx)
}

/// Dispatches until `rx` has the run callback's result.
pub fn wait_run(rx: &RunRx) -> anyfork::Result<OwnedFd> {
    common::pump(rx, Duration::from_secs(30), "the run callback")
}

/// Runs `function` and reads the comm socket to EOF.
pub fn run_output(p: Process, function: &str) -> Vec<u8> {
    common::read_to_eof(run(p, function).expect("the run callback got an error"))
}

/// A fresh process from the default template with libchildren loaded.
pub fn new_child() -> Process {
    let mut p = Process::new().expect("Process::new");
    p.require(lib()).expect("require");
    p
}

/// A fresh `anyfork-serve` template with libchildren loaded.
pub fn new_template() -> Process {
    let mut p = Process::new_exec().expect("Process::new_exec");
    p.require(lib()).expect("require");
    p
}

/// Dispatches until the exit callback reported.
pub fn wait_exit(rx: &ExitRx) -> (i32, anyfork::Result<i32>) {
    common::pump(rx, Duration::from_secs(30), "the exit callback")
}

/// Reads a (nonblocking) comm socket until it ends; unlike
/// `common::read_to_eof` a reset is returned, not a panic.
pub fn read_all(fd: OwnedFd) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut v = Vec::new();
    s.read_to_end(&mut v).map(|_| v)
}

/// `(st_dev, st_ino)` of an fd.
pub fn dev_ino(fd: BorrowedFd<'_>) -> (u64, u64) {
    // SAFETY: fstat into a zeroed struct on a borrowed (open) fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    assert_eq!(r, 0, "fstat: {}", std::io::Error::last_os_error());
    (st.st_dev as u64, st.st_ino as u64)
}

/// A memfd: an fd with an inode of its own.
pub fn memfd(name: &str) -> OwnedFd {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: memfd_create with a C string; the result is checked.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// FNV-1a 64, as children.c computes it.
pub fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

// Flags reported by children.c.
pub const S_NUL_AFTER: u8 = 1;
pub const S_FD_MINUS1: u8 = 2;
pub const S_DATA_SET: u8 = 4;
pub const S_ALL: u8 = S_NUL_AFTER | S_FD_MINUS1 | S_DATA_SET;
pub const F_NO_DATA: u8 = 1;
pub const F_CLOEXEC: u8 = 2;
pub const F_FSTAT_OK: u8 = 4;
pub const C_BLOCKING: u8 = 1;
pub const C_CLOEXEC: u8 = 2;
pub const C_UNIX_STREAM: u8 = 4;

/// One argument as a child saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Str {
        flags: u8,
        data: Vec<u8>,
    },
    Digest {
        flags: u8,
        len: u64,
        hash: u64,
    },
    Fd {
        flags: u8,
        fd: i32,
        dev: u64,
        ino: u64,
    },
}

impl Seen {
    /// The bytes of a string argument (panics otherwise).
    pub fn str(&self) -> &[u8] {
        match self {
            Seen::Str { data, .. } => data,
            o => panic!("expected a string, got {o:?}"),
        }
    }
    /// `(dev, ino)` of an fd argument (panics otherwise).
    pub fn file(&self) -> (u64, u64) {
        match self {
            Seen::Fd { dev, ino, .. } => (*dev, *ino),
            o => panic!("expected an fd, got {o:?}"),
        }
    }
}

/// What `dump_args`/`digest_args` wrote.
#[derive(Debug)]
pub struct Dump {
    pub comm_fd: i32,
    pub comm_flags: u8,
    pub args: Vec<Seen>,
}

/// A little-endian reader over a child's report.
pub struct Rd<'a>(pub &'a [u8]);

impl Rd<'_> {
    pub fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            self.0.len() >= n,
            "report truncated: want {n} bytes, have {}",
            self.0.len()
        );
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One serialised dump; `digest` for `digest_args`.
    pub fn dump(&mut self, digest: bool) -> Dump {
        assert_eq!(self.take(4), b"AFD1", "not a dump");
        let n = self.u32() as usize;
        let comm_fd = self.u32() as i32;
        let comm_flags = self.u8();
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = self.u8();
            let flags = self.u8();
            args.push(match kind {
                0 => {
                    let len = self.u64();
                    if digest {
                        Seen::Digest {
                            flags,
                            len,
                            hash: self.u64(),
                        }
                    } else {
                        Seen::Str {
                            flags,
                            data: self.take(len as usize).to_vec(),
                        }
                    }
                }
                1 => Seen::Fd {
                    flags,
                    fd: self.u32() as i32,
                    dev: self.u64(),
                    ino: self.u64(),
                },
                k => panic!("unknown kind {k}"),
            });
        }
        Dump {
            comm_fd,
            comm_flags,
            args,
        }
    }
}

/// Parses a whole `dump_args` report.
pub fn parse_dump(b: &[u8]) -> Dump {
    let mut r = Rd(b);
    let d = r.dump(false);
    assert!(r.is_empty(), "{} bytes after the dump", r.0.len());
    d
}

/// Parses a whole `digest_args` report.
pub fn parse_digest(b: &[u8]) -> Dump {
    let mut r = Rd(b);
    let d = r.dump(true);
    assert!(r.is_empty(), "{} bytes after the dump", r.0.len());
    d
}

/// What the test expects one argument to look like: a string, or an fd
/// for the file with this `(st_dev, st_ino)`.
pub enum Want<'a> {
    S(&'a [u8]),
    I(u64, u64),
}

/// The expectation for an fd argument referring to the same file as `fd`.
pub fn wfd(fd: impl std::os::fd::AsFd) -> Want<'static> {
    let (d, i) = dev_ino(fd.as_fd());
    Want::I(d, i)
}

/// Asserts that `args` are exactly `want`, in order: strings byte for byte
/// and NUL-terminated, fds the same open files (by dev/ino) and
/// close-on-exec.
pub fn assert_args(args: &[Seen], want: &[Want<'_>]) {
    assert_eq!(args.len(), want.len(), "number of arguments");
    for (i, (s, w)) in args.iter().zip(want).enumerate() {
        match (s, w) {
            (Seen::Str { flags, data }, Want::S(b)) => {
                assert!(
                    data == b,
                    "arg {i}: string differs (len {} vs {})",
                    data.len(),
                    b.len()
                );
                assert_eq!(
                    *flags, S_ALL,
                    "arg {i}: string flags (NUL after, fd -1, data set)"
                );
            }
            (
                Seen::Fd {
                    flags, dev, ino, ..
                },
                Want::I(d, n),
            ) => {
                assert_eq!((*dev, *ino), (*d, *n), "arg {i}: a different file");
                assert_eq!(
                    *flags,
                    F_NO_DATA | F_CLOEXEC | F_FSTAT_OK,
                    "arg {i}: fd flags"
                );
            }
            (s, Want::S(_)) => panic!("arg {i}: expected a string, got {s:?}"),
            (s, Want::I(..)) => panic!("arg {i}: expected an fd, got {s:?}"),
        }
    }
}

/// True when `fd` is open in this process.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only probes.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Waits (up to 10 s) until `pid` is gone or a zombie.
pub fn gone(pid: i32) -> bool {
    common::eventually(Duration::from_secs(10), || !common::alive(pid))
}

/// The command name of `pid`, from /proc.
pub fn comm_of(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Live children of `ppid` running anyfork-serve.
pub fn serve_children(ppid: i32) -> Vec<i32> {
    common::children_of(ppid)
        .into_iter()
        .filter(|&p| comm_of(p).as_deref() == Some("anyfork-serve"))
        .collect()
}

/// Stops `pid` with SIGSTOP and waits until it is stopped.
pub fn stop(pid: i32) {
    kill(pid, libc::SIGSTOP);
    let stopped = common::eventually(Duration::from_secs(5), || state_of(pid) == Some('T'));
    assert!(stopped, "pid {pid} did not stop");
}

/// Sends `sig` to `pid`.
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill with a pid and signal.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// The raw fd of a borrowed fd (for messages).
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// Runs `body` alone in a fresh process of this test binary
/// ([`common::isolated`]), which compiles nothing again: it is told where
/// libchildren.so is.
pub fn isolated(name: &str, limit: Duration, body: impl FnOnce()) {
    common::isolated(name, limit, &[(LIB_ENV, lib().to_string())], body)
}
