//! The `pgmux` binary: `check`, serving from a config file, and signals.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_pgmux");

#[test]
fn check_accepts_the_shipped_example() {
    let out = Command::new(BIN).args(["check", "--config", "proxy.yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_lists_every_problem_with_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:6432\nservers: []\npool:\n  size: 0\n  borrow_timeout: 120\n  colour: blue\nusers:\n  - name: app\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    for needle in
        ["servers", "pool.size", "pool.borrow_timeout", "pool.colour", "users[0]", "line 4", "line 5", "line 6"]
    {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// Two distinct ports free a moment ago.
fn free_ports() -> [u16; 2] {
    let held = [(); 2].map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap().port())
}

fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_from_a_config_file_and_drains_on_sigterm() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    let text = yaml(&[c.addr(0), c.addr(1)], "  size: 2", "");
    let dsn = |port: u16| format!("host=127.0.0.1 port={port} user=app password=app dbname=app");
    for (sig, during_tx) in [("TERM", true), ("INT", false)] {
        let spawn = |ports: &[u16]| {
            std::fs::write(&path, text.replace("127.0.0.1:0", &format!("127.0.0.1:{}", ports[0]))).unwrap();
            Command::new(BIN).env("PGMUX_CONFIG", &path).stderr(Stdio::null()).spawn().unwrap()
        };
        let (mut child, ports) =
            spawn_on_free_ports(1, spawn, |p| async move { connect(&dsn(p[0])).await.is_ok() }).await;
        let client = connect(&dsn(ports[0])).await.expect("pgmux is up");
        if during_tx {
            client.batch_execute("begin; select 1").await.unwrap();
        }
        kill(child.id(), sig);
        if during_tx {
            // The open transaction may still finish after SIGTERM.
            client.batch_execute("select 2; commit").await.unwrap();
        }
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
        assert!(status.success(), "exit after SIG{sig}: {status:?}");
        assert!(eventually(Duration::from_secs(5), || async { client.is_closed() }).await);
    }
}

fn health(admin: u16, ready: bool) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(["health", "--addr", &format!("127.0.0.1:{admin}")]);
    if ready {
        command.arg("--ready");
    }
    command.output().unwrap()
}

/// Configured from PGMUX_* variables alone (no file in the working directory), `pgmux check` and
/// `pgmux health` agree with what runs; /readyz turns 503 as soon as SIGTERM starts the drain
/// (while /healthz stays 200), the running transaction finishes, and pgmux exits 0; all of it on
/// one worker (tokio's single-threaded runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_only_config_health_and_drain() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let env = |port: u16, admin: u16| {
        [
            ("PGMUX_LISTEN", format!("127.0.0.1:{port}")),
            ("PGMUX_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
            ("PGMUX_SERVERS", format!("{},{}", c.addr(0), c.addr(1))),
            ("PGMUX_USERS", "app=env:TEST_APP_PASSWORD".to_owned()),
            ("TEST_APP_PASSWORD", "app".to_owned()),
            ("PGMUX_SHUTDOWN_TIMEOUT", "10s".to_owned()),
            // One worker: the single-threaded runtime serves clients, admin and the drain.
            ("PGMUX_WORKERS", "1".to_owned()),
        ]
    };
    let pgmux = |args: &[&str], [port, admin]: [u16; 2]| {
        let mut command = Command::new(BIN);
        command.args(args).current_dir(dir.path()).env_remove("PGMUX_CONFIG").envs(env(port, admin));
        command
    };
    let unused = free_ports();
    let out = pgmux(&["check"], unused).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("PGMUX_* environment (no config file): ok"));
    // Nothing listens yet: both checks fail.
    assert!(!health(unused[1], false).status.success());
    let out = pgmux(&["health"], unused).output().unwrap();
    assert!(!out.status.success(), "no pgmux running yet");

    let spawn = |p: &[u16]| pgmux(&[], [p[0], p[1]]).stderr(Stdio::null()).spawn().unwrap();
    let ready = |p: Vec<u16>| async move { health(p[1], true).status.success() };
    let (mut child, ports) = spawn_on_free_ports(2, spawn, ready).await;
    let (port, admin) = (ports[0], ports[1]);
    // Without --addr, the command finds admin_listen in the same configuration.
    assert!(pgmux(&["health", "--ready"], [port, admin]).output().unwrap().status.success());
    let client = connect(&format!("host=127.0.0.1 port={port} user=app password=app dbname=app")).await.unwrap();
    client.batch_execute("begin; select 1").await.unwrap();
    kill(child.id(), "TERM");
    let unready = eventually(Duration::from_secs(5), || async { !health(admin, true).status.success() }).await;
    assert!(unready, "/readyz still 200 after SIGTERM");
    let out = health(admin, true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("shutting down"), "{out:?}");
    assert!(health(admin, false).status.success(), "alive while draining");
    client.batch_execute("select 2; commit").await.unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "exit after the drain: {status:?}");
}

#[test]
fn version_names_the_commit() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with(&format!("pgmux {} (commit ", env!("CARGO_PKG_VERSION"))), "{text}");
}

/// The README's first command: `pgmux demo` starts a throwaway primary + replica, serves the writer
/// endpoint (the primary) and the reader endpoint (the replica) on two worker runtimes, and on
/// Ctrl-C exits 0 having removed the servers' data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_a_primary_and_a_replica_and_cleans_up() {
    use std::io::BufRead;
    // A port with the next one free too (the reader endpoint).
    let port = loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let mut child = Command::new(BIN)
        .args(["demo", "--port", &port.to_string()])
        .env("PGMUX_WORKERS", "2")
        .env("PGMUX_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read to the end (a pipe closed early would break the demo's later lines).
    let (up, listening) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut up = Some(up);
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("pgmux is listening") {
                up.take().map(|up| up.send(()));
            }
        }
    });
    let listening = tokio::time::timeout(Duration::from_secs(180), listening).await;
    assert!(matches!(listening, Ok(Ok(()))), "the demo did not come up: {:?}", child.try_wait());
    let dsn = |p: u16| format!("host=127.0.0.1 port={p} user=app password=app dbname=app");
    let writer = connect(&dsn(port)).await.expect("the writer endpoint");
    assert_eq!(simple_value(&writer, "select pg_is_in_recovery()::text").await, "false");
    let reader = connect(&dsn(port + 1)).await.expect("the reader endpoint");
    // Until the prober has seen the replica, the reader endpoint falls back to the primary.
    let on_replica = || async { simple_value(&reader, "select pg_is_in_recovery()::text").await == "true" };
    assert!(eventually(Duration::from_secs(30), on_replica).await, "the reader endpoint never reached the replica");
    kill(child.id(), "INT");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "exit after Ctrl-C: {status:?}");
    let log = tokio::task::spawn_blocking(move || std::io::read_to_string(stderr).unwrap()).await.unwrap();
    let dir =
        log.lines().find_map(|l| l.strip_prefix("stopping PostgreSQL and removing ")).expect("the demo's data dir");
    let dir = dir.trim_end_matches(" ...");
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind:\n{log}");
}
