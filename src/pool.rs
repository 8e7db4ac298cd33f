//! Backend connection pools, one per (server, database, user): opened lazily up to `size`, borrowed
//! with a deadline, returned or discarded through a guard.
//!
//! Bookkeeping: `size` permits are the right to hold a connection (`permits`: borrowers wait for
//! one first come, first served); a borrower with a permit takes an idle connection or opens a
//! new one, so open connections never exceed `size`.
//!
//! With one runtime per core (`cores`), a pool is split into a shard per core, each with its share
//! of the permits and its own idle connections, opened on (and driven by) that core's runtime. A
//! session borrows from its own core's shard; only when that one has no permit free does it take
//! one from another shard (at once, or granted by that shard when it has one spare while it
//! waits), so the pool's size still bounds the whole and a permit free anywhere serves a waiting
//! borrower.

pub mod cores;
mod permits;
mod registry;
mod stats;
mod wait;

pub use registry::Pools;
pub use stats::PoolStats;
pub use wait::WaitTimer;

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::backend::{BackendConn, BackendError, LoginParams};
use cores::Cores;
use permits::{Permit, Permits};

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

#[derive(Debug)]
pub struct Pool {
    pub key: PoolKey,
    login: Mutex<LoginParams>,
    /// One per core (see the module's doc); one with a single runtime.
    shards: Box<[Shard]>,
    cores: Cores,
    /// pgmux-named statements sent to a server of this pool and not refused: a client preparing
    /// one of these outside a transaction is answered without borrowing a connection.
    known_statements: Mutex<foldhash::HashSet<Arc<str>>>,
    /// The generation a connection must have been opened in to be reused; `retire` moves it on.
    valid_since: AtomicU64,
    /// Every open connection's socket (handles that die with their connection), to cut them all
    /// when the server must no longer be used.
    sockets: Mutex<Vec<(std::sync::Weak<socket2::Socket>, bool)>>,
    /// Bounds connection attempts in flight, so a pool refilling after a failover does not hit
    /// its server with `size` logins at once.
    connecting: Semaphore,
    /// Borrowers waiting for a connection to be free right now.
    waiting: AtomicUsize,
    /// What this pool's server reported to a client logging in, by the client's startup settings:
    /// a later login with the same settings is greeted from it without borrowing a connection.
    greetings: Mutex<foldhash::HashMap<Vec<(String, String)>, Greeting>>,
    pub stats: PoolStats,
}

/// One core's part of a pool.
#[derive(Debug)]
struct Shard {
    /// Its share of the pool's size.
    size: AtomicUsize,
    permits: Permits,
    /// Boxed, so lending and returning a connection moves a pointer, not the whole struct
    /// (callgrind: ~1,000 instructions per transaction less).
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<BackendConn>>>,
}

impl Shard {
    fn new(index: usize, size: usize) -> Shard {
        Shard { size: AtomicUsize::new(size), permits: Permits::new(index, size), idle: Mutex::new(Vec::new()) }
    }

    /// Takes a new size: a larger shard lends more at once; a smaller one takes permits back as
    /// borrowers return them. Returns how many new permits nobody here waited for.
    fn resize(&self, size: usize) -> usize {
        let old = self.size.swap(size, Ordering::AcqRel);
        self.permits.resize(old, size)
    }

    fn borrowed(&self) -> usize {
        self.permits.lent(self.size.load(Ordering::Relaxed))
    }

    fn pop_idle(&self) -> Option<Box<BackendConn>> {
        self.idle.lock().ok()?.pop()
    }
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

/// Connection attempts one pool makes at a time.
const CONNECTS_AT_ONCE: usize = 4;

/// Bound on `known_statements` (it is only a shortcut: forgetting costs a round trip later).
const KNOWN_STATEMENTS_MAX: usize = 10_000;

/// Bound on `greetings`: distinct startup settings remembered per pool (applications send the
/// same few; forgetting costs a borrow at the next login).
const GREETINGS_MAX: usize = 64;

impl Pool {
    pub fn new(key: PoolKey, login: LoginParams, size: usize) -> Arc<Pool> {
        Pool::on_cores(key, login, size, Cores::default())
    }

    /// A pool with a shard per core of `cores`.
    pub fn on_cores(key: PoolKey, login: LoginParams, size: usize, cores: Cores) -> Arc<Pool> {
        let n = cores.count();
        Arc::new(Pool {
            key,
            login: Mutex::new(login),
            shards: (0..n).map(|i| Shard::new(i, cores::share(size, n, i))).collect(),
            cores,
            known_statements: Mutex::new(Default::default()),
            valid_since: AtomicU64::new(0),
            sockets: Mutex::new(Vec::new()),
            connecting: Semaphore::new(CONNECTS_AT_ONCE),
            waiting: AtomicUsize::new(0),
            greetings: Mutex::new(Default::default()),
            stats: PoolStats::default(),
        })
    }

    /// The pool's size: its shards' shares added up.
    pub fn size(&self) -> usize {
        self.shards.iter().map(|s| s.size.load(Ordering::Relaxed)).sum()
    }

    /// Takes reloaded login settings (for connections opened from now on) and a new size: a
    /// larger pool lends more at once; a smaller one takes permits back as borrowers return them.
    pub fn reconfigure(self: &Arc<Self>, login: LoginParams, size: usize) {
        self.set_login(login);
        let n = self.shards.len();
        for (i, shard) in self.shards.iter().enumerate() {
            for _ in 0..shard.resize(cores::share(size, n, i)) {
                self.offer_spare(i);
            }
        }
    }

    /// Connections open now that run over TLS.
    pub fn tls_count(&self) -> usize {
        self.sockets.lock().map(|s| s.iter().filter(|(s, tls)| *tls && s.strong_count() > 0).count()).unwrap_or(0)
    }

    pub fn idle_count(&self) -> usize {
        self.shards.iter().map(|s| s.idle.lock().map(|v| v.len()).unwrap_or(0)).sum()
    }

    /// Connections lent out right now.
    pub fn borrowed_count(&self) -> usize {
        self.shards.iter().map(Shard::borrowed).sum()
    }

    /// Borrowers waiting for a connection right now.
    pub fn waiting_count(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Connections open now (lent or idle; those cut by `retire` no longer count).
    pub fn open_count(&self) -> usize {
        self.sockets.lock().map(|s| s.iter().filter(|(s, _)| s.strong_count() > 0).count()).unwrap_or(0)
    }

    /// Borrows a connection, waiting at most `timeout` for one to be free, timed on `timer` (which
    /// the borrower keeps from one borrow to the next: see `WaitTimer`).
    pub async fn checkout(self: &Arc<Self>, timeout: Duration, timer: &mut WaitTimer) -> Result<Pooled, PoolError> {
        // The clock is read only when the borrow has to wait or connect: a borrow served at once
        // (the common case) waited ~0, and its one clock read is taken when it is lent.
        // The loan gives the permit back (see `Pooled`'s drop).
        let mut started = None;
        let core = if self.shards.len() > 1 { self.cores.current() } else { 0 };
        let home = self.home_shard(core);
        let (shard, permit) = match self.try_permit(home) {
            Some(p) => p,
            None => {
                let now = Instant::now();
                started = Some(now);
                let _waiting = Waiting::new(&self.waiting);
                self.wait_permit(home, now, now + timeout, timer).await.inspect_err(|_| {
                    self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                })?
            }
        };
        self.stats.borrows.fetch_add(1, Ordering::Relaxed);
        if shard != core {
            self.stats.borrows_other_worker.fetch_add(1, Ordering::Relaxed);
        }
        // The common loan, an idle connection with no cancel in flight, is made here; the rest
        // (waiting for a cancel to settle, opening a connection) in a boxed future of its own, so
        // every borrow's state stays small.
        let mut idle = self.shards[shard].pop_idle();
        if let Some(conn) = idle.take_if(|c| c.looks_idle() && c.cancels.try_settle() == Some(true)) {
            return Ok(self.lend(conn, shard, permit, started, false));
        }
        Box::pin(self.lend_settled_or_open(idle, core, shard, permit, started)).await
    }

    /// The rest of `checkout` once it holds a permit of `shard`: lends `idle` (and the shard's
    /// other idle connections) once any cancel sent on it is settled, discarding those that cannot
    /// be, or else opens a connection.
    async fn lend_settled_or_open(
        self: &Arc<Self>,
        mut idle: Option<Box<BackendConn>>,
        core: usize,
        shard: usize,
        permit: Permit<'_>,
        mut started: Option<Instant>,
    ) -> Result<Pooled, PoolError> {
        while let Some(mut conn) = idle.take().or_else(|| self.shards[shard].pop_idle()) {
            // A cancel its last borrower sent may still be on its way: lent only once that is
            // settled, so it cannot reach this borrower's query (see `backend::cancel`).
            if conn.looks_idle() && conn.cancels.settle().await {
                return Ok(self.lend(conn, shard, permit, started, false));
            }
            self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        }
        started.get_or_insert_with(Instant::now);
        let generation = self.valid_since.load(Ordering::Acquire);
        let mut conn = {
            let _turn = self.connecting.acquire().await.map_err(|_| PoolError::Timeout)?;
            self.stats.connects.fetch_add(1, Ordering::Relaxed);
            self.connect_on(core, shard).await.inspect_err(|_| {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            })?
        };
        conn.generation = generation;
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut sockets) = self.sockets.lock() {
            sockets.retain(|(s, _)| s.strong_count() > 0);
            sockets.push((Arc::downgrade(&conn.cutter), conn.tls));
        }
        Ok(self.lend(conn, shard, permit, started, true))
    }

    /// The shard a borrower on this core queues in: its core's, unless that one's share of the
    /// pool is nothing (a pool smaller than the cores), then shard 0's (the largest), so every
    /// borrower waits in some queue first come, first served.
    fn home_shard(&self, core: usize) -> usize {
        let i = core % self.shards.len();
        if self.shards[i].size.load(Ordering::Relaxed) > 0 { i } else { 0 }
    }

    /// Opens a connection for `shard` on that shard's core (the caller runs on `core`), so the
    /// core that borrows it most drives its socket.
    async fn connect_on(&self, core: usize, shard: usize) -> Result<Box<BackendConn>, BackendError> {
        let login = self.login();
        let server = self.key.server.clone();
        // Boxed: inline, a server login's future (TLS, SCRAM) would size every session's task,
        // idle or not, as borrowers embed this one.
        let connect = Box::pin(async move { BackendConn::connect(server, &login).await.map(Box::new) });
        match self.cores.handle(shard).filter(|_| shard != core) {
            Some(home) => home.spawn(connect).await.unwrap_or_else(|e| {
                Err(BackendError::Io { server: self.key.server.clone(), source: std::io::Error::other(e) })
            }),
            None => connect.await,
        }
    }

    /// Hands `conn` of `shard` out (`fresh`: opened for this borrow), recording how long the
    /// borrow waited (since `started`; None: not at all).
    fn lend(
        self: &Arc<Self>,
        conn: Box<BackendConn>,
        shard: usize,
        permit: Permit<'_>,
        started: Option<Instant>,
        fresh: bool,
    ) -> Pooled {
        let now = Instant::now();
        let waited = started.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
        self.stats.borrow_wait.observe(stripe(&conn), waited);
        // From here the loan holds the permit: `Pooled`'s drop adds it back.
        permit.forget();
        Pooled { conn: Some(conn), pool: self.clone(), shard, lent_at: now, waited, queries: 0, fresh }
    }

    /// Takes new login settings for the connections opened from now on (a user's secret changed).
    pub fn set_login(&self, login: LoginParams) {
        *self.login.lock().unwrap_or_else(|e| e.into_inner()) = login;
    }

    fn login(&self) -> LoginParams {
        self.login.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Closes connections idle for longer than `max_idle`; returns how many.
    pub fn close_idle_older_than(&self, max_idle: Duration) -> usize {
        let now = Instant::now();
        self.retain_idle(|c| now.duration_since(c.last_used) < max_idle)
    }

    /// Keeps the idle connections `keep` picks, closing the others; returns how many closed.
    fn retain_idle(&self, keep: impl Fn(&BackendConn) -> bool) -> usize {
        let mut closed = 0;
        for shard in &self.shards {
            if let Ok(mut idle) = shard.idle.lock() {
                let before = idle.len();
                idle.retain(|c| keep(c));
                closed += before - idle.len();
            }
        }
        closed
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
        let n = self.retain_idle(|c| !stale(c));
        self.stats.discarded.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Closes every idle connection (server lost, or pool retired).
    pub fn clear_idle(&self) {
        self.retain_idle(|_| false);
    }

    /// Discards every connection open now: the idle ones at once, borrowed ones when they return.
    /// With `cut`, borrowed ones are shut down too, so whatever runs on them fails at once (the
    /// server was replaced as primary: nothing more may be written there).
    pub fn retire(&self, cut: bool) {
        self.valid_since.fetch_add(1, Ordering::AcqRel);
        self.clear_idle();
        // The next login proves again that the server takes its database, user and settings.
        if let Ok(mut g) = self.greetings.lock() {
            g.clear();
        }
        if cut && let Ok(mut sockets) = self.sockets.lock() {
            for s in sockets.drain(..).filter_map(|(s, _)| s.upgrade()) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn still_valid(&self, conn: &BackendConn) -> bool {
        conn.generation == self.valid_since.load(Ordering::Acquire)
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
    conn: Option<Box<BackendConn>>,
    /// Holds one of the pool's permits, given back when this is dropped.
    pool: Arc<Pool>,
    /// The shard it belongs to (and goes back to).
    shard: usize,
    /// When it was lent, and how long the borrow waited for it.
    lent_at: Instant,
    waited: Duration,
    /// Client requests relayed over it while lent (added to the pool's count once, at the end).
    queries: u32,
    /// Opened for this borrow (not reused from the idle list).
    fresh: bool,
}

/// Where the pool's histograms record a loan of `conn`: by its server pid, as one borrower at a
/// time uses it.
fn stripe(conn: &BackendConn) -> usize {
    conn.pid as usize
}

impl Pooled {
    /// Returns a clean connection (idle, no transaction, nothing unread) to the pool.
    pub fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            // No cancel may reach it once it can be lent on (the session has let go already).
            conn.let_go();
            let now = Instant::now();
            self.record_loan(&conn, now);
            if !self.pool.still_valid(&conn) {
                self.pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
                return;
            }
            conn.last_used = now;
            if let Ok(mut idle) = self.pool.shards[self.shard].idle.lock() {
                idle.push(conn);
            }
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

    /// Records the loan of `conn` that ends at `now`: how long it was held, and the requests it
    /// carried.
    fn record_loan(&self, conn: &BackendConn, now: Instant) {
        let stats = &self.pool.stats;
        let held = now.saturating_duration_since(self.lent_at);
        stats.held.observe(stripe(conn), held);
        stats.borrow_to_release.observe(stripe(conn), held + self.waited);
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
            self.record_loan(&conn, Instant::now());
            self.pool.stats.discarded.fetch_add(1, Ordering::Relaxed);
        }
        // Last: a borrower this wakes finds a released connection already idle.
        self.pool.give_back(self.shard);
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

#[cfg(test)]
mod tests {
    use super::{Pool, PoolKey, WaitTimer, Waiting};
    use crate::backend::LoginParams;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::time::{Duration, Instant};

    fn pool(size: usize, shards: usize) -> Arc<Pool> {
        let key = PoolKey { server: "127.0.0.1:1".into(), database: "db".into(), user: "u".into() };
        let login = LoginParams {
            user: "u".into(),
            secret: crate::auth::ServerSecret::Password("p".into()),
            database: "db".into(),
            connect_timeout: Duration::from_secs(1),
            init_query: String::new(),
            tls: Arc::new(crate::tls::TlsSettings::disabled()),
            server_auth: Default::default(),
        };
        let handle = tokio::runtime::Handle::current();
        let cores = if shards > 1 { super::Cores::new(vec![handle; shards]) } else { super::Cores::default() };
        Pool::on_cores(key, login, size, cores)
    }

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_borrow_cancelled_after_its_grant_hands_the_permit_to_the_next_in_line() {
        let pool = pool(1, 1);
        let (_, first) = pool.try_permit(0).expect("one permit free");
        let (mut t2, mut t3) = (WaitTimer::default(), WaitTimer::default());
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut second = Box::pin(pool.wait_permit(0, Instant::now(), deadline, &mut t2));
        let mut third = pin!(pool.wait_permit(0, Instant::now(), deadline, &mut t3));
        assert!(poll_once(second.as_mut()).is_pending());
        assert!(poll_once(third.as_mut()).is_pending());
        assert_eq!(pool.borrowed_count(), 1);
        drop(first); // granted to the second, which is cancelled before it looks
        drop(second);
        let Poll::Ready(Ok((shard, permit))) = poll_once(third.as_mut()) else {
            panic!("the third borrower must hold the permit the second left");
        };
        assert_eq!(shard, 0);
        assert_eq!(pool.borrowed_count(), 1);
        drop(permit);
        assert_eq!(pool.borrowed_count(), 0);
        let again = pool.try_permit(0);
        assert!(again.is_some(), "given back, not lost");
        assert!(pool.try_permit(0).is_none(), "given back once, not twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_spare_in_another_shard_reaches_a_waiting_borrower() {
        // Two shards of one connection each.
        let pool = pool(2, 2);
        let (_, own) = pool.try_permit(0).unwrap();
        let (s1, other) = pool.try_permit(0).expect("shard 0 full: shard 1's");
        assert_eq!(s1, 1);
        let _waiting = Waiting::new(&pool.waiting);
        let mut timer = WaitTimer::default();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut wait = pin!(pool.wait_permit(0, Instant::now(), deadline, &mut timer));
        assert!(poll_once(wait.as_mut()).is_pending());
        // Shard 1 nobody waits for: its permit goes to the borrower queued in shard 0.
        drop(other);
        let Poll::Ready(Ok((shard, permit))) = poll_once(wait.as_mut()) else {
            panic!("shard 1's spare permit must be granted to shard 0's waiter");
        };
        assert_eq!(shard, 1);
        drop(permit);
        drop(own);
        assert_eq!(pool.borrowed_count(), 0);
        // A borrower that starts waiting while another shard keeps one spare takes it at once.
        let (_, a) = pool.try_permit(0).unwrap();
        let mut timer = WaitTimer::default();
        let mut wait = pin!(pool.wait_permit(0, Instant::now(), deadline, &mut timer));
        assert!(matches!(poll_once(wait.as_mut()), Poll::Ready(Ok((1, _)))));
        drop(a);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_deadline_and_leaves_the_queue() {
        let pool = pool(1, 1);
        let (_, held) = pool.try_permit(0).unwrap();
        let mut timer = WaitTimer::default();
        let start = Instant::now();
        let r = pool.wait_permit(0, start, start + Duration::from_secs(5), &mut timer).await;
        assert!(matches!(r, Err(super::PoolError::Timeout)));
        drop(held);
        assert!(pool.try_permit(0).is_some(), "the timed-out borrower was not granted the permit");
    }
}
