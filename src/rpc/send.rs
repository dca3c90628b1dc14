//! Writing RPC frames to a socket: one `send` of what it takes now, never
//! raising SIGPIPE (a gone peer is `EPIPE`); the caller's end queues the
//! rest, the worker's end waits and writes on.

use std::io::IoSlice;

use nix::sys::socket::{MsgFlags, sendmsg};

use crate::error::Errno;

/// Queues what `send2` did not write of `a` then `b` (`done` bytes went).
pub(super) fn queue_rest(out: &mut Vec<u8>, a: &[u8], b: &[u8], done: usize) {
    if done < a.len() {
        out.extend_from_slice(&a[done..]);
        out.extend_from_slice(b);
    } else {
        out.extend_from_slice(&b[done - a.len()..]);
    }
}

/// Frames this small are copied into one buffer and sent with `send`,
/// which costs the kernel less than gathering two pieces.
const SMALL_FRAME: usize = 512;

/// One nonblocking send of `a` then `b`, never raising SIGPIPE.
pub(super) fn send2(fd: i32, a: &[u8], b: &[u8]) -> Result<usize, Errno> {
    let len = a.len() + b.len();
    if b.is_empty() {
        return send_some(fd, a, libc::MSG_DONTWAIT);
    }
    if len <= SMALL_FRAME {
        let mut buf = [0u8; SMALL_FRAME];
        buf[..a.len()].copy_from_slice(a);
        buf[a.len()..len].copy_from_slice(b);
        return send_some(fd, &buf[..len], libc::MSG_DONTWAIT);
    }
    let iov = [IoSlice::new(a), IoSlice::new(b)];
    sendmsg::<()>(
        fd,
        &iov,
        &[],
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )
}

/// One `send` of `a` with `flags` (`MSG_DONTWAIT` on a blocking socket,
/// or 0), never raising SIGPIPE: the bytes written, or the errno.
pub(super) fn send_some(fd: i32, a: &[u8], flags: libc::c_int) -> Result<usize, Errno> {
    // SAFETY: a valid buffer of `a.len()` bytes.
    let n = unsafe { libc::send(fd, a.as_ptr().cast(), a.len(), flags | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}
