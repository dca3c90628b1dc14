//! RPC frames on a comm socket (pure): an 8-byte header, the id and the
//! payload's length as little-endian u32s, then the payload.
//!
//! Caller to worker: requests, ids 1 to `u32::MAX - 1`. Worker to caller:
//! the reply to a request carries its id; id 0 is an event; id
//! `u32::MAX` is a pool control message (empty payload: retire me).

/// The header's length.
pub(crate) const HEADER: usize = 8;
/// The id of an event (worker to caller).
pub(crate) const EVENT_ID: u32 = 0;
/// The id of a control message (worker to caller): retire.
pub(crate) const CONTROL_ID: u32 = u32::MAX;

/// The header of a frame with `id` and `len` bytes of payload.
pub(crate) fn header(id: u32, len: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&id.to_le_bytes());
    h[4..].copy_from_slice(&len.to_le_bytes());
    h
}

/// The first complete frame in `buf`: its id, its payload's range, and
/// where the next frame starts; `None` while it is incomplete.
pub(crate) fn next(buf: &[u8]) -> Option<(u32, std::ops::Range<usize>, usize)> {
    let h = buf.get(..HEADER)?;
    let id = u32::from_le_bytes(h[..4].try_into().ok()?);
    let len = u32::from_le_bytes(h[4..].try_into().ok()?) as usize;
    let end = HEADER.checked_add(len)?;
    (buf.len() >= end).then_some((id, HEADER..end, end))
}

/// The length of a payload as the header's u32, or `E2BIG`.
pub(crate) fn len32(data: &[u8], what: &str) -> crate::Result<u32> {
    u32::try_from(data.len()).map_err(|_| {
        crate::Error::new(
            crate::Errno::E2BIG,
            format!("{what}: {} bytes exceed the 4 GiB frame limit", data.len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_decodes_only_when_complete() {
        let mut f = header(7, 3).to_vec();
        f.extend_from_slice(b"abc");
        for cut in 0..f.len() {
            assert_eq!(next(&f[..cut]), None, "cut at {cut}");
        }
        assert_eq!(next(&f), Some((7, 8..11, 11)));
        f.extend_from_slice(&header(0, 0));
        assert_eq!(next(&f[11..]), Some((0, 8..8, 8)));
    }
}
