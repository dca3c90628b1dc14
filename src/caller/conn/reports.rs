//! Reports from a template on the socket of the process that forked:
//! pids (one per fork, in order), exits, and the end marker before a
//! process that forked enters its run function.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{MsgFlags, recv};

use super::{Conn, Phase, State};
use crate::error::{Errno, Error};
use crate::protocol::wire::{self, Frame, HEADER_LEN};

/// Bytes of reports read at once (a pid report is 9 bytes, an exit 13).
const REPORT_READ: usize = 4096;

impl Conn {
    /// Reads reports (pids, exits, the end marker) until the socket is dry.
    pub(super) fn read_reports(self: &Arc<Self>, st: &mut State) {
        loop {
            let Some(fd) = st.fd.as_ref().map(AsRawFd::as_raw_fd) else {
                return;
            };
            // Once the process may enter its run function, read no byte past
            // the end marker: what follows belongs to the user.
            let exact = st.phase == Phase::Running;
            let want = if !exact {
                REPORT_READ
            } else if st.rx.len() < HEADER_LEN {
                HEADER_LEN - st.rx.len()
            } else {
                let h = st.rx.first_chunk::<HEADER_LEN>().expect("length checked");
                let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
                (HEADER_LEN + len).saturating_sub(st.rx.len()).max(1)
            };
            let mut buf = [0u8; REPORT_READ];
            let n = recv(
                fd,
                &mut buf[..want.min(REPORT_READ)],
                MsgFlags::MSG_DONTWAIT,
            );
            if let Ok(k) = n {
                st.rx.extend_from_slice(&buf[..k]);
            }
            match n {
                // A reset is an end too: the peer closed with our commands
                // unread, as a template that dies mid-stream does.
                Ok(0) | Err(Errno::ECONNRESET) => return self.on_eof(st),
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => return self.fail(st, Error::sys(e, "reading reports from a template")),
            }
            if let Err(e) = self.parse_reports(st) {
                return self.fail(
                    st,
                    Error::new(
                        Errno::EPROTO,
                        format!("corrupt report from a template: {e}"),
                    ),
                );
            }
            if st.end_seen {
                return;
            }
            // A short read emptied the socket: the level-triggered loop fd
            // says when more comes, so no read is spent to hear EAGAIN.
            if !exact && n.is_ok_and(|k| k < want) {
                return;
            }
        }
    }

    fn parse_reports(self: &Arc<Self>, st: &mut State) -> std::result::Result<(), wire::WireError> {
        let mut used = 0;
        while let Some((tag, p, n)) = wire::split(&st.rx[used..])? {
            used += n;
            match wire::decode(tag, p)? {
                Frame::Pid(pid) => {
                    // Requests dropped unsent (their socket could not be
                    // made) get no report.
                    while st.forks.front().is_some_and(|r| r.pid().is_err()) {
                        st.forks.pop_front();
                    }
                    let Some(rec) = st.forks.pop_front() else {
                        return Err(wire::WireError::UnknownTag(tag as u8));
                    };
                    if pid > 0 {
                        rec.set_pid(Ok(pid));
                        st.children.insert(pid, rec);
                    } else {
                        let e = Errno::from_raw(-pid);
                        rec.set_pid(Err(Error::sys(e, "the template could not fork")));
                    }
                }
                Frame::Exit { pid, status } => {
                    if let Some(rec) = st.children.remove(&pid) {
                        rec.set_status(Ok(status));
                    }
                }
                Frame::End => {
                    st.end_seen = true;
                    break;
                }
                _ => return Err(wire::WireError::UnknownTag(tag as u8)),
            }
        }
        st.rx.drain(..used);
        Ok(())
    }

    fn on_eof(self: &Arc<Self>, st: &mut State) {
        let closing = st.phase == Phase::Closing;
        let err = Error::new(
            Errno::EPIPE,
            if closing {
                "the template exited before answering"
            } else {
                "the process closed its socket (it exited or was killed)"
            },
        );
        self.fail(st, err);
    }
}

/// Whether reports may come that someone waits for. A template that is
/// still open stays registered between forks, so creating one process
/// after another does not add and remove it from the epoll set each time.
pub(super) fn wants_read(st: &State) -> bool {
    !st.forks.is_empty()
        || !st.children.is_empty()
        || (st.phase == Phase::Open && st.forked)
        || (st.phase == Phase::Running && st.forked && !st.end_seen)
}
