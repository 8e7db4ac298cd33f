//! Asking a server for TLS (SSLRequest) as `server_tls` says; once the handshake is done the
//! connection runs as a `net::Stream::Tls`, relayed in the connection's own task.

use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::message::frontend;

use crate::protocol::ssl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BackendError;
use crate::net::{Stream, TlsConn};
use crate::tls::{Connector, ServerMode};

/// Returns the stream to log in over: TLS or, where allowed, the plain socket.
pub async fn negotiate(mut tcp: TcpStream, connector: &Connector, server: &Arc<str>) -> Result<Stream, BackendError> {
    let Some((tls, name)) = connector.for_server(server) else {
        return Ok(Stream::Tcp(tcp));
    };
    let io_err = |source| BackendError::Io { server: server.clone(), source };
    let tls_err = |detail: String| BackendError::Tls { server: server.clone(), detail };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(io_err)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io_err)?;
    match (answer[0], connector.mode) {
        (ssl::ACCEPT, _) => {}
        (ssl::REFUSE, ServerMode::Prefer) => return Ok(Stream::Tcp(tcp)),
        (ssl::REFUSE, mode) => {
            return Err(tls_err(format!("the server does not accept TLS (server_tls.mode: {})", mode.name())));
        }
        (other, _) => return Err(tls_err(format!("unexpected answer {other:#04x} to SSLRequest"))),
    }
    // Only the server's answer was read, so nothing sent in plaintext can pass for encrypted data.
    let stream = tls.connect(name, tcp).await.map_err(|e| tls_err(format!("TLS handshake failed: {e}")))?;
    let (tcp, conn) = stream.into_inner();
    Ok(Stream::Tls(Box::new(TlsConn::new(tcp, conn))))
}
