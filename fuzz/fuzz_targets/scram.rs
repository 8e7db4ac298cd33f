//! The SCRAM-SHA-256 server side on arbitrary client messages: the input is split into a
//! client-first and a client-final message (at the first 0xff byte), tried with and without
//! channel binding offered. `%n` in the client-final stands for the server's (random) nonce, so
//! the proof check is reached; a fuzzed proof is never accepted.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgmux::auth::scram::{Binding, SaltKey, Verifier, server_first};
use pgmux_fuzz::{expand, two};

fn verifier() -> &'static Verifier {
    // Deriving a verifier runs 4096 PBKDF2 rounds: once per process.
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| Verifier::for_user(&SaltKey::random(), "fuzz", "secret"))
}

fuzz_target!(|data: &[u8]| {
    let (first, last) = two(data);
    let cert_hash = [7u8; 32];
    for binding in [Binding::default(), Binding { offered: Some(&cert_hash), chosen: true }] {
        if let Ok((exchange, server_first)) = server_first(verifier(), first, binding) {
            let nonce = server_first.strip_prefix("r=").and_then(|r| r.split(',').next()).expect("r= first");
            let last = expand(last, nonce, "");
            assert!(exchange.server_final(&last).is_err(), "a fuzzed proof was accepted");
        }
    }
});
