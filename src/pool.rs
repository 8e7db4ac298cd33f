//! Backend connection pools, one per (server, database, user): opened lazily up to `size`, borrowed
//! with a deadline, returned or discarded through a guard.
//!
//! Bookkeeping is deadpool's (`managed`, with [`login::ServerLogin`] as its manager): a semaphore
//! with `size` permits is the right to hold a connection; a borrower with a permit takes an idle
//! connection that passes the recycle check or opens a new one, so open connections never exceed
//! `size`. Idle timeout and retirement are pgmux's (`retain`), as deadpool has neither.

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{self, Object, QueueMode, Timeouts};
use prometheus::Histogram;

use crate::backend::{BackendConn, BackendError, LoginParams};
use crate::metrics;

mod login;

use login::ServerLogin;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub server: Arc<str>,
    pub database: String,
    pub user: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("timed out waiting for a connection")]
    Timeout,
    #[error(transparent)]
    Connect(#[from] BackendError),
}

/// Counters a pool keeps about itself (read by the metrics collector at scrape time).
#[derive(Debug)]
pub struct PoolStats {
    /// Connections opened (logged in and ready).
    pub opened: AtomicU64,
    /// Connection attempts, and those that failed.
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub discarded: AtomicU64,
    pub borrows: AtomicU64,
    pub timeouts: AtomicU64,
    /// Client requests (Query, Execute, FunctionCall) relayed over this pool's connections, added
    /// when each connection comes back.
    pub queries: AtomicU64,
    /// Borrow → connection in hand (a borrow served at once counts as 0, without a clock read).
    pub borrow_wait: Histogram,
    /// Connection in hand → given back (a transaction; a whole session in session mode).
    pub held: Histogram,
    /// Borrow → given back: `borrow_wait` + `held` of the same borrow.
    pub borrow_to_release: Histogram,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            opened: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            borrows: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            borrow_wait: metrics::latency_histogram("pgmux_borrow_wait_seconds", "borrow wait"),
            held: metrics::latency_histogram("pgmux_server_held_seconds", "held"),
            borrow_to_release: metrics::latency_histogram("pgmux_transaction_seconds", "borrow to release"),
        }
    }
}

#[derive(Debug)]
pub struct Pool {
    pub key: PoolKey,
    /// The connections: deadpool lends an idle one that passes `ServerLogin::recycle`, or opens
    /// one with `ServerLogin::create`, never holding more than its size open.
    conns: managed::Pool<ServerLogin>,
    /// pgmux-named statements sent to a server of this pool and not refused: a client preparing
    /// one of these outside a transaction is answered without borrowing a connection.
    known_statements: Mutex<HashSet<Arc<str>>>,
    /// Borrowers waiting for a connection to be free right now.
    waiting: AtomicUsize,
    /// Connections lent out right now (deadpool's `status()` counts lent, opening and waiting
    /// borrows together).
    lent: AtomicUsize,
    /// What this pool's server reported to a client logging in, by the client's startup settings:
    /// a later login with the same settings is greeted from it without borrowing a connection.
    greetings: Mutex<HashMap<Vec<(String, String)>, Greeting>>,
    pub stats: Arc<PoolStats>,
}

/// The parameters (ParameterStatus) a server connection reported once it carried a client's
/// startup settings: what a client logging in with those settings is told.
#[derive(Debug, Clone)]
pub struct Greeting {
    pub params: Arc<HashMap<String, String>>,
    /// `BackendConn::params_digest` of `params`.
    pub digest: u64,
    /// `params` as the ParameterStatus messages a login sends (encoded once, not per login).
    pub encoded: bytes::Bytes,
}

/// Bound on `known_statements` (it is only a shortcut: forgetting costs a round trip later).
const KNOWN_STATEMENTS_MAX: usize = 10_000;

/// Bound on `greetings`: distinct startup settings remembered per pool (applications send the
/// same few; forgetting costs a borrow at the next login).
const GREETINGS_MAX: usize = 64;

/// A borrow that takes a free connection or opens one, but does not wait for one to be returned.
const AT_ONCE: Timeouts = Timeouts { wait: Some(Duration::ZERO), create: None, recycle: None };

impl Pool {
    pub fn new(key: PoolKey, login: LoginParams, size: usize) -> Arc<Pool> {
        let stats = Arc::new(PoolStats::default());
        let manager = ServerLogin::new(key.server.clone(), login, stats.clone());
        let conns = managed::Pool::builder(manager)
            .max_size(size)
            // The most recently returned connection first: the others can idle out.
            .queue_mode(QueueMode::Lifo)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a runtime is given for the borrow timeout");
        Arc::new(Pool {
            key,
            conns,
            known_statements: Mutex::new(HashSet::new()),
            waiting: AtomicUsize::new(0),
            lent: AtomicUsize::new(0),
            greetings: Mutex::new(HashMap::new()),
            stats,
        })
    }

    /// The most connections it may hold open (deadpool's `max_size`; `open_count` is how many it does).
    pub fn size(&self) -> usize {
        let status = self.conns.status();
        status.max_size
    }

    /// Takes reloaded login settings (for connections opened from now on) and a new size: a
    /// larger pool lends more at once; a smaller one closes idle connections beyond its size, and
    /// borrowed ones beyond it as they return.
    pub fn reconfigure(self: &Arc<Self>, login: LoginParams, size: usize) {
        self.conns.manager().set_login(login);
        self.conns.resize(size);
    }

    /// Connections open now that run over TLS.
    pub fn tls_count(&self) -> usize {
        let sockets = &self.conns.manager().sockets;
        sockets.lock().map(|s| s.iter().filter(|(s, tls)| *tls && s.strong_count() > 0).count()).unwrap_or(0)
    }

    pub fn idle_count(&self) -> usize {
        self.conns.status().available
    }

    /// Connections lent out right now.
    pub fn borrowed_count(&self) -> usize {
        self.lent.load(Ordering::Relaxed)
    }

    /// Borrowers waiting for a connection right now.
    pub fn waiting_count(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Connections open now (lent or idle).
    pub fn open_count(&self) -> usize {
        self.conns.status().size
    }

    /// Borrows a connection, waiting at most `timeout` for one to be free.
    pub async fn checkout(self: &Arc<Self>, timeout: Duration) -> Result<Pooled, PoolError> {
        // First without waiting: deadpool then arms no timer, and the clock is read only when the
        // borrow has to wait (a connection it opens carries when the login began).
        let mut started = None;
        let conn = match self.conns.timeout_get(&AT_ONCE).await {
            Ok(conn) => conn,
            Err(managed::PoolError::Timeout(_)) => {
                started = Some(Instant::now());
                let _waiting = Waiting::new(&self.waiting);
                let wait = Timeouts { wait: Some(timeout), create: None, recycle: None };
                match self.conns.timeout_get(&wait).await {
                    Ok(conn) => conn,
                    Err(e) => return Err(self.failed(e)),
                }
            }
            Err(e) => return Err(self.failed(e)),
        };
        self.stats.borrows.fetch_add(1, Ordering::Relaxed);
        // deadpool read the clock as it lent a reused connection (`recycled`), or when it opened
        // this one (`created`): that is when the loan begins.
        let metrics = Object::metrics(&conn);
        let fresh = metrics.recycled.is_none();
        let lent_at = metrics.recycled.unwrap_or(metrics.created);
        let waited = match started {
            Some(t) => lent_at.saturating_duration_since(t),
            None if fresh => lent_at.saturating_duration_since(conn.created),
            None => Duration::ZERO,
        };
        self.stats.borrow_wait.observe(metrics::seconds(waited));
        self.lent.fetch_add(1, Ordering::Relaxed);
        Ok(Pooled { conn: Some(conn), pool: self.clone(), lent_at, waited, queries: 0, fresh })
    }

    /// What a borrow that got no connection tells its caller.
    fn failed(&self, e: managed::PoolError<BackendError>) -> PoolError {
        match e {
            managed::PoolError::Backend(e) => PoolError::Connect(e),
            _ => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                PoolError::Timeout
            }
        }
    }

    /// Closes connections idle for longer than `max_idle`; returns how many.
    pub fn close_idle_older_than(&self, max_idle: Duration) -> usize {
        let now = Instant::now();
        self.conns.retain(|c, _| now.duration_since(c.last_used) < max_idle).removed.len()
    }

    pub fn statement_known(&self, server_name: &str) -> bool {
        self.known_statements.lock().map(|k| k.contains(server_name)).unwrap_or(false)
    }

    pub fn set_statement_known(&self, server_name: &Arc<str>, known: bool) {
        let Ok(mut k) = self.known_statements.lock() else {
            return;
        };
        if !known {
            k.remove(server_name);
            return;
        }
        if k.len() >= KNOWN_STATEMENTS_MAX {
            k.clear();
        }
        k.insert(server_name.clone());
    }

    /// What to tell a client logging in with `settings`, if a connection of this pool already
    /// carried them since the pool was last retired.
    pub fn greeting(&self, settings: &[(String, String)]) -> Option<Greeting> {
        self.greetings.lock().ok()?.get(settings).cloned()
    }

    /// Remembers what `conn`, carrying `settings`, reports (see [`Pool::greeting`]).
    pub fn remember_greeting(&self, settings: &[(String, String)], conn: &BackendConn) {
        let Ok(mut g) = self.greetings.lock() else {
            return;
        };
        if g.len() >= GREETINGS_MAX && !g.contains_key(settings) {
            g.clear();
        }
        let mut encoded = bytes::BytesMut::new();
        crate::protocol::build::parameter_statuses(&mut encoded, conn.params.iter());
        let greeting = Greeting { params: conn.params.clone(), digest: conn.params_digest, encoded: encoded.freeze() };
        g.insert(settings.to_vec(), greeting);
    }

    /// Closes the idle connections `stale` picks; returns how many.
    pub fn discard_idle_where(&self, stale: impl Fn(&BackendConn) -> bool) -> usize {
        let n = self.conns.retain(|c, _| !stale(c)).removed.len();
        self.stats.discarded.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Closes every idle connection (server lost, or pool retired).
    pub fn clear_idle(&self) {
        self.conns.retain(|_, _| false);
    }

    /// Discards every connection open now: the idle ones at once, borrowed ones when they return.
    /// With `cut`, borrowed ones are shut down too, so whatever runs on them fails at once (the
    /// server was replaced as primary: nothing more may be written there).
    pub fn retire(&self, cut: bool) {
        let logins = self.conns.manager();
        logins.valid_since.fetch_add(1, Ordering::AcqRel);
        self.clear_idle();
        // The next login proves again that the server takes its database, user and settings.
        if let Ok(mut g) = self.greetings.lock() {
            g.clear();
        }
        if cut && let Ok(mut sockets) = logins.sockets.lock() {
            for s in sockets.drain(..).filter_map(|(s, _)| s.upgrade()) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Counts a borrower as waiting while it lives (also when its wait is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A borrowed connection. `release()` returns it for reuse; dropping it any other way closes it,
/// so a connection in an unknown state can never reach another client.
#[derive(Debug)]
pub struct Pooled {
    /// deadpool's handle: dropped, it goes back to the pool unconditionally, so a connection not
    /// fit for reuse is taken out of it (`Object::take`) first.
    conn: Option<Object<ServerLogin>>,
    pool: Arc<Pool>,
    /// When it was lent, and how long the borrow waited for it.
    lent_at: Instant,
    waited: Duration,
    /// Client requests relayed over it while lent (added to the pool's count once, at the end).
    queries: u32,
    /// Opened for this borrow (not reused from the idle list).
    fresh: bool,
}

impl Pooled {
    /// Returns a clean connection (idle, no transaction, nothing unread) to the pool.
    pub fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let now = Instant::now();
            self.record_loan(now);
            if !self.pool.conns.manager().still_valid(&conn) {
                self.pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
                drop(Object::take(conn));
                return;
            }
            conn.last_used = now;
            // Dropped, deadpool's handle puts it back on the idle list.
            drop(conn);
        }
    }

    /// Whether the connection was opened for this borrow: what it reported at login is news.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Notes one client request (Query, Execute, FunctionCall) relayed over this connection.
    pub fn note_query(&mut self) {
        self.queries = self.queries.wrapping_add(1);
    }

    /// Records the loan that ends at `now`: how long it was held, and the requests it carried.
    fn record_loan(&self, now: Instant) {
        self.pool.lent.fetch_sub(1, Ordering::Relaxed);
        let stats = &self.pool.stats;
        let held = now.saturating_duration_since(self.lent_at);
        stats.held.observe(metrics::seconds(held));
        stats.borrow_to_release.observe(metrics::seconds(held + self.waited));
        if self.queries > 0 {
            stats.queries.fetch_add(u64::from(self.queries), Ordering::Relaxed);
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.record_loan(Instant::now());
            self.pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
            // Out of the pool (its slot freed), then closed.
            drop(Object::take(conn));
        }
    }
}

impl Deref for Pooled {
    type Target = BackendConn;
    fn deref(&self) -> &BackendConn {
        self.conn.as_ref().expect("a Pooled always holds its connection until consumed")
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut BackendConn {
        self.conn.as_mut().expect("a Pooled always holds its connection until consumed")
    }
}

/// Every pool, found by key and created on first use.
#[derive(Debug, Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    pub fn get_or_create(&self, key: PoolKey, make: impl FnOnce(&PoolKey) -> Arc<Pool>) -> Arc<Pool> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(&key) {
            return p.clone();
        }
        let pool = make(&key);
        map.insert(key, pool.clone());
        pool
    }

    pub fn get(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Forgets a pool that has nothing open and nothing lent (e.g. an unknown database).
    pub fn remove_if_unused(&self, key: &PoolKey) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(key)
            && p.borrowed_count() == 0
            && p.idle_count() == 0
            && Arc::strong_count(p) == 1
        {
            map.remove(key);
        }
    }
}
