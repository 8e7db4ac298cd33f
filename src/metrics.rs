//! Prometheus metrics: one registry per proxy (never the crate's global default), the proxy-wide
//! counters the client code bumps, and the families scrape-time collectors fill from live state.
//!
//! Hot-path rule: the per-transaction work is an atomic add or a (striped, see `latency`)
//! histogram observe on a handle resolved beforehand (here at construction, per pool when the
//! pool is made). Label lookups (`with_label_values`) happen at construction or at scrape time
//! only. Labels stay bounded: database, user, server, role and fixed sets (tls, route, reason,
//! SQLSTATE) — never a client address or SQL text.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::error::ErrorCounts;

mod latency;
pub use latency::LatencyHistogram;

/// Client connection counters; those split by TLS are indexed by `tls as usize`.
#[derive(Debug, Clone)]
pub struct ClientCounters {
    received: IntCounter,
    current: [IntGauge; 2],
    setup_succeeded: [IntCounter; 2],
    setup_failed_auth: [IntCounter; 2],
    closed: [IntCounter; 2],
}

impl ClientCounters {
    /// Counts an accepted connection, as plaintext until it negotiates TLS; the guard counts it
    /// closed when dropped.
    pub fn accepted(&self) -> OpenClient {
        self.received.inc();
        self.current[0].inc();
        OpenClient { counters: self.clone(), tls: false }
    }
}

/// A client connection counted as open.
#[derive(Debug)]
pub struct OpenClient {
    counters: ClientCounters,
    tls: bool,
}

impl OpenClient {
    /// The connection negotiated TLS: counted as a TLS connection from now on.
    pub fn encrypted(&mut self) {
        if !self.tls {
            self.counters.current[0].dec();
            self.counters.current[1].inc();
            self.tls = true;
        }
    }

    pub fn setup_succeeded(&self) {
        self.counters.setup_succeeded[usize::from(self.tls)].inc();
    }

    pub fn setup_failed_auth(&self) {
        self.counters.setup_failed_auth[usize::from(self.tls)].inc();
    }
}

impl Drop for OpenClient {
    fn drop(&mut self) {
        let tls = usize::from(self.tls);
        self.counters.current[tls].dec();
        self.counters.closed[tls].inc();
    }
}

/// Where transactions were sent, decided per borrow.
#[derive(Debug, Clone)]
pub struct RouteCounters {
    pub primary: IntCounter,
    pub replica: IntCounter,
}

/// The proxy's metrics: the registry, and the handles the hot paths use.
pub struct Metrics {
    registry: Registry,
    pub clients: ClientCounters,
    pub routed: RouteCounters,
    /// Errors pgmux itself sent, by SQLSTATE (counted where they are written, in `error.rs`).
    pub errors: Arc<ErrorCounts>,
    /// Logins delayed for their address's failed logins (`clients.login_throttle_*`).
    pub login_throttled: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(v.clone())).expect("metric registered once");
            v
        };
        let gauge = IntGaugeVec::new(
            Opts::new("pgmux_client_connections", "Client connections open now (any phase, startup included)."),
            &["tls"],
        )
        .expect("valid metric");
        registry.register(Box::new(gauge.clone())).expect("metric registered once");
        let by_tls = |v: &IntCounterVec| [v.with_label_values(&["false"]), v.with_label_values(&["true"])];
        let clients = ClientCounters {
            received: {
                let c = IntCounter::new("pgmux_client_connections_received_total", "Client connections accepted.")
                    .expect("valid metric");
                registry.register(Box::new(c.clone())).expect("metric registered once");
                c
            },
            current: [gauge.with_label_values(&["false"]), gauge.with_label_values(&["true"])],
            setup_succeeded: by_tls(&counter(
                "pgmux_client_connections_setup_succeeded_total",
                "Client connections that completed startup (authenticated and greeted).",
                &["tls"],
            )),
            setup_failed_auth: by_tls(&counter(
                "pgmux_client_connections_setup_failed_auth_total",
                "Client connections refused for a wrong password or unknown user (28P01).",
                &["tls"],
            )),
            closed: by_tls(&counter(
                "pgmux_client_connections_closed_total",
                "Client connections closed, for any reason.",
                &["tls"],
            )),
        };
        let routes = counter(
            "pgmux_routing_decisions_total",
            "Transactions routed, by target chosen: replica (read-only work) or primary.",
            &["route"],
        );
        let routed = RouteCounters {
            primary: routes.with_label_values(&["primary"]),
            replica: routes.with_label_values(&["replica"]),
        };
        let login_throttled = IntCounter::new(
            "pgmux_login_throttled_total",
            "Login attempts delayed because their source address had repeated failed logins.",
        )
        .expect("valid metric");
        registry.register(Box::new(login_throttled.clone())).expect("metric registered once");
        Metrics { registry, clients, routed, errors: Arc::new(ErrorCounts::default()), login_throttled }
    }

    /// Adds a scrape-time collector (each subsystem registers its own).
    pub fn register(&self, collector: impl Collector + 'static) {
        if let Err(e) = self.registry.register(Box::new(collector)) {
            tracing::error!(error = %e, "metrics collector not registered");
        }
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new().encode_to_string(&families).unwrap_or_else(|e| {
            tracing::error!(error = %e, "metrics rendering failed");
            String::new()
        })
    }
}

/// A metric family a collector reports at scrape time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Name, help, type and label names of a scrape-time family: a collector's table of these gives both
/// its descriptors and its families, so the two cannot disagree.
#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
}

/// Descriptors for a collector's `desc()`.
pub fn descs(specs: &[&'static Spec]) -> Vec<Desc> {
    specs
        .iter()
        .map(|s| {
            let labels = s.labels.iter().map(|l| l.to_string()).collect();
            Desc::new(s.name.into(), s.help.into(), labels, Default::default()).expect("valid metric descriptor")
        })
        .collect()
}

/// The families of one collector being filled at scrape time, one per spec of its table.
#[derive(Debug)]
pub struct Families(Vec<(&'static Spec, MetricFamily)>);

impl Families {
    pub fn new(specs: &[&'static Spec]) -> Families {
        Families(specs.iter().map(|s| (*s, family(s))).collect())
    }

    fn slot(&mut self, spec: &'static Spec) -> &mut MetricFamily {
        let i = self.0.iter().position(|(s, _)| std::ptr::eq(*s, spec));
        let i = i.unwrap_or_else(|| panic!("{} is not in this collector's table", spec.name));
        &mut self.0[i].1
    }

    /// One sample of a counter or gauge family.
    pub fn add(&mut self, spec: &'static Spec, values: &[&str], value: f64) {
        let mut m = proto::Metric::from_label(label_pairs(spec, values));
        match spec.kind {
            Kind::Counter => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
            Kind::Histogram => panic!("{}: a histogram takes add_histogram()", spec.name),
        }
        self.slot(spec).mut_metric().push(m);
    }

    /// One labelled histogram of a histogram family.
    pub fn add_histogram(&mut self, spec: &'static Spec, values: &[&str], h: &LatencyHistogram) {
        assert_eq!(spec.kind, Kind::Histogram, "{}: not a histogram", spec.name);
        let mut m = proto::Metric::default();
        m.set_histogram(h.proto());
        m.set_label(label_pairs(spec, values));
        self.slot(spec).mut_metric().push(m);
    }

    /// The families (empty ones are left out of the output by the registry).
    pub fn finish(self) -> Vec<MetricFamily> {
        self.0.into_iter().map(|(_, f)| f).collect()
    }
}

fn family(spec: &Spec) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(spec.name.into());
    mf.set_help(spec.help.into());
    mf.set_field_type(match spec.kind {
        Kind::Counter => MetricType::COUNTER,
        Kind::Gauge => MetricType::GAUGE,
        Kind::Histogram => MetricType::HISTOGRAM,
    });
    mf
}

/// Label pairs sorted by name, as the crate's own metrics have them.
fn label_pairs(spec: &Spec, values: &[&str]) -> Vec<LabelPair> {
    assert_eq!(values.len(), spec.labels.len(), "{}: label values", spec.name);
    let mut pairs: Vec<LabelPair> = spec
        .labels
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut p = LabelPair::default();
            p.set_name(name.to_string());
            p.set_value(value.to_string());
            p
        })
        .collect();
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    pairs
}

#[cfg(test)]
mod tests;
