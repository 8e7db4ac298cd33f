//! Test harness: a shared local PostgreSQL cluster per test binary, pgmux started in-process on port
//! 0, and helpers for real clients (tokio-postgres, raw sockets, psql, pgbench).
#![allow(dead_code)]

pub mod certs;
pub mod faults;
pub mod raw;
pub mod rng;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pgmux::app::Proxy;
use pgmux::config::Config;
use pgmux::listener::Shutdown;
use pgmux::localpg::{ClusterOptions, LocalCluster};
use pgmux::state::ProxyState;
use tokio::task::JoinHandle;

/// One primary + one replica shared by the tests of a binary (stopped when the binary exits).
pub fn cluster() -> &'static LocalCluster {
    static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        // Besides `app`, users `u1`..`u4` (password = name) for tests that count or kill their own
        // server connections without disturbing tests running beside them.
        let mut opts = ClusterOptions::default();
        opts.users.extend((1..=4).map(|i| (format!("u{i}"), format!("u{i}"))));
        let c = LocalCluster::start(opts).expect("start local PostgreSQL");
        c.stop_when_process_exits();
        c
    })
}

/// A running in-process pgmux.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// The reader endpoint, when the config has `reader_listen`.
    pub reader: Option<SocketAddr>,
    /// The HTTP admin endpoint, when the config has `admin_listen`.
    pub admin: Option<SocketAddr>,
    pub shutdown: Shutdown,
    pub ctx: Arc<ProxyState>,
    pub handle: JoinHandle<()>,
    /// The per-core runtimes it serves on (stopped when this is dropped).
    _cores: Option<pgmux::app::runtime::Workers>,
}

/// How many cores the in-process pgmux serves clients on: `PGMUX_TEST_CORES`, by default 2 — the
/// shape `pgmux` runs in on a 2-core machine (`workers` defaults to the CPUs). 1: the test's own
/// runtime.
pub fn test_cores() -> usize {
    std::env::var("PGMUX_TEST_CORES").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

impl TestProxy {
    pub fn dsn(&self, user: &str, password: &str, db: &str) -> String {
        format!("host={} port={} user={user} password={password} dbname={db}", self.addr.ip(), self.addr.port())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// The YAML for a proxy on a free port in front of `servers`; `extra` is appended (pool:, clients:…).
pub fn yaml(servers: &[String], pool: &str, clients: &str) -> String {
    let servers = servers.join(", ");
    let users: String =
        ["app", "u1", "u2", "u3", "u4"].iter().map(|u| format!("  - name: {u}\n    password: {u}\n")).collect();
    format!(
        "listen: 127.0.0.1:0\nservers: [{servers}]\npool:\n  connect_timeout: 5s\n{pool}\nclients:\n{clients}\nusers:\n{users}shutdown_timeout: 10s\n"
    )
}

/// Starts pgmux with this YAML.
pub async fn start_proxy_yaml(text: &str) -> TestProxy {
    start_proxy_yaml_resolving(text, Arc::new(pgmux::cluster::names::SystemResolver)).await
}

/// Starts pgmux with this YAML, resolving the servers' host names with `resolver`.
pub async fn start_proxy_yaml_resolving(text: &str, resolver: Arc<dyn pgmux::cluster::names::Resolve>) -> TestProxy {
    let config = Config::from_yaml(text).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"));
    let shutdown = Shutdown::default();
    let n = test_cores();
    if n < 2 {
        let proxy = Proxy::bind_with_resolver(&config, &shutdown, resolver).await.expect("bind");
        let addr = proxy.local_addr().expect("local addr");
        let reader = proxy.reader_addr();
        let admin = proxy.admin_addr();
        let ctx = proxy.ctx.clone();
        let s = shutdown.clone();
        let handle = tokio::spawn(async move { proxy.run(s).await });
        return TestProxy { addr, reader, admin, shutdown, ctx, handle, _cores: None };
    }
    // Bound and run on core 0, as `pgmux` does.
    let threads = pgmux::app::runtime::Workers::start((0..n).map(|i| format!("test-core-{i}"))).expect("cores");
    let cores = pgmux::pool::cores::Cores::new(threads.handles().to_vec());
    let core0 = threads.handles()[0].clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let s = shutdown.clone();
    let handle = core0.spawn(async move {
        let proxy = Proxy::bind_on(&config, &s, resolver, cores).await.expect("bind");
        let addrs = (proxy.local_addr().expect("local addr"), proxy.reader_addr(), proxy.admin_addr());
        let _ = tx.send((addrs, proxy.ctx.clone()));
        proxy.run(s).await
    });
    let ((addr, reader, admin), ctx) = rx.await.expect("pgmux bound");
    TestProxy { addr, reader, admin, shutdown, ctx, handle, _cores: Some(threads) }
}

/// pgmux in front of the shared cluster (primary and replica listed), transaction mode.
pub async fn start_proxy(pool: &str, clients: &str) -> TestProxy {
    let c = cluster();
    start_proxy_yaml(&yaml(&[c.addr(0), c.addr(1)], pool, clients)).await
}

/// Connects with tokio-postgres; the connection task runs in the background.
pub async fn connect(dsn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Connects with tokio-postgres from source address `ip` (any of 127/8 works on loopback).
pub async fn connect_from(
    ip: &str,
    p: &TestProxy,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{ip}:0").parse().unwrap()).expect("bind the source address");
    let stream = socket.connect(p.addr).await.expect("connect to pgmux");
    let config: tokio_postgres::Config = p.dsn(user, password, "app").parse().unwrap();
    let (client, conn) = config.connect_raw(stream, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

pub async fn connect_app(p: &TestProxy) -> tokio_postgres::Client {
    connect(&p.dsn("app", "app", "app")).await.expect("connect through pgmux")
}

/// Polls `f` until it returns true or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique name for tables etc., so tests sharing a cluster don't collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Runs SQL as superuser on node `n` (blocking helper run off the async threads).
pub async fn admin_sql(node: usize, sql: &str) -> String {
    let sql = sql.to_string();
    tokio::task::spawn_blocking(move || cluster().psql(node, "app", &sql).expect("admin psql")).await.expect("join")
}

/// The SQLSTATE of a tokio-postgres error, if the server (or pgmux) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// The first column of the first row of a simple-protocol query, as text.
pub async fn simple_value(c: &tokio_postgres::Client, sql: &str) -> String {
    c.simple_query(sql)
        .await
        .expect("simple query")
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}

/// Runs pgbench as `app` against `port` (off the async threads).
pub async fn pgbench(port: u16, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
            .args(&args)
            .arg("app")
            .env("PGPASSWORD", "app")
            .output()
            .expect("run pgbench")
    })
    .await
    .expect("join")
}

/// Asserts a pgbench run finished all `expected` transactions without a failure.
pub fn assert_pgbench_clean(out: &std::process::Output, expected: u32, what: &str) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{what}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("number of failed transactions: 0 (0.000%)"), "{what}: {text}");
    assert!(text.contains(&format!("actually processed: {expected}/{expected}")), "{what}: {text}");
}

/// Runs one statement with psql as `app` (connection options appended to the DSN); returns the
/// trimmed output, or panics with psql's stderr.
pub async fn psql_value(port: u16, conn_extra: &str, sql: &str) -> String {
    let dsn = format!("host=127.0.0.1 port={port} user=app dbname=app {conn_extra}");
    let sql = sql.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("psql")
            .args(["-X", "-tA", "-c", &sql, &dsn])
            .env("PGPASSWORD", "app")
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
    .await
    .expect("join")
}

/// GET `path` from the admin endpoint; returns (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, "").await
}

/// GET `path` with extra header lines (each ending in `\r\n`).
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect admin");
    let request = format!("GET {path} HTTP/1.1\r\nHost: pgmux\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// pgmux run as its own process (the built binary), for figures only a process of its own gives
/// (RSS). Killed when dropped.
pub struct ChildProxy {
    pub addr: SocketAddr,
    pub child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl ChildProxy {
    /// Starts the binary with this YAML (whose `listen` should be `127.0.0.1:0`); the address it
    /// bound is read from its log.
    pub fn start(yaml: &str) -> ChildProxy {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pgmux"));
        // The tests' own PGMUX_* knobs (PGMUX_IDLE_CLIENTS, PGMUX_TEST_CORES…) are not pgmux
        // settings: pgmux refuses to start on an unknown one. The YAML says all it needs.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PGMUX_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .arg("--config")
            .arg(&path)
            .env("PGMUX_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start pgmux");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("pgmux exited before listening").unwrap();
            if let Some(rest) = line.split("addr=Some(").nth(1)
                && line.contains("endpoint=Writer")
            {
                break rest.split(')').next().unwrap().parse().expect("listen address");
            }
        };
        // Keep reading its log so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ChildProxy { addr, child, _dir: dir }
    }

    pub fn dsn(&self, user: &str, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} password={user} dbname={db}", self.addr.port())
    }

    /// Resident set size now, in kB (VmRSS).
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a child process (`spawn`, given `n` ports that were free a moment before) and waits
/// until `ready` says it serves on them. A port the test frees can be taken by another process
/// before the child binds it; the child then exits, and it is started again on other ports.
pub async fn spawn_on_free_ports<S, R, Fut>(n: usize, mut spawn: S, ready: R) -> (std::process::Child, Vec<u16>)
where
    S: FnMut(&[u16]) -> std::process::Child,
    R: Fn(Vec<u16>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..5 {
        let ports = {
            // All bound at once, so the n ports differ.
            let held: Vec<_> =
                (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0")).collect();
            held.iter().map(|l| l.local_addr().expect("local addr").port()).collect::<Vec<_>>()
        };
        let mut child = spawn(&ports);
        let mut exited = false;
        let up = eventually(Duration::from_secs(15), || {
            exited = exited || matches!(child.try_wait(), Ok(Some(_)));
            let check = (!exited).then(|| ready(ports.clone()));
            async move {
                match check {
                    Some(f) => f.await,
                    None => true,
                }
            }
        })
        .await;
        if up && !exited {
            return (child, ports);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(exited, "the child never came up on ports {ports:?}");
    }
    panic!("the child could not listen on free ports in 5 attempts");
}

/// Whether `handle` is still running after `time` (returns as soon as it finishes).
pub async fn still_running<T>(handle: &mut JoinHandle<T>, time: Duration) -> bool {
    tokio::time::timeout(time, handle).await.is_err()
}
