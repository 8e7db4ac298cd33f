//! Test certificates (a CA and a leaf it signed), rustls client configs trusting them, and a
//! PostgreSQL cluster with `ssl = on`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pgmux::localpg::{ClusterOptions, LocalCluster, SslFiles};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A CA and a leaf certificate it signed, as PEM files.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Writes a fresh CA and a leaf for `localhost` and 127.0.0.1 into `dir` (files prefixed `tag`).
pub fn certs(dir: &Path, tag: &str) -> Certs {
    certs_for(dir, tag, &["localhost", "127.0.0.1"])
}

pub fn certs_for(dir: &Path, tag: &str, names: &[&str]) -> Certs {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    ca_params.distinguished_name.push(DnType::CommonName, format!("pgmux test CA {tag}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf = CertificateParams::new(names).unwrap().signed_by(&key, &*ca).unwrap();
    let files = Certs {
        ca: dir.join(format!("{tag}ca.pem")),
        cert: dir.join(format!("{tag}cert.pem")),
        key: dir.join(format!("{tag}key.pem")),
    };
    std::fs::write(&files.ca, ca.pem()).unwrap();
    std::fs::write(&files.cert, leaf.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

/// A rustls client trusting only `ca` (ring provider), offering `alpn`.
pub fn client_config(ca: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    config
}

/// A primary with `ssl = on` using these certificates.
pub async fn ssl_cluster(certs: &Certs) -> LocalCluster {
    let ssl = SslFiles { cert: certs.cert.clone(), key: certs.key.clone() };
    let opts = ClusterOptions { replicas: 0, ssl: Some(ssl), ..ClusterOptions::default() };
    tokio::task::spawn_blocking(move || LocalCluster::start(opts)).await.unwrap().expect("ssl cluster")
}
