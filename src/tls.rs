//! TLS towards clients (pgmux's certificate, swappable without a restart) and towards servers
//! (libpq's `sslmode` meanings), all with rustls on the ring provider.
//!
//! After the handshake, TLS runs in the connection's own task (`net::Stream::Tls`), so sessions
//! and server connections keep one non-blocking socket API whether encrypted or not.

mod verify;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The ALPN protocol PostgreSQL 17 clients offer; required for direct TLS (no SSLRequest first).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file that cannot be used; `what` names the setting.
    #[error("{what} `{path}`: {detail}")]
    File { what: &'static str, path: String, detail: String },
    #[error("{0}")]
    Config(String),
}

/// Client-facing TLS: when clients may or must use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMode {
    /// SSLRequest is answered `N`, direct TLS refused.
    Disable,
    /// TLS is offered (with a certificate); plaintext is accepted too.
    Allow,
    /// As `Allow` (for a server the two are the same; the difference is the client's preference).
    Prefer,
    /// Plaintext clients are refused (FATAL 28000).
    Require,
}

/// Server-facing TLS, with libpq's `sslmode` meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerMode {
    Disable,
    /// TLS if the server accepts it, without verification; plaintext otherwise.
    Prefer,
    /// TLS or fail; no verification.
    Require,
    /// TLS with the chain checked against the configured CA.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host pgmux connects to.
    VerifyFull,
}

impl ServerMode {
    /// The setting's spelling in the config.
    pub fn name(self) -> &'static str {
        match self {
            ServerMode::Disable => "disable",
            ServerMode::Prefer => "prefer",
            ServerMode::Require => "require",
            ServerMode::VerifyCa => "verify-ca",
            ServerMode::VerifyFull => "verify-full",
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(what: &'static str, path: &Path) -> impl Fn(String) -> TlsError {
    let path = path.display().to_string();
    move |detail| TlsError::File { what, path: path.clone(), detail }
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = file_err(what, path);
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<_> = certs.collect::<Result<_, _>>().map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// pgmux's own certificate, as served to clients.
#[derive(Debug)]
pub struct Certified {
    pub config: Arc<ServerConfig>,
    /// The tls-server-end-point channel binding data of the certificate (RFC 5929).
    pub end_point: Arc<[u8]>,
}

impl Certified {
    /// Loads a certificate chain (leaf first) and its private key; checks that they match.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Certified, TlsError> {
        let certs = load_certs("tls.cert_file", cert_file)?;
        let key_err = file_err("tls.key_file", key_file);
        crate::secret_files::warn_if_exposed("tls.key_file", key_file);
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| key_err(e.to_string()))?;
        let end_point = end_point_hash(&certs[0]).into();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| key_err(format!("does not fit the certificate: {e}")))?;
        // Offered to clients that send ALPN (PostgreSQL 17); a direct-TLS client must.
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Certified { config: Arc::new(config), end_point })
    }
}

/// Client-facing TLS as configured now.
#[derive(Debug)]
pub struct Acceptor {
    pub mode: ClientMode,
    pub cert: Option<Certified>,
}

impl Acceptor {
    pub fn new(mode: ClientMode, files: Option<(&Path, &Path)>) -> Result<Acceptor, TlsError> {
        let cert = files.map(|(cert, key)| Certified::load(cert, key)).transpose()?;
        if mode == ClientMode::Require && cert.is_none() {
            return Err(TlsError::Config("tls.mode require needs cert_file and key_file".into()));
        }
        Ok(Acceptor { mode, cert })
    }

    pub fn disabled() -> Acceptor {
        Acceptor { mode: ClientMode::Disable, cert: None }
    }

    /// The certificate to accept TLS with, if TLS is offered at all.
    pub fn offered(&self) -> Option<&Certified> {
        self.cert.as_ref().filter(|_| self.mode != ClientMode::Disable)
    }

    /// Whether plaintext clients are refused.
    pub fn required(&self) -> bool {
        self.mode == ClientMode::Require
    }
}

/// Server-facing TLS as configured now.
#[derive(Debug)]
pub struct Connector {
    pub mode: ServerMode,
    /// `None` for `Disable`.
    config: Option<Arc<ClientConfig>>,
}

impl Connector {
    pub fn new(mode: ServerMode, ca_file: Option<&Path>) -> Result<Connector, TlsError> {
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match mode {
            ServerMode::Disable => return Ok(Connector::disabled()),
            ServerMode::Prefer => Arc::new(verify::NoVerification::new(provider())),
            // libpq: with a root certificate at hand, `require` checks the chain as `verify-ca` does.
            ServerMode::Require if ca_file.is_none() => Arc::new(verify::NoVerification::new(provider())),
            ServerMode::Require | ServerMode::VerifyCa | ServerMode::VerifyFull => {
                let path = ca_file.ok_or_else(|| TlsError::Config("server_tls.ca_file is required".into()))?;
                let mut roots = RootCertStore::empty();
                for cert in load_certs("server_tls.ca_file", path)? {
                    roots.add(cert).map_err(|e| file_err("server_tls.ca_file", path)(e.to_string()))?;
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                match mode {
                    ServerMode::Require | ServerMode::VerifyCa => Arc::new(verify::ChainOnly::new(webpki)),
                    _ => webpki,
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Connector { mode, config: Some(Arc::new(config)) })
    }

    pub fn disabled() -> Connector {
        Connector { mode: ServerMode::Disable, config: None }
    }

    /// The rustls client configuration (verifier included), unless disabled: `pgmux storm` hands it
    /// to tokio-postgres so its sslmodes mean what pgmux's do.
    pub fn client_config(&self) -> Option<Arc<ClientConfig>> {
        self.config.clone()
    }

    /// The rustls connector and the name to present for `server` (`host:port`), unless disabled.
    pub fn for_server(&self, server: &str) -> Option<(tokio_rustls::TlsConnector, ServerName<'static>)> {
        let config = self.config.clone()?;
        let host = crate::net::member_host(server).unwrap_or_else(|| host_of(server));
        // An address that is no valid DNS name still gets TLS; only verify-full looks at the name.
        let name = ServerName::try_from(host.to_string()).unwrap_or_else(|_| ServerName::try_from("invalid").unwrap());
        Some((tokio_rustls::TlsConnector::from(config), name))
    }
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
fn host_of(server: &str) -> &str {
    if let Some(rest) = server.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => server,
    }
}

/// The reloadable TLS settings, shared by everything that accepts or opens connections. A reload
/// swaps in new settings; connections already encrypted keep the ones they started with.
#[derive(Debug)]
pub struct TlsSettings {
    clients: ArcSwap<Acceptor>,
    servers: ArcSwap<Connector>,
}

impl TlsSettings {
    pub fn new(clients: Acceptor, servers: Connector) -> TlsSettings {
        TlsSettings { clients: ArcSwap::from_pointee(clients), servers: ArcSwap::from_pointee(servers) }
    }

    pub fn disabled() -> TlsSettings {
        TlsSettings::new(Acceptor::disabled(), Connector::disabled())
    }

    pub fn clients(&self) -> Arc<Acceptor> {
        self.clients.load_full()
    }

    pub fn servers(&self) -> Arc<Connector> {
        self.servers.load_full()
    }

    /// Swaps both sides at once.
    pub fn replace(&self, clients: Acceptor, servers: Connector) {
        self.clients.store(Arc::new(clients));
        self.servers.store(Arc::new(servers));
    }
}

/// tls-server-end-point channel binding data (RFC 5929 §4.1): the certificate hashed with the hash
/// of its signature algorithm, SHA-256 for MD5, SHA-1 and anything not recognised.
pub fn end_point_hash(cert: &[u8]) -> Vec<u8> {
    match signature_hash(cert) {
        Some(SigHash::Sha384) => Sha384::digest(cert).to_vec(),
        Some(SigHash::Sha512) => Sha512::digest(cert).to_vec(),
        None => Sha256::digest(cert).to_vec(),
    }
}

enum SigHash {
    Sha384,
    Sha512,
}

/// The hash of a DER certificate's signature algorithm, when it is SHA-384 or SHA-512 (RSA PKCS#1
/// or ECDSA): `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }`.
fn signature_hash(cert: &[u8]) -> Option<SigHash> {
    let (body, _) = der_element(cert, 0x30)?;
    let (_, after_tbs) = der_element(body, 0x30)?;
    let (alg, _) = der_element(after_tbs, 0x30)?;
    let (oid, _) = der_element(alg, 0x06)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    match oid {
        [p @ .., 0x0c] if p == RSA => Some(SigHash::Sha384),
        [p @ .., 0x0d] if p == RSA => Some(SigHash::Sha512),
        [p @ .., 0x03] if p == ECDSA => Some(SigHash::Sha384),
        [p @ .., 0x04] if p == ECDSA => Some(SigHash::Sha512),
        _ => None,
    }
}

/// One DER element with tag `tag` at the start of `data`: (its contents, what follows).
fn der_element(data: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_of_server_addresses() {
        assert_eq!(host_of("127.0.0.1:5432"), "127.0.0.1");
        assert_eq!(host_of("db.internal:6543"), "db.internal");
        assert_eq!(host_of("[::1]:5432"), "::1");
        assert_eq!(host_of("db"), "db");
    }

    #[test]
    fn der_walk_finds_the_signature_algorithm() {
        // SEQUENCE { SEQUENCE {tbs}, SEQUENCE { OID ecdsa-with-SHA384 }, BIT STRING }
        let alg = [0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
        let mut body = vec![0x30, 0x02, 0x05, 0x00];
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut cert = vec![0x30, body.len() as u8];
        cert.extend_from_slice(&body);
        assert!(matches!(signature_hash(&cert), Some(SigHash::Sha384)));
        assert_eq!(end_point_hash(&cert), Sha384::digest(&cert).to_vec());
        cert[17] = 0x02; // ecdsa-with-SHA256
        assert!(signature_hash(&cert).is_none());
        assert_eq!(end_point_hash(&cert).len(), 32);
        assert!(signature_hash(&cert[..5]).is_none());
    }
}

/// Test certificates: a CA and a leaf it signed, as PEM files.
#[cfg(test)]
pub(crate) mod test_certs {
    use std::path::{Path, PathBuf};

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

    pub struct Files {
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    /// Writes `ca.pem`, `cert.pem` (for `names`) and `key.pem` into `dir`.
    pub fn write(dir: &Path, names: &[&str]) -> Files {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        ca_params.distinguished_name.push(DnType::CommonName, "pgmux test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = CertificateParams::new(names).unwrap().signed_by(&key, &*ca).unwrap();
        let files = Files { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.ca, ca.pem()).unwrap();
        std::fs::write(&files.cert, leaf.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}
