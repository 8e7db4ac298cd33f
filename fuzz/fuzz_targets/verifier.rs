//! The stored-verifier parser (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, from
//! the config or an `auth.query` answer) on arbitrary text: a verifier it accepts is offered to
//! clients with its own salt and iteration count, and a pass-through login with it accepts a
//! server offering them.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgmux::auth::scram::{Binding, KeyClient, KeyClientError, Verifier, server_first};
use pgmux::auth::{UserDirectory, is_scram_verifier};
use pgmux_fuzz::{client_nonce, login};

fn directory() -> &'static UserDirectory {
    static DIR: OnceLock<UserDirectory> = OnceLock::new();
    DIR.get_or_init(|| UserDirectory::new([("configured", login().stored.as_str())]))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = Verifier::parse(&text);
    assert!(parsed.is_none() || is_scram_verifier(&text));
    // An `auth.query` answer is parsed the same way (a config user is not: that path runs PBKDF2
    // on anything else, taking it for a password).
    let found = directory().record_found("found", Some(&text));
    assert_eq!(found.is_some(), parsed.is_some(), "auth.query answer and parser disagree");
    let Some(verifier) = parsed else { return };

    let (iter_salt, _) = text["SCRAM-SHA-256$".len()..].split_once('$').expect("parsed");
    let (iterations, salt) = iter_salt.split_once(':').expect("parsed");
    let iterations: u32 = iterations.parse().expect("parsed");
    let (_, offered) = server_first(&verifier, b"n,,n=,r=fuzz", Binding::default()).expect("a valid client-first");
    assert!(offered.ends_with(&format!(",s={salt},i={iterations}")), "server-first {offered:?}");

    let mut keys = KeyClient::new(verifier, login().client_key.clone());
    let nonce = client_nonce(keys.client_first().as_bytes());
    let from_server = format!("r={nonce}x,s={salt},i={iterations}");
    if let Err(e @ KeyClientError::VerifierMismatch) = keys.client_final(from_server.as_bytes()) {
        panic!("the verifier's own salt and iterations were refused: {e}");
    }
});
