//! Feeds arbitrary bytes to the frame decoder, as a server or a caller
//! would receive them, and checks that whatever decodes re-encodes to the
//! same bytes.
#![no_main]

use anyfork::wire::{self, Frame, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((tag, payload, used))) = wire::split(rest) {
        if let Ok(frame) = wire::decode(tag, payload) {
            let mut again = Vec::new();
            match frame {
                Frame::Eval { name, args } => {
                    wire::push_eval(&mut again, name, &args).unwrap();
                    // Varints have more than one encoding; decoding the
                    // canonical one must give the same frame.
                    let (t, p, _) = wire::split(&again).unwrap().unwrap();
                    assert_eq!(wire::decode(t, p).unwrap(), Frame::Eval { name, args });
                }
                Frame::Run { name, end } => {
                    again.extend_from_slice(&wire::run_head(name.len(), end));
                    again.extend_from_slice(name);
                    assert_eq!(&again[..], &rest[..used]);
                }
                Frame::Str(s) => {
                    wire::push_frame(&mut again, Tag::Str, s);
                    assert_eq!(&again[..], &rest[..used]);
                }
                _ => {}
            }
        }
        rest = &rest[used..];
    }
});
