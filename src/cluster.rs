//! The servers behind pgmux and which one is the primary, plus the pools to each.
//!
//! Roles are discovered, never configured: the first reachable server that is not in recovery is the
//! primary, and a connection that turns out to be a standby is never used for the primary's work.
//!
//! Here: members and reloads, borrowing from the primary, and carrying out the failover state
//! machine's events (logging, counting, cutting connections, telling waiters). Beside it:
//! `topology` (what each server is, and the election), `failover` (the primary followed, as
//! transitions returning events), `discovery` (clients asking the servers, with the login
//! fallback), `probe` (the prober and its lifecycle), `replicas` (ranking and borrowing for
//! reads), `names` (host names resolved again), `lookup` (`auth.query`), `collector` (metrics).

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub mod collector;
pub mod discovery;
pub mod failover;
pub mod lookup;
pub mod names;
pub mod probe;
pub mod replicas;
pub mod topology;

pub use failover::FailoverStats;

use crate::auth::UserDirectory;
use crate::backend::{BackendError, LoginParams};
use crate::pool::{Pool, PoolError, PoolKey, Pooled, Pools, WaitTimer};

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

/// The failover state machine and the counts of what it reported.
#[derive(Debug, Default)]
struct Failover {
    state: failover::Failover,
    stats: FailoverStats,
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
    /// (Published from `failover`'s state, under its lock.)
    primary: tokio::sync::watch::Sender<Option<Arc<str>>>,
    /// The same, for the borrow path: read without the watch's lock or an `Arc` count, which
    /// every worker would otherwise write on each transaction (a cache line passed between cores).
    primary_now: arc_swap::ArcSwapOption<Arc<str>>,
    /// `topology`'s latest probe round, read per transaction without its lock.
    round: std::sync::atomic::AtomicU64,
    /// The primary followed and the failover in progress, with counts of past ones.
    failover: Mutex<Failover>,
    /// Health, roles and lag of every server, from the prober, discovery and failed connects.
    topology: Mutex<topology::Topology>,
    routing: ArcSwap<ReadRouting>,
    /// One discovery at a time, and not more often than DISCOVERY_EVERY: a storm of clients must
    /// not each probe every server.
    discovering: tokio::sync::Mutex<Option<Instant>>,
    /// Discovery's login and why the last attempt to reach a primary failed.
    discovery: Mutex<discovery::Discovery>,
    /// Asks the prober for a round now.
    probe_now: tokio::sync::Notify,
    pub pools: Pools,
    settings: ArcSwap<PoolSettings>,
    users: Arc<ArcSwap<UserDirectory>>,
    /// Stops the running prober (a reload replaces it).
    prober: Mutex<Option<CancellationToken>>,
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
            primary_now: arc_swap::ArcSwapOption::empty(),
            round: std::sync::atomic::AtomicU64::new(0),
            failover: Mutex::new(Failover::default()),
            discovering: tokio::sync::Mutex::new(None),
            discovery: Mutex::default(),
            probe_now: tokio::sync::Notify::new(),
            pools: Pools::default(),
            settings: ArcSwap::from_pointee(settings),
            users,
            prober: Mutex::new(None),
            lookup: Default::default(),
        }
    }

    /// Resolves host names with `resolver`, at most once per `min_interval`.
    pub fn with_resolver(mut self, resolver: Arc<dyn names::Resolve>, min_interval: Duration) -> Cluster {
        self.resolver = resolver;
        self.names_state().min_interval = min_interval;
        self
    }

    /// Gives every pool a shard per core of `cores` (before any pool exists).
    pub fn with_cores(mut self, cores: crate::pool::cores::Cores) -> Cluster {
        self.pools = Pools::on_cores(cores);
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
            let mut f = self.failover_state();
            let events = f.state.drop_primary(why, Instant::now());
            self.follow(f, events, why);
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

    /// Whether `server` is the primary followed now (the borrow path's check of its last pool).
    fn is_primary(&self, server: &Arc<str>) -> bool {
        self.primary_now.load().as_deref().is_some_and(|p| Arc::ptr_eq(p, server) || **p == **server)
    }

    fn failover_state(&self) -> std::sync::MutexGuard<'_, Failover> {
        self.failover.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Failover counts and timings.
    pub fn failover_stats(&self) -> FailoverStats {
        let f = self.failover_state();
        FailoverStats { in_progress: f.state.in_progress(), ..f.stats.clone() }
    }

    /// Re-runs the election on the latest topology and follows its outcome (`why`: the reason
    /// logged if it finds no primary).
    fn follow_election(&self, why: &str) {
        self.follow(self.failover_state(), Vec::new(), why);
    }

    /// Completes a failover transition under its lock `f`: runs the election on the latest
    /// topology, then logs, counts and acts on `events` and those the election causes, and
    /// publishes the primary followed. (Under the lock: the primary published is the one
    /// followed last, and the old one's connections are cut before waiters learn of the new.)
    fn follow(&self, mut f: std::sync::MutexGuard<'_, Failover>, mut events: Vec<failover::Event>, why: &str) {
        let election = self.topology().elect(f.state.primary().map(|p| &**p));
        events.extend(f.state.follow(election, why, Instant::now()));
        for event in &events {
            f.stats.count(event);
            self.act_on(event);
        }
        let primary = f.state.primary().cloned();
        self.primary.send_if_modified(|p| {
            let changed = *p != primary;
            if changed {
                self.primary_now.store(primary.clone().map(Arc::new));
            }
            *p = primary;
            changed
        });
    }

    /// Logs one failover event and does what it asks for.
    fn act_on(&self, event: &failover::Event) {
        use failover::Event;
        match event {
            Event::PrimaryLost { server, reason, detect } => tracing::warn!(
                event = "primary_lost",
                server = ?Some(&**server),
                reason = reason.as_str(),
                detect_ms = detect.as_millis() as u64,
                "failover: primary lost; holding new transactions until a primary is known"
            ),
            Event::PrimaryFound { server, previous, reason, recovered } => {
                match recovered {
                    Some(r) => tracing::warn!(
                        event = "primary_found",
                        server = %server,
                        previous = ?previous.as_deref(),
                        recover_ms = r.after.as_millis() as u64,
                        "failover: following {} as the primary",
                        if r.same { "the same server again" } else { "a new server" }
                    ),
                    None => {
                        tracing::info!(event = "primary_found", server = %server, previous = ?previous.as_deref(), reason = reason.as_str(), "following the primary")
                    }
                }
                if let Some(old) = previous.as_ref().filter(|old| *old != server) {
                    self.retire_pools_of(old);
                }
                // Idle connections opened while it was a replica still carry `in_hot_standby = on`
                // until their next query: they would each look like a demotion.
                // (Greetings remembered then say so too: a writer login never uses those, see
                // `handshake::remembered`.)
                for pool in self.pools.all().into_iter().filter(|p| p.key.server == *server) {
                    pool.discard_idle_where(|c| c.is_standby() == Some(true));
                }
            }
            Event::SplitBrain { following, rivals } => tracing::error!(
                event = "split_brain",
                following = ?following.as_deref(),
                rivals = ?rivals,
                "split brain: more than one server claims to be the primary; writes go only to the one followed (newest timeline)"
            ),
            // The cluster behind the configured addresses was replaced (re-provisioned, restored):
            // its new primary is followed, on whatever timeline it starts.
            Event::ClusterReplaced { old, new, primary } => {
                tracing::warn!(
                    event = "cluster_replaced",
                    old_system_id = *old,
                    new_system_id = *new,
                    primary = ?primary.as_deref(),
                    "failover: the servers now belong to another cluster (new system identifier); following its primary, its timelines counted afresh"
                );
                // Whatever was pooled belongs to servers that no longer exist.
                for pool in self.pools.all() {
                    pool.retire(false);
                }
            }
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
        if self.failover_state().state.suspect(server, Instant::now()) {
            self.probe_now.notify_one();
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
        Ok(self.pools.get_or_create(key, |k| Pool::on_cores(k.clone(), login, size, self.pools.cores().clone())))
    }

    /// `user`'s pools log in with the secret the user directory holds now (`auth.query` found the
    /// user anew, perhaps with another verifier): a connection opened later must not use a key
    /// the server no longer accepts, whichever pool or core it is opened for.
    pub fn follow_user(&self, user: &str) {
        for pool in self.pools.all().into_iter().filter(|p| p.key.user == user) {
            if let Ok(login) = self.login(&pool.key.database, user) {
                pool.set_login(login);
            }
        }
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

    /// `hint` (the pool a borrower used last) if it still serves the primary: the common borrow
    /// takes its connection from it directly, then asks `settled_primary_loan` about the loan. No
    /// `Arc` count or lock shared with other workers is written to find that out.
    pub fn hinted_primary<'a>(&self, hint: Option<&'a Arc<Pool>>) -> Option<&'a Arc<Pool>> {
        hint.filter(|h| self.is_primary(&h.key.server))
    }

    /// Whether a connection lent by the `hinted_primary` pool can go to the borrower as it is: a
    /// reused connection not known as a standby. A fresh one (the moment to see whether the names
    /// moved) or a standby goes to `checkout_primary` as its `first` outcome.
    pub fn settled_primary_loan(&self, conn: &Pooled) -> bool {
        !conn.is_fresh() && conn.is_standby() != Some(true)
    }

    /// Borrows a connection to the primary for (database, user). `hint` is the pool the caller used
    /// last: when it still points at the primary, the lookup is skipped. `first` is what a borrow
    /// the caller already made from `hint` gave (see `hinted_primary`): it is looked at first.
    /// With no primary known (a failover), waits for one until `timeout` runs out.
    pub async fn checkout_primary(
        &self,
        hint: Option<&Arc<Pool>>,
        mut first: Option<Result<Pooled, PoolError>>,
        database: &str,
        user: &str,
        timeout: Duration,
        timer: &mut WaitTimer,
    ) -> Result<Pooled, ClusterError> {
        // The clock is read only once the first attempt fails: the common borrow reads none here.
        let mut deadline: Option<Instant> = None;
        loop {
            let mut found = None;
            let pool = match hint {
                // The pool the caller's own attempt was made on.
                Some(h) if first.is_some() => h,
                // The caller's last pool still serves the primary: no lookup.
                Some(h) if self.is_primary(&h.key.server) => h,
                _ => {
                    let primary = match self.primary() {
                        Some(p) => p,
                        None => {
                            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                            // Boxed: only a failover waits here, and inline this wait would size
                            // every client's task (memory per client).
                            Box::pin(self.wait_for_primary(database, user, deadline)).await?
                        }
                    };
                    &*found.insert(self.pool(primary, database, user)?)
                }
            };
            let primary = &pool.key.server;
            let outcome = match first.take() {
                Some(outcome) => outcome,
                None => {
                    let remaining = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
                    pool.checkout(remaining, timer).await
                }
            };
            match outcome {
                Ok(conn) if conn.is_standby() == Some(true) => {
                    // A reused connection's flag dates from when it was opened (a replica since
                    // promoted): only a fresh one says what the server is now.
                    if conn.is_fresh() {
                        drop(conn);
                        self.saw_standby(primary);
                    }
                }
                Ok(conn) if conn.is_fresh() => {
                    // A new server connection: the moment to see whether the names moved.
                    self.refresh_names().await;
                    if self.servers().contains(primary) {
                        return Ok(conn);
                    }
                }
                Ok(conn) => return Ok(conn),
                Err(PoolError::Connect(e)) if !server_unavailable(&e) => {
                    let key = pool.key.clone();
                    drop(found);
                    self.pools.remove_if_unused(&key);
                    return Err(PoolError::Connect(e).into());
                }
                Err(PoolError::Connect(e)) => {
                    self.primary_lost(primary, &e.to_string());
                    let key = pool.key.clone();
                    drop(found);
                    self.pools.remove_if_unused(&key);
                    self.set_problems(e.to_string());
                }
                Err(e) => return Err(e.into()),
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            if Instant::now() >= deadline {
                return Err(ClusterError::NoPrimary(self.problems()));
            }
        }
    }

    fn topology(&self) -> std::sync::MutexGuard<'_, topology::Topology> {
        self.topology.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The probe round in progress: a write that ends now is covered by the next round's reading.
    pub fn probe_round(&self) -> u64 {
        self.round.load(std::sync::atomic::Ordering::Acquire)
    }

    fn start_probe_round(&self) -> u64 {
        let mut topology = self.topology();
        let round = topology.start_round();
        self.round.store(round, std::sync::atomic::Ordering::Release);
        round
    }

    /// Records one probe's outcome and follows the primary it implies. A failed probe of a primary
    /// already suspected (a server connection to it broke) declares it lost at once.
    fn record_probe(&self, server: &Arc<str>, round: u64, probe: Option<topology::Probe>, now: Instant) {
        let failed = probe.is_none();
        let fail_fast = failed && self.failover_state().state.suspected(server);
        let flipped = self.topology().record(server, round, probe, now);
        match flipped {
            Some(true) => tracing::info!(event = "server_up", server = %server, "server up"),
            Some(false) => tracing::warn!(event = "server_down", server = %server, "server down"),
            None => {}
        }
        if fail_fast {
            self.topology().mark_down(server);
        } else if !failed {
            self.failover_state().state.answered(server);
        }
        self.follow_election("it failed its health checks");
    }

    /// Every server's health, role and lag, for status output.
    pub fn servers_view(&self) -> Vec<topology::ServerView> {
        self.topology().view()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What the borrow path reads without locks (`is_primary`, `probe_round`) follows what the
    /// prober and failover publish under theirs.
    #[tokio::test]
    async fn the_borrow_path_sees_the_primary_and_round_published() {
        let c = test_cluster(&["p:1", "r:2"], 4, &[("app", "pw")]);
        let (p, r): (Arc<str>, Arc<str>) = ("p:1".into(), "r:2".into());
        assert_eq!(c.probe_round(), 0);
        assert!(!c.is_primary(&p));
        let round = c.start_probe_round();
        assert_eq!(c.probe_round(), round);
        let primary = topology::Probe {
            in_recovery: false,
            lsn: 5000,
            written: None,
            received: None,
            timeline: Some(1),
            system_id: None,
        };
        c.record_probe(&p, round, Some(primary), Instant::now());
        assert_eq!(c.primary().as_deref(), Some("p:1"));
        // Compared by name: a pool keyed by another `Arc` of the same address is the primary's.
        assert!(c.is_primary(&"p:1".into()) && !c.is_primary(&r));
        assert_eq!(c.start_probe_round(), round + 1);
        assert_eq!(c.probe_round(), round + 1);
        c.primary_lost(&p, "test");
        assert_eq!(c.primary(), None);
        assert!(!c.is_primary(&p));
    }
}
