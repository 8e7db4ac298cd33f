//! Real drivers that lean on named prepared statements and session state, through pgmux in
//! transaction mode with a small pool: asyncpg (Python; installed by .ci/run).

mod common;

use common::*;

fn have_python_module(module: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_many_clients_small_pool() {
    if !have_python_module("asyncpg") {
        // CI installs it (see .ci/run); a developer without it is told, not failed.
        assert!(std::env::var("CI").is_err(), "asyncpg must be installed in CI");
        eprintln!("SKIPPED: python3 -m pip install asyncpg to run this test");
        return;
    }
    let p = start_proxy("  size: 3", "").await;
    let dsn = format!("postgresql://app:app@127.0.0.1:{}/app", p.port());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drivers/asyncpg_check.py"), &dsn, "30"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "asyncpg check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
