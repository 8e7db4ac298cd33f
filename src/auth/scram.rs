//! Server side of SCRAM-SHA-256 (RFC 5802 / 7677) as PostgreSQL speaks it, and of
//! SCRAM-SHA-256-PLUS with `tls-server-end-point` channel binding (RFC 5929) over TLS.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngExt;
use sha2::{Digest, Sha256};

pub const MECHANISM: &str = "SCRAM-SHA-256";
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
const CBIND_TYPE: &str = "tls-server-end-point";

/// Channel binding in one exchange: `offered` is the tls-server-end-point data of pgmux's
/// certificate when SCRAM-SHA-256-PLUS was offered (a TLS connection); `chosen` says whether the
/// client picked that mechanism.
#[derive(Debug, Clone, Copy, Default)]
pub struct Binding<'a> {
    pub offered: Option<&'a [u8]>,
    pub chosen: bool,
}

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

/// The iteration count of every verifier pgmux derives, real or decoy (PostgreSQL's default).
pub const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;

/// A per-process random secret from which every user's salt is derived, known or not:
/// `salt = HMAC-SHA-256(key, "salt" ‖ name)[..16]`. Salts are then stable per name (across
/// attempts and reloads) and unpredictable, so a salt never tells whether a user exists.
#[derive(Clone)]
pub struct SaltKey([u8; 32]);

impl std::fmt::Debug for SaltKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaltKey(..)")
    }
}

impl SaltKey {
    pub fn random() -> SaltKey {
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        SaltKey(key)
    }

    fn derive(&self, label: &[u8], name: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(&[0]);
        mac.update(name.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A password no client knows, for checking an unknown user's MD5 response.
    pub fn decoy_password(&self, name: &str) -> String {
        B64.encode(self.derive(b"password", name))
    }

    fn salt(&self, name: &str) -> Vec<u8> {
        self.derive(b"salt", name)[..SALT_LEN].to_vec()
    }
}

/// PBKDF2-HMAC-SHA-256 with one output block: SCRAM's `Hi()`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mac = Hmac::<Sha256>::new_from_slice(password).expect("HMAC takes any key length");
    let mut u = {
        let mut m = mac.clone();
        m.update(salt);
        m.update(&1u32.to_be_bytes());
        m.finalize().into_bytes()
    };
    let mut out: [u8; 32] = u.into();
    for _ in 1..iterations {
        let mut m = mac.clone();
        m.update(&u);
        u = m.finalize().into_bytes();
        out.iter_mut().zip(u.iter()).for_each(|(o, x)| *o ^= x);
    }
    out
}

impl Verifier {
    /// Derives `name`'s verifier with its salt from `key` (SASLprep applied as libpq does).
    pub fn for_user(key: &SaltKey, name: &str, password: &str) -> Verifier {
        let prepared = match stringprep::saslprep(password) {
            Ok(p) => p.into_owned().into_bytes(),
            Err(_) => password.as_bytes().to_vec(),
        };
        let salt = key.salt(name);
        let salted = hi(&prepared, &salt, ITERATIONS);
        let stored_key = Sha256::digest(hmac(&salted, b"Client Key")).to_vec();
        let server_key = hmac(&salted, b"Server Key");
        Verifier { iterations: ITERATIONS, salt, stored_key, server_key }
    }

    /// Parses `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>` (what `pg_authid.rolpassword`
    /// holds for a SCRAM password).
    pub fn parse(s: &str) -> Option<Verifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let verifier = Verifier {
            iterations: iter.parse().ok()?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?,
            server_key: B64.decode(server).ok()?,
        };
        // SHA-256 keys, and a salt and iteration count PostgreSQL would accept.
        let well_formed = verifier.iterations > 0
            && !verifier.salt.is_empty()
            && verifier.stored_key.len() == 32
            && verifier.server_key.len() == 32;
        well_formed.then_some(verifier)
    }

    /// The verifier of an unknown user: salt derived exactly as a real user's, same iteration
    /// count, keys no password matches (derived from `key`, so it is the same on every attempt).
    pub fn decoy(key: &SaltKey, name: &str) -> Verifier {
        Verifier {
            iterations: ITERATIONS,
            salt: key.salt(name),
            stored_key: key.derive(b"stored", name),
            server_key: key.derive(b"server", name),
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
pub struct Exchange<'v> {
    verifier: &'v Verifier,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// The gs2 header and channel binding data the client-final `c=` must carry.
    cbind_input: Vec<u8>,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// What a client's proof reveals: `ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)`, checked
/// against `H(ClientKey) = StoredKey`. It opens any SCRAM login with the same salt and iteration
/// count (the password's only other use), so it is kept like a password: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientKey([u8; 32]);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(..)")
    }
}

/// A successful exchange: the server-final message (`v=…`) and the client's key.
#[derive(Debug)]
pub struct Proven {
    pub server_final: String,
    pub client_key: ClientKey,
}

/// Handles the client-first message (`SASLInitialResponse` data); returns the server-first message.
pub fn server_first<'v>(
    verifier: &'v Verifier,
    client_first: &[u8],
    binding: Binding<'_>,
) -> Result<(Exchange<'v>, String), ScramError> {
    let msg = std::str::from_utf8(client_first).map_err(|_| ScramError::Protocol("not UTF-8"))?;
    let mut parts = msg.splitn(3, ',');
    let (flag, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
        (Some(flag), Some(authzid), Some(bare)) => (flag, authzid, bare),
        _ => return Err(ScramError::Protocol("malformed SCRAM message")),
    };
    if !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(ScramError::Protocol("malformed gs2 header"));
    }
    // What the client must echo (base64) in its final message: the gs2 header, then the binding data.
    let mut cbind_input = format!("{flag},{authzid},").into_bytes();
    match (flag, binding.chosen) {
        ("n", false) => {}
        // The client could bind but believes pgmux cannot: over TLS that is a downgrade.
        ("y", false) if binding.offered.is_some() => {
            return Err(ScramError::Protocol("SCRAM channel binding negotiation error"));
        }
        ("y", false) => {}
        ("n" | "y", true) => return Err(ScramError::Protocol("SCRAM-SHA-256-PLUS requires channel binding")),
        (p, chosen) if p.starts_with("p=") => {
            if !chosen {
                return Err(ScramError::Protocol("channel binding data sent with SCRAM-SHA-256"));
            }
            let data = binding.offered.ok_or(ScramError::Protocol("channel binding was not offered"))?;
            if &p[2..] != CBIND_TYPE {
                return Err(ScramError::Protocol("unsupported SCRAM channel-binding type"));
            }
            cbind_input.extend_from_slice(data);
        }
        _ => return Err(ScramError::Protocol("malformed gs2 header")),
    }
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
        cbind_input,
    };
    Ok((exchange, server_first))
}

impl Exchange<'_> {
    /// Handles the client-final message; on success returns the server-final message (`v=…`) and
    /// the ClientKey the proof carried.
    pub fn server_final(self, client_final: &[u8]) -> Result<Proven, ScramError> {
        let msg = std::str::from_utf8(client_final).map_err(|_| ScramError::Protocol("not UTF-8"))?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(ScramError::Protocol("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind =
            attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(ScramError::Protocol("missing channel binding"))?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Protocol("missing nonce"))?;
        if B64.decode(cbind).ok().as_deref() != Some(self.cbind_input.as_slice()) {
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
        let mut client_key = [0u8; 32];
        client_key.iter_mut().zip(proof.iter().zip(&signature)).for_each(|(k, (a, b))| *k = a ^ b);
        if proof.len() != client_key.len() || !super::ct_eq(&Sha256::digest(client_key), &self.verifier.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_sig = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(Proven { server_final: format!("v={}", B64.encode(server_sig)), client_key: ClientKey(client_key) })
    }
}

/// Why a SCRAM login to a server with a ClientKey failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyClientError {
    #[error("malformed SCRAM message from the server: {0}")]
    Protocol(&'static str),
    /// The server's salt or iteration count are not the verifier's: the key cannot answer it.
    #[error(
        "the server's SCRAM salt or iteration count differ from the configured verifier's (configure the verifier the server stores in pg_authid.rolpassword)"
    )]
    VerifierMismatch,
    #[error("the server's SCRAM signature is invalid")]
    BadServerSignature,
    #[error("the server ended the SCRAM exchange: {0}")]
    Server(String),
}

/// Client side of SCRAM-SHA-256 without a password (SCRAM pass-through, as PgBouncer does it):
/// it proves itself with a ClientKey a client's proof revealed
/// (`ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)`) and checks the server's
/// signature with the verifier's ServerKey. That works only against a server whose salt and
/// iteration count are the verifier's, i.e. whose own verifier it is.
pub struct KeyClient {
    verifier: Verifier,
    client_key: ClientKey,
    nonce: String,
    /// Set once the server-first message was answered.
    auth_message: Option<String>,
}

impl KeyClient {
    pub fn new(verifier: Verifier, client_key: ClientKey) -> KeyClient {
        let mut raw = [0u8; 18];
        rand::rng().fill(&mut raw);
        KeyClient::with_nonce(verifier, client_key, B64.encode(raw))
    }

    fn with_nonce(verifier: Verifier, client_key: ClientKey, nonce: String) -> KeyClient {
        KeyClient { verifier, client_key, nonce, auth_message: None }
    }

    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.nonce)
    }

    /// The client-first message (no channel binding, as towards a server pgmux verifies by
    /// signature only; the user name is in the startup packet, as libpq leaves `n=` empty).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare())
    }

    /// Answers the server-first message with the client-final message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<String, KeyClientError> {
        let msg = std::str::from_utf8(server_first).map_err(|_| KeyClientError::Protocol("not UTF-8"))?;
        let mut attrs = msg.split(',');
        let mut next = |prefix: &'static str| {
            attrs.next().and_then(|a| a.strip_prefix(prefix)).ok_or(KeyClientError::Protocol("malformed server-first"))
        };
        let (nonce, salt, iterations) = (next("r=")?, next("s=")?, next("i=")?);
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(KeyClientError::Protocol("server nonce does not extend the client's"));
        }
        let salt = B64.decode(salt).map_err(|_| KeyClientError::Protocol("malformed salt"))?;
        let iterations: u32 = iterations.parse().map_err(|_| KeyClientError::Protocol("malformed iteration count"))?;
        if salt != self.verifier.salt || iterations != self.verifier.iterations {
            return Err(KeyClientError::VerifierMismatch);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{msg},{without_proof}", self.client_first_bare());
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = self.client_key.0.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        self.auth_message = Some(auth_message);
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final message: the server proves it knows the ServerKey.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), KeyClientError> {
        let auth_message =
            self.auth_message.as_ref().ok_or(KeyClientError::Protocol("server-final before server-first"))?;
        let msg = std::str::from_utf8(server_final).map_err(|_| KeyClientError::Protocol("not UTF-8"))?;
        if let Some(error) = msg.strip_prefix("e=") {
            return Err(KeyClientError::Server(error.chars().take(100).collect()));
        }
        let verifier = msg
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or(KeyClientError::Protocol("malformed server-final"))?;
        let expected = hmac(&self.verifier.server_key, auth_message.as_bytes());
        if super::ct_eq(&verifier, &expected) { Ok(()) } else { Err(KeyClientError::BadServerSignature) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(password_server: &str, password_client: &str) -> Result<(), ScramError> {
        run_bound(password_server, password_client, ChannelBinding::unsupported(), Binding::default())
    }

    fn run_bound(
        password_server: &str,
        password_client: &str,
        client_binding: ChannelBinding,
        binding: Binding<'_>,
    ) -> Result<(), ScramError> {
        let verifier = Verifier::for_user(&SaltKey::random(), "u", password_server);
        let mut client = ScramSha256::new(password_client.as_bytes(), client_binding);
        let (ex, first) = server_first(&verifier, client.message(), binding)?;
        client.update(first.as_bytes()).unwrap();
        let fin = ex.server_final(client.message())?;
        client.finish(fin.server_final.as_bytes()).unwrap();
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
        let decoy = Verifier::decoy(&SaltKey::random(), "x");
        let (ex, first) = server_first(&decoy, client.message(), Binding::default()).unwrap();
        client.update(first.as_bytes()).unwrap();
        assert!(matches!(ex.server_final(client.message()), Err(ScramError::BadProof)));
    }

    #[test]
    fn derived_verifiers_match_postgres_protocol() {
        // Same derivation as PostgreSQL's (via postgres-protocol) once the salt is fixed.
        let key = SaltKey::random();
        for pw in ["s3cret", "pässwörd", "a\u{00A0}b"] {
            let mine = Verifier::for_user(&key, "app", pw);
            let theirs = Verifier::parse(&postgres_protocol::password::scram_sha_256(pw.as_bytes())).unwrap();
            let salted = hi(&stringprep::saslprep(pw).unwrap().into_owned().into_bytes(), &theirs.salt, ITERATIONS);
            assert_eq!(Sha256::digest(hmac(&salted, b"Client Key")).to_vec(), theirs.stored_key);
            assert_eq!(mine.iterations, theirs.iterations);
            assert_eq!(mine.salt.len(), theirs.salt.len());
        }
    }

    #[test]
    fn decoys_look_like_real_verifiers() {
        let key = SaltKey::random();
        let real = Verifier::for_user(&key, "app", "pw");
        // Stable per name, different between names, and the same shape as a real verifier.
        assert_eq!(Verifier::decoy(&key, "ghost"), Verifier::decoy(&key, "ghost"));
        assert_ne!(Verifier::decoy(&key, "ghost").salt, Verifier::decoy(&key, "ghost2").salt);
        assert_eq!(real, Verifier::for_user(&key, "app", "pw"));
        let decoy = Verifier::decoy(&key, "ghost");
        assert_eq!((decoy.iterations, decoy.salt.len()), (real.iterations, real.salt.len()));
        assert_eq!((decoy.stored_key.len(), decoy.server_key.len()), (32, 32));
        // Another process (key) gives other salts.
        assert_ne!(Verifier::decoy(&SaltKey::random(), "ghost").salt, decoy.salt);
    }

    #[test]
    fn malformed_messages_are_protocol_errors() {
        let v = Verifier::for_user(&SaltKey::random(), "u", "x");
        for bad in [&b""[..], b"p=tls-server-end-point,,n=,r=abc", b"n,,n=", b"x,,r=a", b"\xff"] {
            assert!(matches!(server_first(&v, bad, Binding::default()), Err(ScramError::Protocol(_))));
        }
        let (ex, _) = server_first(&v, b"n,,n=,r=abc", Binding::default()).unwrap();
        assert!(matches!(ex.server_final(b"c=biws,r=zzz,p=AAAA"), Err(ScramError::Protocol(_))));
    }

    #[test]
    fn channel_binding_over_tls() {
        let data: &[u8] = b"certificate hash";
        let plus = Binding { offered: Some(data), chosen: true };
        let bound = || ChannelBinding::tls_server_end_point(data.to_vec());
        assert_eq!(run_bound("pw", "pw", bound(), plus), Ok(()));
        assert_eq!(run_bound("pw", "nope", bound(), plus), Err(ScramError::BadProof));
        // Bound to another certificate (a man in the middle): the client-final data differs.
        let other = ChannelBinding::tls_server_end_point(b"another hash".to_vec());
        assert!(matches!(run_bound("pw", "pw", other, plus), Err(ScramError::Protocol(_))));
        // Plain SCRAM over TLS still works; a client that says it could bind ("y") is a downgrade.
        let tls_plain = Binding { offered: Some(data), chosen: false };
        assert_eq!(run_bound("pw", "pw", ChannelBinding::unsupported(), tls_plain), Ok(()));
        let downgraded = run_bound("pw", "pw", ChannelBinding::unrequested(), tls_plain);
        assert_eq!(downgraded, Err(ScramError::Protocol("SCRAM channel binding negotiation error")));
        assert_eq!(run_bound("pw", "pw", ChannelBinding::unrequested(), Binding::default()), Ok(()));
        // Binding data where none was offered, or -PLUS without data.
        let none_offered = Binding { offered: None, chosen: true };
        assert!(matches!(run_bound("pw", "pw", bound(), none_offered), Err(ScramError::Protocol(_))));
        assert!(matches!(run_bound("pw", "pw", bound(), tls_plain), Err(ScramError::Protocol(_))));
        assert!(matches!(run_bound("pw", "pw", ChannelBinding::unsupported(), plus), Err(ScramError::Protocol(_))));
    }

    /// A verifier as PostgreSQL stores it for `password`, and that password's ClientKey.
    fn stored(password: &str) -> (Verifier, ClientKey) {
        let verifier = Verifier::parse(&postgres_protocol::password::scram_sha_256(password.as_bytes())).unwrap();
        let prepared = stringprep::saslprep(password).unwrap().into_owned().into_bytes();
        let salted = hi(&prepared, &verifier.salt, verifier.iterations);
        let key = ClientKey(hmac(&salted, b"Client Key").try_into().unwrap());
        (verifier, key)
    }

    fn server_first_for(verifier: &Verifier, nonce: &str) -> String {
        format!("r={nonce}srv,s={},i={}", B64.encode(&verifier.salt), verifier.iterations)
    }

    #[test]
    fn key_client_sends_the_proof_a_password_client_sends() {
        for password in ["s3cret", "pässwörd"] {
            let (verifier, key) = stored(password);
            let mut theirs = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
            let first = String::from_utf8(theirs.message().to_vec()).unwrap();
            let nonce = first.strip_prefix("n,,n=,r=").unwrap().to_string();
            let mut mine = KeyClient::with_nonce(verifier.clone(), key, nonce.clone());
            assert_eq!(mine.client_first(), first);
            let server_first = server_first_for(&verifier, &nonce);
            theirs.update(server_first.as_bytes()).unwrap();
            let fin = mine.client_final(server_first.as_bytes()).unwrap();
            assert_eq!(fin.as_bytes(), theirs.message(), "same client-final, same proof");
            let auth_message = format!("n=,r={nonce},{server_first},c=biws,r={nonce}srv");
            let server_final = format!("v={}", B64.encode(hmac(&verifier.server_key, auth_message.as_bytes())));
            theirs.finish(server_final.as_bytes()).unwrap();
            assert_eq!(mine.verify_server_final(server_final.as_bytes()), Ok(()));
            let forged = format!("v={}", B64.encode([7u8; 32]));
            assert_eq!(mine.verify_server_final(forged.as_bytes()), Err(KeyClientError::BadServerSignature));
            assert!(matches!(mine.verify_server_final(b"e=invalid-proof"), Err(KeyClientError::Server(_))));
        }
    }

    #[test]
    fn pass_through_logs_in_with_the_key_a_client_proved() {
        let (verifier, key) = stored("pw");
        // A client logs in to pgmux with its password; its proof gives pgmux the key.
        let mut client = ScramSha256::new(b"pw", ChannelBinding::unsupported());
        let (ex, first) = server_first(&verifier, client.message(), Binding::default()).unwrap();
        client.update(first.as_bytes()).unwrap();
        let proven = ex.server_final(client.message()).unwrap();
        assert_eq!(proven.client_key, key);
        // pgmux logs in to a server holding the same verifier with that key alone.
        let mut mine = KeyClient::new(verifier.clone(), proven.client_key);
        let (ex, first) = server_first(&verifier, mine.client_first().as_bytes(), Binding::default()).unwrap();
        let fin = mine.client_final(first.as_bytes()).unwrap();
        let server_final = ex.server_final(fin.as_bytes()).unwrap().server_final;
        assert_eq!(mine.verify_server_final(server_final.as_bytes()), Ok(()));
    }

    #[test]
    fn key_client_refuses_another_verifier_and_bad_messages() {
        let (verifier, key) = stored("pw");
        // The same password stored with another salt (or iteration count): the key cannot answer.
        let (other, _) = stored("pw");
        let mut mine = KeyClient::with_nonce(verifier.clone(), key.clone(), "abc".into());
        assert_eq!(
            mine.client_final(server_first_for(&other, "abc").as_bytes()),
            Err(KeyClientError::VerifierMismatch)
        );
        let more_iterations = Verifier { iterations: 8192, ..verifier.clone() };
        let first = server_first_for(&more_iterations, "abc");
        assert_eq!(mine.client_final(first.as_bytes()), Err(KeyClientError::VerifierMismatch));
        for bad in ["", "r=xyz,s=AAAA,i=4096", "r=abc,s=AAAA,i=4096", "r=abcd,s=!!,i=4096", "r=abcd,s=AAAA,i=x"] {
            assert!(matches!(mine.client_final(bad.as_bytes()), Err(KeyClientError::Protocol(_))), "{bad}");
        }
        let fresh = KeyClient::with_nonce(verifier, key, "abc".into());
        assert!(matches!(fresh.verify_server_final(b"v=AAAA"), Err(KeyClientError::Protocol(_))));
    }
}
