//! TLS: clients to pgmux (SSLRequest, direct TLS, `require`, SCRAM-SHA-256-PLUS, certificate
//! reload) and pgmux to servers (`server_tls` modes against a server with `ssl = on`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::certs::*;
use common::*;
use pgmux::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `tls:` section for `mode` with these certificates.
fn tls_section(mode: &str, certs: &Certs) -> String {
    format!("tls:\n  mode: {mode}\n  cert_file: {}\n  key_file: {}\n", certs.cert.display(), certs.key.display())
}

/// pgmux in front of the shared cluster with `extra` top-level YAML appended.
async fn proxy_with(extra: &str) -> TestProxy {
    let c = cluster();
    start_proxy_yaml(&format!("{}{extra}", yaml(&[c.addr(0)], "  size: 2", ""))).await
}

/// Runs psql as `app` with this connection string; its output, or its stderr as the error.
async fn psql(conninfo: String, sql: &str) -> Result<String, String> {
    let sql = sql.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("psql")
            .args(["-X", "-tA", "-c", &sql, &conninfo])
            .env("PGPASSWORD", "app")
            .env("PGSSLROOTCERT", "/nonexistent") // no ~/.postgresql/root.crt surprises
            .output()
            .expect("run psql");
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        if out.status.success() { Ok(text(&out.stdout)) } else { Err(text(&out.stderr)) }
    })
    .await
    .expect("join")
}

fn conninfo(p: &TestProxy, extra: &str) -> String {
    format!("host=127.0.0.1 port={} user=app dbname=app {extra}", p.port())
}

/// tokio-postgres over TLS, verifying pgmux's certificate against `ca` for host `localhost`.
async fn connect_tls(p: &TestProxy, ca: &Path, extra: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(ca, &[]));
    let dsn = format!("host=localhost hostaddr=127.0.0.1 port={} user=app password=app dbname=app {extra}", p.port());
    let (client, conn) = tokio_postgres::connect(&dsn, tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Sends an 8-byte SSLRequest (code 80877103) or GSSENCRequest (80877104); returns the answer byte.
async fn encryption_request(p: &TestProxy, code: u32) -> u8 {
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut packet = 8u32.to_be_bytes().to_vec();
    packet.extend_from_slice(&code.to_be_bytes());
    s.write_all(&packet).await.unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.unwrap();
    answer[0]
}

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_tls_verified_and_channel_bound() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "");
    let p = proxy_with(&tls_section("require", &c)).await;
    assert_eq!(psql(conninfo(&p, "sslmode=require"), "select 1").await.unwrap(), "1");
    let verified = format!("host=localhost sslmode=verify-full sslrootcert={}", c.ca.display());
    assert_eq!(psql(conninfo(&p, &verified), "select 1").await.unwrap(), "1");
    // channel_binding=require: libpq insists on SCRAM-SHA-256-PLUS bound to pgmux's certificate.
    let bound = format!("{verified} channel_binding=require");
    assert_eq!(psql(conninfo(&p, &bound), "select current_user").await.unwrap(), "app");
    let err = psql(conninfo(&p, "sslmode=require password=wrong"), "select 1").await.unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    // Plaintext under `require`: refused with FATAL 28000 and a message saying why.
    let err = psql(conninfo(&p, "sslmode=disable"), "select 1").await.unwrap_err();
    assert!(err.contains("pgmux accepts only TLS connections"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_connections_are_not_offered_channel_binding() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "");
    let p = proxy_with(&tls_section("prefer", &c)).await;
    // Without TLS pgmux must not offer -PLUS: a client that requires binding gives up.
    let err = psql(conninfo(&p, "sslmode=disable channel_binding=require"), "select 1").await.unwrap_err();
    assert!(err.contains("channel binding"), "{err}");
    assert_eq!(psql(conninfo(&p, "sslmode=disable"), "select 'plain'").await.unwrap(), "plain");
    assert_eq!(psql(conninfo(&p, "sslmode=require channel_binding=require"), "select 2").await.unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_metrics_are_split_by_tls() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "");
    let p = proxy_with(&format!("admin_listen: 127.0.0.1:0\n{}", tls_section("prefer", &c))).await;
    let encrypted = connect_tls(&p, &c.ca, "sslmode=require").await.unwrap();
    let plain = connect(&p.dsn("app", "app", "app")).await.unwrap();
    let err = psql(conninfo(&p, "sslmode=require password=wrong"), "select 1").await.unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    let (code, text) = http_get(p.admin.unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "pgmux_client_connections{tls=\"true\"} 1",
        "pgmux_client_connections{tls=\"false\"} 1",
        "pgmux_client_connections_received_total 3",
        "pgmux_client_connections_setup_succeeded_total{tls=\"true\"} 1",
        "pgmux_client_connections_setup_succeeded_total{tls=\"false\"} 1",
        "pgmux_client_connections_setup_failed_auth_total{tls=\"true\"} 1",
        "pgmux_client_connections_closed_total{tls=\"true\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    drop((encrypted, plain));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_over_tls_and_plaintext_refused_under_require() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "");
    let p = proxy_with(&tls_section("require", &c)).await;
    let client = connect_tls(&p, &c.ca, "sslmode=require channel_binding=require").await.unwrap();
    let n: i32 = client.query_one("select $1::int + 1", &[&41]).await.unwrap().get(0);
    assert_eq!(n, 42);
    // A bigger result crosses in many records.
    let rows = client.query("select repeat('x', 1000) from generate_series(1, 2000)", &[]).await.unwrap();
    assert_eq!(rows.len(), 2000);
    let e = connect(&p.dsn("app", "app", "app")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("28000"));
    assert_eq!(e.as_db_error().unwrap().severity(), "FATAL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_requests_are_answered_by_mode() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "");
    let disabled = proxy_with(&tls_section("disable", &c)).await;
    assert_eq!(encryption_request(&disabled, SSL_REQUEST).await, b'N');
    connect_app(&disabled).await.simple_query("select 1").await.unwrap();
    let no_cert = proxy_with("tls:\n  mode: prefer\n").await;
    assert_eq!(encryption_request(&no_cert, SSL_REQUEST).await, b'N');
    let prefer = proxy_with(&tls_section("prefer", &c)).await;
    assert_eq!(encryption_request(&prefer, SSL_REQUEST).await, b'S');
    assert_eq!(encryption_request(&prefer, GSSENC_REQUEST).await, b'N');
    // allow/prefer take plaintext clients too.
    connect_app(&prefer).await.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "");
    let p = proxy_with(&tls_section("require", &c)).await;
    let direct = |alpn: &'static [&'static [u8]]| {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&c.ca, alpn)));
        async move {
            let tcp = TcpStream::connect(p.addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
            let mut config: tokio_postgres::Config = "user=app password=app dbname=app".parse().unwrap();
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, conn) = config.connect_raw(tls, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            client.simple_query("select 1").await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
    };
    direct(&[b"postgresql"]).await.unwrap();
    // No ALPN: the handshake completes, then pgmux closes before any PostgreSQL message.
    direct(&[]).await.unwrap_err();
    // Another protocol: rustls refuses the handshake itself.
    direct(&[b"http/1.1"]).await.unwrap_err();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_the_certificate_for_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (certs(dir.path(), "a"), certs(dir.path(), "b"));
    let base = yaml(&[cluster().addr(0)], "  size: 2", "");
    let p = start_proxy_yaml(&format!("{base}{}", tls_section("prefer", &a))).await;
    let old = connect_tls(&p, &a.ca, "sslmode=require").await.unwrap();
    let config = Config::from_yaml(&format!("{base}{}", tls_section("prefer", &b))).unwrap();
    pgmux::reload::reload_tls(&p.ctx, &config).unwrap();
    assert!(connect_tls(&p, &a.ca, "sslmode=require").await.is_err(), "the old CA no longer verifies");
    let new = connect_tls(&p, &b.ca, "sslmode=require channel_binding=require").await.unwrap();
    assert_eq!(simple_value(&new, "select 'new'").await, "new");
    // The session that started before the reload keeps its certificate.
    assert_eq!(simple_value(&old, "select 'old'").await, "old");
}

/// A single PostgreSQL server with `ssl = on` and a certificate from `certs`' CA.
const BACKEND_SSL: &str = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    // The server's certificate names `localhost` only, not 127.0.0.1.
    let (c, other) = (certs_for(dir.path(), "", &["localhost"]), certs(dir.path(), "other"));
    let server = ssl_cluster(&c).await;
    let by_ip = [server.addr(0)];
    let by_name = [format!("localhost:{}", server.port(0))];
    let with = |servers: &[String], server_tls: &str| {
        format!("{}{server_tls}", yaml(servers, "  size: 2\n  borrow_timeout: 2s", ""))
    };
    let verify = |mode: &str, ca: &Path| format!("server_tls:\n  mode: {mode}\n  ca_file: {}\n", ca.display());
    let cases = [
        (&by_name, verify("verify-full", &c.ca)),
        (&by_ip, verify("verify-ca", &c.ca)),
        (&by_ip, "server_tls: {mode: require}\n".into()),
        // libpq: `require` with a root certificate checks the chain (not the name).
        (&by_ip, verify("require", &c.ca)),
    ];
    for (servers, server_tls) in cases {
        let p = start_proxy_yaml(&with(servers, &server_tls)).await;
        let client = connect_app(&p).await;
        assert_eq!(simple_value(&client, BACKEND_SSL).await, "t", "{server_tls}");
        let tls_open: usize = p.ctx.cluster.pools.all().iter().map(|pool| pool.tls_count()).sum();
        assert!(tls_open >= 1, "pgmux_server_connections_tls counts it: {tls_open}");
        // The pool's connections are reused over TLS, transaction after transaction.
        for i in 0..20 {
            assert_eq!(simple_value(&client, &format!("select {i}")).await, i.to_string());
        }
        drop(client);
        p.shutdown.abort.cancel();
    }
    for (mode, expected) in [("prefer", "t"), ("disable", "f")] {
        let p = start_proxy_yaml(&with(&by_ip, &format!("server_tls: {{mode: {mode}}}\n"))).await;
        assert_eq!(simple_value(&connect_app(&p).await, BACKEND_SSL).await, expected, "{mode}");
        p.shutdown.abort.cancel();
    }
    // A certificate from another CA fails verification, and so does one for another name under
    // verify-full; the client is told why.
    let wrong = [
        (&by_ip, verify("verify-ca", &other.ca)),
        (&by_ip, verify("require", &other.ca)),
        (&by_ip, verify("verify-full", &c.ca)),
    ];
    for (servers, server_tls) in wrong {
        let p = start_proxy_yaml(&with(servers, &server_tls)).await;
        let e = connect_app_err(&p).await;
        assert!(e.contains("TLS handshake failed") && e.contains("certificate"), "{server_tls}: {e}");
        p.shutdown.abort.cancel();
    }
    tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
}

/// Under `server_tls: require`, a client's cancel goes to the server over TLS too (SSLRequest first,
/// as libpq sends it): no CancelRequest crosses the network in plaintext, and it still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_go_to_the_server_over_tls() {
    use common::faults::{CANCEL_CODE, PeekRelay, SSL_CODE};
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "");
    let server = Arc::new(ssl_cluster(&c).await);
    let relay = PeekRelay::start(server.addr(0).parse().unwrap(), Duration::ZERO).await;
    let text = format!("{}server_tls: {{mode: require}}\n", yaml(&[relay.addr.to_string()], "  size: 2", ""));
    let p = start_proxy_yaml(&text).await;
    let client = connect_app(&p).await;
    let token = client.cancel_token();
    let slow = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    let sleeping = "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'";
    assert!(
        eventually(Duration::from_secs(10), || {
            let node = server.clone();
            async move {
                tokio::task::spawn_blocking(move || node.psql(0, "app", sleeping).unwrap()).await.unwrap() == "1"
            }
        })
        .await
    );
    let tls_before = relay.count(SSL_CODE);
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), slow).await.expect("cancel took effect").unwrap();
    assert_eq!(sqlstate(&r.unwrap_err()).as_deref(), Some("57014"));
    assert_eq!(relay.count(CANCEL_CODE), 0, "a CancelRequest went in plaintext: {:?}", relay.codes);
    assert!(relay.count(SSL_CODE) > tls_before, "the cancel asked for TLS: {:?}", relay.codes);
    p.shutdown.abort.cancel();
    tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_require_against_a_plaintext_server_fails_clearly() {
    let c = cluster();
    let text = format!("{}server_tls: {{mode: require}}\n", yaml(&[c.addr(0)], "  size: 2\n  borrow_timeout: 2s", ""));
    let p = start_proxy_yaml(&text).await;
    let e = connect_app_err(&p).await;
    assert!(e.contains("the server does not accept TLS (server_tls.mode: require)"), "{e}");
    p.shutdown.abort.cancel();
}

/// A login through pgmux that must fail: the error's text.
async fn connect_app_err(p: &TestProxy) -> String {
    let e = match tokio::time::timeout(Duration::from_secs(30), connect(&p.dsn("app", "app", "app"))).await {
        Ok(Ok(_)) => panic!("login should have failed"),
        Ok(Err(e)) => e,
        Err(_) => panic!("login did not finish"),
    };
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())
}

/// `pgmux storm burst --clients 10 --json` against `dsn`: exit code and the report.
async fn storm_burst(dsn: String) -> (i32, serde_json::Value) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmux"))
            .args(["storm", "burst", "--clients", "10", "--json", "--dsn", &dsn])
            .output()
            .expect("run pgmux storm");
        let text = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), report)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_speaks_libpq_sslmodes() {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path(), "");
    let other = certs(dir.path(), "other");
    let p = proxy_with(&tls_section("require", &c)).await;
    let base = format!("host=localhost port={} user=app password=app dbname=app", p.port());
    let ca = c.ca.display();
    // require: any certificate, as libpq; verify-full with the right CA.
    for mode in ["sslmode=require".to_string(), format!("sslmode=verify-full sslrootcert={ca}")] {
        let (code, r) = storm_burst(format!("{base} {mode}")).await;
        assert_eq!((code, r["successes"].as_u64()), (0, Some(10)), "{mode}: {r:#}");
    }
    // pgmux refuses plaintext under `require`; a certificate from another CA fails verification.
    let (code, r) = storm_burst(format!("{base} sslmode=disable")).await;
    assert_eq!((code, r["errors"][0]["sqlstate"].as_str()), (1, Some("28000")), "{r:#}");
    let (code, r) = storm_burst(format!("{base} sslmode=verify-ca sslrootcert={}", other.ca.display())).await;
    assert_eq!((code, r["failures"].as_u64()), (1, Some(10)), "{r:#}");
    assert!(r["errors"][0]["sqlstate"].is_null(), "{r:#}");
}
