//! The fields inside payloads: LEB128 varints, varint-prefixed byte
//! strings and lists of them, names, and the run flag byte. Every reader
//! checks its bounds against the bytes it was given.

use super::{MAX_NAME, WireError};

/// A run payload: a flag byte (bit 0: send `End` first), then the name.
pub(super) fn run_payload(p: &[u8]) -> Result<(&[u8], bool), WireError> {
    let (&flags, rest) = p
        .split_first()
        .ok_or(WireError::Truncated("a run payload"))?;
    let end = match flags {
        0 => false,
        1 => true,
        _ => return Err(WireError::BadFlags(flags)),
    };
    Ok((name(rest)?, end))
}

pub(super) fn name(p: &[u8]) -> Result<&[u8], WireError> {
    if p.contains(&0) {
        return Err(WireError::NulInName);
    }
    if p.is_empty() || p.len() > MAX_NAME {
        return Err(WireError::Truncated("a name"));
    }
    Ok(p)
}

pub(super) fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    push_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A varint count, then that many varint-prefixed strings, filling `r`
/// exactly; `Err(None)` when bytes are left over.
pub(super) fn take_list(mut r: &[u8]) -> Result<Vec<&[u8]>, Option<WireError>> {
    let count = take_varint(&mut r)?;
    // Each string needs at least one byte, so a forged count cannot make
    // us reserve more than the payload could hold.
    if count > r.len() as u64 {
        return Err(Some(WireError::Truncated("the argument count")));
    }
    let mut list = Vec::with_capacity(count as usize);
    for _ in 0..count {
        list.push(take_bytes(&mut r, "an argument")?);
    }
    if !r.is_empty() {
        return Err(None);
    }
    Ok(list)
}

fn take_varint(r: &mut &[u8]) -> Result<u64, WireError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = r.split_first().ok_or(WireError::Truncated("a varint"))?;
        *r = rest;
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(WireError::BadVarint);
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WireError::BadVarint)
}

pub(super) fn take_bytes<'a>(r: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], WireError> {
    let n = take_varint(r)?;
    if n > r.len() as u64 {
        return Err(WireError::Truncated(what));
    }
    let (b, rest) = r.split_at(n as usize);
    *r = rest;
    Ok(b)
}
