//! The servers behind pgmux and which one is the primary, plus the pools to each.
//!
//! Roles are discovered, never configured: the first reachable server that is not in recovery is the
//! primary, and a connection that turns out to be a standby is never used for the primary's work.

use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub mod probe;
pub mod topology;

use crate::auth::UserDirectory;
use crate::backend::{BackendConn, BackendError, LoginParams};
use crate::pool::{Pool, PoolError, PoolKey, Pooled, Pools};

/// Pool settings taken from the config.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub connect_timeout: Duration,
    pub init_query: String,
    pub idle_timeout: Duration,
}

/// Where read-only work may go (from `routing:`).
#[derive(Debug, Clone)]
pub struct ReadRouting {
    pub max_replica_lag: Duration,
    pub fallback_to_primary: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no primary server available ({0})")]
    NoPrimary(String),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("no replica is fit to serve read-only work")]
    NoReplica,
    #[error("user \"{0}\" has no configured password")]
    UnknownUser(String),
}

#[derive(Debug)]
pub struct Cluster {
    servers: Vec<Arc<str>>,
    primary: Mutex<Option<Arc<str>>>,
    /// Health, roles and lag of every server, from the prober and failed connects.
    topology: Mutex<topology::Topology>,
    routing: ReadRouting,
    /// Rotates the choice among equally loaded replicas.
    read_turn: std::sync::atomic::AtomicUsize,
    /// One discovery at a time: a storm of clients must not each probe every server.
    discovering: tokio::sync::Mutex<()>,
    pub pools: Pools,
    settings: PoolSettings,
    users: Arc<UserDirectory>,
}

impl Cluster {
    pub fn new(
        servers: Vec<String>,
        settings: PoolSettings,
        routing: ReadRouting,
        (down_after, up_after): (usize, usize),
        users: Arc<UserDirectory>,
    ) -> Cluster {
        let servers: Vec<Arc<str>> = servers.into_iter().map(Arc::from).collect();
        Cluster {
            topology: Mutex::new(topology::Topology::new(&servers, down_after, up_after)),
            routing,
            read_turn: std::sync::atomic::AtomicUsize::new(0),
            servers,
            primary: Mutex::new(None),
            discovering: tokio::sync::Mutex::new(()),
            pools: Pools::default(),
            settings,
            users,
        }
    }

    pub fn primary(&self) -> Option<Arc<str>> {
        self.primary.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_primary(&self, server: Option<Arc<str>>) {
        let mut p = self.primary.lock().unwrap_or_else(|e| e.into_inner());
        if *p != server {
            tracing::info!(primary = ?server.as_deref(), previous = ?p.as_deref(), "primary changed");
            *p = server;
        }
    }

    fn login(&self, database: &str, user: &str) -> Result<LoginParams, ClusterError> {
        let secret = self.users.get(user).ok_or_else(|| ClusterError::UnknownUser(user.into()))?;
        Ok(LoginParams {
            user: user.to_string(),
            password: secret.password.clone(),
            database: database.to_string(),
            connect_timeout: self.settings.connect_timeout,
            init_query: self.settings.init_query.clone(),
        })
    }

    pub fn pool(&self, server: Arc<str>, database: &str, user: &str) -> Result<Arc<Pool>, ClusterError> {
        let login = self.login(database, user)?;
        let key = PoolKey { server, database: database.to_string(), user: user.to_string() };
        let size = self.settings.size;
        Ok(self.pools.get_or_create(key, |k| Pool::new(k.clone(), login, size)))
    }

    /// Borrows a connection to the primary for (database, user). `hint` is the pool the caller used
    /// last: when it still points at the primary, the lookup is skipped.
    pub async fn checkout_primary(
        &self,
        hint: Option<&Arc<Pool>>,
        database: &str,
        user: &str,
        timeout: Duration,
    ) -> Result<Pooled, ClusterError> {
        let primary = self.primary();
        let pool = match (hint, &primary) {
            (Some(h), Some(p)) if Arc::ptr_eq(&h.key.server, p) || *h.key.server == **p => h.clone(),
            (_, Some(p)) => self.pool(p.clone(), database, user)?,
            (_, None) => {
                let server = self.discover(database, user).await?;
                self.pool(server, database, user)?
            }
        };
        let server = pool.key.server.clone();
        match pool.checkout(timeout).await {
            Ok(conn) if conn.is_standby() == Some(true) => {
                tracing::warn!(server = %server, "primary is now a standby; rediscovering");
                self.set_primary(None);
                pool.clear_idle();
                Err(ClusterError::NoPrimary(format!("{server} is in recovery")))
            }
            Ok(conn) => Ok(conn),
            Err(PoolError::Connect(e)) => {
                if !matches!(e, BackendError::Server { .. }) {
                    self.set_primary(None);
                    pool.clear_idle();
                }
                let key = pool.key.clone();
                drop(pool);
                self.pools.remove_if_unused(&key);
                Err(PoolError::Connect(e).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Asks each server in turn whether it is in recovery; the first that is not becomes the primary.
    async fn discover(&self, database: &str, user: &str) -> Result<Arc<str>, ClusterError> {
        let _one_at_a_time = self.discovering.lock().await;
        if let Some(p) = self.primary() {
            return Ok(p);
        }
        let login = self.login(database, user)?;
        let mut problems = Vec::new();
        for server in &self.servers {
            match BackendConn::connect(server.clone(), &login).await {
                Ok(mut conn) => match is_standby(&mut conn).await {
                    Ok(false) => {
                        self.set_primary(Some(server.clone()));
                        return Ok(server.clone());
                    }
                    Ok(true) => problems.push(format!("{server} is a standby")),
                    Err(e) => problems.push(e.to_string()),
                },
                // The server itself refused us (unknown database, bad password): not a topology problem.
                Err(e @ BackendError::Server { .. }) => return Err(PoolError::Connect(e).into()),
                Err(e) => problems.push(e.to_string()),
            }
        }
        Err(ClusterError::NoPrimary(problems.join("; ")))
    }

    fn topology(&self) -> std::sync::MutexGuard<'_, topology::Topology> {
        self.topology.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The probe round in progress: a write that ends now is covered by the next round's reading.
    pub fn probe_round(&self) -> u64 {
        self.topology().round()
    }

    fn start_probe_round(&self) -> u64 {
        self.topology().start_round()
    }

    fn record_probe(&self, server: &Arc<str>, round: u64, probe: Option<topology::Probe>, now: std::time::Instant) {
        if let Some(up) = self.topology().record(server, round, probe, now) {
            if up {
                tracing::info!(server = %server, "server up");
            } else {
                tracing::warn!(server = %server, "server down");
            }
        }
    }

    /// Every server's health, role and lag, for status output.
    pub fn servers_view(&self) -> Vec<topology::ServerView> {
        self.topology().view()
    }

    /// Starts the prober, logging in as `user` to `database`.
    pub fn spawn_prober(self: &Arc<Self>, user: &str, database: &str, interval: Duration, stop: CancellationToken) {
        match self.login(database, user) {
            Ok(login) => {
                let span = tracing::info_span!("prober");
                tokio::spawn(probe::run(self.clone(), login, interval, stop).instrument(span));
            }
            Err(e) => tracing::error!(error = %e, "no prober: cannot log in to the servers"),
        }
    }

    /// Borrows a connection to a replica for (database, user): the one with the least work in
    /// flight among those fit to serve. With none, the primary serves (if `fallback_to_primary`).
    /// `wrote_in`: the probe round in which the client's last write ended (read-your-writes).
    pub async fn checkout_replica(
        &self,
        database: &str,
        user: &str,
        timeout: Duration,
        wrote_in: Option<u64>,
    ) -> Result<Pooled, ClusterError> {
        let mut candidates: Vec<Arc<Pool>> = Vec::new();
        let readable = self.topology().readable_replicas(self.routing.max_replica_lag, wrote_in);
        for server in readable {
            candidates.push(self.pool(server, database, user)?);
        }
        // Least work in flight first; ties rotate, so idle replicas share the load too.
        let n = candidates.len().max(1);
        let turn = self.read_turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        let mut ranked: Vec<(usize, usize, Arc<Pool>)> =
            candidates.into_iter().enumerate().map(|(i, p)| (p.borrowed_count(), (i + n - turn) % n, p)).collect();
        ranked.sort_by_key(|(load, order, _)| (*load, *order));
        let candidates: Vec<Arc<Pool>> = ranked.into_iter().map(|(_, _, p)| p).collect();
        for pool in candidates {
            match pool.checkout(timeout).await {
                Ok(conn) if conn.is_standby() == Some(false) => {
                    tracing::warn!(server = %pool.key.server, "replica is no longer in recovery; not used for reads");
                    self.topology().mark_down(&pool.key.server);
                    pool.clear_idle();
                }
                Ok(conn) => return Ok(conn),
                Err(PoolError::Connect(e @ BackendError::Server { .. })) => return Err(PoolError::Connect(e).into()),
                Err(PoolError::Connect(e)) => {
                    tracing::debug!(error = %e, "replica connect failed");
                    self.topology().mark_down(&pool.key.server);
                    pool.clear_idle();
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !self.routing.fallback_to_primary {
            return Err(ClusterError::NoReplica);
        }
        self.checkout_primary(None, database, user, timeout).await
    }

    /// Closes connections idle longer than the configured idle timeout, in every pool.
    pub fn close_idle(&self) {
        for pool in self.pools.all() {
            let n = pool.close_idle_older_than(self.settings.idle_timeout);
            if n > 0 {
                tracing::debug!(server = %pool.key.server, database = %pool.key.database, user = %pool.key.user, closed = n, "closed idle server connections");
            }
        }
    }
}

async fn is_standby(conn: &mut BackendConn) -> Result<bool, BackendError> {
    if let Some(v) = conn.is_standby() {
        return Ok(v);
    }
    // Servers before 14 do not report in_hot_standby: ask, and let a standby answer with an error
    // (division by zero) so no result rows need decoding.
    let err = conn.simple_query("SELECT 1 / (NOT pg_catalog.pg_is_in_recovery())::int").await?;
    Ok(err.is_some())
}
