//! The frame splitter on arbitrary bytes: every frame it returns lies within the input and its
//! declared length; a bad header is an error, never a panic or a huge allocation.
#![no_main]
#![forbid(unsafe_code)]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::protocol::frame::{frontend_len, peek_header, split_frame};

/// Small enough that "too long" is reachable, large enough for real messages.
const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data, MAX);
    let mut buf = BytesMut::from(data);
    let mut taken = 0;
    while let Ok(Some(frame)) = split_frame(&mut buf, MAX) {
        let len = frame.bytes.len();
        assert!((5..=MAX + 1).contains(&len), "frame of {len} bytes");
        let _ = frontend_len(frame.tag, len, MAX);
        taken += len;
        assert_eq!(taken + buf.len(), data.len());
    }
});
