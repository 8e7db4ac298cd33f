//! One task per TLS connection that moves bytes between the encrypted stream and a local socket
//! pair, whose other end the session (or server connection) reads and writes like any socket.
//!
//! When one direction ends (EOF or error), the other gets `GRACE` to finish (a last reply, the
//! peer's close_notify), then everything is dropped: a pump never outlives its connection by more.
//! Ending the encrypted side's writes sends TLS close_notify.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::Instrument;

/// How long the other direction may go on once one has ended.
pub const GRACE: Duration = Duration::from_millis(1500);

/// Bytes moved per read: a TLS record's worth and more.
const CHUNK: usize = 32 * 1024;

/// Starts a pump for `tls`; returns the local end to relay on. `side` names the peer in the
/// task's span (`client` or `server`).
pub fn spawn<S>(tls: S, side: &'static str) -> io::Result<UnixStream>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (local, remote) = UnixStream::pair()?;
    let span = tracing::debug_span!("tls_pump", side);
    tokio::spawn(run(tls, remote).instrument(span));
    Ok(local)
}

async fn run<S>(tls: S, local: UnixStream)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (tls_rd, tls_wr) = tokio::io::split(tls);
    let (local_rd, local_wr) = local.into_split();
    let inbound = copy(tls_rd, local_wr);
    let outbound = copy(local_rd, tls_wr);
    tokio::pin!(inbound, outbound);
    let (first, rest) = tokio::select! {
        r = &mut inbound => (("inbound", r), tokio::time::timeout(GRACE, outbound).await),
        r = &mut outbound => (("outbound", r), tokio::time::timeout(GRACE, inbound).await),
    };
    tracing::trace!(ended = first.0, result = ?first.1, other = ?rest, "tls pump done");
}

/// Copies until `from` ends, flushing after every chunk (a TLS writer holds records until then),
/// then shuts `to` down (for TLS: close_notify).
async fn copy<R, W>(mut from: R, mut to: W) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = to.shutdown().await;
                return Err(e);
            }
        };
        if n == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_and_ends_when_one_side_closes() {
        let (outer, far) = UnixStream::pair().unwrap();
        let mut near = spawn(outer, "test").unwrap();
        let mut far = far;
        near.write_all(b"to the peer").await.unwrap();
        let mut got = [0u8; 11];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"to the peer");
        far.write_all(b"back").await.unwrap();
        let mut got = [0u8; 4];
        near.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");
        // The local end goes away: the peer sees EOF, and the pump lets go of its end within the grace.
        drop(near);
        let mut rest = Vec::new();
        tokio::time::timeout(GRACE * 2, far.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_peer_that_never_closes_is_dropped_after_the_grace() {
        let (outer, mut far) = UnixStream::pair().unwrap();
        let near = spawn(outer, "test").unwrap();
        drop(near);
        // `far` keeps its end open: the pump still lets go of it once the grace has passed.
        tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
        assert!(far.write_all(b"anyone there?").await.is_err());
    }
}
