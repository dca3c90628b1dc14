//! One channel of a remote link: a process's socket on this machine, the
//! bytes waiting to be written to it, and the credit and end-of-file
//! state of both directions.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::commands::Commands;
use super::link::WINDOW;

/// One process's socket on this machine.
pub(super) struct Channel {
    pub(super) fd: OwnedFd,
    /// Bytes from the link for the socket, from `at` on.
    pub(super) wbuf: Vec<u8>,
    pub(super) at: usize,
    /// Remote side: socket ends for the process, each with the offset in
    /// this channel's byte stream of the frame that needs it.
    pub(super) pass: VecDeque<(OwnedFd, u64)>,
    /// Bytes of this channel's stream taken from the link, and written.
    pub(super) taken: u64,
    pub(super) written: u64,
    /// Written to the socket and not yet credited to the other end.
    pub(super) consumed: u32,
    /// The other end sent `Eof`: shut the socket for writing once drained.
    pub(super) peer_eof: bool,
    /// The socket takes no more bytes (shut down, or its reader is gone).
    pub(super) shut: bool,
    /// Bytes this side may still send on the link for this channel.
    pub(super) credit: u32,
    /// The socket reached end of file and `Eof` was sent.
    pub(super) read_eof: bool,
    /// Caller side: how the caller's bytes are read.
    pub(super) commands: Commands,
    /// Caller side: fds received with the caller's bytes, for their frames.
    pub(super) fds: VecDeque<OwnedFd>,
}

impl Channel {
    pub(super) fn new(fd: OwnedFd, commands: Commands) -> Channel {
        Channel {
            fd,
            wbuf: Vec::new(),
            at: 0,
            pass: VecDeque::new(),
            taken: 0,
            written: 0,
            consumed: 0,
            peer_eof: false,
            shut: false,
            credit: WINDOW,
            read_eof: false,
            commands,
            fds: VecDeque::new(),
        }
    }

    pub(super) fn pending(&self) -> usize {
        self.wbuf.len() - self.at
    }

    pub(super) fn done(&self) -> bool {
        self.read_eof && self.shut
    }

    /// Writes what is pending without blocking, each socket for the
    /// process with the write that ends before the next socket's frame:
    /// the server must have each frame's fd by the time it reads the
    /// frame, and takes one fd per message. True when the reader turned
    /// out to be gone: what it was sent counts as consumed, the socket as
    /// shut.
    pub(super) fn flush(&mut self) -> bool {
        let mut gone = false;
        while self.pending() > 0 && !self.shut {
            let fd = self.pass.pop_front();
            let mut len = self.pending();
            if fd.is_some() {
                if let Some((_, next)) = self.pass.front() {
                    len = len.min((next - self.written) as usize);
                }
            }
            let iov = [IoSlice::new(&self.wbuf[self.at..self.at + len])];
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            let sock = self.fd.as_raw_fd();
            let r = match &fd {
                Some((f, _)) => {
                    let fds = [f.as_raw_fd()];
                    sendmsg::<()>(sock, &iov, &[ControlMessage::ScmRights(&fds)], flags, None)
                }
                None => sendmsg::<()>(sock, &iov, &[], flags, None),
            };
            match r {
                Ok(n) => {
                    self.at += n;
                    self.written += n as u64;
                    self.consumed += n as u32;
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                    if let Some(f) = fd {
                        self.pass.push_front(f);
                    }
                    break;
                }
                Err(_) => {
                    self.consumed += self.pending() as u32;
                    self.at = self.wbuf.len();
                    self.shut = true;
                    self.pass.clear();
                    gone = true;
                }
            }
        }
        if self.at == self.wbuf.len() {
            self.wbuf.clear();
            self.at = 0;
        }
        gone
    }

    /// One nonblocking read of the socket into `buf`; with `fds`, sockets
    /// that came with the bytes join [`Channel::fds`].
    pub(super) fn receive(&mut self, buf: &mut [u8], fds: bool) -> Received {
        let mut cmsg = nix::cmsg_space!([RawFd; 8]);
        let mut iov = [IoSliceMut::new(buf)];
        let cm = if fds { Some(&mut cmsg[..]) } else { None };
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        match recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, cm, flags) {
            Ok(m) => {
                if let Ok(cms) = m.cmsgs() {
                    for cm in cms {
                        if let ControlMessageOwned::ScmRights(v) = cm {
                            // SAFETY: the kernel just installed these fds
                            // for us.
                            self.fds.extend(
                                v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                }
                // The kernel could not install an fd (this process is at
                // its open-file limit): later frames would take the wrong
                // sockets.
                if m.flags.contains(MsgFlags::MSG_CTRUNC) {
                    return Received::LostFd;
                }
                match m.bytes {
                    0 => Received::End,
                    n => Received::Bytes(n),
                }
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Received::Again,
            // A reset counts as the end of the process's bytes.
            Err(_) => Received::End,
        }
    }
}

/// What one read of a channel's socket gave.
pub(super) enum Received {
    Bytes(usize),
    /// End of file (or a reset).
    End,
    /// Nothing yet.
    Again,
    /// Fds that came with the bytes were lost (`MSG_CTRUNC`).
    LostFd,
}
