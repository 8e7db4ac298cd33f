//! What deadpool asks of one pool's server connections: how to open one (a server login with the
//! pool's `LoginParams`) and whether an idle one may be lent again (cheap checks only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use deadpool::managed::{Manager, Metrics, RecycleError, RecycleResult};
use tokio::sync::Semaphore;

use super::PoolStats;
use crate::backend::{BackendConn, BackendError, LoginParams};

/// Connection attempts one pool makes at a time.
const CONNECTS_AT_ONCE: usize = 4;

/// Opens and vets the server connections of one pool (deadpool's `Manager`).
#[derive(Debug)]
pub struct ServerLogin {
    server: Arc<str>,
    /// Read at each connect (a reload applies to connections opened from then on).
    login: Mutex<LoginParams>,
    /// The generation a connection must have been opened in to be reused; `Pool::retire` moves it on.
    pub valid_since: AtomicU64,
    /// Every open connection's socket (handles that die with their connection), to cut them all
    /// when the server must no longer be used.
    pub sockets: Mutex<Vec<(Weak<socket2::Socket>, bool)>>,
    /// Bounds connection attempts in flight, so a pool refilling after a failover does not hit
    /// its server with `size` logins at once.
    connecting: Semaphore,
    stats: Arc<PoolStats>,
}

impl ServerLogin {
    pub fn new(server: Arc<str>, login: LoginParams, stats: Arc<PoolStats>) -> ServerLogin {
        ServerLogin {
            server,
            login: Mutex::new(login),
            valid_since: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
            connecting: Semaphore::new(CONNECTS_AT_ONCE),
            stats,
        }
    }

    pub fn set_login(&self, login: LoginParams) {
        *self.login.lock().unwrap_or_else(|e| e.into_inner()) = login;
    }

    fn login(&self) -> LoginParams {
        self.login.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn still_valid(&self, conn: &BackendConn) -> bool {
        conn.generation == self.valid_since.load(Ordering::Acquire)
    }
}

impl Manager for ServerLogin {
    /// Boxed, so lending and returning a connection moves a pointer, not the whole struct
    /// (callgrind: ~1,000 instructions per transaction less).
    type Type = Box<BackendConn>;
    type Error = BackendError;

    /// A server login. The connection's `created` is when the attempt began (waiting for a turn
    /// included), so a borrow that opened it knows how long it waited.
    async fn create(&self) -> Result<Box<BackendConn>, BackendError> {
        let started = Instant::now();
        let generation = self.valid_since.load(Ordering::Acquire);
        let mut conn = {
            // Never closed: the error arm cannot happen.
            let _turn =
                self.connecting.acquire().await.map_err(|_| BackendError::Timeout { server: self.server.clone() })?;
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
            // Boxed: inline, a server login's future (TLS, SCRAM) would size every session's task,
            // idle or not, as borrowers embed this one.
            let login = self.login();
            Box::pin(BackendConn::connect(self.server.clone(), &login)).await.map(Box::new).inspect_err(|_| {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            })?
        };
        conn.generation = generation;
        conn.created = started;
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut sockets) = self.sockets.lock() {
            sockets.retain(|(s, _)| s.strong_count() > 0);
            sockets.push((Arc::downgrade(&conn.cutter), conn.tls));
        }
        Ok(conn)
    }

    /// An idle connection may be lent again if it was opened since the pool was last retired, the
    /// server has said nothing on it while idle (not closed, no FATAL), and no cancel its last
    /// borrower sent can still reach it (see `backend::cancel`).
    ///
    /// Checked before the future is made, so the future deadpool moves around is small: waiting
    /// for a cancel in flight (rare) is boxed (an inline `settle` made it ~130 instructions per
    /// borrow dearer, in copies alone).
    fn recycle(
        &self,
        conn: &mut Box<BackendConn>,
        _: &Metrics,
    ) -> impl Future<Output = RecycleResult<BackendError>> + Send {
        let verdict =
            if self.still_valid(conn) && conn.looks_idle() { conn.cancels.settled_now() } else { Some(false) };
        let (cancels, stats) = (&conn.cancels, &self.stats);
        async move {
            let fit = match verdict {
                Some(fit) => fit,
                None => Box::pin(cancels.settle()).await,
            };
            if fit {
                return Ok(());
            }
            stats.discarded.fetch_add(1, Ordering::Relaxed);
            Err(RecycleError::message("not reusable"))
        }
    }
}
