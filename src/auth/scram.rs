//! Server side of SCRAM-SHA-256 (RFC 5802 / 7677) as PostgreSQL speaks it, without channel binding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::{Digest, Sha256};

pub const MECHANISM: &str = "SCRAM-SHA-256";

/// StoredKey / ServerKey and salt derived from a password once.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// Derives a verifier with a fresh random salt (SASLprep applied as libpq does).
    pub fn from_password(password: &str) -> Verifier {
        let encoded = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Verifier::parse(&encoded).expect("postgres-protocol produces well-formed verifiers")
    }

    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Option<Verifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            iterations: iter.parse().ok()?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?,
            server_key: B64.decode(server).ok()?,
        })
    }

    /// A verifier no password matches, for unknown users (so they are indistinguishable).
    pub fn decoy() -> Verifier {
        let mut rng = rand::rng();
        Verifier {
            iterations: 4096,
            salt: (0..16).map(|_| rng.random()).collect(),
            stored_key: (0..32).map(|_| rng.random()).collect(),
            server_key: (0..32).map(|_| rng.random()).collect(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    /// Malformed exchange: a protocol violation (08P01).
    Protocol(&'static str),
    /// Well-formed, but the proof is wrong (28P01).
    BadProof,
}

/// The exchange after the server-first message was sent.
pub struct Exchange {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    cbind_header: String,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Handles the client-first message (`SASLInitialResponse` data); returns the server-first message.
pub fn server_first(verifier: Verifier, client_first: &[u8]) -> Result<(Exchange, String), ScramError> {
    let msg = std::str::from_utf8(client_first).map_err(|_| ScramError::Protocol("not UTF-8"))?;
    // gs2 header: "n,," (no binding) or "y,," (client could bind but thinks we can't); "p=" we never offered.
    let (cbind_header, bare) = match msg.as_bytes().first() {
        Some(b'n') | Some(b'y') => {
            let mut parts = msg.splitn(3, ',');
            let flag = parts.next().unwrap_or_default();
            let authzid = parts.next().ok_or(ScramError::Protocol("malformed gs2 header"))?;
            let bare = parts.next().ok_or(ScramError::Protocol("malformed gs2 header"))?;
            if flag.len() != 1 || !authzid.is_empty() && !authzid.starts_with("a=") {
                return Err(ScramError::Protocol("malformed gs2 header"));
            }
            (format!("{flag},{authzid},"), bare)
        }
        Some(b'p') => return Err(ScramError::Protocol("channel binding was not offered")),
        _ => return Err(ScramError::Protocol("malformed SCRAM message")),
    };
    let client_nonce = bare
        .split(',')
        .find_map(|attr| attr.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
        .ok_or(ScramError::Protocol("missing or invalid client nonce"))?;
    let mut raw = [0u8; 18];
    rand::rng().fill(&mut raw);
    let nonce = format!("{client_nonce}{}", B64.encode(raw));
    let server_first = format!("r={nonce},s={},i={}", B64.encode(&verifier.salt), verifier.iterations);
    let exchange = Exchange {
        verifier,
        client_first_bare: bare.to_string(),
        server_first: server_first.clone(),
        nonce,
        cbind_header,
    };
    Ok((exchange, server_first))
}

impl Exchange {
    /// Handles the client-final message; returns the server-final message (`v=…`) on success.
    pub fn server_final(self, client_final: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(client_final).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(ScramError::Protocol("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind =
            attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(ScramError::Protocol("missing channel binding"))?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Protocol("missing nonce"))?;
        if B64.decode(cbind).ok().as_deref() != Some(self.cbind_header.as_bytes()) {
            return Err(ScramError::Protocol("unexpected channel binding data"));
        }
        if nonce != self.nonce {
            return Err(ScramError::Protocol("nonce mismatch"));
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Protocol("malformed proof"))?;
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !super::ct_eq(&Sha256::digest(&client_key), &self.verifier.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_sig = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(password_server: &str, password_client: &str) -> Result<(), ScramError> {
        let verifier = Verifier::from_password(password_server);
        let mut client = ScramSha256::new(password_client.as_bytes(), ChannelBinding::unsupported());
        let (ex, first) = server_first(verifier, client.message())?;
        client.update(first.as_bytes()).unwrap();
        let fin = ex.server_final(client.message())?;
        client.finish(fin.as_bytes()).unwrap();
        Ok(())
    }

    #[test]
    fn real_client_authenticates() {
        assert_eq!(run("s3cret", "s3cret"), Ok(()));
        assert_eq!(run("pässwörd", "pässwörd"), Ok(()));
    }

    #[test]
    fn wrong_password_is_bad_proof() {
        assert_eq!(run("s3cret", "nope"), Err(ScramError::BadProof));
    }

    #[test]
    fn decoy_never_matches() {
        let mut client = ScramSha256::new(b"x", ChannelBinding::unsupported());
        let (ex, first) = server_first(Verifier::decoy(), client.message()).unwrap();
        client.update(first.as_bytes()).unwrap();
        assert_eq!(ex.server_final(client.message()), Err(ScramError::BadProof));
    }

    #[test]
    fn malformed_messages_are_protocol_errors() {
        let v = Verifier::from_password("x");
        for bad in [&b""[..], b"p=tls-server-end-point,,n=,r=abc", b"n,,n=", b"x,,r=a", b"\xff"] {
            assert!(matches!(server_first(v.clone(), bad), Err(ScramError::Protocol(_))));
        }
        let (ex, _) = server_first(v, b"n,,n=,r=abc").unwrap();
        assert!(matches!(ex.server_final(b"c=biws,r=zzz,p=AAAA"), Err(ScramError::Protocol(_))));
    }
}
