//! The relay's reading of the caller's commands: enough of the wire
//! protocol to find the frames that carry a new process's socket (`Fork`,
//! `Spawn`), so that each gets a channel of its own, opened on the link
//! just before the frame that needs it; and where a process's commands
//! end and its user bytes begin (after `Run`).

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use super::link;
use crate::protocol::wire::{self, Tag};

/// How the bytes a caller writes to one process's socket are read.
pub(super) enum Commands {
    /// Frames to the server: a header is held back until it is whole, so
    /// that an open goes out before the frame that needs its socket.
    Frames {
        head: [u8; wire::HEADER_LEN],
        have: usize,
        left: u64,
        /// The frame being passed is `Run`: after it, the user's bytes.
        last: bool,
    },
    /// The process runs its function: bytes pass as they are.
    Raw,
}

/// A new process's socket found in the commands: its channel, the socket,
/// and how the commands to it will be read.
pub(super) type Born = (u32, OwnedFd, Commands);

impl Commands {
    pub(super) fn frames() -> Commands {
        Commands::Frames {
            head: [0; wire::HEADER_LEN],
            have: 0,
            left: 0,
            last: false,
        }
    }

    /// Passes `bytes`, the caller's next bytes on channel `id`, to `out` as
    /// data frames. Each frame that carries a new process's socket takes
    /// it from `fds` (received with the bytes), gets the channel `next`
    /// (then incremented), whose open goes out first; those are returned.
    /// An error when the stream cannot be passed on (corrupt, an fd for a
    /// remote process, a socket missing).
    pub(super) fn pass(
        &mut self,
        id: u32,
        bytes: &[u8],
        fds: &mut VecDeque<OwnedFd>,
        next: &mut u32,
        out: &mut Vec<u8>,
    ) -> Result<Vec<Born>, String> {
        let mut born = Vec::new();
        let mut from = 0;
        let mut i = 0;
        while i < bytes.len() {
            match self {
                Commands::Raw => i = bytes.len(),
                Commands::Frames { left, last, .. } if *left > 0 => {
                    let take = (*left).min((bytes.len() - i) as u64);
                    i += take as usize;
                    *left -= take;
                    if *left == 0 && *last {
                        *self = Commands::Raw;
                    }
                }
                Commands::Frames {
                    head,
                    have,
                    left,
                    last,
                } => {
                    link::push_data(out, id, &bytes[from..i]);
                    let take = (wire::HEADER_LEN - *have).min(bytes.len() - i);
                    head[*have..*have + take].copy_from_slice(&bytes[i..i + take]);
                    *have += take;
                    i += take;
                    from = i;
                    if *have < wire::HEADER_LEN {
                        continue;
                    }
                    let (tag, len) = wire::parse_header(head)
                        .map_err(|e| format!("corrupt command stream: {e}"))?;
                    if tag.fds() > 0 {
                        if tag == Tag::Fd {
                            return Err("an fd cannot be sent to a remote process".into());
                        }
                        let Some(fd) = fds.pop_front() else {
                            return Err(format!("a {tag:?} frame came without its socket"));
                        };
                        let commands = if tag == Tag::Fork && len == 0 {
                            Commands::frames()
                        } else {
                            Commands::Raw
                        };
                        born.push((*next, fd, commands));
                        link::push_open(out, *next, id);
                        *next += 1;
                    }
                    let whole = *head;
                    link::push_data(out, id, &whole);
                    *have = 0;
                    *left = u64::from(len);
                    *last = tag == Tag::Run;
                }
            }
        }
        link::push_data(out, id, &bytes[from..]);
        Ok(born)
    }
}
