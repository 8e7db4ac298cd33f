//! A client's first bytes decide whether it speaks TLS: an SSLRequest is answered `S` when pgmux
//! has a certificate and TLS is enabled, then TLS is accepted; a first byte 0x16 is a TLS handshake
//! without SSLRequest (PostgreSQL 17 `sslnegotiation=direct`), accepted only with ALPN
//! `postgresql`. GSSENCRequests are declined. Anything else is a plaintext startup for the handshake.
//!
//! A TLS client continues on `net::Stream::Tls` (rustls in the session's own task); a plaintext one
//! on its socket.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::HandshakeEnd;
use crate::error::{ClientError, ErrorCounts};
use crate::net::{Rewind, Stream, TlsConn};
use crate::protocol::ssl;
use crate::protocol::startup::{self, StartupPacket};
use crate::tls::{ALPN_POSTGRESQL, Acceptor, Certified};

/// The first byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE: u8 = 0x16;

/// A client connection once encryption is settled.
#[derive(Debug)]
pub struct Transport {
    pub stream: Stream,
    pub security: Security,
    /// Bytes read from the client and not yet handled (the start of its startup packet).
    pub pending: BytesMut,
}

/// What the handshake needs to know about the connection's encryption.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// tls-server-end-point data of the certificate the client saw; `None` in plaintext.
    pub channel_binding: Option<Arc<[u8]>>,
    /// Plaintext clients are refused (`tls.mode: require`).
    pub tls_required: bool,
}

type Result<T> = std::result::Result<T, HandshakeEnd>;

/// Reads the client's first bytes and sets up TLS if it asks for it (`errors` counts an error sent).
/// A client still silent or mid-TLS-handshake at `deadline` is told so (FATAL 08P01, when it is
/// not mid-TLS) and closed: `HandshakeEnd::Told`.
pub async fn run(
    acceptor: Arc<Acceptor>,
    mut tcp: TcpStream,
    errors: &ErrorCounts,
    deadline: Instant,
    limit: std::time::Duration,
) -> Result<Transport> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        while buf.len() < 8 && buf.first() != Some(&TLS_HANDSHAKE) {
            match tokio::time::timeout_at(deadline, tcp.read_buf(&mut buf)).await {
                Ok(Ok(0)) => return Err(HandshakeEnd::Quiet("closed during startup")),
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(HandshakeEnd::Quiet("read failed")),
                Err(_) => {
                    let err = ClientError::StartupTimeout(limit);
                    let mut out = BytesMut::new();
                    err.write_to(&mut out, errors);
                    let _ = tcp.write_all(&out).await;
                    return Err(HandshakeEnd::Told(err));
                }
            }
        }
        if buf[0] == TLS_HANDSHAKE {
            return in_time(deadline, limit, direct_tls(&acceptor, tcp, buf)).await;
        }
        match startup::encryption_request(&buf) {
            Some(StartupPacket::Ssl) => {
                buf.advance(8);
                if let Some(cert) = acceptor.offered() {
                    // Bytes sent before the handshake would be taken as if they came encrypted.
                    if !buf.is_empty() {
                        let mut out = BytesMut::new();
                        ClientError::Protocol("received unencrypted data after SSL request".into())
                            .write_to(&mut out, errors);
                        let _ = tcp.write_all(&out).await;
                        return Err(HandshakeEnd::Quiet("unencrypted data after SSL request"));
                    }
                    reply(&mut tcp, ssl::ACCEPT).await?;
                    let io = Rewind::new(Default::default(), tcp);
                    return in_time(deadline, limit, accept(&acceptor, cert, io, false)).await;
                }
                reply(&mut tcp, ssl::REFUSE).await?;
            }
            Some(_) => {
                buf.advance(8);
                reply(&mut tcp, ssl::REFUSE).await?;
            }
            None => {
                let security = Security { channel_binding: None, tls_required: acceptor.required() };
                return Ok(Transport { stream: Stream::Tcp(tcp), security, pending: buf });
            }
        }
    }
}

/// A TLS handshake still running at the deadline: nothing can be said outside TLS, so the close
/// is only logged (by the caller, from `Told`).
async fn in_time(
    deadline: Instant,
    limit: std::time::Duration,
    tls: impl Future<Output = Result<Transport>>,
) -> Result<Transport> {
    tokio::time::timeout_at(deadline, tls).await.unwrap_or(Err(HandshakeEnd::Told(ClientError::StartupTimeout(limit))))
}

async fn reply(tcp: &mut TcpStream, answer: u8) -> Result<()> {
    tcp.write_all(&[answer]).await.map_err(|_| HandshakeEnd::Quiet("write failed"))
}

/// A TLS handshake without SSLRequest: the bytes already read are its start.
async fn direct_tls(acceptor: &Acceptor, tcp: TcpStream, buf: BytesMut) -> Result<Transport> {
    let Some(cert) = acceptor.offered() else {
        tracing::info!(peer = ?tcp.peer_addr().ok(), "direct TLS connection refused: TLS is not enabled");
        return Err(HandshakeEnd::Quiet("direct TLS without TLS enabled"));
    };
    accept(acceptor, cert, Rewind::new(buf.freeze(), tcp), true).await
}

async fn accept(acceptor: &Acceptor, cert: &Certified, io: Rewind<TcpStream>, direct: bool) -> Result<Transport> {
    let peer = io.inner().peer_addr().ok();
    let tls = tokio_rustls::TlsAcceptor::from(cert.config.clone()).accept(io).await.map_err(|e| {
        tracing::info!(?peer, error = %e, "TLS handshake with client failed");
        HandshakeEnd::Quiet("TLS handshake failed")
    })?;
    let alpn = tls.get_ref().1.alpn_protocol();
    if direct && alpn != Some(ALPN_POSTGRESQL) {
        // PostgreSQL's rule: without the ALPN a direct TLS connection could be another protocol's.
        tracing::info!(?peer, "direct TLS connection without ALPN `postgresql` refused");
        return Err(HandshakeEnd::Quiet("direct TLS without ALPN"));
    }
    let (io, conn) = tls.into_inner();
    let (prefix, tcp) = io.into_parts();
    if !prefix.is_empty() {
        // The handshake ends before what was read ahead: bytes sent before TLS was up.
        return Err(HandshakeEnd::Quiet("unencrypted data before the TLS handshake ended"));
    }
    let security = Security { channel_binding: Some(cert.end_point.clone()), tls_required: acceptor.required() };
    Ok(Transport { stream: Stream::Tls(Box::new(TlsConn::new(tcp, conn))), security, pending: BytesMut::new() })
}
