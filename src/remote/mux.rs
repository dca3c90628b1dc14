//! The multiplexer both ends of a remote link run: one byte stream to the
//! other end, and a socket per channel on this machine (the caller's ends
//! on the relay's side, the processes' ends on the remote side). It never
//! blocks: every fd is nonblocking, one `poll` waits for all of them, and
//! per-channel credit (see [`super::link`]) bounds what a channel that is
//! not read can hold.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{Shutdown, shutdown};

use super::channel::{Channel, Received};
use super::commands::Commands;
use super::link::{self, Frame, WINDOW, check_versions};
use super::watch::Watch;

/// Which end of the link this multiplexer is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// The relay beside the caller: reads the caller's commands to see
    /// which carry a new process's socket, and names a channel for it.
    Caller,
    /// `anyfork-serve --stdio`: makes a socketpair for each channel the
    /// relay opens and passes one end to the parent channel's process.
    Remote,
}

/// Why the link stopped.
pub(super) enum Ended {
    /// Every channel closed; the link was left in order.
    Drained,
    /// The other end's stream ended or failed: the connection dropped.
    Dropped(String),
    /// The other end sent something that is not the link protocol.
    Corrupt(String),
}

pub(super) struct Mux {
    side: Side,
    input: OwnedFd,
    output: OwnedFd,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    chans: HashMap<u32, Channel>,
    next_chan: u32,
    /// The hello of the other end has been read.
    greeted: bool,
    /// Caller side: where the transport's stderr goes on.
    watch: Option<Watch>,
    /// Where each read lands first (allocated once).
    scratch: Vec<u8>,
}

/// Most bytes read from one socket or the link at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Stop reading sockets while this much waits to go on the link.
const OUT_HIGH: usize = 1024 * 1024;

impl Mux {
    /// A multiplexer over `input`/`output` (nonblocking) with channel 0 on
    /// `template`. `greeted`: the other end's hello was read already, and
    /// `inbuf` holds what followed it.
    pub(super) fn new(
        side: Side,
        input: OwnedFd,
        output: OwnedFd,
        template: OwnedFd,
        inbuf: Vec<u8>,
        greeted: bool,
    ) -> Mux {
        let commands = match side {
            Side::Caller => Commands::frames(),
            Side::Remote => Commands::Raw,
        };
        crate::sys::fd::set_nonblocking(input.as_fd());
        crate::sys::fd::set_nonblocking(output.as_fd());
        crate::sys::fd::set_nonblocking(template.as_fd());
        let mut chans = HashMap::new();
        chans.insert(link::TEMPLATE, Channel::new(template, commands));
        Mux {
            side,
            input,
            output,
            inbuf,
            out: Vec::new(),
            out_at: 0,
            chans,
            next_chan: link::TEMPLATE + 1,
            greeted,
            watch: None,
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// Copies the transport's stderr on while the link runs.
    pub(super) fn watch(&mut self, w: Watch) {
        self.watch = Some(w);
    }

    /// Queues bytes for the link (the hello).
    pub(super) fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Runs until every channel is done, or the link ends.
    pub(super) fn run(&mut self) -> Ended {
        let mut polls: Vec<libc::pollfd> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        if let Err(e) = self.take_input() {
            return e;
        }
        loop {
            self.flush_out();
            self.chans.retain(|_, c| !c.done());
            // The relay leaves the link when its last channel is done (the
            // far side then sees the link end); the far side waits for
            // that, so nothing it sent is cut off.
            if self.side == Side::Caller && self.chans.is_empty() && self.out_at == self.out.len() {
                return Ended::Drained;
            }
            polls.clear();
            ids.clear();
            let pollfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            polls.push(pollfd(self.input.as_raw_fd(), libc::POLLIN));
            let out_waiting = self.out.len() - self.out_at;
            polls.push(pollfd(
                self.output.as_raw_fd(),
                if out_waiting > 0 { libc::POLLOUT } else { 0 },
            ));
            polls.push(pollfd(
                self.watch.as_ref().map_or(-1, Watch::fd),
                libc::POLLIN,
            ));
            for (&id, c) in &self.chans {
                let mut ev = 0;
                if !c.read_eof && c.credit > 0 && out_waiting < OUT_HIGH {
                    ev |= libc::POLLIN;
                }
                if c.pending() > 0 && !c.shut {
                    ev |= libc::POLLOUT;
                }
                if ev != 0 {
                    ids.push(id);
                    polls.push(pollfd(c.fd.as_raw_fd(), ev));
                }
            }
            // SAFETY: `polls` is a valid array of pollfd of that length.
            let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
            if n < 0 {
                if Errno::last() == Errno::EINTR {
                    continue;
                }
                return Ended::Dropped(format!("poll failed: {}", Errno::last()));
            }
            if polls[0].revents != 0 {
                if let Err(e) = self.read_link() {
                    return e;
                }
            }
            if polls[2].revents != 0 {
                if let Some(w) = &mut self.watch {
                    if !w.pump() {
                        self.watch = None;
                    }
                }
            }
            for (i, &id) in ids.iter().enumerate() {
                let re = polls[3 + i].revents;
                if re == 0 {
                    continue;
                }
                if re & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
                    self.write_chan(id);
                }
                if re & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
                    if let Err(e) = self.read_chan(id) {
                        return e;
                    }
                }
            }
        }
    }

    /// Reads what the link has; EOF ends the link.
    fn read_link(&mut self) -> Result<(), Ended> {
        // SAFETY: reads into `scratch`, READ_CHUNK bytes long.
        let n = unsafe {
            libc::read(
                self.input.as_raw_fd(),
                self.scratch.as_mut_ptr().cast(),
                READ_CHUNK,
            )
        };
        let err = Errno::last();
        if n > 0 {
            self.inbuf.extend_from_slice(&self.scratch[..n as usize]);
        }
        match n {
            0 if self.chans.is_empty() => Err(Ended::Drained),
            0 => Err(Ended::Dropped("the link reached end of file".into())),
            n if n < 0 && matches!(err, Errno::EAGAIN | Errno::EINTR) => Ok(()),
            n if n < 0 => Err(Ended::Dropped(format!("reading the link failed: {err}"))),
            _ => self.take_input(),
        }
    }

    /// Applies every whole frame in `inbuf`.
    fn take_input(&mut self) -> Result<(), Ended> {
        let mut at = 0;
        let buf = std::mem::take(&mut self.inbuf);
        let r = loop {
            match link::split(&buf[at..]) {
                Ok(None) => break Ok(()),
                Ok(Some((frame, n))) => {
                    at += n;
                    if let Err(e) = self.apply(frame) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(Ended::Corrupt(e.to_string())),
            }
        };
        self.inbuf = buf;
        self.inbuf.drain(..at);
        r
    }

    fn apply(&mut self, frame: Frame<'_>) -> Result<(), Ended> {
        if !self.greeted {
            return match frame {
                Frame::Hello { link, wire } => {
                    check_versions(link, wire).map_err(Ended::Corrupt)?;
                    self.greeted = true;
                    Ok(())
                }
                other => Err(Ended::Corrupt(format!(
                    "the first frame is not the hello but {other:?}"
                ))),
            };
        }
        match frame {
            Frame::Hello { .. } => return Err(Ended::Corrupt("a second hello".into())),
            Frame::Open { chan, parent } => {
                if self.side != Side::Remote || self.chans.contains_key(&chan) {
                    return Err(Ended::Corrupt(format!("unexpected open of channel {chan}")));
                }
                let (ours, theirs) = crate::sys::fd::socketpair_above_stdio().map_err(|e| {
                    Ended::Dropped(format!("making a socketpair for a process: {e}"))
                })?;
                self.chans.insert(chan, Channel::new(ours, Commands::Raw));
                // The relay sends the open just before the bytes of the
                // frame that needs the socket: it starts where the
                // parent's stream is now.
                if let Some(p) = self.chans.get_mut(&parent) {
                    if !p.shut {
                        let at = p.taken;
                        p.pass.push_back((theirs, at));
                    }
                }
            }
            Frame::Data { chan, bytes } => match self.chans.get_mut(&chan) {
                Some(c) if !c.shut => {
                    c.wbuf.extend_from_slice(bytes);
                    c.taken += bytes.len() as u64;
                    self.write_chan(chan);
                }
                // Nobody reads them: they count as consumed.
                _ => link::push_credit(&mut self.out, chan, bytes.len() as u32),
            },
            Frame::Credit { chan, bytes } => {
                if let Some(c) = self.chans.get_mut(&chan) {
                    c.credit = c.credit.saturating_add(bytes).min(WINDOW);
                }
            }
            Frame::Eof { chan } => {
                if let Some(c) = self.chans.get_mut(&chan) {
                    c.peer_eof = true;
                    self.write_chan(chan);
                }
            }
            Frame::Reset { chan } => {
                // Nobody reads this channel's bytes any more: its writer
                // here gets EPIPE from now on, and nothing more is read.
                if let Some(c) = self.chans.get_mut(&chan) {
                    let _ = shutdown(c.fd.as_raw_fd(), Shutdown::Read);
                    if !c.read_eof {
                        c.read_eof = true;
                        link::push_eof(&mut self.out, chan);
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes what waits for the link, without blocking.
    fn flush_out(&mut self) {
        while self.out_at < self.out.len() {
            // SAFETY: writes from initialized bytes of `out`.
            let n = unsafe {
                libc::write(
                    self.output.as_raw_fd(),
                    self.out[self.out_at..].as_ptr().cast(),
                    self.out.len() - self.out_at,
                )
            };
            if n <= 0 {
                // EAGAIN waits for POLLOUT; an error shows as EOF on the
                // link's input soon (the transport is gone).
                break;
            }
            self.out_at += n as usize;
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
    }

    /// Writes a channel's pending bytes to its socket, without blocking;
    /// credits what was written and shuts the socket when the other end
    /// is done.
    fn write_chan(&mut self, id: u32) {
        let Some(c) = self.chans.get_mut(&id) else {
            return;
        };
        if c.flush() {
            // The reader is gone: the other end stops its writer, as a
            // local socket would (EPIPE).
            link::push_reset(&mut self.out, id);
        }
        if c.consumed > 0 && (c.consumed >= WINDOW / 4 || c.shut) {
            link::push_credit(&mut self.out, id, c.consumed);
            c.consumed = 0;
        }
        if c.peer_eof && c.pending() == 0 && !c.shut {
            let _ = shutdown(c.fd.as_raw_fd(), Shutdown::Write);
            c.shut = true;
            c.pass.clear();
        }
    }

    /// Reads what a channel's socket has (up to its credit) and sends it
    /// on the link.
    fn read_chan(&mut self, id: u32) -> Result<(), Ended> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.read_chan_into(id, &mut scratch);
        self.scratch = scratch;
        r
    }

    fn read_chan_into(&mut self, id: u32, scratch: &mut [u8]) -> Result<(), Ended> {
        let side = self.side;
        let Some(c) = self.chans.get_mut(&id) else {
            return Ok(());
        };
        if c.read_eof || c.credit == 0 {
            return Ok(());
        }
        let want = (c.credit as usize).min(READ_CHUNK);
        let n = match c.receive(&mut scratch[..want], side == Side::Caller) {
            Received::Again => return Ok(()),
            Received::End => 0,
            Received::Bytes(n) => n,
            Received::LostFd => {
                self.kill_channel(
                    id,
                    "a socket sent with the caller's commands was lost (the relay is at its \
                     open-file limit)",
                );
                return Ok(());
            }
        };
        if n == 0 {
            c.read_eof = true;
            link::push_eof(&mut self.out, id);
            return Ok(());
        }
        c.credit -= n as u32;
        let buf = &scratch[..n];
        match side {
            Side::Remote => link::push_data(&mut self.out, id, buf),
            Side::Caller => {
                if let Err(why) = self.forward_commands(id, buf) {
                    self.kill_channel(id, &why);
                }
            }
        }
        self.flush_out();
        Ok(())
    }

    /// Caller side: channel `id`'s stream is beyond repair (`why`); the
    /// others are not touched. Both ends of it see EOF.
    fn kill_channel(&mut self, id: u32, why: &str) {
        eprintln!(
            "anyfork[{}]: remote channel {id}: {why}",
            std::process::id()
        );
        if let Some(c) = self.chans.get_mut(&id) {
            c.read_eof = true;
            c.shut = true;
            c.wbuf.clear();
            c.at = 0;
        }
        link::push_eof(&mut self.out, id);
    }

    /// Caller side: passes the caller's bytes for channel `id` on, and
    /// opens a channel for each frame that carries a new process's socket.
    fn forward_commands(&mut self, id: u32, bytes: &[u8]) -> Result<(), String> {
        let c = self.chans.get_mut(&id).expect("channel read just now");
        let born = c
            .commands
            .pass(id, bytes, &mut c.fds, &mut self.next_chan, &mut self.out)?;
        for (n, fd, commands) in born {
            crate::sys::fd::set_nonblocking(fd.as_fd());
            self.chans.insert(n, Channel::new(fd, commands));
        }
        Ok(())
    }

    /// The link dropped: every socket closes at once, after a last
    /// attempt to deliver what arrived before.
    pub(super) fn abandon(&mut self) {
        let ids: Vec<u32> = self.chans.keys().copied().collect();
        for id in ids {
            self.write_chan(id);
        }
        self.chans.clear();
    }
}
