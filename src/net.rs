//! The byte streams sessions and server connections run on: a TCP socket for plaintext, or the
//! local end of a socket pair whose other end a TLS pump task serves (see `tls::pump`).
//!
//! Plaintext keeps its direct socket path: each method is one `match` over two variants, both of
//! which are tokio's own sockets with the same non-blocking API (`try_write`, `writable`, `ready`,
//! `try_read`), so relaying code is the same for both and costs a predictable branch, not a copy.

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
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready};
use tokio::net::{TcpStream, UnixStream, tcp, unix};

/// A connection's byte stream before it is split.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    /// The local end of a TLS pump.
    Unix(UnixStream),
}

/// The reading half of a [`Stream`].
#[derive(Debug)]
pub enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

/// The writing half of a [`Stream`]. Dropped, a TCP half leaves closing to its reading half: the
/// socket is closed once, without a `shutdown(SHUT_WR)` system call first (tokio's default, one
/// more FIN-sending syscall per connection; nothing in pgmux half-closes a TCP connection).
#[derive(Debug)]
pub struct WriteHalf(Option<WriteSocket>);

#[derive(Debug)]
enum WriteSocket {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

impl Drop for WriteHalf {
    fn drop(&mut self) {
        if let Some(WriteSocket::Tcp(w)) = self.0.take() {
            w.forget();
        }
    }
}

/// Calls the same method on whichever socket a [`WriteHalf`] holds.
macro_rules! either_write {
    ($value:expr, $s:ident => $body:expr) => {
        match $value {
            Some(WriteSocket::Tcp($s)) => $body,
            Some(WriteSocket::Unix($s)) => $body,
            None => unreachable!("a WriteHalf holds its socket until dropped"),
        }
    };
}

/// Calls the same method on whichever socket an enum holds.
macro_rules! either {
    ($value:expr, $s:ident => $body:expr) => {
        match $value {
            Self::Tcp($s) => $body,
            Self::Unix($s) => $body,
        }
    };
}

impl Stream {
    /// Splits into halves that read and write independently.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf(Some(WriteSocket::Tcp(w))))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Unix(r), WriteHalf(Some(WriteSocket::Unix(w))))
            }
        }
    }
}

impl ReadHalf {
    /// Waits until the socket is ready for `interest` (see tokio's `ready`).
    pub async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        either!(self, s => s.ready(interest).await)
    }

    /// Reads what is there now, or fails with `WouldBlock`.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        either!(self, s => s.try_read(buf))
    }

    /// Reads what is there now into `buf`'s spare capacity, or fails with `WouldBlock`.
    pub fn try_read_buf(&self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        either!(self, s => s.try_read_buf(buf))
    }
}

impl WriteHalf {
    /// Writes what the socket takes now, or fails with `WouldBlock`.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        either_write!(&self.0, s => s.try_write(buf))
    }

    /// Waits until the socket may take more bytes.
    pub async fn writable(&self) -> io::Result<()> {
        either_write!(&self.0, s => s.writable().await)
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        either!(self.get_mut(), s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_shutdown(cx))
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        either!(self.get_mut(), s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        either_write!(&mut self.get_mut().0, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either_write!(&mut self.get_mut().0, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either_write!(&mut self.get_mut().0, s => Pin::new(s).poll_shutdown(cx))
    }
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
        let (unix_a, unix_b) = UnixStream::pair().unwrap();
        let pairs = [
            (Stream::Tcp(tcp.unwrap()), Stream::Tcp(accepted.unwrap().0)),
            (Stream::Unix(unix_a), Stream::Unix(unix_b)),
        ];
        for (a, mut b) in pairs {
            let (mut rd, wr) = a.into_split();
            wr.writable().await.unwrap();
            assert_eq!(wr.try_write(b"ping").unwrap(), 4);
            let mut got = [0u8; 4];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
            b.write_all(b"pong").await.unwrap();
            rd.ready(Interest::READABLE).await.unwrap();
            let mut got = Vec::new();
            (&mut rd).take(4).read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"pong");
            assert_eq!(rd.try_read(&mut [0u8; 1]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
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
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b" world").await.unwrap();
        drop(b);
        let mut r = Rewind::new(Bytes::from_static(b"hello"), a);
        let mut text = String::new();
        r.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello world");
    }
}
