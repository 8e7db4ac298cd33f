//! The servers behind pgmux and which one is the primary, plus the pools to each.
//!
//! Roles are discovered, never configured: the first reachable server that is not in recovery is the
//! primary, and a connection that turns out to be a standby is never used for the primary's work.

use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// What one pass over the servers found.
#[derive(Debug, Default)]
struct Survey {
    primary: Option<Arc<str>>,
    replicas: Vec<Arc<str>>,
    problems: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no primary server available ({0})")]
    NoPrimary(String),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("user \"{0}\" has no configured password")]
    UnknownUser(String),
}

#[derive(Debug)]
pub struct Cluster {
    servers: Vec<Arc<str>>,
    primary: Mutex<Option<Arc<str>>>,
    /// Reachable standbys, as of the last survey (a replica that fails a connect leaves at once).
    replicas: Mutex<Vec<Arc<str>>>,
    /// The (database, user) the first discovery used, for periodic re-surveys.
    probe: Mutex<Option<(String, String)>>,
    /// One discovery at a time: a storm of clients must not each probe every server.
    discovering: tokio::sync::Mutex<()>,
    pub pools: Pools,
    settings: PoolSettings,
    users: Arc<UserDirectory>,
}

impl Cluster {
    pub fn new(servers: Vec<String>, settings: PoolSettings, users: Arc<UserDirectory>) -> Cluster {
        Cluster {
            servers: servers.into_iter().map(Arc::from).collect(),
            primary: Mutex::new(None),
            replicas: Mutex::new(Vec::new()),
            probe: Mutex::new(None),
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

    /// Asks every server whether it is in recovery: the first that is not becomes the primary, the
    /// others that answer are the replicas.
    async fn discover(&self, database: &str, user: &str) -> Result<Arc<str>, ClusterError> {
        let _one_at_a_time = self.discovering.lock().await;
        if let Some(p) = self.primary() {
            return Ok(p);
        }
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some((database.to_string(), user.to_string()));
        let survey = self.survey(database, user).await?;
        self.set_replicas(survey.replicas);
        let primary = survey.primary.ok_or_else(|| ClusterError::NoPrimary(survey.problems.join("; ")))?;
        self.set_primary(Some(primary.clone()));
        Ok(primary)
    }

    /// Re-surveys the servers (after the first discovery): replicas that came back rejoin, a missing
    /// primary is found again.
    pub async fn refresh(&self) {
        let probe = self.probe.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((database, user)) = probe else { return };
        let _one_at_a_time = self.discovering.lock().await;
        match self.survey(&database, &user).await {
            Ok(survey) => {
                self.set_replicas(survey.replicas);
                if self.primary().is_none() {
                    self.set_primary(survey.primary);
                }
            }
            Err(e) => tracing::debug!(error = %e, "server survey failed"),
        }
    }

    async fn survey(&self, database: &str, user: &str) -> Result<Survey, ClusterError> {
        let login = self.login(database, user)?;
        let mut out = Survey::default();
        for server in &self.servers {
            match BackendConn::connect(server.clone(), &login).await {
                Ok(mut conn) => match is_standby(&mut conn).await {
                    Ok(false) if out.primary.is_none() => out.primary = Some(server.clone()),
                    Ok(false) => out.problems.push(format!("{server} also claims to be primary; ignored")),
                    Ok(true) => out.replicas.push(server.clone()),
                    Err(e) => out.problems.push(e.to_string()),
                },
                // The server itself refused us (unknown database, bad password): not a topology problem.
                Err(e @ BackendError::Server { .. }) => return Err(PoolError::Connect(e).into()),
                Err(e) => out.problems.push(e.to_string()),
            }
        }
        Ok(out)
    }

    pub fn replicas(&self) -> Vec<Arc<str>> {
        self.replicas.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_replicas(&self, replicas: Vec<Arc<str>>) {
        let mut r = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        if *r != replicas {
            tracing::info!(replicas = ?replicas.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "replica set changed");
            *r = replicas;
        }
    }

    fn mark_replica_down(&self, server: &Arc<str>) {
        let mut r = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = r.iter().position(|s| s == server) {
            tracing::warn!(server = %server, "replica unreachable; no new transactions go there");
            r.remove(i);
        }
    }

    /// Borrows a connection to a replica for (database, user): the one with the least work in
    /// flight. With no usable replica the primary serves (read-only work is still correct there).
    pub async fn checkout_replica(
        &self,
        database: &str,
        user: &str,
        timeout: Duration,
    ) -> Result<Pooled, ClusterError> {
        if self.primary().is_none() {
            self.discover(database, user).await?;
        }
        let mut candidates: Vec<Arc<Pool>> = Vec::new();
        for server in self.replicas() {
            candidates.push(self.pool(server, database, user)?);
        }
        candidates.sort_by_key(|p| p.borrowed_count());
        for pool in candidates {
            match pool.checkout(timeout).await {
                Ok(conn) if conn.is_standby() == Some(false) => {
                    tracing::warn!(server = %pool.key.server, "replica is no longer in recovery; not used for reads");
                    self.mark_replica_down(&pool.key.server);
                    pool.clear_idle();
                }
                Ok(conn) => return Ok(conn),
                Err(PoolError::Connect(e @ BackendError::Server { .. })) => return Err(PoolError::Connect(e).into()),
                Err(PoolError::Connect(e)) => {
                    tracing::debug!(error = %e, "replica connect failed");
                    self.mark_replica_down(&pool.key.server);
                    pool.clear_idle();
                }
                Err(e) => return Err(e.into()),
            }
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
