//! Connection storms: every client is admitted or told why not (never a silent close), and a burst
//! of thousands of SCRAM logins through a small pool all succeed.

mod common;

use std::time::{Duration, Instant};

use common::raw::{Raw, field, startup_packet};
use common::*;

/// The client's next message is a FATAL with this SQLSTATE, then the connection closes.
async fn expect_fatal(raw: &mut Raw, code: &str) {
    let msg = raw.recv().await;
    let Some((b'E', body)) = msg else { panic!("expected an ErrorResponse, got {msg:?}") };
    assert_eq!(field(&body, b'V').as_deref(), Some("FATAL"), "{body:?}");
    assert_eq!(field(&body, b'C').as_deref(), Some(code), "{:?}", field(&body, b'M'));
    assert!(raw.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_login_is_told_at_the_deadline() {
    let p = start_proxy("  size: 2", "  startup_timeout: 500ms").await;
    // Half a startup packet, then nothing.
    let started = Instant::now();
    let mut raw = Raw::connect(p.addr).await;
    let packet = startup_packet(0, &[("user", "app"), ("database", "app")]);
    raw.send(&packet[..packet.len() / 2]).await;
    expect_fatal(&mut raw, "08P01").await;
    assert!(started.elapsed() >= Duration::from_millis(500), "told before the deadline: {:?}", started.elapsed());
    // Silent after the first bytes of the length.
    let mut raw = Raw::connect(p.addr).await;
    raw.send(&[0, 0, 0]).await;
    expect_fatal(&mut raw, "08P01").await;
    // Stuck in the middle of SCRAM.
    let mut raw = Raw::connect(p.addr).await;
    raw.send(&packet).await;
    assert_eq!(raw.recv().await.map(|m| m.0), Some(b'R'));
    expect_fatal(&mut raw, "08P01").await;
    // Others are unaffected.
    let c = connect_app(&p).await;
    c.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_waiting_for_a_busy_pool_is_not_timed_out() {
    let p = start_proxy("  size: 1\n  borrow_timeout: 20s", "  startup_timeout: 300ms").await;
    // The pool's only connection is held in a transaction.
    let holder = connect(&p.dsn("u1", "u1", "app")).await.unwrap();
    holder.batch_execute("begin; select 1").await.unwrap();
    // Settings no login had before: its greeting must wait for a server connection.
    let dsn = format!("{} application_name=waiter", p.dsn("u1", "u1", "app"));
    let mut waiter = tokio::spawn(async move {
        let c = connect(&dsn).await?;
        c.simple_query("select 1").await.map(|_| ())
    });
    // Longer than startup_timeout: the login waits for pgmux, not for the client.
    assert!(
        still_running(&mut waiter, Duration::from_millis(1000)).await,
        "the login should still be waiting for the pool"
    );
    holder.batch_execute("commit").await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(15), waiter).await.expect("login finishes").unwrap();
    r.unwrap_or_else(|e| panic!("login behind a busy pool failed: {e:?} {:?}", sqlstate(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_that_waits_out_borrow_timeout_gets_fatal_53300() {
    let p = start_proxy("  size: 1\n  borrow_timeout: 300ms", "").await;
    let holder = connect(&p.dsn("u2", "u2", "app")).await.unwrap();
    holder.batch_execute("begin; select 1").await.unwrap();
    // Settings no login to this pool had before: the greeting needs a server connection.
    let mut raw = Raw::connect(p.addr).await;
    raw.send(&startup_packet(0, &[("user", "u2"), ("database", "app"), ("application_name", "new")])).await;
    let msgs = raw.scram("u2").await;
    let Some((b'E', body)) = msgs.last() else { panic!("expected an error, got {msgs:?}") };
    assert_eq!(field(body, b'V').as_deref(), Some("FATAL"));
    assert_eq!(field(body, b'C').as_deref(), Some("53300"));
    holder.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_past_max_handshakes_are_queued_not_refused_nor_timed_out() {
    let p = start_proxy("  size: 2", "  startup_timeout: 500ms\n  max_handshakes: 1").await;
    let packet = startup_packet(0, &[("user", "app"), ("database", "app")]);
    // Two stalled logins: the first holds the only handshake slot, the second waits for it.
    let mut stalled = Vec::new();
    for queued in 0..2 {
        let mut raw = Raw::connect(p.addr).await;
        raw.send(&packet[..5]).await;
        stalled.push(raw);
        assert!(eventually(Duration::from_secs(5), || async { p.ctx.handshakes_queued() == queued }).await);
    }
    // Connected while both are ahead of it: queued about 1 s, longer than startup_timeout.
    let started = Instant::now();
    let c = connect_app(&p).await;
    let waited = started.elapsed();
    c.simple_query("select 1").await.unwrap();
    assert!(waited >= Duration::from_millis(750), "login did not wait its turn: {waited:?}");
    for mut raw in stalled {
        expect_fatal(&mut raw, "08P01").await;
    }
}

/// Connections from one address that never finish their startup hold only that address's
/// handshake places: a client from another address logs in at once, not after startup_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_from_one_address_do_not_starve_another() {
    let clients = "  startup_timeout: 30s\n  max_handshakes: 4\n  max_handshakes_per_address: 2";
    let p = start_proxy("  size: 2", clients).await;
    let packet = startup_packet(0, &[("user", "app"), ("database", "app")]);
    let mut stalled = Vec::new();
    for _ in 0..12 {
        let mut raw = Raw::connect(p.addr).await;
        raw.send(&packet[..5]).await;
        stalled.push(raw);
    }
    // Two in their handshake, ten queued behind them for 127.0.0.1's places.
    assert!(eventually(Duration::from_secs(5), || async { p.ctx.handshakes_queued() == 10 }).await);
    let started = Instant::now();
    let c = tokio::time::timeout(Duration::from_secs(10), connect_from("127.0.0.2", &p, "app", "app"))
        .await
        .expect("a client from another address was starved")
        .expect("login from 127.0.0.2");
    assert_eq!(simple_value(&c, "select 'other address'").await, "other address");
    eprintln!("login from 127.0.0.2 beside 12 half-open connections from 127.0.0.1: {:?}", started.elapsed());
    drop(stalled);
    // 127.0.0.1's queue drains once its connections go; its own clients get in again.
    let c = tokio::time::timeout(Duration::from_secs(10), connect_app(&p)).await.expect("127.0.0.1 served again");
    c.simple_query("select 1").await.unwrap();
}

/// After `login_throttle_after` failed logins from one address, each further attempt from it waits
/// longer (doubling, capped), counted and logged; a login from another address is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_passwords_from_one_address_are_delayed() {
    let clients = "  login_throttle_after: 2\n  login_throttle_delay: 400ms\n  login_throttle_max_delay: 800ms";
    let p = start_proxy("  size: 2", clients).await;
    let throttled = || p.ctx.metrics.login_throttled.get();
    let attempt = |ip: &'static str, password: &'static str| {
        let p = &p;
        async move {
            let t = Instant::now();
            let r = connect_from(ip, p, "app", password).await;
            (r.map(|_| ()).map_err(|e| sqlstate(&e)), t.elapsed())
        }
    };
    for _ in 0..2 {
        let (r, _) = attempt("127.0.0.1", "wrong").await;
        assert_eq!(r, Err(Some("28P01".into())));
    }
    assert_eq!(throttled(), 0);
    let mut waits = Vec::new();
    for (n, least) in [(1, 400), (2, 800), (3, 800)] {
        let (r, took) = attempt("127.0.0.1", "wrong").await;
        assert_eq!(r, Err(Some("28P01".into())));
        assert!(took >= Duration::from_millis(least), "attempt {n} after the threshold took {took:?}");
        assert_eq!(throttled(), n);
        waits.push(took);
    }
    // Another address is not held up (nor counted).
    let (r, took) = attempt("127.0.0.2", "app").await;
    assert_eq!(r, Ok(()));
    assert_eq!(throttled(), 3);
    eprintln!("bad-password attempts past the threshold took {waits:?}; a login from 127.0.0.2 took {took:?}");
    // The throttled address's good logins wait too (the delay comes before authentication).
    let (r, took) = attempt("127.0.0.1", "app").await;
    assert_eq!(r, Ok(()));
    assert!(took >= Duration::from_millis(800), "{took:?}");
    assert_eq!(throttled(), 4);
}

/// Clients in the burst (PGMUX_STORM_CLIENTS overrides).
fn burst_clients() -> usize {
    std::env::var("PGMUX_STORM_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_scram_logins_all_succeed_through_a_small_pool() {
    let n = burst_clients();
    // Both ends of every connection live in this process.
    let (soft, _) = rlimit::increase_nofile_limit(u64::MAX).map(|l| (l, ())).unwrap();
    assert!(soft as usize >= 2 * n + 200, "RLIMIT_NOFILE {soft} is too low for {n} clients");
    let p = start_proxy("  size: 20\n  borrow_timeout: 60s", "").await;
    // How many server connections user u3 holds, sampled throughout.
    let (watcher, conn) =
        tokio_postgres::connect(&format!("{} user=app password=app dbname=app", primary_dsn()), tokio_postgres::NoTls)
            .await
            .expect("connect to the primary");
    tokio::spawn(conn);
    let stop = tokio_util::sync::CancellationToken::new();
    let peak = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut peak = 0i64;
            while !stop.is_cancelled() {
                let row = watcher
                    .query_one("select count(*) from pg_stat_activity where usename = 'u3'", &[])
                    .await
                    .expect("pg_stat_activity");
                peak = peak.max(row.get(0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        }
    });
    let dsn = p.dsn("u3", "u3", "app");
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let dsn = dsn.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let c = connect(&dsn).await?;
                let connected = t.elapsed();
                c.simple_query("select 1").await?;
                Ok::<_, tokio_postgres::Error>(connected)
            })
        })
        .collect();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    let mut connect_times = Vec::with_capacity(n);
    for t in tasks {
        match t.await.expect("client task") {
            Ok(d) => connect_times.push(d),
            Err(e) => *failures.entry(format!("{:?}: {e}", sqlstate(&e))).or_default() += 1,
        }
    }
    let elapsed = started.elapsed();
    stop.cancel();
    let peak = peak.await.unwrap();
    connect_times.sort();
    let pct =
        |q: f64| connect_times.get(((connect_times.len() as f64 * q) as usize).min(connect_times.len().max(1) - 1));
    eprintln!(
        "burst: {n} clients in {elapsed:?}; connect p50 {:?} p99 {:?} max {:?}; peak server connections {peak}",
        pct(0.5),
        pct(0.99),
        connect_times.last()
    );
    assert!(failures.is_empty(), "{} of {n} clients failed: {failures:?}", n - connect_times.len());
    assert!(peak <= 20, "user u3 had {peak} server connections, more than pool.size 20");
    assert!(peak >= 1, "the sampler never saw the pool at work");
}

/// libpq-style host/port of the shared cluster's primary.
fn primary_dsn() -> String {
    let addr = cluster().addr(0);
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    format!("host={host} port={port}")
}

/// Opens `n` more clients that each log in, run one query and stay connected, idle.
async fn open_idle(addr: std::net::SocketAddr, clients: &mut Vec<Raw>, n: usize) {
    let target = clients.len() + n;
    while clients.len() < target {
        let batch = (target - clients.len()).min(100);
        let opened = futures_util::future::join_all((0..batch).map(|_| async move {
            let (mut raw, _) = Raw::login_as(addr, "u1", "u1", &[]).await;
            let reply = raw.query("select 1").await;
            assert_eq!(reply.last().map(|m| m.0), Some(b'Z'), "{reply:?}");
            raw
        }))
        .await;
        clients.extend(opened);
    }
}

/// Idle clients in the memory test (PGMUX_IDLE_CLIENTS overrides; the README figure is for
/// 10,000).
fn idle_clients() -> usize {
    std::env::var("PGMUX_IDLE_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(6_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_costs_at_most_3_5_kb() {
    let (lo, hi) = (2_000, idle_clients());
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let c = cluster();
    let proxy = ChildProxy::start(&yaml(&[c.addr(0)], "  size: 20", "  max_connections: 20000"));
    let mut clients = Vec::with_capacity(hi);
    open_idle(proxy.addr, &mut clients, lo).await;
    let rss_lo = proxy.rss_kb();
    open_idle(proxy.addr, &mut clients, hi - lo).await;
    assert_eq!(clients.len(), hi);
    let rss_hi = proxy.rss_kb();
    let per_client = (rss_hi.saturating_sub(rss_lo) * 1024) / (hi - lo) as u64;
    eprintln!("idle clients: RSS {rss_lo} kB at {lo}, {rss_hi} kB at {hi}: {per_client} bytes per client");
    assert!(per_client <= 3584, "{per_client} bytes per idle client, more than 3.5 kB");
}

/// The ParameterStatus messages of a greeting, by name.
fn reported(greeting: &[(u8, Vec<u8>)]) -> std::collections::BTreeMap<String, String> {
    greeting
        .iter()
        .filter(|(tag, _)| *tag == b'S')
        .map(|(_, body)| {
            let mut parts = body.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
            (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_need_no_server_connection_once_the_pool_knows_their_settings() {
    let p = start_proxy("  size: 1\n  borrow_timeout: 30s", "").await;
    let settings = [("application_name", "greeted"), ("DateStyle", "German")];
    // The first login with these settings borrows: it proves the database, user and settings.
    let (mut holder, first) = Raw::login_as(p.addr, "u1", "u1", &settings).await;
    let told = reported(&first);
    assert_eq!(told.get("application_name").map(String::as_str), Some("greeted"));
    assert_eq!(told.get("DateStyle").map(String::as_str), Some("German, DMY"), "the server's canonical value");
    // Now the pool's only connection is held, and 50 more clients log in with the same settings.
    holder.query("begin").await;
    let addr = p.addr;
    let logins: Vec<_> =
        (0..50).map(|_| tokio::spawn(async move { Raw::login_as(addr, "u1", "u1", &settings).await })).collect();
    // Settings the pool has not seen yet still need a server connection to vouch for them.
    let other = tokio::spawn(Raw::login_as(p.addr, "u1", "u1", &[("application_name", "unseen")]));
    let mut greeted = Vec::new();
    for login in logins {
        let (raw, greeting) = tokio::time::timeout(Duration::from_secs(15), login)
            .await
            .expect("login without a server connection")
            .unwrap();
        assert_eq!(reported(&greeting), told, "told what the first login was told");
        greeted.push(raw);
    }
    assert!(!other.is_finished(), "a login with unseen settings did not wait for a server connection");
    assert_eq!(p.ctx.cluster.pools.all().iter().map(|pool| pool.open_count()).sum::<usize>(), 1);
    holder.query("commit").await;
    let (_, greeting) = tokio::time::timeout(Duration::from_secs(15), other).await.expect("unseen settings").unwrap();
    assert_eq!(reported(&greeting).get("application_name").map(String::as_str), Some("unseen"));
    // Each greeted client's first transaction runs with its settings.
    for raw in greeted.iter_mut().take(5) {
        let reply =
            raw.query("select current_setting('application_name') || ' ' || current_setting('DateStyle')").await;
        let row = reply.iter().find(|(tag, _)| *tag == b'D').expect("a row");
        assert!(String::from_utf8_lossy(&row.1).contains("greeted German, DMY"), "{reply:?}");
    }
}

/// Runs the built `pgmux storm` with these arguments (off the async threads); (exit code, stdout,
/// stderr).
async fn storm(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmux"))
            .arg("storm")
            .args(&args)
            .output()
            .expect("run pgmux storm");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    })
    .await
    .expect("join")
}

/// `pgmux storm ... --json`: exit code and the parsed report.
async fn storm_json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push("--json".into());
    let (code, out, err) = storm(args).await;
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}\nstderr: {err}"));
    (code, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_burst_through_a_small_pool_matches_what_the_server_saw() {
    let n = burst_clients();
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    // Its own user (u4), so the server-side count is this pool's alone.
    let p = start_proxy("  size: 20\n  borrow_timeout: 60s", "").await;
    let table = unique("storm_burst");
    admin_sql(0, &format!("create table {table} (at timestamptz default now()); grant insert on {table} to u4")).await;
    let dsn = p.dsn("u4", "u4", "app");
    let server = format!("{} user=app password=app dbname=app", primary_dsn());
    let query = format!("insert into {table} default values");
    let clients = n.to_string();
    let args = ["burst", "--clients", &clients, "--dsn", &dsn, "--server-dsn", &server, "--query", &query];
    let (code, r) = storm_json(&args).await;
    eprintln!(
        "storm burst: {n} clients in {} s, connect ms {}, backends max {}",
        r["elapsed_s"], r["connect_ms"], r["backends"]["max"]
    );
    assert_eq!(r["errors"], serde_json::json!([]), "failures: {r:#}");
    assert_eq!(
        (r["attempts"].as_u64(), r["successes"].as_u64(), r["failures"].as_u64()),
        (Some(n as u64), Some(n as u64), Some(0))
    );
    assert_eq!(code, 0);
    assert_eq!(r["query_ms"]["count"].as_u64(), Some(n as u64));
    // The server's own view: one row per successful client.
    let rows: u64 = admin_sql(0, &format!("select count(*) from {table}")).await.trim().parse().unwrap();
    assert_eq!(rows, n as u64, "the server saw {rows} inserts, the report {} successes", r["successes"]);
    let max = r["backends"]["max"].as_u64().expect("backend samples");
    assert!((1..=20).contains(&max), "u4 had {max} server connections at most; pool.size is 20");
    assert_eq!(r["backends"]["source"], "server");
    assert!(r["backends"]["samples"].as_array().is_some_and(|s| !s.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_with_a_wrong_password_reports_28p01_and_exits_1() {
    let yaml = yaml(&[cluster().addr(0)], "  size: 2", "").replace("servers:", "admin_listen: 127.0.0.1:0\nservers:");
    let p = start_proxy_yaml(&yaml).await;
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("storm.html");
    let dsn = format!("postgres://app:wrong@127.0.0.1:{}/app", p.port());
    let admin = format!("http://{}", p.admin.expect("admin endpoint"));
    let args = ["rate", "--rate", "50", "--duration", "1s", "--dsn", &dsn, "--admin", &admin];
    let (code, r) = storm_json(&[&args[..], &["--html", html.to_str().unwrap()]].concat()).await;
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(
        (r["attempts"].as_u64(), r["successes"].as_u64(), r["failures"].as_u64()),
        (Some(50), Some(0), Some(50))
    );
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "one group: {errors:?}");
    assert_eq!((errors[0]["sqlstate"].as_str(), errors[0]["phase"].as_str()), (Some("28P01"), Some("connect")));
    assert_eq!(errors[0]["count"].as_u64(), Some(50));
    assert_eq!((r["backends"]["source"].as_str(), r["backends"]["max"].as_u64()), (Some("admin"), Some(0)));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("28P01") && page.contains("<svg"));
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
    // And a clean one through the same pgmux: exit 0, the text report.
    let dsn = p.dsn("app", "app", "app");
    let (code, out, err) =
        storm(["burst", "--clients", "20", "--dsn", &dsn, "--admin", &admin].map(String::from).to_vec()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("succeeded          20") && out.contains("from admin"), "{out}");
}

#[tokio::test]
async fn storm_usage_errors_exit_2() {
    for args in [
        &["burst", "--dsn", "host=127.0.0.1 user=app"][..],
        &["rate", "--rate", "10", "--dsn", "host=127.0.0.1 user=app"],
        &["hold", "--clients", "5", "--duration", "5", "--dsn", "host=127.0.0.1 user=app"],
        &["burst", "--clients", "5", "--dsn", "host=127.0.0.1 user=app sslmode=sometimes"],
        &["burst", "--clients", "5", "--dsn", "host=127.0.0.1 user=app", "--html", "/nonexistent/dir/x.html"],
        &["flood", "--clients", "5", "--dsn", "host=127.0.0.1 user=app"],
    ] {
        let (code, out, err) = storm(args.iter().map(|a| a.to_string()).collect()).await;
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(!err.is_empty(), "{args:?} says nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_interrupted_by_ctrl_c_still_reports() {
    // A server that accepts and never answers: every client hangs in its startup.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let dsn = format!("host=127.0.0.1 port={port} user=app password=app dbname=app");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pgmux"))
        .args(["storm", "burst", "--clients", "5", "--json", "--dsn", &dsn])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async { accepted.load(std::sync::atomic::Ordering::SeqCst) == 5 }).await
    );
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["attempts"].as_u64(), r["failures"].as_u64()), (Some(5), Some(5)), "{r:#}");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("interrupted"), "{r:#}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
}
