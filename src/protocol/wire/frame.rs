//! What each frame says: [`Frame`], decoded from a payload, and the
//! encoders that append frames to an outgoing buffer.

use super::fields::{name, push_bytes, push_varint, run_payload, take_bytes, take_list};
use super::{HEADER_LEN, MAGIC, Tag, VERSION, WireError, header, push_frame};

/// A decoded frame; payload slices borrow from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Hello {
        version: u32,
    },
    Str(&'a [u8]),
    Fd,
    Require(&'a [u8]),
    Eval {
        name: &'a [u8],
        args: Vec<&'a [u8]>,
    },
    /// Fork; with `run`, the new process enters that function at once
    /// (one frame per creation when nothing else is sent to it).
    /// `detached` (tag `ForkDetached`, always with `run`): no socket came
    /// with the frame; the caller keeps none to the new process.
    Fork {
        run: Option<&'a [u8]>,
        detached: bool,
    },
    /// Fork and exec at once, as a new process running `anyfork_exec`
    /// would: `argv` follows the strings the template holds. The template
    /// may spawn without copying itself (`posix_spawn`).
    /// `detached` (tag `SpawnDetached`): no socket came with the frame;
    /// the caller keeps none to the program.
    Spawn {
        argv: Vec<&'a [u8]>,
        detached: bool,
    },
    /// Enter the function `name`; with `end`, first send `End` after the
    /// last report (the caller asks when it cannot tell whether reports
    /// are still to come on this socket).
    Run {
        name: &'a [u8],
        end: bool,
    },
    Pid(i32),
    Exit {
        pid: i32,
        status: i32,
    },
    End,
}

/// Decodes the payload of a frame whose header was accepted by [`parse_header`].
pub fn decode(tag: Tag, p: &[u8]) -> Result<Frame<'_>, WireError> {
    let (lo, hi) = tag.len_bounds();
    let len = u32::try_from(p.len()).map_err(|_| WireError::BadLength { tag, len: u32::MAX })?;
    if len < lo || len > hi {
        return Err(WireError::BadLength { tag, len });
    }
    Ok(match tag {
        Tag::Hello => {
            if p[..8] != MAGIC {
                return Err(WireError::BadMagic);
            }
            let version = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
            if version != VERSION {
                return Err(WireError::Version(version));
            }
            Frame::Hello { version }
        }
        Tag::Str => Frame::Str(p),
        Tag::Fd => Frame::Fd,
        Tag::Require => Frame::Require(name(p)?),
        Tag::Eval => {
            let mut r = p;
            let name = name(take_bytes(&mut r, "the function name")?)?;
            let args = take_list(r).map_err(|e| e.unwrap_or(WireError::BadLength { tag, len }))?;
            Frame::Eval { name, args }
        }
        Tag::Fork if p.is_empty() => Frame::Fork {
            run: None,
            detached: false,
        },
        Tag::Fork | Tag::ForkDetached => match run_payload(p)? {
            (name, false) => Frame::Fork {
                run: Some(name),
                detached: tag == Tag::ForkDetached,
            },
            (_, true) => return Err(WireError::BadFlags(1)),
        },
        Tag::Spawn | Tag::SpawnDetached => {
            let argv = take_list(p).map_err(|e| e.unwrap_or(WireError::BadLength { tag, len }))?;
            let detached = tag == Tag::SpawnDetached;
            Frame::Spawn { argv, detached }
        }
        Tag::Run => {
            let (name, end) = run_payload(p)?;
            Frame::Run { name, end }
        }
        Tag::Pid => Frame::Pid(i32::from_le_bytes([p[0], p[1], p[2], p[3]])),
        Tag::Exit => Frame::Exit {
            pid: i32::from_le_bytes([p[0], p[1], p[2], p[3]]),
            status: i32::from_le_bytes([p[4], p[5], p[6], p[7]]),
        },
        Tag::End => Frame::End,
    })
}

/// Appends a `Hello` frame.
pub fn push_hello(out: &mut Vec<u8>) {
    let mut p = [0u8; 12];
    p[..8].copy_from_slice(&MAGIC);
    p[8..].copy_from_slice(&VERSION.to_le_bytes());
    push_frame(out, Tag::Hello, &p);
}

/// Appends an `Eval` frame; `None` when it would exceed the 4 GiB frame limit.
pub fn push_eval(out: &mut Vec<u8>, name: &[u8], args: &[&[u8]]) -> Option<()> {
    let mut p = Vec::new();
    push_bytes(&mut p, name);
    push_varint(&mut p, args.len() as u64);
    for a in args {
        push_bytes(&mut p, a);
    }
    u32::try_from(p.len()).ok()?;
    push_frame(out, Tag::Eval, &p);
    Some(())
}

/// The header and flag byte of a `Run` frame; the name follows.
pub fn run_head(name_len: usize, end: bool) -> [u8; HEADER_LEN + 1] {
    let h = header(Tag::Run, name_len as u32 + 1);
    [h[0], h[1], h[2], h[3], h[4], u8::from(end)]
}

/// The header and flag byte of a fork-and-run `Fork` frame
/// (`ForkDetached` when `detached`: no socket goes with it); the name
/// follows.
pub fn fork_run_head(name_len: usize, detached: bool) -> [u8; HEADER_LEN + 1] {
    let tag = if detached {
        Tag::ForkDetached
    } else {
        Tag::Fork
    };
    let h = header(tag, name_len as u32 + 1);
    [h[0], h[1], h[2], h[3], h[4], 0]
}

/// Appends a `Spawn` frame (`SpawnDetached` when `detached`: no socket
/// goes with it); `None` when it would exceed the 4 GiB frame limit.
pub fn push_spawn(out: &mut Vec<u8>, argv: &[&[u8]], detached: bool) -> Option<()> {
    let mut p = Vec::new();
    push_varint(&mut p, argv.len() as u64);
    for a in argv {
        push_bytes(&mut p, a);
    }
    u32::try_from(p.len()).ok()?;
    let tag = if detached {
        Tag::SpawnDetached
    } else {
        Tag::Spawn
    };
    push_frame(out, tag, &p);
    Some(())
}

/// Appends a `Pid` report.
pub fn push_pid(out: &mut Vec<u8>, pid: i32) {
    push_frame(out, Tag::Pid, &pid.to_le_bytes());
}

/// Appends an `Exit` report.
pub fn push_exit(out: &mut Vec<u8>, pid: i32, status: i32) {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&pid.to_le_bytes());
    p[4..].copy_from_slice(&status.to_le_bytes());
    push_frame(out, Tag::Exit, &p);
}
