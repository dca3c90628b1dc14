//! Fds of this process: what file one is, making them (memfd, pipe),
//! probing them, and the fd limit.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

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
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: memfd_create with a C string; the result is checked.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// True when `fd` is open in this process.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only probes.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// The standard fds (0, 1, 2) open in this process.
pub fn std_fds() -> std::collections::BTreeSet<i32> {
    (0..3).filter(|&fd| is_open(fd)).collect()
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds; checked.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fds nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The raw fd of an fd-like value, for messages.
pub fn raw(fd: &impl AsRawFd) -> RawFd {
    fd.as_raw_fd()
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
