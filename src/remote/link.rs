//! The link protocol between the local relay and `anyfork-serve --stdio`:
//! many channels (one per process socket) multiplexed over one byte
//! stream, encoded and decoded without any I/O.
//!
//! Every frame is a kind byte, a little-endian `u32` channel and a
//! little-endian `u32` payload length, then the payload:
//!
//! | kind | payload | meaning |
//! |---|---|---|
//! | `A` hello | magic, link version, wire version | first frame each way |
//! | `O` open | parent channel (`u32`) | a new process's socket: its remote end rides with the parent channel's next write |
//! | `D` data | bytes | bytes for the channel's socket |
//! | `C` credit | bytes consumed (`u32`) | the receiver wrote that many of the channel's bytes to its socket |
//! | `E` eof | none | the sender's socket of the channel reached end of file |
//! | `R` reset | none | the sender's socket of the channel takes no more bytes (its reader is gone): stop reading the channel |
//!
//! Flow control: each side may have at most [`WINDOW`] bytes of a
//! channel's data sent and not yet credited, so a process that does not
//! read holds at most that much in the relays and never stops the link.

use std::fmt;

/// Version of this framing; both ends must agree.
pub const LINK_VERSION: u32 = 1;
/// First bytes of a hello payload.
pub const MAGIC: [u8; 8] = *b"afremote";
/// Bytes in a frame header: kind, channel, length.
pub const HEADER_LEN: usize = 9;
/// Most data bytes of one channel in flight (sent, not yet credited).
pub const WINDOW: u32 = 256 * 1024;
/// Largest data payload one frame carries.
pub const MAX_DATA: u32 = 64 * 1024;
/// The channel of the template itself.
pub const TEMPLATE: u32 = 0;

crate::protocol::byte_enum! {
    /// Frame kinds.
    pub enum Kind {
        Hello = b'A',
        Open = b'O',
        Data = b'D',
        Credit = b'C',
        Eof = b'E',
        Reset = b'R',
    }
}

/// A decoded frame; data borrows from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Hello { link: u32, wire: u32 },
    Open { chan: u32, parent: u32 },
    Data { chan: u32, bytes: &'a [u8] },
    Credit { chan: u32, bytes: u32 },
    Eof { chan: u32 },
    Reset { chan: u32 },
}

/// Why bytes are not a valid link frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkError {
    UnknownKind(u8),
    BadLength { kind: Kind, len: u32 },
    BadMagic,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::UnknownKind(b) => write!(f, "unknown link frame kind 0x{b:02x}"),
            LinkError::BadLength { kind, len } => {
                write!(f, "link frame {kind:?} cannot be {len} bytes long")
            }
            LinkError::BadMagic => f.write_str("the hello lacks the anyfork remote magic"),
        }
    }
}

impl std::error::Error for LinkError {}

/// Splits one whole frame off the front of `buf`: `Ok(None)` when more
/// bytes are needed, else the frame and the bytes it took.
pub fn split(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, LinkError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let kind = Kind::from_byte(h[0]).ok_or(LinkError::UnknownKind(h[0]))?;
    let chan = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
    let len = u32::from_le_bytes([h[5], h[6], h[7], h[8]]);
    let ok = match kind {
        Kind::Hello => len == 16,
        Kind::Open | Kind::Credit => len == 4,
        Kind::Data => len <= MAX_DATA,
        Kind::Eof | Kind::Reset => len == 0,
    };
    if !ok {
        return Err(LinkError::BadLength { kind, len });
    }
    let end = HEADER_LEN + len as usize;
    let Some(p) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    let word = |at: usize| u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
    let frame = match kind {
        Kind::Hello => {
            if p[..8] != MAGIC {
                return Err(LinkError::BadMagic);
            }
            Frame::Hello {
                link: word(8),
                wire: word(12),
            }
        }
        Kind::Open => Frame::Open {
            chan,
            parent: word(0),
        },
        Kind::Data => Frame::Data { chan, bytes: p },
        Kind::Credit => Frame::Credit {
            chan,
            bytes: word(0),
        },
        Kind::Eof => Frame::Eof { chan },
        Kind::Reset => Frame::Reset { chan },
    };
    Ok(Some((frame, end)))
}

fn push_header(out: &mut Vec<u8>, kind: Kind, chan: u32, len: u32) {
    out.push(kind as u8);
    out.extend_from_slice(&chan.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

/// Appends the hello this build sends.
pub fn push_hello(out: &mut Vec<u8>) {
    push_header(out, Kind::Hello, 0, 16);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&LINK_VERSION.to_le_bytes());
    out.extend_from_slice(&crate::protocol::wire::VERSION.to_le_bytes());
}

/// Appends an open of `chan`, whose socket goes to `parent`'s process.
pub fn push_open(out: &mut Vec<u8>, chan: u32, parent: u32) {
    push_header(out, Kind::Open, chan, 4);
    out.extend_from_slice(&parent.to_le_bytes());
}

/// Appends `bytes` for `chan`, in frames of at most [`MAX_DATA`].
pub fn push_data(out: &mut Vec<u8>, chan: u32, bytes: &[u8]) {
    for piece in bytes.chunks(MAX_DATA as usize) {
        push_header(out, Kind::Data, chan, piece.len() as u32);
        out.extend_from_slice(piece);
    }
}

/// Appends a credit of `bytes` for `chan`.
pub fn push_credit(out: &mut Vec<u8>, chan: u32, bytes: u32) {
    push_header(out, Kind::Credit, chan, 4);
    out.extend_from_slice(&bytes.to_le_bytes());
}

/// Appends the end of `chan`'s bytes from this side.
pub fn push_eof(out: &mut Vec<u8>, chan: u32) {
    push_header(out, Kind::Eof, chan, 0);
}

/// Appends that `chan`'s socket on this side takes no more bytes.
pub fn push_reset(out: &mut Vec<u8>, chan: u32) {
    push_header(out, Kind::Reset, chan, 0);
}

/// Checks the other end's versions against ours.
pub fn check_versions(link: u32, wire: u32) -> Result<(), String> {
    if link != LINK_VERSION || wire != crate::protocol::wire::VERSION {
        return Err(format!(
            "version mismatch: the other end speaks remote link version {link} and \
             protocol version {wire}, this end {} and {}; install the same anyfork \
             version on both hosts",
            LINK_VERSION,
            crate::protocol::wire::VERSION
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut b = Vec::new();
        push_hello(&mut b);
        push_open(&mut b, 7, 0);
        push_data(&mut b, 7, b"hello");
        push_credit(&mut b, 7, 5);
        push_eof(&mut b, 7);
        push_reset(&mut b, 7);
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((f, n)) = split(&b[at..]).unwrap() {
            got.push(format!("{f:?}"));
            at += n;
        }
        assert_eq!(at, b.len());
        assert_eq!(
            got,
            [
                format!(
                    "Hello {{ link: {LINK_VERSION}, wire: {} }}",
                    crate::protocol::wire::VERSION
                ),
                "Open { chan: 7, parent: 0 }".to_string(),
                "Data { chan: 7, bytes: [104, 101, 108, 108, 111] }".to_string(),
                "Credit { chan: 7, bytes: 5 }".to_string(),
                "Eof { chan: 7 }".to_string(),
                "Reset { chan: 7 }".to_string(),
            ]
        );
    }

    #[test]
    fn partial_frames_wait_for_bytes() {
        let mut b = Vec::new();
        push_data(&mut b, 1, b"abc");
        for cut in 0..b.len() {
            assert_eq!(split(&b[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(
            split(b"Z\0\0\0\0\0\0\0\0"),
            Err(LinkError::UnknownKind(b'Z'))
        );
        let mut b = Vec::new();
        push_header(&mut b, Kind::Data, 1, MAX_DATA + 1);
        assert!(matches!(split(&b), Err(LinkError::BadLength { .. })));
        let mut b = Vec::new();
        push_header(&mut b, Kind::Hello, 0, 16);
        b.extend_from_slice(&[0; 16]);
        assert_eq!(split(&b), Err(LinkError::BadMagic));
    }

    #[test]
    fn big_data_is_split() {
        let mut b = Vec::new();
        push_data(&mut b, 3, &vec![9u8; MAX_DATA as usize * 2 + 1]);
        let mut at = 0;
        let mut total = 0;
        while let Some((Frame::Data { chan: 3, bytes }, n)) = split(&b[at..]).unwrap() {
            total += bytes.len();
            at += n;
        }
        assert_eq!(total, MAX_DATA as usize * 2 + 1);
    }
}
