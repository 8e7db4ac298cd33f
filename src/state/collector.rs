//! Client-side metrics read at scrape time: pins (by reason, now, and per pool) and the errors pgmux
//! sent, by SQLSTATE.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::pins::{PinReasons, PinStats};
use super::registry::CancelRegistry;
use crate::cluster::Cluster;
use crate::error::ErrorCounts;
use crate::metrics::{Families, Kind, Spec, descs};

static POOL_PINNED: Spec = Spec {
    name: "pgmux_server_connections_session_pinned",
    help: "Server connections pinned to one client now (session state that cannot move: temp tables, session advisory locks, LISTEN, WITH HOLD cursors, SQL PREPARE, LOAD).",
    kind: Kind::Gauge,
    labels: &["server", "database", "user"],
};
static PINNED_NOW: Spec = Spec {
    name: "pgmux_clients_pinned",
    help: "Clients pinned to their server connection now.",
    kind: Kind::Gauge,
    labels: &[],
};
static PINS: Spec = Spec {
    name: "pgmux_pins_total",
    help: "Pins begun, by reason (a client pinned for two reasons counts under both).",
    kind: Kind::Counter,
    labels: &["reason"],
};
static ERRORS: Spec = Spec {
    name: "pgmux_errors_total",
    help: "Errors pgmux itself sent to clients (ERROR and FATAL), by SQLSTATE and its class; server errors passed through are not counted.",
    kind: Kind::Counter,
    labels: &["class", "sqlstate"],
};

static SPECS: [&Spec; 4] = [&POOL_PINNED, &PINNED_NOW, &PINS, &ERRORS];

/// Reports pins and pgmux-made errors.
#[derive(Debug)]
pub struct ClientCollector {
    cluster: Arc<Cluster>,
    cancels: Arc<CancelRegistry>,
    pins: Arc<PinStats>,
    errors: Arc<ErrorCounts>,
    descs: Vec<Desc>,
}

impl ClientCollector {
    pub fn new(
        cluster: Arc<Cluster>,
        cancels: Arc<CancelRegistry>,
        pins: Arc<PinStats>,
        errors: Arc<ErrorCounts>,
    ) -> ClientCollector {
        ClientCollector { cluster, cancels, pins, errors, descs: descs(&SPECS) }
    }
}

impl Collector for ClientCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Families::new(&SPECS);
        // Every pool, 0 unless a pinned client holds one of its connections now.
        let mut pinned: BTreeMap<(String, String, String), u64> = self
            .cluster
            .pools
            .all()
            .iter()
            .map(|p| ((p.key.server.to_string(), p.key.database.clone(), p.key.user.clone()), 0))
            .collect();
        for c in self.cancels.status() {
            if let Some(server) = c.server.filter(|_| !c.pins.is_empty()) {
                *pinned.entry((server, c.database, c.user)).or_default() += 1;
            }
        }
        for ((server, database, user), n) in &pinned {
            out.add(&POOL_PINNED, &[server, database, user], *n as f64);
        }
        out.add(&PINNED_NOW, &[], self.pins.pinned_now.load(Ordering::Relaxed).max(0) as f64);
        for (reason, name) in PinReasons::ALL {
            out.add(&PINS, &[name], self.pins.count(reason) as f64);
        }
        for (code, n) in self.errors.snapshot() {
            out.add(&ERRORS, &[&code[..2], code], n as f64);
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;
    use crate::state::registry::CancelTarget;

    #[test]
    fn pinned_clients_are_counted_per_pool_and_errors_by_class() {
        let cluster = crate::cluster::test_cluster(&["p:1"], 2, &[("app", "pw"), ("bob", "pw")]);
        let _app = cluster.pool("p:1".into(), "db", "app").unwrap();
        let _bob = cluster.pool("p:1".into(), "db", "bob").unwrap();
        let cancels = Arc::new(CancelRegistry::default());
        let pins = Arc::new(PinStats::default());
        let m = Metrics::new();
        m.register(ClientCollector::new(cluster, cancels.clone(), pins.clone(), m.errors.clone()));
        let keys: Vec<_> = (0..3).map(|_| cancels.register()).collect();
        let targets: Vec<_> =
            (0..3).map(|i| std::sync::Arc::new(CancelTarget::new("p:1".into(), i, 2, Default::default()))).collect();
        for (i, k) in keys.iter().enumerate() {
            k.slot.set_identity("app", "db");
            k.holds_target(&targets[i]);
            if i < 2 {
                k.slot.set_pins(PinReasons::TEMP_OBJECT);
                pins.record("app", ([127, 0, 0, 1], 5000).into(), PinReasons::default(), PinReasons::TEMP_OBJECT);
            }
        }
        crate::error::ClientError::BorrowTimeout(Duration::from_secs(1)).write_to(&mut Default::default(), &m.errors);
        let text = m.render();
        for line in [
            "pgmux_server_connections_session_pinned{database=\"db\",server=\"p:1\",user=\"app\"} 2",
            "pgmux_server_connections_session_pinned{database=\"db\",server=\"p:1\",user=\"bob\"} 0",
            "pgmux_clients_pinned 2",
            "pgmux_pins_total{reason=\"temp_object\"} 2",
            "pgmux_pins_total{reason=\"listen\"} 0",
            "pgmux_errors_total{class=\"53\",sqlstate=\"53300\"} 1",
            "pgmux_errors_total{class=\"08\",sqlstate=\"08006\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
    }
}
