//! A nonblocking queue of bytes and file descriptors bound for one socket.
//!
//! Every push first tries to write at once (`sendmsg` with `MSG_DONTWAIT |
//! MSG_NOSIGNAL`); whatever the socket does not take is copied and kept for
//! [`Outbox::flush`], which the reactor calls when the socket is writable.
//!
//! An fd must reach the peer no later than the first byte of the frame that
//! consumes it. Each chunk keeps its fds; a `sendmsg` attaches the fds of
//! every chunk it starts, so fds may travel early, never late. Once a
//! `sendmsg` took any byte, its fds were sent and our copies are closed.
//!
//! A frame may also name an fd to be made only when it is written
//! ([`Later`]): a new process's socket need not exist while its fork
//! request waits in the queue, so queued requests hold no fds. Such a
//! frame is a chunk of its own; if its fd cannot be made, the frame is
//! dropped unsent (and counts as written).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use crate::error::Errno;
use crate::protocol::wire::MAX_FDS_PER_SEND;

/// Small frames are packed together until a chunk holds this much.
const PACK: usize = 64 * 1024;
/// Most iovecs gathered into one `sendmsg`.
const MAX_IOV: usize = 64;

/// Makes the fd of a frame when the frame is written; `None` drops the
/// frame (the maker has told whoever waits for it why).
pub type Later = Box<dyn FnOnce() -> Option<OwnedFd> + Send>;

#[derive(Default)]
struct Chunk {
    data: Vec<u8>,
    off: usize,
    fds: Vec<OwnedFd>,
    /// The fd of the chunk's one frame, not made yet.
    later: Option<Later>,
    /// Its fd could not be made: the frame is dropped unsent.
    dead: bool,
}

/// Bytes and fds waiting for one socket.
#[derive(Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// Bytes ever handed to [`Outbox::send`] and ever written: a frame is
    /// out once `written` reaches the `accepted` it ended at.
    accepted: u64,
    written: u64,
}

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything is written.
    All,
    /// The socket is full; the rest waits for writability.
    Blocked,
}

impl Outbox {
    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Where the bytes handed over so far end, as a mark for [`Outbox::past`].
    pub fn mark(&self) -> u64 {
        self.accepted
    }

    /// True once everything up to `mark` was written to the socket.
    pub fn past(&self, mark: u64) -> bool {
        self.written >= mark
    }

    /// Queues `parts` (together one or more whole frames) with `fds`, trying
    /// to write them at once when nothing else waits. An error means the
    /// socket is broken: the peer is gone or the fd is not a socket.
    pub fn send(
        &mut self,
        sock: RawFd,
        parts: &[&[u8]],
        fds: Vec<OwnedFd>,
    ) -> Result<Flushed, Errno> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.accepted += total as u64;
        let mut skip = 0;
        let mut fds = fds;
        if self.chunks.is_empty() {
            let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
            let iov: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            match send_raw(sock, &iov, &raw) {
                Ok(n) => {
                    fds.clear();
                    self.written += n as u64;
                    if n == total {
                        return Ok(Flushed::All);
                    }
                    skip = n;
                }
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(e),
            }
        }
        self.queue(parts, skip, fds);
        Ok(Flushed::Blocked)
    }

    /// Like [`Outbox::send`] for one frame whose one fd `make` makes when
    /// the frame is written: at once if nothing else waits, else when the
    /// queue reaches it.
    pub fn send_later(
        &mut self,
        sock: RawFd,
        frame: &[&[u8]],
        make: Later,
    ) -> Result<Flushed, Errno> {
        if self.chunks.is_empty() {
            return match make() {
                Some(fd) => self.send(sock, frame, vec![fd]),
                None => Ok(Flushed::All),
            };
        }
        self.hold_later(frame, make);
        Ok(Flushed::Blocked)
    }

    /// Queues `parts` with `fds` without writing (the socket does not
    /// exist yet).
    pub fn hold(&mut self, parts: &[&[u8]], fds: Vec<OwnedFd>) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.accepted += total as u64;
        self.queue(parts, 0, fds);
    }

    /// Queues one frame whose one fd `make` makes when it is written.
    pub fn hold_later(&mut self, frame: &[&[u8]], make: Later) {
        let len: usize = frame.iter().map(|p| p.len()).sum();
        self.accepted += len as u64;
        let mut data = Vec::with_capacity(len);
        for p in frame {
            data.extend_from_slice(p);
        }
        self.chunks.push_back(Chunk {
            data,
            later: Some(make),
            ..Chunk::default()
        });
        self.bytes += len;
    }

    /// Copies `parts` minus the first `skip` bytes into the queue.
    fn queue(&mut self, parts: &[&[u8]], mut skip: usize, fds: Vec<OwnedFd>) {
        let rest: usize = parts.iter().map(|p| p.len()).sum::<usize>() - skip;
        // A chunk's fds all ride with its first sendmsg, which carries at
        // most MAX_FDS_PER_SEND of them (one: see its doc).
        let pack = matches!(self.chunks.back(),
            Some(c) if c.later.is_none()
                && c.data.len() + rest <= PACK
                && c.fds.len() + fds.len() <= MAX_FDS_PER_SEND);
        if !pack {
            self.chunks.push_back(Chunk {
                data: Vec::with_capacity(rest),
                ..Chunk::default()
            });
        }
        let c = self.chunks.back_mut().expect("a chunk was just ensured");
        for p in parts {
            let s = skip.min(p.len());
            skip -= s;
            c.data.extend_from_slice(&p[s..]);
        }
        c.fds.extend(fds);
        self.bytes += rest;
    }

    /// Writes as much as the socket takes now.
    pub fn flush(&mut self, sock: RawFd) -> Result<Flushed, Errno> {
        while !self.chunks.is_empty() {
            let mut iov = Vec::with_capacity(MAX_IOV.min(self.chunks.len()));
            let mut raw = Vec::new();
            let mut used = 0;
            let mut dropped = false;
            for c in self.chunks.iter_mut() {
                let fds = c.fds.len() + usize::from(c.later.is_some());
                if iov.len() == MAX_IOV || raw.len() + fds > MAX_FDS_PER_SEND {
                    break;
                }
                if let Some(make) = c.later.take() {
                    match make() {
                        Some(fd) => c.fds.push(fd),
                        None => c.dead = true,
                    }
                }
                if c.dead {
                    // Dropped once it is first in line.
                    dropped = used == 0;
                    break;
                }
                iov.push(IoSlice::new(&c.data[c.off..]));
                raw.extend(c.fds.iter().map(AsRawFd::as_raw_fd));
                used += 1;
            }
            if dropped {
                let c = self.chunks.pop_front().expect("the first chunk");
                let left = c.data.len() - c.off;
                self.bytes -= left;
                self.written += left as u64;
                continue;
            }
            if used == 0 {
                // Unreachable while queue() caps fds per chunk; never spin.
                return Err(Errno::EINVAL);
            }
            let n = match send_raw(sock, &iov, &raw) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return Ok(Flushed::Blocked),
                Err(e) => return Err(e),
            };
            drop(iov);
            for c in self.chunks.iter_mut().take(used) {
                c.fds.clear();
            }
            self.written += n as u64;
            self.consume(n);
        }
        Ok(Flushed::All)
    }

    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let c = self.chunks.front_mut().expect("sent bytes were queued");
            let left = c.data.len() - c.off;
            if n < left {
                c.off += n;
                return;
            }
            n -= left;
            self.chunks.pop_front();
        }
    }
}

/// One `sendmsg` that never blocks and never raises SIGPIPE.
fn send_raw(sock: RawFd, iov: &[IoSlice<'_>], fds: &[RawFd]) -> Result<usize, Errno> {
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    loop {
        let r = if fds.is_empty() {
            sendmsg::<()>(sock, iov, &[], flags, None)
        } else {
            sendmsg::<()>(sock, iov, &[ControlMessage::ScmRights(fds)], flags, None)
        };
        match r {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn many_queued_fds_flush_in_messages_of_at_most_253() {
        let (a, b) = pair();
        let mut ob = Outbox::default();
        // Fill the socket so that everything after queues.
        let fill = vec![0u8; 1 << 20];
        while ob.is_empty() {
            ob.send(a.as_raw_fd(), &[&fill], vec![]).unwrap();
        }
        let devnull = std::fs::File::open("/dev/null").unwrap();
        for _ in 0..600 {
            let fd = OwnedFd::from(devnull.try_clone().unwrap());
            ob.send(a.as_raw_fd(), &[b"D\0\0\0\0"], vec![fd]).unwrap();
        }
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut s = UnixStream::from(b);
            s.set_nonblocking(false).unwrap();
            let mut sink = Vec::new();
            s.read_to_end(&mut sink).unwrap();
            sink.len()
        });
        let t = std::time::Instant::now();
        while ob.flush(a.as_raw_fd()).unwrap() == Flushed::Blocked {
            assert!(t.elapsed().as_secs() < 20, "flush made no progress");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(a);
        assert!(reader.join().unwrap() >= 600 * 5);
    }

    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn queues_what_a_full_socket_refuses_and_flushes_it_in_order() {
        let (a, b) = pair();
        let mut ob = Outbox::default();
        let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            ob.send(a.as_raw_fd(), &[b"head", &big], vec![]).unwrap(),
            Flushed::Blocked
        );
        assert!(!ob.is_empty());
        let reader = std::thread::spawn(move || {
            let mut s = UnixStream::from(b);
            s.set_nonblocking(false).unwrap();
            let mut got = vec![0u8; 4 + big.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got[..4], b"head");
            assert!(got[4..] == big[..]);
        });
        while ob.flush(a.as_raw_fd()).unwrap() == Flushed::Blocked {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(ob.len(), 0);
        reader.join().unwrap();
    }
}
