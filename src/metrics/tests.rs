use super::*;

static GAUGE: Spec = Spec { name: "t_gauge", help: "A gauge.", kind: Kind::Gauge, labels: &["server", "user"] };
static COUNTER: Spec = Spec { name: "t_total", help: "A counter.", kind: Kind::Counter, labels: &[] };
static HIST: Spec = Spec { name: "t_seconds", help: "A histogram.", kind: Kind::Histogram, labels: &["server"] };
static EMPTY: Spec = Spec { name: "t_empty", help: "Nothing reported.", kind: Kind::Gauge, labels: &[] };
static SPECS: [&Spec; 4] = [&GAUGE, &COUNTER, &HIST, &EMPTY];

struct Fixed {
    descs: Vec<Desc>,
    hist: LatencyHistogram,
}

impl Collector for Fixed {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Families::new(&SPECS);
        out.add(&GAUGE, &["b:1", "app"], 2.0);
        out.add(&GAUGE, &["a:1", "app \"x\""], 0.5);
        out.add(&COUNTER, &[], 7.0);
        out.add_histogram(&HIST, &["a:1"], &self.hist);
        out.finish()
    }
}

#[test]
fn scrape_time_families_render_with_labels_sorted_and_escaped() {
    let m = Metrics::new();
    let hist = LatencyHistogram::default();
    hist.observe(0, std::time::Duration::ZERO);
    hist.observe(1, std::time::Duration::from_millis(3));
    hist.observe(2, std::time::Duration::from_secs(1000));
    m.register(Fixed { descs: descs(&SPECS), hist });
    let text = m.render();
    for line in [
        "# HELP t_gauge A gauge.",
        "# TYPE t_gauge gauge",
        "t_gauge{server=\"a:1\",user=\"app \\\"x\\\"\"} 0.5",
        "t_gauge{server=\"b:1\",user=\"app\"} 2",
        "# TYPE t_total counter",
        "t_total 7",
        "# TYPE t_seconds histogram",
        "t_seconds_bucket{server=\"a:1\",le=\"0.0001\"} 1",
        "t_seconds_bucket{server=\"a:1\",le=\"0.0025\"} 1",
        "t_seconds_bucket{server=\"a:1\",le=\"0.005\"} 2",
        "t_seconds_bucket{server=\"a:1\",le=\"120\"} 2",
        "t_seconds_bucket{server=\"a:1\",le=\"+Inf\"} 3",
        "t_seconds_sum{server=\"a:1\"} 1000.003",
        "t_seconds_count{server=\"a:1\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    // Sorted by label values; a family with no sample is left out.
    let a = text.find("t_gauge{server=\"a:1\"").unwrap();
    let b = text.find("t_gauge{server=\"b:1\"").unwrap();
    assert!(a < b);
    assert!(!text.contains("t_empty"), "{text}");
}

#[test]
#[should_panic(expected = "not in this collector's table")]
fn a_family_outside_the_table_is_a_bug() {
    let mut out = Families::new(&[&GAUGE]);
    out.add(&COUNTER, &[], 1.0);
}

#[test]
fn client_counters_count_connections_open_and_closed_by_tls() {
    let m = Metrics::new();
    let a = m.clients.accepted();
    let mut b = m.clients.accepted();
    b.encrypted();
    b.setup_succeeded();
    a.setup_failed_auth();
    drop(a);
    let text = m.render();
    for line in [
        "pgmux_client_connections{tls=\"false\"} 0",
        "pgmux_client_connections{tls=\"true\"} 1",
        "pgmux_client_connections_received_total 2",
        "pgmux_client_connections_setup_succeeded_total{tls=\"true\"} 1",
        "pgmux_client_connections_setup_failed_auth_total{tls=\"false\"} 1",
        "pgmux_client_connections_closed_total{tls=\"false\"} 1",
        "pgmux_client_connections_closed_total{tls=\"true\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    drop(b);
    m.routed.replica.inc();
    let text = m.render();
    assert!(text.contains("pgmux_client_connections{tls=\"true\"} 0\n"), "{text}");
    assert!(text.contains("pgmux_client_connections_closed_total{tls=\"true\"} 1\n"), "{text}");
    assert!(text.contains("pgmux_routing_decisions_total{route=\"replica\"} 1\n"), "{text}");
    assert!(text.contains("pgmux_routing_decisions_total{route=\"primary\"} 0\n"), "{text}");
}
