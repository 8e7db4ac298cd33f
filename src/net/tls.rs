//! TLS relayed in the connection's own task: the rustls state and its TCP socket side by side,
//! read and written through the same non-blocking calls as a plain socket.
//!
//! A read takes what TCP has (one `read` while bytes keep coming, as tokio's own socket does: a
//! short read marks the socket drained), decrypts it in rustls and copies the plaintext out. A
//! write encrypts into rustls and hands the records to the kernel at once; what the kernel does
//! not take waits in rustls (`needs_flush`) and goes out on the next write, `writable` or flush.
//! No task, socket pair or buffer of its own: a TLS connection costs a plain one's syscalls.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use rustls::Connection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TLS connection after its handshake.
#[derive(Debug)]
pub struct TlsConn {
    tcp: TcpStream,
    tls: Connection,
    /// Decrypted bytes rustls holds for us (what `process_new_packets` last said, less reads).
    plain: usize,
    /// The peer is done: close_notify, TCP end of stream, or a TLS error already reported.
    closed: bool,
}

impl TlsConn {
    /// Takes over a connection whose handshake is complete (tokio-rustls' `into_inner`).
    pub fn new(tcp: TcpStream, tls: impl Into<Connection>) -> TlsConn {
        let mut tls = tls.into();
        // Bytes that arrived with the end of the handshake are already decrypted.
        let plain = tls.process_new_packets().map_or(0, |s| s.plaintext_bytes_to_read());
        TlsConn { tcp, tls, plain, closed: false }
    }

    /// Waits until decrypted bytes are there or the peer is done.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.plain == 0 && !self.closed {
            let got = self.tls.read_tls(&mut PollRead { tcp: &mut self.tcp, cx: &mut *cx });
            match got {
                Ok(0) => self.closed = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
            match self.tls.process_new_packets() {
                Ok(state) => {
                    self.plain = state.plaintext_bytes_to_read();
                    self.closed |= state.peer_has_closed();
                }
                Err(e) => {
                    // rustls queued an alert saying why: send it if the socket takes it now.
                    self.closed = true;
                    let _ = self.flush_tls();
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
            // What the peer's records asked rustls to answer (a key update) goes out now.
            self.flush_tls()?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_fill(cx))?;
        if self.plain == 0 {
            return Poll::Ready(Ok(())); // end of stream
        }
        let want = self.plain.min(buf.remaining());
        let n = self.tls.reader().read(buf.initialize_unfilled_to(want))?;
        buf.advance(n);
        self.plain -= n;
        Poll::Ready(Ok(()))
    }

    /// Hands queued records to the kernel; Ok(true) when none are left.
    fn flush_tls(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut TryWrite(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Encrypts what rustls takes of `data` (its buffer is empty first) and sends it now.
    fn try_write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.flush_tls()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write(data)?;
        self.flush_tls()?;
        Ok(n)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.flush_tls()? {
            ready!(self.tcp.poll_write_ready(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_flush(cx))?;
        Poll::Ready(self.try_write(data))
    }

    /// Queues close_notify (rustls sends it once however often asked), flushes, then ends TCP.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tls.send_close_notify();
        ready!(self.poll_flush(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    /// True if the peer has said nothing and is still there (checked without waiting).
    fn is_quiet(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_fill(&mut cx).is_pending()
    }
}

impl Drop for TlsConn {
    /// The peer is told the session ends (close_notify), if the socket takes it now.
    fn drop(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush_tls();
    }
}

/// rustls reads TCP through tokio's `poll_read`: a short read marks the socket drained, so the
/// next wait registers without a `read` that would only say "would block".
struct PollRead<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for PollRead<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *self.tcp).poll_read(self.cx, &mut rb) {
            Poll::Ready(Ok(())) => Ok(rb.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// rustls writes TCP without waiting (all its records in one `writev`).
struct TryWrite<'a>(&'a TcpStream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.try_write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WriteZero.into()),
            n => Ok(n),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.0.try_write_vectored(bufs)? {
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WriteZero.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_shutdown(cx)
    }
}

/// A TLS connection split in two: both halves share it behind a lock that is only ever held
/// for one non-blocking call (never across a wait), so it is never contended in practice.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<TlsConn>>);

impl Shared {
    pub fn new(conn: TlsConn) -> Shared {
        Shared(Arc::new(Mutex::new(conn)))
    }

    fn lock(&self) -> MutexGuard<'_, TlsConn> {
        // A panic while holding the lock leaves rustls mid-call: nothing more can be trusted, but
        // the connection is closed by its owner; reading its state is harmless.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.lock().poll_read(cx, buf)
    }

    pub fn is_quiet(&self) -> bool {
        self.lock().is_quiet()
    }

    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        self.lock().try_write(data)
    }

    pub fn poll_write(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.lock().poll_write(cx, data)
    }

    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().poll_flush(cx)
    }

    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().poll_shutdown(cx)
    }

    pub fn needs_flush(&self) -> bool {
        self.lock().tls.wants_write()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::net::{Stream, write_flush};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A TLS connection over loopback: (pgmux's side as a server, the peer as a client).
    pub async fn pair() -> (TlsConn, TlsConn) {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = CertificateDer::from(key.cert.der().to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, tcp).await.unwrap()
        };
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(tcp).await.unwrap()
        };
        let (c, s) = tokio::join!(connect, accept);
        let (s_tcp, s_conn) = s.into_inner();
        let (c_tcp, c_conn) = c.into_inner();
        (TlsConn::new(s_tcp, s_conn), TlsConn::new(c_tcp, c_conn))
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    /// Writes `data` the way a session does: what the socket takes now, then wait on `writable`
    /// while bytes or records are pending. Returns how often records waited for the socket.
    async fn write_like_a_session(wr: &crate::net::WriteHalf, data: &[u8]) -> usize {
        let mut pending_waits = 0;
        let mut rest = data;
        while !rest.is_empty() || wr.needs_flush() {
            if !rest.is_empty() {
                match wr.try_write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write failed: {e}"),
                }
            }
            pending_waits += usize::from(wr.needs_flush());
            if !rest.is_empty() || wr.needs_flush() {
                tokio::time::timeout(std::time::Duration::from_secs(20), wr.writable()).await.unwrap().unwrap();
            }
        }
        pending_waits
    }

    /// Reads `len` bytes in small pieces, pausing now and then (a slow reader fills the socket
    /// buffers, so the writer meets "would block" and pending records).
    async fn read_slowly<R: AsyncRead + Unpin>(rd: &mut R, len: usize) -> Vec<u8> {
        let mut got = Vec::with_capacity(len);
        let mut piece = vec![0u8; 4096];
        let mut reads = 0u32;
        while got.len() < len {
            let n = rd.read(&mut piece).await.unwrap();
            assert!(n > 0, "end of stream after {} of {len} bytes", got.len());
            got.extend_from_slice(&piece[..n]);
            reads += 1;
            if reads.is_multiple_of(64) {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_transfers_both_ways_through_slow_readers() {
        let (ours, peer) = pair().await;
        let (mut rd, wr) = Stream::Tls(Box::new(ours)).into_split();
        let (mut peer_rd, mut peer_wr) = tokio::io::split(peer);
        const LEN: usize = 6 * 1024 * 1024;
        let (out, inbound) = (pattern(LEN, 0x5a), pattern(LEN, 0xa5));
        let expect_in = inbound.clone();
        let expect_out = out.clone();
        let peer_side = tokio::spawn(async move {
            let send = async {
                peer_wr.write_all(&inbound).await.unwrap();
                peer_wr.flush().await.unwrap();
            };
            let (_, got) = tokio::join!(send, read_slowly(&mut peer_rd, LEN));
            got
        });
        let (pending_waits, got_in) = tokio::join!(write_like_a_session(&wr, &out), read_slowly(&mut rd, LEN));
        // The socket filled up: records waited in rustls and went out on `writable`.
        assert!(pending_waits > 0, "the slow reader never pushed back");
        assert!(got_in == expect_in, "the peer's bytes arrive whole and in order");
        let got_out = tokio::time::timeout(std::time::Duration::from_secs(30), peer_side).await.unwrap().unwrap();
        assert!(got_out == expect_out, "our bytes arrive whole and in order");
    }

    #[tokio::test]
    async fn the_peer_reads_a_clean_end_when_both_halves_go() {
        let (ours, mut peer) = pair().await;
        let (rd, mut wr) = Stream::Tls(Box::new(ours)).into_split();
        write_flush(&mut wr, b"bye").await.unwrap();
        drop(wr);
        drop(rd);
        let mut got = Vec::new();
        // close_notify came: a clean end of stream, not rustls' "unexpected EOF".
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
    }

    #[tokio::test]
    async fn quiet_until_the_peer_speaks_or_leaves() {
        let (ours, mut peer) = pair().await;
        let (mut rd, _wr) = Stream::Tls(Box::new(ours)).into_split();
        assert!(rd.is_quiet());
        peer.write_all(b"x").await.unwrap();
        peer.flush().await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while rd.is_quiet() {
            assert!(tokio::time::Instant::now() < deadline, "the peer's byte never showed");
            tokio::task::yield_now().await;
        }
        let mut b = [0u8; 1];
        rd.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"x");
        assert!(rd.is_quiet());
        drop(peer);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while rd.is_quiet() {
            assert!(tokio::time::Instant::now() < deadline, "the peer's close never showed");
            tokio::task::yield_now().await;
        }
        assert_eq!(rd.read(&mut b).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn garbage_instead_of_records_is_an_error() {
        let (ours, peer) = pair().await;
        let (mut rd, _wr) = Stream::Tls(Box::new(ours)).into_split();
        // Bytes that are no TLS record, written under the TLS layer.
        peer.tcp.writable().await.unwrap();
        peer.tcp.try_write(b"\x17\x03\x03\x00\x05hello-this-is-not-a-record").unwrap();
        let mut b = [0u8; 16];
        let err = tokio::time::timeout(std::time::Duration::from_secs(10), rd.read(&mut b)).await.unwrap();
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
