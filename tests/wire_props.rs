//! Property tests of the wire encoding: whatever the caller encodes, the
//! decoder gives back, whole or cut at any point.

use anyfork::wire::{self, Frame, Tag};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, 1..64)
}

proptest! {
    #[test]
    fn eval_frames_round_trip(n in name(), args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        wire::push_eval(&mut out, &n, &refs).unwrap();
        let (tag, p, used) = wire::split(&out).unwrap().unwrap();
        prop_assert_eq!(used, out.len());
        prop_assert_eq!(wire::decode(tag, p).unwrap(), Frame::Eval { name: &n, args: refs.clone() });
    }

    #[test]
    fn spawn_frames_round_trip(argv in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20), detached in any::<bool>()) {
        let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        wire::push_spawn(&mut out, &refs, detached).unwrap();
        let (tag, p, used) = wire::split(&out).unwrap().unwrap();
        prop_assert_eq!(used, out.len());
        prop_assert_eq!(tag.fds(), usize::from(!detached));
        prop_assert_eq!(wire::decode(tag, p).unwrap(), Frame::Spawn { argv: refs.clone(), detached });
        // A byte more or less is an error, never a different argv.
        let mut longer = p.to_vec();
        longer.push(0);
        prop_assert!(wire::decode(tag, &longer).is_err());
        if p.len() > 1 {
            prop_assert!(wire::decode(tag, &p[..p.len() - 1]).is_err());
        }
    }

    #[test]
    fn a_stream_of_frames_splits_back_in_order(strs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..30), cut in any::<prop::sample::Index>()) {
        let mut out = Vec::new();
        let mut ends = vec![0];
        for s in &strs {
            wire::push_frame(&mut out, Tag::Str, s);
            ends.push(out.len());
            out.extend_from_slice(&wire::header(Tag::Fd, 0));
            ends.push(out.len());
        }
        // Any prefix splits into exactly the whole frames it holds.
        let cut = cut.index(out.len() + 1);
        let mut rest = &out[..cut];
        let mut used_total = 0;
        while let Some((_, _, used)) = wire::split(rest).unwrap() {
            rest = &rest[used..];
            used_total += used;
        }
        let whole = *ends.iter().filter(|&&e| e <= cut).max().unwrap();
        prop_assert_eq!(used_total, whole);
        let mut rest = &out[..];
        let mut got = Vec::new();
        while let Some((tag, p, used)) = wire::split(rest).unwrap() {
            match wire::decode(tag, p).unwrap() {
                Frame::Str(s) => got.push(s.to_vec()),
                Frame::Fd => {}
                f => prop_assert!(false, "unexpected frame {:?}", f),
            }
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(got, strs);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut rest = &data[..];
        while let Ok(Some((tag, p, used))) = wire::split(rest) {
            let _ = wire::decode(tag, p);
            rest = &rest[used..];
        }
    }
}

// The remote link's framing (src/remote/link.rs): what one end encodes the
// other splits back exactly, and arbitrary bytes are an error or a wait for
// more, never a panic.
mod link_props {
    use anyfork::remote::link::{self, Frame};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn data_of_any_size_comes_back_in_order(chan in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..200_000)) {
            let mut out = Vec::new();
            link::push_open(&mut out, chan, chan ^ 1);
            link::push_data(&mut out, chan, &data);
            link::push_eof(&mut out, chan);
            let mut at = 0;
            let mut got = Vec::new();
            let mut frames = Vec::new();
            while let Some((f, n)) = link::split(&out[at..]).unwrap() {
                at += n;
                match f {
                    Frame::Data { chan: c, bytes } => { prop_assert_eq!(c, chan); got.extend_from_slice(bytes) }
                    other => frames.push(format!("{other:?}")),
                }
            }
            prop_assert_eq!(at, out.len());
            prop_assert_eq!(got, data);
            prop_assert_eq!(frames, vec![format!("Open {{ chan: {chan}, parent: {} }}", chan ^ 1), format!("Eof {{ chan: {chan} }}")]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut at = 0;
            while let Ok(Some((_, n))) = link::split(&bytes[at..]) {
                prop_assert!(n > 0);
                at += n;
            }
        }
    }
}
