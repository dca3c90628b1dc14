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
pub fn lib_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_anyfork-serve")).parent().unwrap().to_path_buf()
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
    let mut args: Vec<String> = srcs.iter().map(|s| root().join(s).display().to_string()).collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    cc(&a, &out)
}

/// Pids of live processes whose parent is `ppid`.
pub fn children_of(ppid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let mut f = after.split(' ');
        let state = f.next().unwrap_or("");
        let parent: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if parent == ppid && state != "Z" {
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
