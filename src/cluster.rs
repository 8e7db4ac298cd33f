//! The servers behind pgmux and which one is the primary, plus the pools to each.
//!
//! Roles are discovered, never configured: the first reachable server that is not in recovery is the
//! primary, and a connection that turns out to be a standby is never used for the primary's work.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub mod collector;
pub mod lookup;
pub mod names;
pub mod probe;
pub mod topology;

use crate::auth::UserDirectory;
use crate::backend::{BackendError, LoginParams};
use crate::pool::{Pool, PoolError, PoolKey, Pooled, Pools};

/// Pool settings taken from the config.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub connect_timeout: Duration,
    pub init_query: String,
    pub idle_timeout: Duration,
    /// TLS towards the servers (and towards clients: shared, so one reload swaps both).
    pub tls: Arc<crate::tls::TlsSettings>,
    /// `pool.server_auth`.
    pub server_auth: crate::config::ServerAuth,
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

/// How often clients waiting for a primary may ask the servers themselves (besides the prober).
const DISCOVERY_EVERY: Duration = Duration::from_millis(100);

/// The failover in progress, and counts of past ones.
#[derive(Debug, Default)]
struct Failover {
    /// When a sign of trouble with the primary was first seen (a lost server connection).
    suspected_at: Option<Instant>,
    /// When the primary was declared lost; cleared once a primary is followed again.
    lost_at: Option<Instant>,
    /// The server lost as primary last: its pools are retired when another takes over.
    lost: Option<Arc<str>>,
    stats: FailoverStats,
}

/// Counts of primary losses and how long they took, for status output and metrics.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FailoverStats {
    /// Primary lost, then another server followed as primary.
    pub failovers: u64,
    /// Primary lost, then the same server followed again (it came back).
    pub recoveries: u64,
    /// First sign of trouble → primary declared lost, in the last event.
    pub last_detect_ms: Option<u64>,
    /// Primary declared lost → a primary followed again, in the last event.
    pub last_recover_ms: Option<u64>,
    /// The primary is lost and no other is known yet (derived when the stats are read).
    pub in_progress: bool,
    /// Primaries declared lost, and the sums over them of detect and recover times (with
    /// failovers + recoveries as the count of recoveries: averages, as Prometheus sums).
    pub losses: u64,
    /// Primaries followed from another cluster than before (a new system identifier).
    pub clusters_replaced: u64,
    pub detect_ms_total: u64,
    pub recover_ms_total: u64,
}

#[derive(Debug)]
pub struct Cluster {
    /// Every member: configured addresses, and one per address of each configured host name
    /// (swapped whole on reload and when a name resolves differently).
    servers: ArcSwap<Vec<Arc<str>>>,
    /// The configured entries and what their names resolved to.
    names: Mutex<names::Names>,
    resolver: Arc<dyn names::Resolve>,
    /// One resolution at a time.
    resolving: tokio::sync::Mutex<()>,
    /// The server followed as primary; waiters watch it change.
    primary: tokio::sync::watch::Sender<Option<Arc<str>>>,
    failover: Mutex<Failover>,
    /// Health, roles and lag of every server, from the prober, discovery and failed connects.
    topology: Mutex<topology::Topology>,
    routing: ArcSwap<ReadRouting>,
    /// One discovery at a time, and not more often than DISCOVERY_EVERY: a storm of clients must
    /// not each probe every server.
    discovering: tokio::sync::Mutex<Option<Instant>>,
    /// Why the last discovery found no primary.
    problems: Mutex<String>,
    /// Asks the prober for a round now.
    probe_now: tokio::sync::Notify,
    /// The rival primaries last reported (split brain), so the warning is logged once per change.
    rivals: Mutex<Vec<(Arc<str>, u32)>>,
    pub pools: Pools,
    settings: ArcSwap<PoolSettings>,
    users: Arc<ArcSwap<UserDirectory>>,
    /// Stops the running prober (a reload replaces it).
    prober: Mutex<Option<CancellationToken>>,
    /// The prober's login, which discovery uses too: a client's own login would add a connection
    /// the server counts against that user beyond `pool.size`.
    probe_login: Mutex<Option<LoginParams>>,
    /// `auth.query`'s own connection (see `lookup`).
    lookup: tokio::sync::Mutex<lookup::LookupConn>,
}

/// A cluster for unit tests: `servers`, pools of `size`, users `(name, password)`; nothing connects.
#[cfg(test)]
pub fn test_cluster(servers: &[&str], size: usize, users: &[(&str, &str)]) -> Arc<Cluster> {
    Arc::new(Cluster::new(
        servers.iter().map(|s| s.to_string()).collect(),
        PoolSettings {
            size,
            connect_timeout: Duration::from_secs(1),
            init_query: String::new(),
            idle_timeout: Duration::from_secs(60),
            tls: Arc::new(crate::tls::TlsSettings::disabled()),
            server_auth: Default::default(),
        },
        ReadRouting { max_replica_lag: Duration::from_secs(10), fallback_to_primary: true },
        (3, 2),
        Arc::new(ArcSwap::from_pointee(UserDirectory::new(users.iter().copied()))),
    ))
}

/// A failed connect that says the server cannot serve now (unreachable, timed out, starting,
/// shutting down), as opposed to one refusing this login: pg_hba, a bad password, an unknown
/// database or option, an auth method pgmux does not speak. A refusal fails that client only;
/// only this counts against the server's health (besides the prober's own login).
fn server_unavailable(e: &BackendError) -> bool {
    match e {
        BackendError::Io { .. } | BackendError::Timeout { .. } | BackendError::Tls { .. } => true,
        BackendError::Server { code, .. } => code.starts_with("57P"),
        // pgmux's own refusal (`pool.server_auth`) says nothing about the server's health.
        BackendError::Protocol { .. } | BackendError::AuthRefused { .. } | BackendError::PassThrough { .. } => false,
    }
}

impl Cluster {
    pub fn new(
        servers: Vec<String>,
        settings: PoolSettings,
        routing: ReadRouting,
        (down_after, up_after): (usize, usize),
        users: Arc<ArcSwap<UserDirectory>>,
    ) -> Cluster {
        let names = names::Names::new(&servers, Duration::from_secs(1));
        let servers = names.members();
        Cluster {
            names: Mutex::new(names),
            resolver: Arc::new(names::SystemResolver),
            resolving: tokio::sync::Mutex::new(()),
            topology: Mutex::new(topology::Topology::new(&servers, down_after, up_after)),
            routing: ArcSwap::from_pointee(routing),
            servers: ArcSwap::from_pointee(servers),
            primary: tokio::sync::watch::Sender::new(None),
            failover: Mutex::new(Failover::default()),
            discovering: tokio::sync::Mutex::new(None),
            problems: Mutex::new(String::new()),
            probe_now: tokio::sync::Notify::new(),
            rivals: Mutex::new(Vec::new()),
            pools: Pools::default(),
            settings: ArcSwap::from_pointee(settings),
            users,
            prober: Mutex::new(None),
            probe_login: Mutex::new(None),
            lookup: Default::default(),
        }
    }

    /// Resolves host names with `resolver`, at most once per `min_interval`.
    pub fn with_resolver(mut self, resolver: Arc<dyn names::Resolve>, min_interval: Duration) -> Cluster {
        self.resolver = resolver;
        self.names_state().min_interval = min_interval;
        self
    }

    /// Every member (configured addresses, and the addresses configured names resolve to).
    pub fn servers(&self) -> Arc<Vec<Arc<str>>> {
        self.servers.load_full()
    }

    fn names_state(&self) -> std::sync::MutexGuard<'_, names::Names> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves the configured host names again if the minimum interval has passed since the
    /// last time (and no other resolution runs), and follows what they resolve to now: a new
    /// address is a new member (probed), a vanished one is removed as a reload removes a server.
    pub async fn refresh_names(&self) {
        let Some(to_resolve) = ({
            let mut n = self.names_state();
            n.start_if_due(Instant::now()).then(|| n.to_resolve())
        }) else {
            return;
        };
        let Ok(_one) = self.resolving.try_lock() else { return };
        let timeout = self.settings.load().connect_timeout;
        let answers = names::resolve_all(&*self.resolver, to_resolve, timeout).await;
        let members = {
            let mut n = self.names_state();
            for (host, port, addrs) in &answers {
                n.resolved(host, *port, addrs);
            }
            n.members()
        };
        self.set_members(members, "a host name resolves to other addresses now");
    }

    /// Follows a new member list: new members start unprobed, removed ones get no new work (their
    /// pools are retired; transactions running there finish), a removed primary is lost.
    fn set_members(&self, servers: Vec<Arc<str>>, why: &str) {
        let old = self.servers();
        if *old == servers {
            return;
        }
        let removed: Vec<Arc<str>> = old.iter().filter(|s| !servers.contains(s)).cloned().collect();
        let added: Vec<&Arc<str>> = servers.iter().filter(|s| !old.contains(s)).collect();
        tracing::info!(event = "servers_changed", added = ?added, removed = ?removed, reason = why, "server members changed");
        self.topology().set_servers(&servers);
        self.servers.store(Arc::new(servers));
        for pool in self.pools.all().into_iter().filter(|p| removed.contains(&p.key.server)) {
            pool.retire(false);
        }
        if let Some(p) = self.primary()
            && removed.contains(&p)
        {
            self.set_primary(None, why);
            self.follow_election(why);
        }
        self.probe_now.notify_one();
    }

    /// Applies reloaded settings: pool sizes and logins (passwords, timeouts, init_query) of every
    /// pool, routing, health thresholds, and the server list — a server no longer listed gets no
    /// new work (its pools are retired; transactions running there finish), a new one is probed.
    pub fn apply(
        &self,
        settings: PoolSettings,
        routing: ReadRouting,
        servers: Vec<String>,
        health: (usize, usize),
        resolve_interval: Duration,
    ) {
        let members = {
            let mut n = self.names_state();
            n.set(&servers);
            n.min_interval = resolve_interval;
            n.members()
        };
        self.topology().reconfigure(&self.servers(), health.0, health.1);
        self.settings.store(Arc::new(settings));
        self.routing.store(Arc::new(routing));
        self.set_members(members, "it was removed from the configuration");
        let servers = self.servers();
        for pool in self.pools.all() {
            if !servers.contains(&pool.key.server) {
                continue;
            }
            match self.login(&pool.key.database, &pool.key.user) {
                Ok(login) => pool.reconfigure(login, self.settings.load().size),
                // The user is gone: its pools serve the sessions still open, no new logins.
                Err(_) => pool.retire(false),
            }
        }
        self.probe_now.notify_one();
    }

    pub fn primary(&self) -> Option<Arc<str>> {
        self.primary.borrow().clone()
    }

    fn failover_state(&self) -> std::sync::MutexGuard<'_, Failover> {
        self.failover.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Failover counts and timings.
    pub fn failover_stats(&self) -> FailoverStats {
        let f = self.failover_state();
        FailoverStats { in_progress: f.lost_at.is_some(), ..f.stats.clone() }
    }

    /// Follows `server` as the primary (None: no primary known). Logs and counts each step of a
    /// failover; the lost primary's pooled connections are all discarded once another takes over.
    fn set_primary(&self, server: Option<Arc<str>>, why: &str) {
        let previous = self.primary();
        if previous == server {
            return;
        }
        let now = Instant::now();
        let mut f = self.failover_state();
        let mut retire = None;
        match &server {
            None => {
                let detect = f.suspected_at.take().map(|t| now.saturating_duration_since(t)).unwrap_or_default();
                f.lost_at = Some(now);
                f.stats.last_detect_ms = Some(detect.as_millis() as u64);
                f.stats.losses += 1;
                f.stats.detect_ms_total += detect.as_millis() as u64;
                tracing::warn!(
                    event = "primary_lost",
                    server = ?previous.as_deref(),
                    reason = why,
                    detect_ms = detect.as_millis() as u64,
                    "failover: primary lost; holding new transactions until a primary is known"
                );
                if previous.is_some() {
                    f.lost = previous.clone();
                }
            }
            Some(new) => {
                f.suspected_at = None;
                if let Some(lost_at) = f.lost_at.take() {
                    let recover = now.saturating_duration_since(lost_at);
                    f.stats.last_recover_ms = Some(recover.as_millis() as u64);
                    f.stats.recover_ms_total += recover.as_millis() as u64;
                    let same = f.lost.as_deref() == Some(&**new);
                    if same {
                        f.stats.recoveries += 1;
                    } else {
                        f.stats.failovers += 1;
                    }
                    tracing::warn!(
                        event = "primary_found",
                        server = %new,
                        previous = ?f.lost.as_deref(),
                        recover_ms = recover.as_millis() as u64,
                        "failover: following {} as the primary",
                        if same { "the same server again" } else { "a new server" }
                    );
                } else {
                    tracing::info!(event = "primary_found", server = %new, previous = ?previous.as_deref(), reason = why, "following the primary");
                }
                retire = previous.or_else(|| f.lost.take()).filter(|old| old != new);
                f.lost = None;
            }
        }
        drop(f);
        if let Some(old) = retire {
            self.retire_pools_of(&old);
        }
        if let Some(new) = &server {
            // Idle connections opened while it was a replica still carry `in_hot_standby = on`
            // until their next query: they would each look like a demotion.
            // (Greetings remembered then say so too: a writer login never uses those, see
            // `handshake::remembered`.)
            for pool in self.pools.all().into_iter().filter(|p| p.key.server == *new) {
                pool.discard_idle_where(|c| c.is_standby() == Some(true));
            }
        }
        self.primary.send_replace(server);
    }

    /// The cluster behind the configured addresses was replaced (re-provisioned, restored): its
    /// new primary is followed, on whatever timeline it starts. Logged and counted once.
    fn cluster_replaced(&self, (old, new): (u64, u64), primary: Option<&str>) {
        self.failover_state().stats.clusters_replaced += 1;
        tracing::warn!(
            event = "cluster_replaced",
            old_system_id = old,
            new_system_id = new,
            primary = ?primary,
            "failover: the servers now belong to another cluster (new system identifier); following its primary, its timelines counted afresh"
        );
        // Whatever was pooled belongs to servers that no longer exist.
        for pool in self.pools.all() {
            pool.retire(false);
        }
    }

    /// Discards every connection to `server`, cutting those in use: what runs there fails now.
    fn retire_pools_of(&self, server: &str) {
        for pool in self.pools.all().into_iter().filter(|p| &*p.key.server == server) {
            pool.retire(true);
        }
    }

    /// The primary is gone or is no longer one (`why`): stop following it, and look for one.
    pub fn primary_lost(&self, server: &Arc<str>, why: &str) {
        if self.primary().as_deref() != Some(&**server) {
            return;
        }
        self.topology().mark_down(server);
        self.follow_election(why);
        self.probe_now.notify_one();
    }

    /// A fresh connection to `server` found it in recovery: it counts as a replica until a probe
    /// round started after now finds otherwise (so no stale probe can flip the election back),
    /// and if it was the primary, that primary is lost.
    fn saw_standby(&self, server: &Arc<str>) {
        tracing::debug!(server = %server, "a fresh connection found the server in recovery");
        self.topology().saw_standby(server);
        self.follow_election("it is in recovery (demoted)");
        self.probe_now.notify_one();
    }

    /// A server connection to `server` failed unexpectedly: if it is the primary, the prober
    /// checks it at once (and declares it lost on the first failed probe).
    pub fn suspect(&self, server: &Arc<str>) {
        if self.primary().as_deref() != Some(&**server) {
            return;
        }
        self.failover_state().suspected_at.get_or_insert_with(Instant::now);
        self.probe_now.notify_one();
    }

    fn suspected(&self, server: &str) -> bool {
        self.primary().as_deref() == Some(server) && self.failover_state().suspected_at.is_some()
    }

    /// Re-runs the election on the latest topology and follows its outcome.
    fn follow_election(&self, why: &str) {
        let current = self.primary();
        let election = self.topology().elect(current.as_deref());
        {
            let mut rivals = self.rivals.lock().unwrap_or_else(|e| e.into_inner());
            if *rivals != election.rivals {
                if !election.rivals.is_empty() {
                    tracing::error!(
                        event = "split_brain",
                        following = ?election.primary.as_deref(),
                        rivals = ?election.rivals,
                        "split brain: more than one server claims to be the primary; writes go only to the one followed (newest timeline)"
                    );
                }
                *rivals = election.rivals.clone();
            }
        }
        if let Some(ids) = election.replaced {
            self.cluster_replaced(ids, election.primary.as_deref());
        }
        if election.primary != current {
            let why = if election.primary.is_some() { "a probe found it" } else { why };
            self.set_primary(election.primary, why);
        }
    }

    fn login(&self, database: &str, user: &str) -> Result<LoginParams, ClusterError> {
        let secret = self.users.load().get(user).ok_or_else(|| ClusterError::UnknownUser(user.into()))?;
        let settings = self.settings.load();
        Ok(LoginParams {
            user: user.to_string(),
            secret: secret.server.clone(),
            database: database.to_string(),
            connect_timeout: settings.connect_timeout,
            init_query: settings.init_query.clone(),
            tls: settings.tls.clone(),
            server_auth: settings.server_auth.clone(),
        })
    }

    pub fn pool(&self, server: Arc<str>, database: &str, user: &str) -> Result<Arc<Pool>, ClusterError> {
        let login = self.login(database, user)?;
        let key = PoolKey { server, database: database.to_string(), user: user.to_string() };
        let size = self.settings.load().size;
        Ok(self.pools.get_or_create(key, |k| Pool::new(k.clone(), login, size)))
    }

    /// The pool a login for (database, user) would borrow its first connection from, if it exists:
    /// the primary's, or with `reader` a replica's the reader endpoint may use now.
    pub fn login_pool(&self, reader: bool, database: &str, user: &str) -> Option<Arc<Pool>> {
        let key = |server| PoolKey { server, database: database.to_string(), user: user.to_string() };
        if !reader {
            return self.pools.get(&key(self.primary()?));
        }
        let readable = self.topology().readable_replicas(self.routing.load().max_replica_lag, None);
        readable.into_iter().find_map(|s| self.pools.get(&key(s)))
    }

    /// Borrows a connection to the primary for (database, user). `hint` is the pool the caller used
    /// last: when it still points at the primary, the lookup is skipped. With no primary known (a
    /// failover), waits for one until `timeout` runs out.
    pub async fn checkout_primary(
        &self,
        hint: Option<&Arc<Pool>>,
        database: &str,
        user: &str,
        timeout: Duration,
    ) -> Result<Pooled, ClusterError> {
        // The clock is read only once the first attempt fails: the common borrow reads none here.
        let mut deadline: Option<Instant> = None;
        loop {
            let primary = match self.primary() {
                Some(p) => p,
                None => {
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                    self.wait_for_primary(database, user, deadline).await?
                }
            };
            let pool = match hint {
                Some(h) if Arc::ptr_eq(&h.key.server, &primary) || *h.key.server == *primary => h.clone(),
                _ => self.pool(primary.clone(), database, user)?,
            };
            let remaining = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            match pool.checkout(remaining).await {
                Ok(conn) if conn.is_standby() == Some(true) => {
                    // A reused connection's flag dates from when it was opened (a replica since
                    // promoted): only a fresh one says what the server is now.
                    if conn.is_fresh() {
                        drop(conn);
                        self.saw_standby(&primary);
                    }
                }
                Ok(conn) if conn.is_fresh() => {
                    // A new server connection: the moment to see whether the names moved.
                    self.refresh_names().await;
                    if self.servers().contains(&primary) {
                        return Ok(conn);
                    }
                }
                Ok(conn) => return Ok(conn),
                Err(PoolError::Connect(e)) if !server_unavailable(&e) => {
                    let key = pool.key.clone();
                    drop(pool);
                    self.pools.remove_if_unused(&key);
                    return Err(PoolError::Connect(e).into());
                }
                Err(PoolError::Connect(e)) => {
                    self.primary_lost(&primary, &e.to_string());
                    let key = pool.key.clone();
                    drop(pool);
                    self.pools.remove_if_unused(&key);
                    *self.problems.lock().unwrap_or_else(|e| e.into_inner()) = e.to_string();
                }
                Err(e) => return Err(e.into()),
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            if Instant::now() >= deadline {
                return Err(ClusterError::NoPrimary(self.problems.lock().unwrap_or_else(|e| e.into_inner()).clone()));
            }
        }
    }

    /// Waits until a primary is known or `deadline` passes, asking the servers now and then.
    async fn wait_for_primary(&self, database: &str, user: &str, deadline: Instant) -> Result<Arc<str>, ClusterError> {
        let mut watch = self.primary.subscribe();
        loop {
            if let Some(p) = watch.borrow_and_update().clone() {
                return Ok(p);
            }
            // This client's own discovery waits for every server's answer (one that accepts but
            // answers slowly holds it up to its connect timeout): a primary found meanwhile, by
            // the prober or another client, ends the wait at once.
            tokio::select! {
                _ = watch.changed() => continue,
                found = self.discover(database, user) => found?,
            }
            if let Some(p) = self.primary() {
                return Ok(p);
            }
            let now = Instant::now();
            if now >= deadline {
                let problems = self.problems.lock().unwrap_or_else(|e| e.into_inner()).clone();
                return Err(ClusterError::NoPrimary(problems));
            }
            let _ = tokio::time::timeout_at((now + DISCOVERY_EVERY).min(deadline).into(), watch.changed()).await;
        }
    }

    /// Probes every server and follows the election. One at a time, at most every
    /// DISCOVERY_EVERY. It logs in as the prober does (a client's own login would be one more
    /// connection the server counts against that user); if the servers refuse the prober's login,
    /// discovery uses the client's from then on (so a broken prober login cannot hide the primary),
    /// and a login the servers refuse is then the client's error.
    async fn discover(&self, database: &str, user: &str) -> Result<(), ClusterError> {
        let Ok(mut last) = self.discovering.try_lock() else {
            return Ok(());
        };
        if last.is_some_and(|t| t.elapsed() < DISCOVERY_EVERY) {
            return Ok(());
        }
        *last = Some(Instant::now());
        self.refresh_names().await;
        let probe_login = self.probe_login.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let as_prober = probe_login.is_some();
        let mut login = match probe_login {
            Some(l) => l,
            None => self.login(database, user)?,
        };
        login.connect_timeout = login.connect_timeout.min(Duration::from_secs(2));
        login.init_query.clear();
        let round = self.start_probe_round();
        let servers = self.servers();
        let probes = servers.iter().map(|server| {
            let login = &login;
            async move {
                let mut conn = None;
                let r = tokio::time::timeout(login.connect_timeout, probe::probe(server, &mut conn, login)).await;
                (server, r.unwrap_or_else(|_| Err(probe::ProbeError::Timeout)))
            }
        });
        let results = futures_util::future::join_all(probes).await;
        let mut problems = Vec::new();
        for (server, result) in results {
            match result {
                Ok(p) => self.record_probe(server, round, Some(p), Instant::now()),
                Err(probe::ProbeError::Refused(e)) if !server_unavailable(&e) && as_prober => {
                    tracing::warn!(server = %server, error = %e, "the servers refuse the prober's login; discovery uses the clients' own");
                    *self.probe_login.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    problems.push(format!("{server}: {e}"));
                }
                Err(probe::ProbeError::Refused(e)) if !server_unavailable(&e) => {
                    return Err(PoolError::Connect(e).into());
                }
                Err(e) => {
                    problems.push(format!("{server}: {e}"));
                    self.record_probe(server, round, None, Instant::now());
                }
            }
        }
        if self.primary().is_none() {
            problems.push("no server reports being a primary".into());
        }
        *self.problems.lock().unwrap_or_else(|e| e.into_inner()) = problems.join("; ");
        Ok(())
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

    /// Records one probe's outcome and follows the primary it implies. A failed probe of a primary
    /// already suspected (a server connection to it broke) declares it lost at once.
    fn record_probe(&self, server: &Arc<str>, round: u64, probe: Option<topology::Probe>, now: Instant) {
        let failed = probe.is_none();
        let fail_fast = failed && self.suspected(server);
        let flipped = self.topology().record(server, round, probe, now);
        match flipped {
            Some(true) => tracing::info!(event = "server_up", server = %server, "server up"),
            Some(false) => tracing::warn!(event = "server_down", server = %server, "server down"),
            None => {}
        }
        if fail_fast {
            self.topology().mark_down(server);
        } else if !failed && self.primary().as_deref() == Some(&**server) {
            self.failover_state().suspected_at = None;
        }
        self.follow_election("it failed its health checks");
    }

    /// Every server's health, role and lag, for status output.
    pub fn servers_view(&self) -> Vec<topology::ServerView> {
        self.topology().view()
    }

    /// Starts the prober, logging in as `user` to `database`.
    pub fn spawn_prober(self: &Arc<Self>, user: &str, database: &str, interval: Duration, stop: CancellationToken) {
        match self.login(database, user) {
            Ok(login) => {
                // One prober at a time: a new one (after a reload) replaces the old.
                *self.probe_login.lock().unwrap_or_else(|e| e.into_inner()) = Some(login.clone());
                let mine = stop.child_token();
                if let Some(old) = self.prober.lock().unwrap_or_else(|e| e.into_inner()).replace(mine.clone()) {
                    old.cancel();
                }
                let span = tracing::info_span!("prober");
                tokio::spawn(probe::run(self.clone(), login, interval, mine).instrument(span));
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
        let readable = self.topology().readable_replicas(self.routing.load().max_replica_lag, wrote_in);
        for server in readable {
            candidates.push(self.pool(server, database, user)?);
        }
        // Least work in flight first; ties go round in a random order, so idle replicas share the
        // load too (a plain rotation lands every client on one replica when each client borrows a
        // fixed number of times, e.g. once to log in and once for its one query).
        let n = candidates.len().max(1);
        let turn = rand::random_range(0..n);
        let mut ranked: Vec<(usize, usize, Arc<Pool>)> =
            candidates.into_iter().enumerate().map(|(i, p)| (p.borrowed_count(), (i + n - turn) % n, p)).collect();
        ranked.sort_by_key(|(load, order, _)| (*load, *order));
        let candidates: Vec<Arc<Pool>> = ranked.into_iter().map(|(_, _, p)| p).collect();
        for pool in candidates {
            match pool.checkout(timeout).await {
                Ok(conn) if conn.is_standby() == Some(false) => {
                    // Promoted: it leaves the reader set once the prober has seen it (asked now).
                    tracing::warn!(server = %pool.key.server, "replica is no longer in recovery; not used for reads");
                    drop(conn);
                    pool.retire(false);
                    self.probe_now.notify_one();
                }
                Ok(conn) if conn.is_fresh() => {
                    self.refresh_names().await;
                    if self.servers().contains(&pool.key.server) {
                        return Ok(conn);
                    }
                }
                Ok(conn) => return Ok(conn),
                Err(PoolError::Connect(e)) if matches!(e, BackendError::Server { .. }) || !server_unavailable(&e) => {
                    return Err(PoolError::Connect(e).into());
                }
                Err(PoolError::Connect(e)) => {
                    tracing::debug!(error = %e, "replica connect failed");
                    self.topology().mark_down(&pool.key.server);
                    pool.clear_idle();
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !self.routing.load().fallback_to_primary {
            return Err(ClusterError::NoReplica);
        }
        self.checkout_primary(None, database, user, timeout).await
    }

    /// Closes connections idle longer than the configured idle timeout, in every pool.
    pub fn close_idle(&self) {
        let idle_timeout = self.settings.load().idle_timeout;
        for pool in self.pools.all() {
            let n = pool.close_idle_older_than(idle_timeout);
            if n > 0 {
                tracing::debug!(server = %pool.key.server, database = %pool.key.database, user = %pool.key.user, closed = n, "closed idle server connections");
            }
        }
    }
}
