//! Thin system calls the methods share: sockets, EOF waits, waitpid, epoll, CPU time, /proc figures.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub const MB: usize = 1 << 20;

/// The crate's root, where benches/floor.c and benches/grow.c are.
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The C compiler: `$CC`, else `cc`.
pub fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn check(r: libc::c_int, what: &str) -> libc::c_int {
    if r < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    r
}

/// A unix stream socketpair, close-on-exec, optionally nonblocking.
pub fn pair(nonblock: bool) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let ty =
        libc::SOCK_STREAM | libc::SOCK_CLOEXEC | if nonblock { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: fds has room for two descriptors.
    check(
        unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) },
        "socketpair",
    );
    // SAFETY: both were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Reads what is there; true at EOF, false when the socket is dry.
pub fn drain(fd: RawFd) -> bool {
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: reads into a live buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            return true;
        }
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => return false,
                // A reset is an end as well.
                libc::ECONNRESET => return true,
                e => panic!(
                    "reading a comm socket: {}",
                    std::io::Error::from_raw_os_error(e)
                ),
            }
        }
    }
}

/// Waits for EOF on a nonblocking socket: poll for POLLIN/POLLHUP, then read
/// until 0. Every sequential method ends with exactly this.
pub fn wait_eof(fd: RawFd) {
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r < 0 && errno() != libc::EINTR {
            panic!("poll: {}", std::io::Error::last_os_error());
        }
        if r > 0 && drain(fd) {
            return;
        }
    }
}

pub fn waitpid(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || errno() != libc::EINTR {
            return;
        }
    }
}

pub fn epoll_new() -> OwnedFd {
    // SAFETY: plain syscall; the result is checked.
    let fd = check(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
        "epoll_create1",
    );
    // SAFETY: a fresh fd nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub fn epoll_ctl(ep: &OwnedFd, op: i32, fd: RawFd, token: u64) {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: `ev` outlives the call.
    check(
        unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) },
        "epoll_ctl",
    );
}

/// User + system CPU time of this process (children excluded), in seconds.
pub fn cpu_self() -> f64 {
    // SAFETY: getrusage fills a zeroed struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A `Key: N kB` field of a /proc file, in kB.
pub fn proc_kb(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

pub fn self_rss() -> usize {
    proc_kb("/proc/self/status", "VmRSS").unwrap_or(0) as usize * 1024
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// CPUs this process may run on (0 if unknown).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}
