//! Cancelling a query on a server connection, and the gate that keeps a cancel from reaching
//! whoever holds that connection next.
//!
//! Why a gate: a CancelRequest travels on a connection of its own, so by the time the server acts
//! on it the connection it names may have gone back to the pool and on to another client, whose
//! query would be the one cancelled. The rule that prevents it:
//!
//! 1. A cancel takes a [`CancelPermit`] on the connection's gate while the client that sent it is
//!    seen holding that connection: the connection's [`CancelTarget`] names its holder, and a
//!    cancel takes the permit first and then reads the holder, while the session clears the holder
//!    before giving the connection back, each with a sequentially consistent fence between its two
//!    steps (so either the cancel sees the holder cleared and sends nothing, or the pool's settle
//!    sees the permit). So every permit that is used was taken before the connection is back in the
//!    pool.
//! 2. The permit is held until the server has closed the cancel connection. PostgreSQL closes it
//!    only after it has signalled the backend (libpq's `PQcancel` waits for the same close), and a
//!    signalled backend that is idle — which a pooled connection is — drops the pending cancel
//!    when it reads its next command (`ProcessInterrupts` ignores a cancel during a command read).
//! 3. [`CancelGate::settle`], which the pool calls before lending an idle connection, waits for
//!    every permit to be released, and says "discard" if any cancel ended without that close (timed
//!    out, write failed midway, task dropped): it may still land later, so the connection is never
//!    lent again.
//!
//! Together: a cancel is either delivered while its client holds the connection (or while the
//! connection idles unlent, where it is dropped), or the connection is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::tls::Connector;

/// How long one cancel may take, from connect to the server's close; also the longest a borrower
/// waits for a cancel in flight on the connection it is about to get.
pub const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// A server connection as a cancel names it, and the client holding it now. Built once per
/// connection (`BackendConn::cancel_target`) and enrolled in the client registry, which finds a
/// cancel's connection by its holder: a loan writes one word here (the connection's own, hot
/// line), where it used to lock the client's slot and count a reference.
#[derive(Debug)]
pub struct CancelTarget {
    pub server: Arc<str>,
    pub pid: i32,
    pub secret: i32,
    /// The connection's gate (shared with it).
    pub gate: CancelGate,
    /// The cancel key (`pack_key`) of the client holding the connection; 0: none.
    holder: AtomicU64,
}

/// A client's cancel key as one word, never 0 (pgmux's keys have pid ≥ 1).
pub fn pack_key(pid: i32, secret: i32) -> u64 {
    (u64::from(pid as u32) << 32) | u64::from(secret as u32)
}

impl CancelTarget {
    pub fn new(server: Arc<str>, pid: i32, secret: i32, gate: CancelGate) -> CancelTarget {
        CancelTarget { server, pid, secret, gate, holder: AtomicU64::new(0) }
    }

    /// The client with this key holds the connection from now on.
    pub fn hold(&self, key: u64) {
        self.holder.store(key, Ordering::Release);
    }

    /// No client holds the connection any more: called before it goes back to the pool (rule 1).
    pub fn let_go(&self) {
        if self.holder.load(Ordering::Relaxed) != 0 {
            self.holder.store(0, Ordering::Relaxed);
            // Pairs with the fence in `aim`: the pool's settle, after this, sees any permit taken
            // by a cancel that did not see the holder cleared.
            fence(Ordering::SeqCst);
        }
    }

    /// The holder's key now (0: none).
    pub fn holder(&self) -> u64 {
        self.holder.load(Ordering::Acquire)
    }

    /// A permit to cancel on this connection if the client with `key` holds it. The permit is
    /// taken before the holder is read (rule 1); one taken in vain goes back as never used.
    pub fn aim(&self, key: u64) -> Option<CancelPermit> {
        if self.holder() != key {
            return None;
        }
        let permit = self.gate.permit()?;
        fence(Ordering::SeqCst);
        if self.holder() == key {
            Some(permit)
        } else {
            permit.settled();
            None
        }
    }
}

/// Cancels in flight against one server connection (shared with the connection's cancel target).
#[derive(Debug, Clone, Default)]
pub struct CancelGate {
    /// Each cancel in flight holds a read lock; settling takes the write lock.
    inflight: Arc<RwLock<()>>,
    /// A cancel ended without knowing whether the server got it.
    doubtful: Arc<AtomicBool>,
}

impl CancelGate {
    /// Registers a cancel about to be sent. `None` only while the connection is being settled for
    /// a new borrower, when it is held by no client and no cancel may target it.
    pub fn permit(&self) -> Option<CancelPermit> {
        let read = self.inflight.clone().try_read_owned().ok()?;
        Some(CancelPermit { _read: read, doubtful: self.doubtful.clone(), settled: false })
    }

    /// Waits (at most `CANCEL_TIMEOUT`) until no cancel is in flight; true if the connection may be
    /// lent, false if it must be closed. Costs one atomic operation when nothing is in flight.
    pub async fn settle(&self) -> bool {
        if let Some(settled) = self.try_settle() {
            return settled;
        }
        let clear = tokio::time::timeout(CANCEL_TIMEOUT, self.inflight.write()).await.is_ok();
        clear && !self.doubtful.load(Ordering::Acquire)
    }

    /// `settle` without waiting: None while a cancel is in flight (then `settle` waits for it).
    pub fn try_settle(&self) -> Option<bool> {
        let clear = self.inflight.try_write().is_ok();
        clear.then(|| !self.doubtful.load(Ordering::Acquire))
    }

    pub fn is_doubtful(&self) -> bool {
        self.doubtful.load(Ordering::Acquire)
    }
}

/// The right to send one cancel. Dropped without `settled()`, it marks the connection doubtful.
#[derive(Debug)]
pub struct CancelPermit {
    _read: OwnedRwLockReadGuard<()>,
    doubtful: Arc<AtomicBool>,
    settled: bool,
}

impl CancelPermit {
    /// The cancel's fate is known: delivered and acted on, or never sent.
    fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for CancelPermit {
    fn drop(&mut self) {
        if !self.settled {
            self.doubtful.store(true, Ordering::Release);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("could not reach the server: {0}")]
    Connect(String),
    #[error("the server did not confirm the cancel: {0}")]
    Unconfirmed(String),
}

/// Sends a CancelRequest for (`pid`, `secret`) to `server` — over TLS when `tls` asks for it,
/// SSLRequest first as libpq does — and waits for the server to close the connection.
pub async fn send(
    server: &Arc<str>,
    pid: i32,
    secret: i32,
    tls: &Connector,
    permit: CancelPermit,
) -> Result<(), CancelError> {
    let connected = tokio::time::timeout(CANCEL_TIMEOUT, async {
        let tcp = TcpStream::connect(crate::net::member_addr(server)).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        super::tls::negotiate(tcp, tls, server).await.map_err(|e| e.to_string())
    })
    .await;
    let mut stream = match connected {
        Ok(Ok(s)) => s,
        // Nothing was sent: the connection is untouched.
        Ok(Err(e)) => {
            permit.settled();
            return Err(CancelError::Connect(e));
        }
        Err(_) => {
            permit.settled();
            return Err(CancelError::Connect("timed out".into()));
        }
    };
    let mut buf = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(pid, secret, &mut buf);
    let confirmed = tokio::time::timeout(CANCEL_TIMEOUT, async {
        stream.write_all(&buf).await?;
        stream.flush().await?;
        // The server says nothing back; its close means the backend has been signalled.
        let mut sink = [0u8; 64];
        loop {
            match stream.read(&mut sink).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match confirmed {
        Ok(Ok(())) => {
            permit.settled();
            Ok(())
        }
        // `permit` drops unsettled: the connection it names is closed rather than lent again.
        Ok(Err(e)) => Err(CancelError::Unconfirmed(e.to_string())),
        Err(_) => Err(CancelError::Unconfirmed("timed out".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settle_waits_for_permits_and_refuses_after_an_unconfirmed_cancel() {
        let gate = CancelGate::default();
        assert!(gate.settle().await);
        let p = gate.permit().expect("permit");
        let g2 = gate.clone();
        let waiter = tokio::spawn(async move { g2.settle().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        p.settled();
        assert!(waiter.await.unwrap());
        // Dropped without confirmation: never lent again.
        drop(gate.permit().expect("permit"));
        assert!(gate.is_doubtful());
        assert!(!gate.settle().await);
    }

    #[tokio::test(start_paused = true)]
    async fn settle_gives_up_after_the_cancel_timeout() {
        let gate = CancelGate::default();
        let _p = gate.permit().expect("permit");
        assert!(!gate.settle().await);
    }

    #[tokio::test]
    async fn a_cancel_waits_for_the_server_to_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server: Arc<str> = listener.local_addr().unwrap().to_string().into();
        let gate = CancelGate::default();
        let permit = gate.permit().unwrap();
        let fake = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 16];
            s.read_exact(&mut got).await.unwrap();
            got
        });
        send(&server, 7, 9, &Connector::disabled(), permit).await.expect("confirmed");
        let got = fake.await.unwrap();
        assert_eq!(got, [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 0, 0, 0, 9]);
        assert!(gate.settle().await);
    }
}
