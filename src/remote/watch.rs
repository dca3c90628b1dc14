//! The transport's stderr (ssh's own messages and what remote processes
//! write to theirs): copied to the relay's stderr, its last bytes kept
//! for the error that explains a failed start.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// Bytes of the transport's stderr kept for an error message.
const TAIL: usize = 2048;

pub(super) struct Watch {
    fd: OwnedFd,
    tail: Vec<u8>,
    /// Copy to our stderr as it comes (after the start), or only keep.
    pass: bool,
}

impl Watch {
    pub(super) fn new(fd: OwnedFd) -> Watch {
        crate::sys::fd::set_nonblocking(fd.as_fd());
        Watch {
            fd,
            tail: Vec::new(),
            pass: false,
        }
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// From now on what comes is copied to our stderr, starting with what
    /// was kept.
    pub(super) fn pass_on(&mut self) {
        self.pass = true;
        write_stderr(&self.tail);
    }

    /// Reads what is there; false at end of file.
    pub(super) fn pump(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a local buffer of that size.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                return false;
            }
            if n < 0 {
                use nix::errno::Errno;
                return matches!(Errno::last(), Errno::EAGAIN | Errno::EINTR);
            }
            let got = &buf[..n as usize];
            if self.pass {
                write_stderr(got);
            }
            self.tail.extend_from_slice(got);
            if self.tail.len() > TAIL {
                self.tail.drain(..self.tail.len() - TAIL);
            }
        }
    }

    /// What was kept, as one trimmed line of text.
    pub(super) fn said(&self) -> String {
        String::from_utf8_lossy(&self.tail)
            .trim()
            .replace('\n', " | ")
    }
}

fn write_stderr(mut b: &[u8]) {
    while !b.is_empty() {
        // SAFETY: writes initialized bytes to fd 2.
        let n = unsafe { libc::write(2, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}
