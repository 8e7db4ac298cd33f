//! The cluster's metrics, read at scrape time: every pool's connections and counters, every server's
//! health, role and lag, and failover counts. Nothing here runs per transaction.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::Cluster;
use crate::metrics::{Families, Kind, Spec, descs};

const POOL: &[&str] = &["server", "database", "user"];
const SERVER: &[&str] = &["server"];

macro_rules! spec {
    ($id:ident, $name:literal, $kind:ident, $labels:expr, $help:literal) => {
        static $id: Spec = Spec { name: $name, help: $help, kind: Kind::$kind, labels: $labels };
    };
}

spec!(OPEN, "pgmux_server_connections", Gauge, POOL, "Server connections open now (lent or idle).");
spec!(IDLE, "pgmux_server_connections_idle", Gauge, POOL, "Server connections idle in the pool now.");
spec!(TLS, "pgmux_server_connections_tls", Gauge, POOL, "Server connections open now that run over TLS.");
spec!(BORROWED, "pgmux_server_connections_borrowed", Gauge, POOL, "Server connections lent to clients now.");
spec!(
    IN_TX,
    "pgmux_server_connections_in_transaction",
    Gauge,
    POOL,
    "Server connections in a transaction now (approximated by those lent: a lent connection is in a transaction, or pinned, or in session mode)."
);
spec!(WAITING, "pgmux_borrow_waiting", Gauge, POOL, "Borrowers waiting for a server connection of the pool now.");
spec!(MAX, "pgmux_server_connections_max", Gauge, POOL, "Server connections allowed per pool (pool.size).");
spec!(
    REQUESTS,
    "pgmux_server_connection_requests_total",
    Counter,
    POOL,
    "Server connection attempts (logins to the server)."
);
spec!(
    SETUP_OK,
    "pgmux_server_connections_setup_succeeded_total",
    Counter,
    POOL,
    "Server connections opened and logged in."
);
spec!(
    SETUP_FAILED,
    "pgmux_server_connections_setup_failed_total",
    Counter,
    POOL,
    "Server connection attempts that failed (unreachable, refused, login error, timeout)."
);
spec!(
    DISCARDED,
    "pgmux_server_connections_discarded_total",
    Counter,
    POOL,
    "Server connections closed instead of reused (unknown state, retired server, failed idle check)."
);
spec!(BORROWS, "pgmux_borrows_total", Counter, POOL, "Server connections lent (one per transaction, or per session).");
spec!(
    BORROWS_OTHER_WORKER,
    "pgmux_borrows_other_worker_total",
    Counter,
    POOL,
    "Borrows served from another worker's share of the pool (the borrower's worker had no connection free)."
);
spec!(
    TIMEOUTS,
    "pgmux_borrow_timeouts_total",
    Counter,
    POOL,
    "Borrows that waited pool.borrow_timeout without getting a connection (ERROR 53300)."
);
spec!(
    QUERIES,
    "pgmux_queries_total",
    Counter,
    POOL,
    "Client requests relayed to servers: simple Query, extended-protocol Execute, FunctionCall messages (counted when the connection is given back)."
);
spec!(
    BORROW_WAIT,
    "pgmux_borrow_wait_seconds",
    Histogram,
    POOL,
    "Time a transaction waited for a server connection: from its first message to a connection in hand (0 when one was free)."
);
spec!(
    HELD,
    "pgmux_server_held_seconds",
    Histogram,
    POOL,
    "Time a client held a server connection: from lending to giving back, i.e. one transaction's time on the server as seen by pgmux (a whole session in session mode)."
);
spec!(
    TX,
    "pgmux_transaction_seconds",
    Histogram,
    POOL,
    "Time from a transaction's first message reaching pgmux to its server connection given back: borrow wait + held."
);
spec!(UP, "pgmux_server_up", Gauge, SERVER, "Whether the server passes its health checks (1) or not (0).");
spec!(
    ROLE,
    "pgmux_server_role",
    Gauge,
    &["server", "role"],
    "The server's role as last probed (primary, replica, unknown): 1 on the series of its current role."
);
spec!(IS_PRIMARY, "pgmux_server_is_primary", Gauge, SERVER, "Whether pgmux follows the server as the primary.");
spec!(
    LAG_SECONDS,
    "pgmux_replica_lag_seconds",
    Gauge,
    SERVER,
    "Replica lag measured by pgmux: time since the replica was last caught up (+Inf: never seen caught up)."
);
spec!(
    LAG_BYTES,
    "pgmux_replica_lag_bytes",
    Gauge,
    SERVER,
    "WAL bytes the replica has still to replay, against the primary's last probed position."
);
spec!(FAILOVERS, "pgmux_failovers_total", Counter, &[], "Primary lost, then another server followed as primary.");
spec!(LOSSES, "pgmux_primary_losses_total", Counter, &[], "Primaries declared lost.");
spec!(
    DETECT_SUM,
    "pgmux_failover_detect_seconds_total",
    Counter,
    &[],
    "Sum over primary losses of first sign of trouble to primary declared lost."
);
spec!(
    RECOVER_SUM,
    "pgmux_failover_recover_seconds_total",
    Counter,
    &[],
    "Sum over recoveries (failovers + recoveries) of primary lost to a primary followed again."
);
spec!(
    RECOVERIES,
    "pgmux_failover_recoveries_total",
    Counter,
    &[],
    "Primary lost, then the same server followed again."
);
spec!(
    DETECT,
    "pgmux_failover_last_detect_seconds",
    Gauge,
    &[],
    "Last failover: first sign of trouble to primary declared lost."
);
spec!(
    RECOVER,
    "pgmux_failover_last_recover_seconds",
    Gauge,
    &[],
    "Last failover: primary declared lost to a primary followed again."
);
spec!(
    REPLACED,
    "pgmux_clusters_replaced_total",
    Counter,
    &[],
    "Primaries followed from another cluster (a new system identifier at the servers' addresses)."
);
spec!(IN_PROGRESS, "pgmux_failover_in_progress", Gauge, &[], "1 while the primary is lost and no other is known.");

static SPECS: [&Spec; 32] = [
    &OPEN,
    &IDLE,
    &TLS,
    &BORROWED,
    &IN_TX,
    &WAITING,
    &MAX,
    &REQUESTS,
    &SETUP_OK,
    &SETUP_FAILED,
    &DISCARDED,
    &BORROWS,
    &BORROWS_OTHER_WORKER,
    &TIMEOUTS,
    &QUERIES,
    &BORROW_WAIT,
    &HELD,
    &TX,
    &UP,
    &ROLE,
    &IS_PRIMARY,
    &LAG_SECONDS,
    &LAG_BYTES,
    &FAILOVERS,
    &LOSSES,
    &DETECT_SUM,
    &RECOVER_SUM,
    &RECOVERIES,
    &DETECT,
    &RECOVER,
    &REPLACED,
    &IN_PROGRESS,
];

/// Reports a cluster's pools, servers and failovers.
#[derive(Debug)]
pub struct ClusterCollector {
    cluster: Arc<Cluster>,
    descs: Vec<Desc>,
}

impl ClusterCollector {
    pub fn new(cluster: Arc<Cluster>) -> ClusterCollector {
        ClusterCollector { cluster, descs: descs(&SPECS) }
    }

    fn pools(&self, out: &mut Families) {
        for pool in self.cluster.pools.all() {
            let k = &pool.key;
            let labels = [&*k.server, k.database.as_str(), k.user.as_str()];
            let s = &pool.stats;
            let borrowed = pool.borrowed_count() as f64;
            out.add(&OPEN, &labels, pool.open_count() as f64);
            out.add(&IDLE, &labels, pool.idle_count() as f64);
            out.add(&TLS, &labels, pool.tls_count() as f64);
            out.add(&BORROWED, &labels, borrowed);
            out.add(&IN_TX, &labels, borrowed);
            out.add(&WAITING, &labels, pool.waiting_count() as f64);
            out.add(&MAX, &labels, pool.size() as f64);
            for (spec, counter) in [
                (&REQUESTS, &s.connects),
                (&SETUP_OK, &s.opened),
                (&SETUP_FAILED, &s.connect_failures),
                (&DISCARDED, &s.discarded),
                (&BORROWS, &s.borrows),
                (&BORROWS_OTHER_WORKER, &s.borrows_other_worker),
                (&TIMEOUTS, &s.timeouts),
                (&QUERIES, &s.queries),
            ] {
                out.add(spec, &labels, counter.load(Ordering::Relaxed) as f64);
            }
            out.add_histogram(&BORROW_WAIT, &labels, &s.borrow_wait);
            out.add_histogram(&HELD, &labels, &s.held);
            out.add_histogram(&TX, &labels, &s.borrow_to_release);
        }
    }

    fn servers(&self, out: &mut Families) {
        let primary = self.cluster.primary();
        for s in self.cluster.servers_view() {
            let server = [&*s.server];
            out.add(&UP, &server, f64::from(u8::from(s.up)));
            out.add(&ROLE, &[&*s.server, s.role], 1.0);
            out.add(&IS_PRIMARY, &server, f64::from(u8::from(primary.as_deref() == Some(&*s.server))));
            if let Some(lag) = s.lag {
                let secs = if lag == std::time::Duration::MAX { f64::INFINITY } else { lag.as_secs_f64() };
                out.add(&LAG_SECONDS, &server, secs);
            }
            if let Some(bytes) = s.lag_bytes {
                out.add(&LAG_BYTES, &server, bytes as f64);
            }
        }
        let f = self.cluster.failover_stats();
        out.add(&FAILOVERS, &[], f.failovers as f64);
        out.add(&RECOVERIES, &[], f.recoveries as f64);
        out.add(&LOSSES, &[], f.losses as f64);
        out.add(&REPLACED, &[], f.clusters_replaced as f64);
        out.add(&DETECT_SUM, &[], f.detect_ms_total as f64 / 1000.0);
        out.add(&RECOVER_SUM, &[], f.recover_ms_total as f64 / 1000.0);
        if let Some(ms) = f.last_detect_ms {
            out.add(&DETECT, &[], ms as f64 / 1000.0);
        }
        if let Some(ms) = f.last_recover_ms {
            out.add(&RECOVER, &[], ms as f64 / 1000.0);
        }
        out.add(&IN_PROGRESS, &[], f64::from(u8::from(f.in_progress)));
    }
}

impl Collector for ClusterCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Families::new(&SPECS);
        self.pools(&mut out);
        self.servers(&mut out);
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::cluster::topology::Probe;
    use crate::metrics::Metrics;

    fn cluster() -> Arc<Cluster> {
        crate::cluster::test_cluster(&["p:1", "r:2"], 4, &[("app", "pw")])
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }

    #[test]
    fn pools_servers_and_failover_are_read_at_scrape_time() {
        let c = cluster();
        let m = Metrics::new();
        m.register(ClusterCollector::new(c.clone()));
        let text = m.render();
        // Before any probe: no pool, no primary, servers of unknown role, no lag.
        has(&text, "pgmux_server_is_primary{server=\"p:1\"} 0");
        has(&text, "pgmux_server_role{role=\"unknown\",server=\"r:2\"} 1");
        has(&text, "pgmux_failover_in_progress 0");
        assert!(!text.contains("pgmux_server_connections_max"), "{text}");
        assert!(!text.contains("pgmux_replica_lag_seconds"), "{text}");
        assert!(!text.contains("pgmux_failover_last_recover_seconds"), "{text}");

        let pool = c.pool("p:1".into(), "db", "app").unwrap();
        pool.stats.borrows.fetch_add(3, Ordering::Relaxed);
        pool.stats.borrow_wait.observe(0, std::time::Duration::ZERO);
        let round = c.start_probe_round();
        let primary =
            Probe { in_recovery: false, lsn: 5000, written: None, received: None, timeline: Some(1), system_id: None };
        c.record_probe(&"p:1".into(), round, Some(primary), Instant::now());
        // A replica never seen caught up: as far behind as pgmux can tell.
        let replica = Probe {
            in_recovery: true,
            lsn: 1000,
            written: None,
            received: Some(2000),
            timeline: None,
            system_id: None,
        };
        c.record_probe(&"r:2".into(), round, Some(replica), Instant::now());
        let text = m.render();
        let labels = "database=\"db\",server=\"p:1\",user=\"app\"";
        has(&text, &format!("pgmux_server_connections_max{{{labels}}} 4"));
        has(&text, &format!("pgmux_server_connections_borrowed{{{labels}}} 0"));
        has(&text, &format!("pgmux_borrow_waiting{{{labels}}} 0"));
        has(&text, &format!("pgmux_server_connections{{{labels}}} 0"));
        has(&text, &format!("pgmux_borrows_total{{{labels}}} 3"));
        has(&text, &format!("pgmux_borrow_wait_seconds_count{{{labels}}} 1"));
        has(&text, &format!("pgmux_server_held_seconds_count{{{labels}}} 0"));
        has(&text, "pgmux_server_is_primary{server=\"p:1\"} 1");
        has(&text, "pgmux_server_role{role=\"primary\",server=\"p:1\"} 1");
        has(&text, "pgmux_server_role{role=\"replica\",server=\"r:2\"} 1");
        has(&text, "pgmux_server_up{server=\"r:2\"} 1");
        // Rendered as Go's ParseFloat reads it, which the text format specifies.
        has(&text, "pgmux_replica_lag_seconds{server=\"r:2\"} inf");
        has(&text, "pgmux_replica_lag_bytes{server=\"r:2\"} 4000");
        assert!(!text.contains("pgmux_replica_lag_seconds{server=\"p:1\"}"), "{text}");
    }
}
