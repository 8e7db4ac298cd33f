//! The startup packet parser (length prefix, protocol version or request code, parameters, and
//! the `options` parameter) on arbitrary bytes.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use pgmux::protocol::startup::{encryption_request, packet_len, parse, parse_options};

fuzz_target!(|data: &[u8]| {
    let _ = encryption_request(data);
    if let Ok(Some(len)) = packet_len(data)
        && len <= data.len()
    {
        let _ = parse(&data[..len]);
    }
    let _ = parse(data);
    let _ = parse_options(&String::from_utf8_lossy(data));
});
