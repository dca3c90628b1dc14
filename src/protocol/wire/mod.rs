//! The anyfork wire protocol: frames and their payloads, encoded and decoded
//! without any I/O.
//!
//! Every frame is one tag byte, a little-endian `u32` payload length, then
//! the payload. File descriptors never appear in the bytes: they ride as
//! `SCM_RIGHTS` with the `sendmsg` that carries their frame (or an earlier
//! one), at most [`MAX_FDS_PER_SEND`] per `sendmsg`, and the receiver keeps
//! them in a FIFO from which each `Fd`, `Fork` and `Spawn` frame takes
//! exactly one.
//!
//! Caller to server: `Hello` (first frame to an exec'd server), `Str`, `Fd`,
//! `Require`, `Eval`, `Fork` (optionally with a run function: fork and run
//! in one frame), `Spawn` (fork and exec in one frame, which a server may
//! do with `posix_spawn`), `ForkDetached` and `SpawnDetached` (fork and
//! run, or spawn, for a caller that keeps no socket to the new process,
//! so none is passed), `Run`. Server to caller, on the socket of the
//! process that forked: `Pid` (one per `Fork`, in order), `Exit`, and `End`
//! (the last frame before a process that has forked enters its run function,
//! so the caller knows where its reports stop and the user's bytes begin).
//!
//! This file holds the framing (tags, headers, splitting a stream into
//! frames); [`frame`] what each frame says, [`fields`] the varints and
//! byte strings inside payloads.
//!
//! Nothing here trusts a length: every decoder checks bounds, and the fuzz
//! target in `fuzz/` feeds it arbitrary bytes.

mod fields;
mod frame;

pub use frame::*;
use std::fmt;

/// Protocol version carried by the `Hello` frame: 2 added the `Spawn`
/// frame, 3 `ForkDetached` and `SpawnDetached`, so a server from before
/// them refuses the hello with a clear message instead of a frame it does
/// not know.
pub const VERSION: u32 = 3;
/// First bytes of a `Hello` payload.
pub const MAGIC: [u8; 8] = *b"anyfork\0";
/// Bytes in a frame header: tag and length.
pub const HEADER_LEN: usize = 5;
/// Most fds one `sendmsg` may carry on Linux (`SCM_MAX_FD`).
pub const MAX_FDS_PER_MSG: usize = 253;
/// Most fds a caller puts on one `sendmsg` to a server. A server at its
/// open-file limit loses the fds of a message (`MSG_CTRUNC`) without
/// learning how many there were; with one per message it knows that
/// exactly one frame's fd is missing, fails that frame, and every later
/// frame still gets its own fd.
pub(crate) const MAX_FDS_PER_SEND: usize = 1;
/// Longest function or library name accepted (`PATH_MAX`).
pub const MAX_NAME: usize = 4096;

crate::protocol::byte_enum! {
    /// Frame tags.
    pub enum Tag {
        Hello = b'H',
        Str = b'S',
        Fd = b'D',
        Require = b'L',
        Eval = b'E',
        Fork = b'F',
        ForkDetached = b'K',
        Spawn = b'V',
        SpawnDetached = b'W',
        Run = b'R',
        Pid = b'P',
        Exit = b'X',
        End = b'Z',
    }
}

impl Tag {
    /// How many fds from the FIFO a frame of this tag consumes.
    pub fn fds(self) -> usize {
        match self {
            Tag::Fd | Tag::Fork | Tag::Spawn => 1,
            _ => 0,
        }
    }

    /// The payload lengths this tag allows, as an inclusive range.
    fn len_bounds(self) -> (u32, u32) {
        match self {
            Tag::Hello => (12, 12),
            Tag::Str | Tag::Eval => (0, u32::MAX),
            Tag::Spawn | Tag::SpawnDetached => (1, u32::MAX),
            Tag::Fd | Tag::End => (0, 0),
            Tag::Fork => (0, MAX_NAME as u32 + 1),
            Tag::Require => (1, MAX_NAME as u32),
            Tag::Run | Tag::ForkDetached => (2, MAX_NAME as u32 + 1),
            Tag::Pid => (4, 4),
            Tag::Exit => (8, 8),
        }
    }
}

/// Why bytes are not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    UnknownTag(u8),
    BadLength { tag: Tag, len: u32 },
    BadMagic,
    Version(u32),
    Truncated(&'static str),
    BadVarint,
    NulInName,
    BadFlags(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::UnknownTag(b) => write!(f, "unknown frame tag 0x{b:02x}"),
            WireError::BadLength { tag, len } => {
                write!(f, "frame {tag:?} cannot be {len} bytes long")
            }
            WireError::BadMagic => f.write_str("hello frame lacks the anyfork magic"),
            WireError::Version(v) => {
                write!(f, "protocol version {v} is not the supported {VERSION}")
            }
            WireError::Truncated(what) => write!(f, "frame payload ends inside {what}"),
            WireError::BadVarint => f.write_str("malformed length varint"),
            WireError::NulInName => f.write_str("name contains a NUL byte"),
            WireError::BadFlags(b) => write!(f, "unknown run flags 0x{b:02x}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Encodes a frame header.
pub fn header(tag: Tag, len: u32) -> [u8; HEADER_LEN] {
    let l = len.to_le_bytes();
    [tag as u8, l[0], l[1], l[2], l[3]]
}

/// Decodes and checks a frame header.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(Tag, u32), WireError> {
    let tag = Tag::from_byte(h[0]).ok_or(WireError::UnknownTag(h[0]))?;
    let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
    let (lo, hi) = tag.len_bounds();
    if len < lo || len > hi {
        return Err(WireError::BadLength { tag, len });
    }
    Ok((tag, len))
}

/// One frame split off a buffer: its tag, its payload, the bytes it took.
pub type Split<'a> = (Tag, &'a [u8], usize);

/// Splits one whole frame off the front of `buf`: `Ok(None)` when more bytes
/// are needed, else the tag, the payload and the bytes consumed.
pub fn split(buf: &[u8]) -> Result<Option<Split<'_>>, WireError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let (tag, len) = parse_header(h)?;
    let end = HEADER_LEN + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((tag, &buf[HEADER_LEN..end], end)))
}

/// Appends a whole frame with a raw payload.
pub fn push_frame(out: &mut Vec<u8>, tag: Tag, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("caller checked the payload length");
    out.extend_from_slice(&header(tag, len));
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> Frame<'_> {
        let (tag, p, used) = split(buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        decode(tag, p).unwrap()
    }

    #[test]
    fn eval_round_trips_every_byte_value() {
        let all: Vec<u8> = (0..=255).collect();
        let args: Vec<&[u8]> = vec![b"", &all, b"x"];
        let mut out = Vec::new();
        push_eval(&mut out, b"init", &args).unwrap();
        assert_eq!(
            one(&out),
            Frame::Eval {
                name: b"init",
                args
            }
        );
    }

    #[test]
    fn reports_round_trip() {
        let mut out = Vec::new();
        push_exit(&mut out, 1234, 0x0300);
        assert_eq!(
            one(&out),
            Frame::Exit {
                pid: 1234,
                status: 0x300
            }
        );
        out.clear();
        push_pid(&mut out, -11);
        assert_eq!(one(&out), Frame::Pid(-11));
        out.clear();
        push_hello(&mut out);
        assert_eq!(one(&out), Frame::Hello { version: VERSION });
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut out = Vec::new();
        push_frame(&mut out, Tag::Str, b"hello");
        for cut in 0..out.len() {
            assert_eq!(split(&out[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn each_tag_byte_names_its_tag_and_no_other_byte_names_one() {
        let named: Vec<u8> = (0..=255u8)
            .filter(|&b| Tag::from_byte(b).is_some_and(|t| t as u8 == b))
            .collect();
        assert_eq!(named, b"DEFHKLPRSVWXZ");
        assert!((0..=255u8).all(|b| Tag::from_byte(b).is_none_or(|t| t as u8 == b)));
    }

    #[test]
    fn forged_lengths_and_tags_are_refused() {
        assert_eq!(
            parse_header(&[b'?', 0, 0, 0, 0]),
            Err(WireError::UnknownTag(b'?'))
        );
        assert!(matches!(
            parse_header(&header(Tag::Fd, 1)),
            Err(WireError::BadLength { .. })
        ));
        assert!(matches!(
            parse_header(&header(Tag::Run, 1)),
            Err(WireError::BadLength { .. })
        ));
        assert!(parse_header(&header(Tag::Str, u32::MAX)).is_ok());
        // An eval claiming 2^60 arguments in a 4-byte payload.
        let p = [1u8, b'f', 0x80, 0x80];
        assert!(decode(Tag::Eval, &p).is_err());
        let mut huge = vec![1u8, b'f'];
        huge.extend_from_slice(&[0xff; 9]);
        huge.push(0x7f);
        assert_eq!(decode(Tag::Eval, &huge), Err(WireError::BadVarint));
        assert_eq!(decode(Tag::Run, b"\0a\0b"), Err(WireError::NulInName));
        assert_eq!(decode(Tag::Run, b"\x07ab"), Err(WireError::BadFlags(7)));
        assert_eq!(
            decode(Tag::Run, b"\x01ab"),
            Ok(Frame::Run {
                name: b"ab",
                end: true
            })
        );
        let fork = |run, detached| Ok(Frame::Fork { run, detached });
        assert_eq!(decode(Tag::Fork, b""), fork(None, false));
        assert_eq!(decode(Tag::Fork, b"\0ab"), fork(Some(b"ab"), false));
        assert_eq!(decode(Tag::ForkDetached, b"\0ab"), fork(Some(b"ab"), true));
        assert_eq!(decode(Tag::Fork, b"\x01ab"), Err(WireError::BadFlags(1)));
        assert_eq!(
            decode(Tag::ForkDetached, b"\x01ab"),
            Err(WireError::BadFlags(1))
        );
        assert!(parse_header(&header(Tag::ForkDetached, 0)).is_err());
        assert_eq!(Tag::ForkDetached.fds(), 0);
        let mut bad = Vec::new();
        bad.extend_from_slice(b"anyfork\0");
        bad.extend_from_slice(&7u32.to_le_bytes());
        assert_eq!(decode(Tag::Hello, &bad), Err(WireError::Version(7)));
    }
}
