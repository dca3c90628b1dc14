//! The worker's end of an RPC channel: reads requests from the comm
//! socket (blocking), hands each to a handler, writes replies and events.
//!
//! Synchronous: one request at a time, in order; the replies of requests
//! that arrived together are written together (one write), events at once
//! (after the replies before them). A
//! batch of replies waits at most 200 µs or 64 kB. Asynchronous: the handler may reply
//! later, from any thread; every reply and event is written at once. At
//! EOF the worker waits for its outstanding replies, then `serve` returns.

use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::frame::{self, CONTROL_ID, EVENT_ID};
use super::send::send_some;
use crate::caller::state::lock;
use crate::error::{Errno, Error, Result};
use crate::sys::spin;

/// A synchronous worker writes the replies to requests that arrived
/// together in one write, unless they grow past this many bytes ...
const BATCH_BYTES: usize = 64 * 1024;
/// ... or the first of them waited this long.
const BATCH_TIME: Duration = Duration::from_micros(200);

/// A worker's state, shared by `serve` and whoever replies.
pub struct Worker {
    fd: RawFd,
    asynchronous: bool,
    st: Mutex<Out>,
    done: Condvar,
}

struct Out {
    buf: Vec<u8>,
    /// Ids of the requests not answered yet (a B-tree: no hashing).
    waiting: BTreeSet<u32>,
    /// A write failed (the caller is gone): everything else is dropped.
    broken: Option<Errno>,
    /// `serve` waits on `done` for the last replies (so only then does a
    /// reply pay for a wake-up).
    draining: bool,
}

impl Worker {
    /// Sends the reply to request `id`.
    pub fn reply(&self, id: u32, data: &[u8]) -> Result<()> {
        let len = frame::len32(data, "rpc_reply")?;
        let mut st = lock(&self.st);
        if !st.waiting.remove(&id) {
            return Err(Error::new(
                Errno::EINVAL,
                format!("rpc_reply: no request with id {id} waits for a reply"),
            ));
        }
        st.buf.extend_from_slice(&frame::header(id, len));
        st.buf.extend_from_slice(data);
        let r = if self.asynchronous {
            self.flush(&mut st)
        } else {
            Ok(())
        };
        if st.draining && (st.waiting.is_empty() || st.broken.is_some()) {
            self.done.notify_all();
        }
        r
    }

    /// Sends an event (and, first, any reply still buffered).
    pub fn event(&self, data: &[u8]) -> Result<()> {
        self.send_now(EVENT_ID, data, "rpc_event")
    }

    /// Asks the pool to retire this worker: it gets no new requests, and
    /// reads EOF once those it has are answered.
    pub fn retire(&self) -> Result<()> {
        self.send_now(CONTROL_ID, &[], "pool_retire")
    }

    fn send_now(&self, id: u32, data: &[u8], what: &str) -> Result<()> {
        let len = frame::len32(data, what)?;
        let mut st = lock(&self.st);
        st.buf.extend_from_slice(&frame::header(id, len));
        st.buf.extend_from_slice(data);
        self.flush(&mut st)
    }

    /// Writes the buffer out (blocking).
    fn flush(&self, st: &mut Out) -> Result<()> {
        if let Some(e) = st.broken {
            st.buf.clear();
            return Err(Error::sys(e, "writing to the caller failed before"));
        }
        let mut pos = 0;
        while pos < st.buf.len() {
            match send_some(self.fd, &st.buf[pos..], 0) {
                Ok(n) => pos += n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => wait_writable(self.fd),
                Err(e) => {
                    st.broken = Some(e);
                    st.buf.clear();
                    return Err(Error::sys(e, "writing to the caller"));
                }
            }
        }
        st.buf.clear();
        Ok(())
    }
}

/// Serves requests on `fd` until EOF: `handle(worker, id, request)` for
/// each. In synchronous mode a request the handler did not reply to gets
/// an empty reply when it returns. Returns once the caller closed its side
/// and every reply is written; an error when the socket failed.
pub fn serve(
    fd: RawFd,
    asynchronous: bool,
    mut handle: impl FnMut(&Worker, u32, &[u8]),
) -> Result<()> {
    if fd < 0 {
        return Err(Error::new(Errno::EBADF, format!("fd {fd} is negative")));
    }
    // SAFETY: F_GETFL/F_SETFL on a caller-given fd; errors are reported.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(Error::last(format_args!("fd {fd}")));
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) };
    let w = Worker {
        fd,
        asynchronous,
        st: Mutex::new(Out {
            buf: Vec::new(),
            waiting: BTreeSet::new(),
            broken: None,
            draining: false,
        }),
        done: Condvar::new(),
    };
    let mut rx: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut since: Option<Instant> = None;
    let mut spin = spin::window();
    loop {
        let mut pos = 0;
        while let Some((id, body, end)) = frame::next(&rx[pos..]) {
            let (b, e) = (pos + body.start, pos + body.end);
            pos += end;
            if id == EVENT_ID || id == CONTROL_ID {
                return Err(Error::new(
                    Errno::EPROTO,
                    format!("rpc_serve: the caller sent a request with the reserved id {id}"),
                ));
            }
            lock(&w.st).waiting.insert(id);
            handle(&w, id, &rx[b..e]);
            if !asynchronous {
                let mut st = lock(&w.st);
                if st.waiting.remove(&id) {
                    st.buf.extend_from_slice(&frame::header(id, 0));
                }
                // Replies wait for the rest of the batch only briefly:
                // a slow handler does not hold back earlier replies. (The
                // last request of a batch needs no clock: its replies are
                // written right after the loop.)
                if st.buf.is_empty() {
                    since = None;
                } else if frame::next(&rx[pos..]).is_some() {
                    let t = *since.get_or_insert_with(Instant::now);
                    if st.buf.len() > BATCH_BYTES || t.elapsed() > BATCH_TIME {
                        w.flush(&mut st)?;
                        since = None;
                    }
                }
            }
        }
        rx.drain(..pos);
        {
            let mut st = lock(&w.st);
            if !st.buf.is_empty() {
                w.flush(&mut st)?;
            }
            since = None;
            if let Some(e) = st.broken {
                return Err(Error::sys(e, "rpc_serve: writing to the caller"));
            }
        }
        if rx.capacity() - rx.len() < 16 * 1024 {
            rx.reserve(64 * 1024);
        }
        let n = match read_next(fd, &mut rx, &mut spin) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(e, "rpc_serve: reading requests")),
        };
        // SAFETY: the kernel wrote `n` bytes.
        unsafe { rx.set_len(rx.len() + n) };
    }
    let mut st = lock(&w.st);
    st.draining = true;
    while !st.waiting.is_empty() && st.broken.is_none() {
        st = w.done.wait(st).unwrap_or_else(|p| p.into_inner());
    }
    if !st.buf.is_empty() {
        w.flush(&mut st)?;
    }
    Ok(())
}

/// Reads what the caller sent into `rx`'s spare capacity: the number of
/// bytes, 0 at EOF. Everything is answered by now, and the next request
/// of a caller making one call at a time follows within microseconds, so
/// it first looks without blocking for up to `spin` (`sys::spin`); `spin`
/// becomes zero for good if `fd` is no socket (no `MSG_DONTWAIT` there).
fn read_next(
    fd: RawFd,
    rx: &mut Vec<u8>,
    spin: &mut Duration,
) -> std::result::Result<usize, Errno> {
    let spare = rx.spare_capacity_mut();
    let (buf, len) = (spare.as_mut_ptr().cast::<libc::c_void>(), spare.len());
    if !spin.is_zero() {
        let found = spin::look_for(*spin, || {
            // SAFETY: `buf` is writable for `len` bytes.
            let n = unsafe { libc::recv(fd, buf, len, libc::MSG_DONTWAIT) };
            match Errno::result(n) {
                Err(Errno::EAGAIN) => None,
                r => Some(r),
            }
        });
        match found {
            Some(Err(Errno::ENOTSOCK)) => *spin = Duration::ZERO,
            Some(r) => return r.map(|n| n as usize),
            None => {}
        }
    }
    // SAFETY: as above.
    let n = unsafe { libc::read(fd, buf, len) };
    Errno::result(n).map(|n| n as usize)
}

fn wait_writable(fd: RawFd) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, -1) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn read_into(fd: RawFd, spin: &mut Duration) -> Vec<u8> {
        let mut rx = Vec::with_capacity(64);
        let n = read_next(fd, &mut rx, spin).expect("read_next");
        // SAFETY: read_next wrote `n` bytes.
        unsafe { rx.set_len(n) };
        rx
    }

    #[test]
    fn a_request_sent_during_the_spin_or_after_it_is_read() {
        let (mut caller, worker) = UnixStream::pair().unwrap();
        let mut spin = Duration::from_millis(200);
        caller.write_all(b"now").unwrap();
        assert_eq!(read_into(worker.as_raw_fd(), &mut spin), b"now");
        let mut short = Duration::from_micros(10);
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            caller.write_all(b"later").unwrap();
            caller
        });
        assert_eq!(read_into(worker.as_raw_fd(), &mut short), b"later");
        assert_eq!(short, Duration::from_micros(10), "a socket keeps its spin");
        drop(late.join().unwrap());
        assert_eq!(read_into(worker.as_raw_fd(), &mut spin), b"", "EOF");
    }

    #[test]
    fn a_pipe_is_read_blocking_and_stops_the_spin() {
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"piped").unwrap();
        let mut spin = Duration::from_millis(200);
        assert_eq!(read_into(r.as_raw_fd(), &mut spin), b"piped");
        assert_eq!(spin, Duration::ZERO);
    }
}
