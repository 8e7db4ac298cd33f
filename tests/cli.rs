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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    let port = free_port();
    std::fs::write(
        &path,
        yaml(&[c.addr(0), c.addr(1)], "  size: 2", "").replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    for (sig, during_tx) in [("TERM", true), ("INT", false)] {
        let mut child = Command::new(BIN).env("PGMUX_CONFIG", &path).stderr(Stdio::null()).spawn().unwrap();
        let dsn = format!("host=127.0.0.1 port={port} user=app password=app dbname=app");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let client = loop {
            match connect(&dsn).await {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("pgmux never came up: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
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
