//! One read of everything the operator interfaces report: clients with their pin reasons, pin
//! counters, servers, pools, failover counts, pause and drain state. GET /status renders it as
//! JSON and the SQL console as SHOW tables, so both always say the same.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::cluster::FailoverStats;
use crate::cluster::topology::ServerView;
use crate::state::ProxyState;
use crate::state::pins::PinReasons;
use crate::state::registry::ClientStatus;
use crate::state::settings::PoolMode;

/// The proxy's state at one moment (each part read once, without a global lock).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Connected clients, admin console sessions included, by id.
    pub clients: Vec<ClientStatus>,
    pub clients_connected: usize,
    pub pinned_now: i64,
    /// Pins begun since start, per reason, in `PinReasons::ALL` order.
    pub pins_by_reason: Vec<(&'static str, u64)>,
    /// The server followed as primary.
    pub primary: Option<String>,
    pub failover: FailoverStats,
    pub servers: Vec<ServerView>,
    /// By database, user, server.
    pub pools: Vec<PoolView>,
    pub paused: bool,
    /// Borrowers (transactions, logins) held by PAUSE right now.
    pub held_by_pause: usize,
    /// Borrowers between the pause gate and holding their connection.
    pub passing_pause: usize,
    pub draining: bool,
    /// `transaction` or `session`.
    pub pool_mode: &'static str,
}

/// One (server, database, user) pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    pub server: String,
    pub database: String,
    pub user: String,
    /// The server's role as last probed: primary, replica or unknown.
    pub role: &'static str,
    pub size: usize,
    pub borrowed: usize,
    pub idle: usize,
    pub waiting: usize,
    pub borrows: u64,
    pub opened: u64,
    pub discarded: u64,
    pub timeouts: u64,
}

/// Reads the proxy's state now.
pub fn snapshot(ctx: &ProxyState) -> Snapshot {
    // Borrowers passing the pause gate are counted before the clients holding connections: one
    // that leaves the gate in between is then seen holding (its connection names it before it
    // leaves).
    let passing_pause = ctx.pause.passing();
    let clients = ctx.cancels.status();
    let servers = ctx.cluster.servers_view();
    let role_of = |server: &str| servers.iter().find(|s| &*s.server == server).map_or("unknown", |s| s.role);
    let mut pools: Vec<PoolView> = ctx
        .cluster
        .pools
        .all()
        .into_iter()
        .map(|p| {
            let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            PoolView {
                server: p.key.server.to_string(),
                database: p.key.database.clone(),
                user: p.key.user.clone(),
                role: role_of(&p.key.server),
                size: p.size(),
                borrowed: p.borrowed_count(),
                idle: p.idle_count(),
                waiting: p.waiting_count(),
                borrows: count(&p.stats.borrows),
                opened: count(&p.stats.opened),
                discarded: count(&p.stats.discarded),
                timeouts: count(&p.stats.timeouts),
            }
        })
        .collect();
    pools.sort_by(|a, b| (&a.database, &a.user, &a.server).cmp(&(&b.database, &b.user, &b.server)));
    Snapshot {
        clients,
        clients_connected: ctx.connected(),
        pinned_now: ctx.pin_stats.pinned_now.load(Ordering::Relaxed),
        pins_by_reason: PinReasons::ALL.iter().map(|(r, name)| (*name, ctx.pin_stats.count(*r))).collect(),
        primary: ctx.cluster.primary().map(|p| p.to_string()),
        failover: ctx.cluster.failover_stats(),
        servers,
        pools,
        paused: ctx.pause.is_paused(),
        held_by_pause: ctx.pause.held(),
        passing_pause,
        draining: ctx.draining.is_cancelled(),
        pool_mode: match ctx.settings.load().mode {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        },
    }
}

/// Milliseconds, saturating.
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Snapshot {
    /// Clients that hold a server connection for a transaction right now: in transaction mode, a
    /// client without pins holds one only while a transaction (or a batch) runs. Pinned clients
    /// and clients in session mode keep theirs between transactions and are not counted.
    pub fn transactions_running(&self) -> usize {
        if self.pool_mode == "session" {
            return 0;
        }
        self.clients.iter().filter(|c| c.server.is_some() && c.pins.is_empty()).count()
    }

    /// Clients that keep a server connection between transactions (pinned, or session mode).
    pub fn holding_between_transactions(&self) -> usize {
        let session = self.pool_mode == "session";
        self.clients.iter().filter(|c| c.server.is_some() && (session || !c.pins.is_empty())).count()
    }

    /// GET /status.
    pub fn to_json(&self) -> Value {
        let clients: Vec<Value> = self
            .clients
            .iter()
            .map(|c| json!({ "id": c.pid, "user": c.user, "database": c.database, "server": c.server, "pins": c.pins }))
            .collect();
        let by_reason: serde_json::Map<String, Value> =
            self.pins_by_reason.iter().map(|(name, n)| (name.to_string(), json!(n))).collect();
        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|s| {
                json!({
                    "server": s.server.to_string(),
                    "up": s.up,
                    "role": s.role,
                    "timeline": s.timeline,
                    "lag_bytes": s.lag_bytes,
                    "lag_ms": s.lag.map(millis),
                })
            })
            .collect();
        let pools: Vec<Value> = self
            .pools
            .iter()
            .map(|p| {
                json!({
                    "server": p.server,
                    "database": p.database,
                    "user": p.user,
                    "role": p.role,
                    "size": p.size,
                    "borrowed": p.borrowed,
                    "idle": p.idle,
                    "waiting": p.waiting,
                    "borrows": p.borrows,
                    "opened": p.opened,
                    "discarded": p.discarded,
                    "timeouts": p.timeouts,
                })
            })
            .collect();
        json!({
            "clients": clients,
            "clients_connected": self.clients_connected,
            "pins": { "pinned_now": self.pinned_now, "by_reason": by_reason },
            "primary": self.primary,
            "failover": self.failover,
            "servers": servers,
            "pools": pools,
            "paused": self.paused,
            "held_by_pause": self.held_by_pause,
            "draining": self.draining,
        })
    }
}
