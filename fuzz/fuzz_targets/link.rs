//! Feeds arbitrary bytes to the remote link's frame splitter, as a relay
//! or `anyfork-serve --stdio` would read them, and checks that every frame
//! it accepts re-encodes to the bytes it was split from.
#![no_main]

use anyfork::remote::link::{self, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((frame, used))) = link::split(rest) {
        let mut again = Vec::new();
        match frame {
            Frame::Open { chan, parent } => link::push_open(&mut again, chan, parent),
            Frame::Data { chan, bytes } => link::push_data(&mut again, chan, bytes),
            Frame::Credit { chan, bytes } => link::push_credit(&mut again, chan, bytes),
            Frame::Eof { chan } => link::push_eof(&mut again, chan),
            // A hello's channel field is ignored: nothing to compare.
            Frame::Hello { .. } => again.extend_from_slice(&rest[..used]),
        }
        // An empty data frame re-encodes to nothing (push_data writes no
        // frame for no bytes); every other frame to the same bytes.
        if !again.is_empty() {
            assert_eq!(&again[..], &rest[..used]);
        }
        rest = &rest[used..];
    }
});
