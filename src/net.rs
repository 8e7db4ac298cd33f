//! The byte streams sessions and server connections run on: a TCP socket, or TLS over one
//! (`tls`: rustls driven in the connection's own task, no task or socket pair of its own).
//!
//! Both kinds offer the same non-blocking API (`poll_read`, `try_write`, `writable`), so relaying
//! code is the same for both and costs a predictable branch per call, not a copy.

mod tls;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};

/// Where to connect for a server member: a member resolved from a host name is `host@address`
/// (see `cluster::names`), connected to by its address; any other is used as it is.
pub fn member_addr(member: &str) -> &str {
    member.split_once('@').map_or(member, |(_, addr)| addr)
}

/// The host name a member was resolved from (what TLS checks the certificate against), if any.
pub fn member_host(member: &str) -> Option<&str> {
    member.split_once('@').map(|(host, _)| host)
}
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, tcp};

pub use tls::TlsConn;

/// A connection's byte stream before it is split.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    /// TLS after its handshake, relayed in the connection's own task (see `tls`).
    Tls(Box<TlsConn>),
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Tls(tls::Shared),
}

/// The writing half of a [`Stream`]. Dropped, a TCP half leaves closing to its reading half: the
/// socket is closed once, without a `shutdown(SHUT_WR)` system call first (tokio's default, one
/// more FIN-sending syscall per connection; nothing in pgmux half-closes a TCP connection). A
/// TLS connection sends close_notify when both halves are gone.
#[derive(Debug)]
pub struct WriteHalf(Option<WriteSocket>);

#[derive(Debug)]
enum WriteSocket {
    Tcp(tcp::OwnedWriteHalf),
    Tls(tls::Shared),
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        if let Some(WriteSocket::Tcp(w)) = self.0.take() {
            w.forget();
        }
    }
}

impl Stream {
    /// Splits into halves that read and write independently.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf(Some(WriteSocket::Tcp(w))))
            }
            Stream::Tls(conn) => {
                let shared = tls::Shared::new(*conn);
                (ReadHalf::Tls(shared.clone()), WriteHalf(Some(WriteSocket::Tls(shared))))
            }
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl ReadHalf {
    /// True if the peer has said nothing and is still there: no unread bytes, no end of stream
    /// (checked without waiting; a syscall only when the runtime saw the socket readable).
    pub fn is_quiet(&self) -> bool {
        match self {
            ReadHalf::Tcp(s) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                if std::pin::pin!(s.readable()).as_mut().poll(&mut cx).is_pending() {
                    return true;
                }
                matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            ReadHalf::Tls(s) => s.is_quiet(),
        }
    }
}

impl WriteHalf {
    fn socket(&self) -> &WriteSocket {
        self.0.as_ref().expect("a WriteHalf holds its socket until dropped")
    }

    fn socket_mut(&mut self) -> &mut WriteSocket {
        self.0.as_mut().expect("a WriteHalf holds its socket until dropped")
    }

    /// Writes what the socket takes now, or fails with `WouldBlock`.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self.socket() {
            WriteSocket::Tcp(s) => s.try_write(buf),
            WriteSocket::Tls(s) => s.try_write(buf),
        }
    }

    /// Waits until the socket may take more bytes (for TLS: until the records already
    /// encrypted have gone to the kernel). A poll of the socket's readiness, not tokio's
    /// `writable()` future (184 bytes with its waiter node): this future is built by every wait of
    /// every session, whether or not it has bytes to write, and its state sits in the session's.
    pub fn writable(&self) -> impl Future<Output = io::Result<()>> + '_ {
        std::future::poll_fn(move |cx| match self.socket() {
            WriteSocket::Tcp(s) => s.as_ref().poll_write_ready(cx),
            WriteSocket::Tls(s) => s.poll_flush(cx),
        })
    }

    /// Whether bytes already accepted still wait to go to the kernel (only TLS records can:
    /// wait on `writable` for them even when the caller has nothing more to write).
    #[inline]
    pub fn needs_flush(&self) -> bool {
        match self.socket() {
            WriteSocket::Tcp(_) => false,
            WriteSocket::Tls(s) => s.needs_flush(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Tls(s) => s.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut().socket_mut() {
            WriteSocket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteSocket::Tls(s) => s.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().socket_mut() {
            WriteSocket::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteSocket::Tls(s) => s.poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().socket_mut() {
            WriteSocket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteSocket::Tls(s) => s.poll_shutdown(cx),
        }
    }
}

/// Writes all of `data` and flushes it: a TLS record left in rustls would otherwise wait for the
/// next write (for TCP the flush costs nothing).
pub async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    w.write_all(data).await?;
    w.flush().await
}

/// A stream with bytes already read from it put back in front (the first bytes of a client, read
/// to tell plaintext from TLS, are the start of its TLS handshake when it speaks TLS directly).
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Rewind<S> {
        Rewind { prefix, inner }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// What is left of the prefix, and the stream.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn both_kinds_relay_the_same_way() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tcp, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (tls_a, tls_b) = tls::tests::pair().await;
        let pairs = [
            (Stream::Tcp(tcp.unwrap()), Stream::Tcp(accepted.unwrap().0)),
            (Stream::Tls(Box::new(tls_a)), Stream::Tls(Box::new(tls_b))),
        ];
        for (a, mut b) in pairs {
            let (mut rd, wr) = a.into_split();
            wr.writable().await.unwrap();
            assert_eq!(wr.try_write(b"ping").unwrap(), 4);
            let mut got = [0u8; 4];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
            assert!(rd.is_quiet());
            write_flush(&mut b, b"pong").await.unwrap();
            let mut got = Vec::new();
            (&mut rd).take(4).read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"pong");
            assert!(rd.is_quiet());
        }
    }

    #[tokio::test]
    async fn dropping_both_tcp_halves_closes_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tcp, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut peer = accepted.unwrap().0;
        let (rd, wr) = Stream::Tcp(tcp.unwrap()).into_split();
        // The write half alone leaves the connection open (no half-close)...
        drop(wr);
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), peer.read(&mut byte)).await;
        assert!(early.is_err(), "EOF before the read half was dropped");
        // ...until the read half goes too: then the peer reads EOF.
        drop(rd);
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), peer.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn rewind_reads_the_prefix_first() {
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        b.write_all(b" world").await.unwrap();
        drop(b);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), a);
        let mut text = String::new();
        r.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello world");
    }
}
