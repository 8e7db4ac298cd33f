//! The admin endpoint's GET /metrics, /readyz and /healthz, scraped while real clients work.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

/// One scrape of GET /metrics: every sample as (name, labels, value).
struct Scrape(Vec<(String, HashMap<String, String>, f64)>);

impl Scrape {
    async fn take(p: &TestProxy) -> Scrape {
        let (code, body) = http_get(p.admin.expect("admin endpoint"), "/metrics").await;
        assert_eq!(code, 200, "{body}");
        Scrape::parse(&body)
    }

    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = match value {
                "inf" | "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("closing brace"))),
                None => (series, HashMap::new()),
            };
            samples.push((name.to_string(), labels, value));
        }
        Scrape(samples)
    }

    /// The sum of the samples of `name` whose labels include all of `want`.
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, labels, _)| {
                n == name && want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _, _)| n == name)
    }
}

/// `a="x",b="y"` (values may hold escaped quotes and backslashes).
fn parse_labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().map(|(_, c)| c).unwrap_or('\\')),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {s:?}"),
            }
        };
        out.insert(name.trim_start_matches(',').to_string(), value);
        rest = &after[end + 1..];
    }
    out
}

const APP: [(&str, &str); 2] = [("database", "app"), ("user", "app")];

fn with_endpoints(yaml_text: String) -> String {
    yaml_text.replacen(
        "listen: 127.0.0.1:0\n",
        "listen: 127.0.0.1:0\nreader_listen: 127.0.0.2:0\nadmin_listen: 127.0.0.1:0\n",
        1,
    )
}

/// Waits for GET /readyz to say 200 (the prober found the primary), and for the replica to be known.
async fn ready(p: &TestProxy) {
    let admin = p.admin.expect("admin endpoint");
    let ok = eventually(Duration::from_secs(10), || async move { http_get(admin, "/readyz").await.0 == 200 }).await;
    assert!(ok, "never ready: {:?}", http_get(admin, "/readyz").await);
    let replica = eventually(Duration::from_secs(10), || async {
        p.ctx.cluster.servers_view().iter().any(|s| s.up && s.role == "replica" && s.lag.is_some())
    })
    .await;
    assert!(replica, "no replica seen: {:?}", p.ctx.cluster.servers_view());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_clients_transactions_pins_and_routing() {
    let c = cluster();
    let p = start_proxy_yaml(&with_endpoints(yaml(&[c.addr(0), c.addr(1)], "  size: 3", ""))).await;
    ready(&p).await;
    let primary = c.addr(0);
    let replica = c.addr(1);

    // N clients connected: counted while they are.
    const N: usize = 5;
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(connect_app(&p).await);
    }
    let s = Scrape::take(&p).await;
    let tls = [("tls", "false")];
    assert!(s.sum("pgmux_client_connections", &tls) >= N as f64);
    assert!(s.sum("pgmux_client_connections_received_total", &[]) >= N as f64);
    assert!(s.sum("pgmux_client_connections_setup_succeeded_total", &tls) >= N as f64);
    assert_eq!(s.sum("pgmux_server_connections_max", &[("server", &primary), APP[0], APP[1]]), 3.0);
    assert_eq!(s.sum("pgmux_server_up", &[("server", &primary)]), 1.0);
    assert_eq!(s.sum("pgmux_server_is_primary", &[("server", &primary)]), 1.0);
    assert_eq!(s.sum("pgmux_server_is_primary", &[("server", &replica)]), 0.0);
    assert_eq!(s.sum("pgmux_server_role", &[("server", &replica), ("role", "replica")]), 1.0);
    assert!(s.sum("pgmux_replica_lag_seconds", &[("server", &replica)]) >= 0.0);
    assert!(s.has("pgmux_replica_lag_bytes"));
    assert_eq!(s.sum("pgmux_failover_in_progress", &[]), 0.0);
    assert_eq!(s.sum("pgmux_failovers_total", &[]), 0.0);

    // A transaction left open holds a borrowed connection.
    clients[0].batch_execute("begin; select 1").await.unwrap();
    let s = Scrape::take(&p).await;
    assert!(s.sum("pgmux_server_connections_borrowed", &APP) >= 1.0);
    assert!(s.sum("pgmux_server_connections_in_transaction", &APP) >= 1.0);
    assert!(s.sum("pgmux_server_connections", &APP) >= 1.0);
    clients[0].batch_execute("commit").await.unwrap();
    // (A connection goes back just after the reply is forwarded: wait for it.)
    let all_back = || async { Scrape::take(&p).await.sum("pgmux_server_connections_borrowed", &APP) == 0.0 };
    assert!(eventually(Duration::from_secs(5), all_back).await, "a connection stayed borrowed");

    // A temp table pins its client (once pgmux's session-state check, run after the client's
    // transaction was answered, has seen it).
    let table = unique("metrics_tmp");
    clients[1].batch_execute(&format!("create temp table {table}(x int)")).await.unwrap();
    let pinned = |want: bool| {
        let p = &p;
        async move {
            let s = Scrape::take(p).await;
            let now = s.sum("pgmux_server_connections_session_pinned", &APP);
            (now >= 1.0) == want && (s.sum("pgmux_clients_pinned", &[]) >= 1.0) == want
        }
    };
    assert!(eventually(Duration::from_secs(5), || pinned(true)).await, "never seen pinned");
    let s = Scrape::take(&p).await;
    assert!(s.sum("pgmux_pins_total", &[("reason", "temp_object")]) >= 1.0);
    clients[1].batch_execute("discard all").await.unwrap();
    assert!(eventually(Duration::from_secs(5), || pinned(false)).await, "never seen unpinned");

    // A workload: counters move while it runs, by at least what it did once it is over.
    let before = Scrape::take(&p).await;
    const QUERIES: usize = 200;
    let work: Vec<_> = clients
        .drain(2..)
        .map(|client| {
            tokio::spawn(async move {
                for _ in 0..QUERIES {
                    client.simple_query("select 1").await.unwrap();
                }
                client
            })
        })
        .collect();
    let during = Scrape::take(&p).await;
    let mut workers = Vec::new();
    for w in work {
        workers.push(w.await.unwrap());
    }
    assert!(eventually(Duration::from_secs(5), all_back).await, "a connection stayed borrowed");
    let after = Scrape::take(&p).await;
    let done = (QUERIES * workers.len()) as f64;
    let moved = |s: &Scrape, name: &str, labels: &[(&str, &str)]| s.sum(name, labels) - before.sum(name, labels);
    assert!(moved(&during, "pgmux_borrows_total", &APP) >= 0.0);
    assert!(moved(&after, "pgmux_queries_total", &APP) >= done, "queries counted");
    assert!(moved(&after, "pgmux_borrows_total", &APP) >= done);
    assert!(moved(&after, "pgmux_borrow_wait_seconds_count", &APP) >= done);
    assert!(moved(&after, "pgmux_server_held_seconds_count", &APP) >= done);
    assert!(moved(&after, "pgmux_transaction_seconds_count", &APP) >= done);
    assert!(moved(&after, "pgmux_routing_decisions_total", &[("route", "primary")]) >= done);
    let held = moved(&after, "pgmux_server_held_seconds_sum", &APP);
    assert!(held > 0.0 && held < 60.0, "time held for {done} transactions: {held}s");
    // Every transaction's time at pgmux is its wait plus its hold.
    let tx = moved(&after, "pgmux_transaction_seconds_sum", &APP);
    let wait = moved(&after, "pgmux_borrow_wait_seconds_sum", &APP);
    assert!((tx - (held + wait)).abs() < 1e-3, "tx {tx} = held {held} + wait {wait}");

    // The reader endpoint routes to a replica.
    let reader = p.reader.unwrap();
    let r = connect(&format!("host={} port={} user=app password=app dbname=app", reader.ip(), reader.port()))
        .await
        .unwrap();
    assert_eq!(simple_value(&r, "select pg_is_in_recovery()").await, "t");
    // Counted when the connection goes back to the pool, which may be just after the client
    // has its answer.
    let on_replica = || async {
        let s = Scrape::take(&p).await;
        s.sum("pgmux_routing_decisions_total", &[("route", "replica")]) >= 1.0
            && s.sum("pgmux_queries_total", &[("server", &replica), APP[0], APP[1]]) >= 1.0
    };
    assert!(eventually(Duration::from_secs(5), on_replica).await, "a query on the replica counted");

    // A wrong password: a failed setup, and an error of class 28 sent by pgmux.
    let e = connect(&p.dsn("app", "wrong", "app")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"));
    let s = Scrape::take(&p).await;
    assert!(s.sum("pgmux_client_connections_setup_failed_auth_total", &tls) >= 1.0);
    assert!(s.sum("pgmux_errors_total", &[("class", "28"), ("sqlstate", "28P01")]) >= 1.0);

    // Everyone leaves: no client connection left, each counted closed.
    drop((clients, workers, r));
    let admin_gone = eventually(Duration::from_secs(5), || async {
        Scrape::take(&p).await.sum("pgmux_client_connections", &tls) == 0.0
    })
    .await;
    assert!(admin_gone, "client connections never dropped to 0");
    let s = Scrape::take(&p).await;
    assert!(s.sum("pgmux_client_connections_closed_total", &tls) >= (N + 2) as f64);
    p.shutdown.abort.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_borrow_timeout_is_counted_as_an_error_of_class_53() {
    let c = cluster();
    let text = yaml(&[c.addr(0), c.addr(1)], "  size: 1\n  borrow_timeout: 300ms", "").replacen(
        "listen: 127.0.0.1:0\n",
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n",
        1,
    );
    let p = start_proxy_yaml(&text).await;
    let waiter = connect_app(&p).await;
    let holder = connect_app(&p).await;
    holder.batch_execute("begin; select 1").await.unwrap();
    let e = waiter.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
    let s = Scrape::take(&p).await;
    assert!(s.sum("pgmux_errors_total", &[("class", "53"), ("sqlstate", "53300")]) >= 1.0);
    assert!(s.sum("pgmux_borrow_timeouts_total", &APP) >= 1.0);
    assert_eq!(s.sum("pgmux_server_connections_borrowed", &APP), 1.0);
    // The waiter carries on once the connection is free.
    holder.batch_execute("commit").await.unwrap();
    assert_eq!(simple_value(&waiter, "select 1").await, "1");
    p.shutdown.abort.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_wants_a_primary_and_healthz_only_a_live_process() {
    let c = cluster();
    let p = start_proxy_yaml(&with_endpoints(yaml(&[c.addr(0), c.addr(1)], "  size: 2", ""))).await;
    let admin = p.admin.unwrap();
    let ok = eventually(Duration::from_secs(10), || async move { http_get(admin, "/readyz").await.0 == 200 }).await;
    assert!(ok, "never ready");
    let (_, body) = http_get(admin, "/readyz").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true, "{body}");
    assert_eq!(v["primary"], c.addr(0).as_str(), "{body}");
    assert_eq!(v["reasons"].as_array().map(Vec::len), Some(0), "{body}");
    p.shutdown.abort.cancel();

    // Servers that cannot be reached (a port nothing listens on): alive, never ready.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let text = yaml(&[closed.to_string()], "  size: 2", "").replacen(
        "listen: 127.0.0.1:0\n",
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n",
        1,
    );
    let p = start_proxy_yaml(&text).await;
    let admin = p.admin.unwrap();
    for _ in 0..3 {
        let (code, body) = http_get(admin, "/readyz").await;
        assert_eq!(code, 503, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ready"], false, "{body}");
        assert!(v["reasons"].as_array().unwrap().iter().any(|r| r == "no primary known"), "{body}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let s = Scrape::take(&p).await;
    assert_eq!(s.sum("pgmux_server_is_primary", &[("server", &closed.to_string())]), 0.0);
    p.shutdown.abort.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_console_session_counts_as_an_open_client_connection() {
    let c = cluster();
    let text = yaml(&[c.addr(0), c.addr(1)], "  size: 1", "")
        .replacen("listen: 127.0.0.1:0\n", "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n", 1)
        .replace("shutdown_timeout: 10s\n", "shutdown_timeout: 10s\nadmin_users: [u2]\n");
    let p = start_proxy_yaml(&text).await;
    let tls = [("tls", "false")];
    let console = connect(&p.dsn("u2", "u2", "pgmux")).await.expect("admin console login");
    console.simple_query("SHOW POOLS").await.unwrap();
    let s = Scrape::take(&p).await;
    assert_eq!(s.sum("pgmux_client_connections", &tls), 1.0);
    assert_eq!(s.sum("pgmux_client_connections_setup_succeeded_total", &tls), 1.0);
    drop(console);
    let closed = eventually(Duration::from_secs(5), || async {
        let s = Scrape::take(&p).await;
        s.sum("pgmux_client_connections", &tls) == 0.0 && s.sum("pgmux_client_connections_closed_total", &tls) == 1.0
    })
    .await;
    assert!(closed, "the console session was never counted closed");
    p.shutdown.abort.cancel();
}

/// With `admin_token_file`, /status and /metrics need the bearer token; /healthz and /readyz
/// stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_status_and_metrics() {
    use std::os::unix::fs::PermissionsExt;
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = yaml(&[c.addr(0), c.addr(1)], "  size: 1", "").replacen(
        "listen: 127.0.0.1:0\n",
        &format!("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nadmin_token_file: {}\n", token_file.display()),
        1,
    );
    let p = start_proxy_yaml(&text).await;
    let client = connect_app(&p).await;
    simple_value(&client, "select 1").await;
    let admin = p.admin.unwrap();
    for path in ["/status", "/metrics"] {
        let (code, body) = http_get(admin, path).await;
        assert_eq!(code, 401, "{path}: {body}");
        assert!(!body.contains("\"app\"") && !body.contains("pgmux_"), "{path} leaks: {body}");
        let (code, _) = http_get_with(admin, path, "Authorization: Bearer wrong\r\n").await;
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, body) = http_get_with(admin, path, "Authorization: Bearer s3cr3t-token\r\n").await;
        assert_eq!(code, 200, "{path} with the token: {body}");
    }
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    let ready = eventually(Duration::from_secs(10), || async move { http_get(admin, "/readyz").await.0 == 200 }).await;
    assert!(ready, "/readyz stays open");
    drop(client);
    p.shutdown.abort.cancel();
}
