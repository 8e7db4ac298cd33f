//! The SCRAM-SHA-256 server side on arbitrary client messages: the input is split into a
//! client-first and a client-final message (at the first 0xff byte), tried with and without
//! channel binding offered.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgmux::auth::scram::{Binding, SaltKey, Verifier, server_first};

fn verifier() -> Verifier {
    // Deriving a verifier runs 4096 PBKDF2 rounds: once per process.
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| Verifier::for_user(&SaltKey::random(), "fuzz", "secret")).clone()
}

fuzz_target!(|data: &[u8]| {
    let (first, last) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let cert_hash = [7u8; 32];
    for binding in [Binding::default(), Binding { offered: Some(&cert_hash), chosen: true }] {
        if let Ok((exchange, server_first)) = server_first(verifier(), first, binding) {
            assert!(server_first.starts_with("r="));
            let _ = exchange.server_final(last);
        }
    }
});
