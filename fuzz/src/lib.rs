//! What the SCRAM fuzz targets share: a user whose ClientKey a real login revealed, and the
//! placeholders that let the fuzzer write messages carrying a random nonce or the user's salt.
#![forbid(unsafe_code)]

use std::sync::OnceLock;

use pgmux::auth::scram::{Binding, ClientKey, KeyClient, Verifier, server_first};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

pub const PASSWORD: &[u8] = b"secret";

/// A user configured by its stored verifier, and the key its first client revealed.
pub struct Login {
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub stored: String,
    pub verifier: Verifier,
    /// The salt as the verifier spells it (base64).
    pub salt: String,
    pub client_key: ClientKey,
}

/// Derived once per process (4096 PBKDF2 rounds): a libpq-style client logs in with the password
/// against pgmux's server side, which reveals the key; then the key logs in (SCRAM pass-through)
/// against pgmux's server side, so the fuzzed paths start from a working exchange.
pub fn login() -> &'static Login {
    static LOGIN: OnceLock<Login> = OnceLock::new();
    LOGIN.get_or_init(|| {
        let stored = postgres_protocol::password::scram_sha_256(PASSWORD);
        let verifier = Verifier::parse(&stored).expect("a verifier PostgreSQL's format");
        let salt = stored.split(['$', ':']).nth(2).expect("a salt").to_string();

        let mut client = ScramSha256::new(PASSWORD, ChannelBinding::unsupported());
        let (exchange, first) = server_first(&verifier, client.message(), Binding::default()).expect("first");
        client.update(first.as_bytes()).expect("server-first accepted");
        let proven = exchange.server_final(client.message()).expect("the password's proof");
        client.finish(proven.server_final.as_bytes()).expect("server signature");
        let client_key = proven.client_key;

        let mut keys = KeyClient::new(verifier.clone(), client_key.clone());
        let (exchange, first) =
            server_first(&verifier, keys.client_first().as_bytes(), Binding::default()).expect("first");
        let last = keys.client_final(first.as_bytes()).expect("server-first accepted");
        let proven = exchange.server_final(last.as_bytes()).expect("the key's proof");
        keys.verify_server_final(proven.server_final.as_bytes()).expect("server signature");

        Login { stored, verifier, salt, client_key }
    })
}

/// The nonce of a client-first message (`n,,n=,r=<nonce>`).
pub fn client_nonce(client_first: &[u8]) -> String {
    let text = String::from_utf8_lossy(client_first);
    text.rsplit_once("r=").map_or_else(String::new, |(_, n)| n.to_string())
}

/// `data` with every `%n` replaced by `nonce` and every `%s` by `salt`: a server's reply must
/// extend the client's random nonce, which the fuzzer cannot guess.
pub fn expand(data: &[u8], nonce: &str, salt: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + nonce.len());
    let mut i = 0;
    while i < data.len() {
        match (data[i], data.get(i + 1)) {
            (b'%', Some(b'n')) => out.extend_from_slice(nonce.as_bytes()),
            (b'%', Some(b's')) => out.extend_from_slice(salt.as_bytes()),
            (b, _) => {
                out.push(b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    out
}

/// The input split at its first 0xff byte: two messages.
pub fn two(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    }
}
