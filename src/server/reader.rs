//! Reading the command socket: whole frames, exactly (a header, then the
//! payload together with the next header, never past a `Run`), so no byte
//! meant for the run function is ever consumed here. Received fds are
//! close-on-exec from the moment they arrive (`MSG_CMSG_CLOEXEC`) and wait
//! in a FIFO for the frames that take them; an fd the kernel could not
//! install (this process was at its open-file limit) waits there as `None`.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::exit::die;
use crate::protocol::wire::{self, HEADER_LEN, Tag};

/// Most payload bytes read (and so allocated) ahead of their arrival.
const READ_CHUNK: usize = 1 << 20;

pub struct Reader {
    pub hdr: [u8; HEADER_LEN],
    pub have: usize,
    cur: Option<(Tag, usize)>,
    pub payload: Vec<u8>,
    cmsg: Vec<u8>,
    /// The last read returned less than it asked for: the socket was empty
    /// then, so the next read waits for `poll` (which is level-triggered)
    /// instead of costing a syscall that would only say `EAGAIN`.
    pub dry: bool,
}

pub enum Next {
    Frame(Tag),
    Again,
    Eof,
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            hdr: [0; HEADER_LEN],
            have: 0,
            cur: None,
            payload: Vec::new(),
            cmsg: nix::cmsg_space!([RawFd; wire::MAX_FDS_PER_MSG]),
            dry: false,
        }
    }

    /// Reads until a whole frame is in `payload`, the socket is dry, or EOF.
    pub fn next(&mut self, sock: RawFd, fdq: &mut VecDeque<Option<OwnedFd>>) -> Next {
        loop {
            match self.cur {
                None if self.have == HEADER_LEN => {
                    let (tag, len) = wire::parse_header(&self.hdr)
                        .unwrap_or_else(|e| die(125, format_args!("corrupt command stream: {e}")));
                    self.have = 0;
                    self.cur = Some((tag, len as usize));
                    self.payload.clear();
                    continue;
                }
                Some((tag, len)) if self.payload.len() == len => {
                    self.cur = None;
                    return Next::Frame(tag);
                }
                _ => {}
            }
            if self.dry {
                self.dry = false;
                return Next::Again;
            }
            let n = match self.cur {
                None => {
                    let want = HEADER_LEN - self.have;
                    let mut iov = [IoSliceMut::new(&mut self.hdr[self.have..])];
                    let n = recv(sock, &mut iov, &mut self.cmsg, fdq);
                    self.dry = matches!(n, Some(k) if k > 0 && k < want);
                    n
                }
                Some((tag, len)) => {
                    let old = self.payload.len();
                    let chunk = (len - old).min(READ_CHUNK);
                    self.payload.resize(old + chunk, 0);
                    let (p, h) = (&mut self.payload[old..], &mut self.hdr[self.have..]);
                    // The next header may be read along only with the last
                    // bytes of the payload, and never after a run frame.
                    let last = chunk == len - old;
                    let (n, want) = if tag == Tag::Run || !last {
                        let n = recv(sock, &mut [IoSliceMut::new(p)], &mut self.cmsg, fdq);
                        (n, chunk)
                    } else {
                        let want = chunk + h.len();
                        let mut iov = [IoSliceMut::new(p), IoSliceMut::new(h)];
                        (recv(sock, &mut iov, &mut self.cmsg, fdq), want)
                    };
                    let got = n.unwrap_or(0);
                    self.dry = got > 0 && got < want;
                    self.payload.truncate(old + got.min(chunk));
                    self.have += got.saturating_sub(chunk);
                    n
                }
            };
            match n {
                Some(0) => return Next::Eof,
                Some(n) if self.cur.is_none() => self.have += n,
                Some(_) => {}
                None => return Next::Again,
            }
        }
    }
}

/// One nonblocking `recvmsg`; received fds join `fdq`. `None` when dry.
///
/// A caller puts at most one fd on a `sendmsg` ([`wire::MAX_FDS_PER_SEND`]),
/// and one `recvmsg` returns the fds of at most one `sendmsg`. When this
/// process is at its open-file limit the kernel drops the fd and says so
/// with `MSG_CTRUNC`; the bytes are intact. The fd's place in the queue is
/// then kept as `None`, so the frame it was meant for fails (`EMFILE`)
/// and every later frame still gets its own fd.
fn recv(
    sock: RawFd,
    iov: &mut [IoSliceMut<'_>],
    cmsg: &mut [u8],
    fdq: &mut VecDeque<Option<OwnedFd>>,
) -> Option<usize> {
    loop {
        // SAFETY: a zeroed msghdr is valid; every pointer set below lives
        // until recvmsg returns (IoSliceMut is ABI-compatible with iovec).
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_iov = iov.as_mut_ptr().cast();
        mh.msg_iovlen = iov.len() as _;
        mh.msg_control = cmsg.as_mut_ptr().cast();
        mh.msg_controllen = cmsg.len() as _;
        let flags = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
        // SAFETY: as above.
        let n = unsafe { libc::recvmsg(sock, &mut mh, flags) };
        if n < 0 {
            match nix::errno::Errno::last() {
                nix::errno::Errno::EINTR => continue,
                nix::errno::Errno::EAGAIN => return None,
                nix::errno::Errno::ECONNRESET => return Some(0),
                e => die(
                    125,
                    format_args!("reading the command socket: {}", e.desc()),
                ),
            }
        }
        let before = fdq.len();
        // SAFETY: the kernel filled `mh` and the control buffer it points
        // to; the CMSG macros stay within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..bytes / size_of::<RawFd>() {
                        // The kernel just installed these fds for us.
                        let fd = data.add(i).read_unaligned();
                        fdq.push_back(Some(OwnedFd::from_raw_fd(fd)));
                    }
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
        }
        if mh.msg_flags & libc::MSG_CTRUNC != 0 {
            if fdq.len() > before {
                // More than one fd came in one message and only some were
                // installed: which frames the rest belonged to is unknown.
                die(
                    125,
                    format_args!(
                        "corrupt command stream: a message carried more than {} fd and this \
                         process, at its open-file limit (EMFILE), could take only {}",
                        wire::MAX_FDS_PER_SEND,
                        fdq.len() - before
                    ),
                );
            }
            fdq.push_back(None);
        }
        return Some(n as usize);
    }
}
