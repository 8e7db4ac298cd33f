//! Socket plumbing for the session: non-blocking writes that keep the rest in order, cancel-safe
//! reads, and the idle timer.

use std::io;
use std::time::Duration;

use crate::net::{ReadHalf, WriteHalf};
use bytes::BytesMut;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::state::Drain;
use crate::timer::KeptSleep;

use super::relay::{self, ClientSink};

/// Writes as much of `data` as the socket takes now; the rest goes to `residue`.
pub fn write_now(sock: &WriteHalf, residue: &mut BytesMut, data: &[u8]) -> io::Result<()> {
    if residue.is_empty() {
        match sock.try_write(data) {
            Ok(n) => residue.extend_from_slice(&data[n..]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => residue.extend_from_slice(data),
            Err(e) => return Err(e),
        }
    } else {
        residue.extend_from_slice(data);
    }
    Ok(())
}

/// Whether anything owed to this socket is still unsent: bytes in `residue`, or (TLS) records
/// encrypted but not yet taken by the kernel. Wait on `writable` while it is true.
pub fn unsent(sock: &WriteHalf, residue: &BytesMut) -> bool {
    !residue.is_empty() || sock.needs_flush()
}

/// Writes what the socket takes from `residue`.
pub fn flush_now(sock: &WriteHalf, residue: &mut BytesMut) -> io::Result<()> {
    while !residue.is_empty() {
        match sock.try_write(residue) {
            Ok(n) => relay::consume(residue, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bytes a read into an empty buffer takes through the stack.
const FIRST_READ: usize = 1024;

/// Reads more client bytes into `buf`; Ok(false) on end of stream. Cancel safe.
///
/// An empty buffer without memory (a client between requests: see `give_back`) holds none while
/// it waits: the read goes into the stack, and a request that fits is stored in an allocation of
/// its own size (a small, fast one, freed by `give_back` once its frames are handled), not an
/// 8 kB buffer per transaction.
/// A buffer with memory (a message being assembled, a stream) is read into directly.
///
/// Reads go through `poll_read`, which takes a short read to mean the socket is drained: the next
/// wait really waits, without the `read` that would only say "would block" (one syscall per
/// request less than `ready` + `try_read`).
pub async fn read_more(sock: &mut ReadHalf, buf: &mut BytesMut) -> io::Result<bool> {
    if buf.capacity() != 0 {
        if buf.capacity() - buf.len() < FIRST_READ {
            buf.reserve(8 * 1024);
        }
        return Ok(sock.read_buf(buf).await? > 0);
    }
    std::future::poll_fn(|cx| {
        let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut space = ReadBuf::uninit(&mut first);
        ready!(Pin::new(&mut *sock).poll_read(cx, &mut space))?;
        let n = space.filled().len();
        if n == FIRST_READ {
            // A stream (COPY, a long pipeline): read it in large pieces from here on.
            buf.reserve(8 * 1024);
        }
        buf.extend_from_slice(space.filled());
        Poll::Ready(Ok(n > 0))
    })
    .await
}

/// Frees an empty buffer's memory (an idle client keeps none; the next read allocates again).
pub fn give_back(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() != 0 {
        *buf = BytesMut::new();
    }
}

/// Fires once pgmux drains (shuts down): a session between transactions ends then.
///
/// One waiter, registered on the token at the first wait and kept from one wait to the next (a
/// fresh `cancelled()` per wait registered and unregistered a waiter under the token's lock each
/// time: callgrind, ~260 instructions per transaction), and polled again only when the task's waker
/// changed: a poll of it locks the token's mutex and its `Notify`'s, lines every session on every
/// worker writes. Between those polls the drain flag, set before the token wakes the waiter, says
/// whether it fired. Costs a client ~100 bytes, boxed.
#[derive(Default)]
pub struct DrainSignal {
    waiter: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// The waker the waiter was last polled with (its data pointer, as an address).
    registered: usize,
}

impl DrainSignal {
    /// Completes once pgmux drains (`draining` is the same each call), to poll in a `select!`.
    pub fn fired<'a>(&'a mut self, draining: &'a Drain) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            if draining.is_cancelled() {
                return Poll::Ready(());
            }
            let waker = cx.waker().data() as usize;
            if self.registered != waker || self.waiter.is_none() {
                let waiter = self.waiter.get_or_insert_with(|| Box::pin(draining.cancelled_owned()));
                if waiter.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                self.registered = waker;
            }
            Poll::Pending
        })
    }
}

impl std::fmt::Debug for DrainSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.waiter.is_some() { "DrainSignal(armed)" } else { "DrainSignal" })
    }
}

/// The idle timeout without a timer operation per message: the timer is re-armed only when it
/// fires early (activity moved the deadline) — at most once per timeout period.
///
/// Nor a poll of the timer per wait (a `KeptSleep`: callgrind, 2,000 clients, ~3 cache misses per
/// transaction less).
pub struct IdleTimer {
    sleep: KeptSleep,
    last_activity: tokio::time::Instant,
    timeout: Duration,
}

impl IdleTimer {
    pub fn new(timeout: Duration) -> IdleTimer {
        let now = tokio::time::Instant::now();
        IdleTimer { sleep: KeptSleep::new(now + timeout), last_activity: now, timeout }
    }

    pub fn touch(&mut self) {
        self.touch_at(tokio::time::Instant::now());
    }

    pub fn touch_at(&mut self, now: tokio::time::Instant) {
        self.last_activity = now;
    }

    /// Completes once the timer fires (then ask `expired`), to poll in a `select!`.
    pub fn fired(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.sleep.poll_fired(cx, None))
    }

    /// Called when the timer fired: true if the client really was idle that long.
    pub fn expired(&mut self) -> bool {
        let deadline = self.last_activity + self.timeout;
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        self.sleep.reset(deadline);
        false
    }
}

/// The client socket as a destination for server bytes: written now, the rest kept in order.
pub struct ToClient<'a> {
    pub sock: &'a WriteHalf,
    pub residue: &'a mut BytesMut,
}

impl ClientSink for ToClient<'_> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        write_now(self.sock, self.residue, bytes)
    }
}

/// Reads more server bytes into `rbuf`. Cancel safe.
pub async fn read_server(rd: &mut ReadHalf, rbuf: &mut BytesMut) -> io::Result<usize> {
    rbuf.reserve(16 * 1024);
    rd.read_buf(rbuf).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    /// What the drain waiter adds to a client's memory (README: memory per client).
    #[test]
    fn the_drain_waiter_is_small() {
        let size = std::mem::size_of::<WaitForCancellationFutureOwned>();
        assert!(size <= 112, "{size} bytes");
        assert_eq!(std::mem::size_of::<DrainSignal>(), 16, "unarmed, a pointer and an address");
    }

    #[tokio::test]
    async fn the_drain_signal_fires_once_draining_and_keeps_firing() {
        let token = Drain::default();
        let mut drain = DrainSignal::default();
        let pending = tokio::time::timeout(Duration::from_millis(1), drain.fired(&token)).await;
        assert!(pending.is_err(), "not draining yet");
        token.cancel();
        drain.fired(&token).await;
        drain.fired(&token).await;
    }

    /// A task waiting on the signal (registered once, then only reading the flag) is woken when
    /// draining starts, from another task.
    #[tokio::test]
    async fn a_registered_waiter_is_woken_by_the_drain() {
        let token = Drain::default();
        let waiting = token.clone();
        let (registered, is_registered) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut drain = DrainSignal::default();
            // Polled several times with the same waker before the drain: registered once.
            for _ in 0..3 {
                let pending = tokio::time::timeout(Duration::from_millis(1), drain.fired(&waiting)).await;
                assert!(pending.is_err());
            }
            registered.send(()).unwrap();
            drain.fired(&waiting).await;
        });
        is_registered.await.unwrap();
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("woken").unwrap();
    }

    /// Polled again only when its waker changes or its deadline passed, the idle timer still
    /// fires at its deadline, and after activity at the later one.
    #[tokio::test(start_paused = true)]
    async fn an_idle_timer_registered_once_fires_on_time() {
        let t0 = tokio::time::Instant::now();
        let mut idle = IdleTimer::new(Duration::from_secs(5));
        for _ in 0..3 {
            let early = tokio::time::timeout(Duration::from_secs(1), idle.fired()).await;
            assert!(early.is_err(), "not idle that long yet");
        }
        idle.touch();
        idle.fired().await;
        assert_eq!(tokio::time::Instant::now(), t0 + Duration::from_secs(5));
        assert!(!idle.expired(), "active at 3 s: idle until 8 s");
        idle.fired().await;
        assert_eq!(tokio::time::Instant::now(), t0 + Duration::from_secs(8));
        assert!(idle.expired());
    }

    #[test]
    fn a_handled_buffer_leaves_no_memory() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0dSELECT 1\0"[..]);
        buf.advance(14);
        give_back(&mut buf);
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn a_buffer_with_bytes_left_keeps_them() {
        let mut buf = BytesMut::from(&b"S\0\0\0\x04X\0\0"[..]);
        buf.advance(5);
        give_back(&mut buf);
        assert_eq!(&buf[..], b"X\0\0");
    }
}
