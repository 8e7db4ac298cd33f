//! The client side of SCRAM-SHA-256 pgmux logs in to servers with, on arbitrary server messages
//! (server-first, then server-final: the input split at its first 0xff byte; `%n` stands for the
//! client's nonce, `%s` for the user's salt): the pass-through client proving itself with a
//! ClientKey (pgmux's own), and the password client (postgres-protocol's, as the backend uses it).
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use pgmux::auth::scram::{KeyClient, KeyClientError};
use pgmux_fuzz::{PASSWORD, client_nonce, expand, login, two};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

/// Whether every `i=` in `msg` has at most two digits: the password client runs PBKDF2 with the
/// server's iteration count (up to 100,000), which would only slow the fuzzer down.
fn cheap_iterations(msg: &[u8]) -> bool {
    msg.windows(2)
        .enumerate()
        .filter(|(_, w)| w == b"i=")
        .all(|(at, _)| msg[at + 2..].iter().take_while(|b| b.is_ascii_digit()).count() <= 2)
}

fuzz_target!(|data: &[u8]| {
    let login = login();
    let (first, last) = two(data);

    let mut keys = KeyClient::new(login.verifier.clone(), login.client_key.clone());
    let nonce = client_nonce(keys.client_first().as_bytes());
    let server_first = expand(first, &nonce, &login.salt);
    match keys.client_final(&server_first) {
        Ok(reply) => {
            assert!(reply.starts_with("c=biws,r=") && reply.contains(",p="), "client-final {reply:?}");
            // Forging the server's signature would take the ServerKey.
            let result = keys.verify_server_final(&expand(last, &nonce, &login.salt));
            assert_ne!(result, Ok(()), "a fuzzed server-final was accepted");
        }
        Err(KeyClientError::Protocol(_) | KeyClientError::VerifierMismatch) => {
            assert!(keys.verify_server_final(last).is_err(), "server-final accepted before server-first");
        }
        Err(e) => panic!("client-final failed with {e:?}"),
    }

    let mut password = ScramSha256::new(PASSWORD, ChannelBinding::unsupported());
    let nonce = client_nonce(password.message());
    let server_first = expand(first, &nonce, &login.salt);
    if cheap_iterations(&server_first) && password.update(&server_first).is_ok() {
        let _ = password.finish(&expand(last, &nonce, &login.salt));
    }
});
