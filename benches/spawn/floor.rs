//! The floor template (benches/floor.c): building it, starting it, and sending it fork and spawn requests.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::sys::{cc, manifest_dir, pair};

pub struct Floor {
    ctl: OwnedFd,
    pub child: std::process::Child,
    pub linkage: &'static str,
}

/// Compiles benches/floor.c: statically if the toolchain can, or (with
/// `dynamic`) linked dynamically like anyfork-serve, which must be to load
/// libraries.
fn build_floor(out_dir: &Path, dynamic: bool) -> (PathBuf, &'static str) {
    let src = manifest_dir().join("benches/floor.c");
    let out = out_dir.join(if dynamic {
        "anyfork-floor-dyn"
    } else {
        "anyfork-floor"
    });
    let cc = cc();
    let skip = usize::from(dynamic);
    for (linkage, flags) in [
        ("static", &["-O2", "-static"][..]),
        ("dynamic", &["-O2"][..]),
    ]
    .into_iter()
    .skip(skip)
    {
        let ok = Command::new(&cc)
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return (out, linkage);
        }
    }
    panic!("cannot compile {} with {cc}", src.display());
}

impl Floor {
    pub fn start(out_dir: &Path, dynamic: bool) -> Floor {
        let (path, linkage) = build_floor(out_dir, dynamic);
        let (ctl, theirs) = pair(false);
        let child = Command::new(&path)
            .stdin(Stdio::from(theirs))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", path.display()));
        Floor {
            ctl,
            child,
            linkage,
        }
    }

    /// Sends one request, `fork` (b"F") or `spawn` (b"S"), with one end of
    /// a fresh nonblocking socketpair, and returns the other end: its EOF
    /// says the child (F) or the template (S) is done.
    pub fn ask(&self, what: &[u8; 1]) -> OwnedFd {
        send_fd(self.ctl.as_raw_fd(), what)
    }

    /// Orderly end: the template sees EOF on its control socket and exits.
    pub fn stop(self) {
        let Floor { ctl, mut child, .. } = self;
        drop(ctl);
        let _ = child.wait();
    }
}

/// The bare template of method b-lib: a copy of this benchmark (a
/// dynamically linked program) forked first thing in `main`, holding the
/// library that method c-lib requires. Per request (one byte, one fd) it
/// forks; the child calls `bench_hello` in that library on the fd and
/// `_exit`s with its result; the kernel reaps the children (SIGCHLD
/// ignored). It reports nothing back: the least a template holding a
/// library can do per creation.
pub struct BareLib {
    ctl: OwnedFd,
    pid: libc::pid_t,
}

impl BareLib {
    /// Forks it. Call while this process has one thread.
    pub fn start(lib: &Path) -> BareLib {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(lib.as_os_str().as_bytes()).expect("no NUL in a path");
        let (ctl, theirs) = pair(false);
        // SAFETY: single-threaded here; the child runs only the loop below
        // and never returns.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            drop(ctl);
            // SAFETY: the child's own loop; it ends with _exit.
            unsafe { bare_loop(theirs.as_raw_fd(), &path) }
        }
        drop(theirs);
        BareLib { ctl, pid }
    }

    /// One request: the other end of a fresh nonblocking socketpair, whose
    /// EOF says the child ran and ended.
    pub fn ask(&self) -> OwnedFd {
        send_fd(self.ctl.as_raw_fd(), b"F")
    }

    /// Orderly end: EOF on its socket, then reaped.
    pub fn stop(self) {
        drop(self.ctl);
        crate::sys::waitpid(self.pid);
    }
}

type RunFn = unsafe extern "C" fn(libc::c_int, *const libc::c_void, libc::size_t) -> libc::c_int;

/// The bare template's loop (see [`BareLib`]).
unsafe fn bare_loop(ctl: RawFd, lib: &std::ffi::CStr) -> ! {
    // SAFETY: plain libc calls in a single-threaded child; the function
    // pointer comes from dlsym of a symbol with that C signature.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        let h = libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if h.is_null() {
            libc::_exit(3);
        }
        let sym = libc::dlsym(h, c"bench_hello".as_ptr());
        if sym.is_null() {
            libc::_exit(4);
        }
        let f: RunFn = std::mem::transmute::<*mut libc::c_void, RunFn>(sym);
        let mut space = [0u64; 8];
        loop {
            let mut byte = 0u8;
            let mut iov = libc::iovec {
                iov_base: (&mut byte as *mut u8).cast(),
                iov_len: 1,
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = space.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&space) as _;
            let n = libc::recvmsg(ctl, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n == 0 {
                libc::_exit(0);
            }
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                libc::_exit(1);
            }
            let c = libc::CMSG_FIRSTHDR(&msg);
            if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
                continue;
            }
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
            let pid = libc::fork();
            if pid == 0 {
                libc::_exit(f(fd, std::ptr::null(), 0));
            }
            libc::close(fd);
        }
    }
}

/// Sends `what` with one end of a fresh nonblocking socketpair over `ctl`
/// and returns the other end.
fn send_fd(ctl: RawFd, what: &[u8; 1]) -> OwnedFd {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let (ours, theirs) = pair(true);
    let raw = [theirs.as_raw_fd()];
    let iov = [std::io::IoSlice::new(what)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    loop {
        match sendmsg::<()>(ctl, &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(1) => return ours,
            Err(nix::errno::Errno::EINTR) => continue,
            r => panic!("sending to a floor template: {r:?}"),
        }
    }
}
