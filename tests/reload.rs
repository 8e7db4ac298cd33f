//! Live reload (the console's RELOAD, SIGHUP): the file is re-read and validated whole, then
//! applied at once without dropping a client; what cannot change live is refused by name, and a
//! broken file changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;

/// A config for the shared cluster with the given pool size and users (name = password unless
/// given), the admin console open to `app`.
fn config_text(size: usize, users: &[(&str, &str)], listen: &str) -> String {
    let c = cluster();
    let users: String = users.iter().map(|(u, p)| format!("  - name: {u}\n    password: {p}\n")).collect();
    format!(
        "listen: {listen}\nservers: [{}, {}]\npool:\n  size: {size}\n  borrow_timeout: 20s\nusers:\n{users}admin_users: [app]\n",
        c.addr(0),
        c.addr(1)
    )
}

async fn start_from_file(path: &Path) -> TestProxy {
    let text = std::fs::read_to_string(path).unwrap();
    let p = start_proxy_yaml(&text).await;
    *p.ctx.config_path.lock().unwrap() = Some(PathBuf::from(path));
    p
}

/// Runs RELOAD on the admin console; Ok(notice text) or Err((sqlstate, message)).
async fn reload(p: &TestProxy) -> Result<String, (String, String)> {
    let (client, mut conn) =
        tokio_postgres::connect(&p.dsn("app", "app", "pgmux"), tokio_postgres::NoTls).await.expect("console login");
    let notices = Arc::new(std::sync::Mutex::new(Vec::new()));
    let n2 = notices.clone();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(m)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = m {
                n2.lock().unwrap().push(n.message().to_string());
            }
        }
    });
    match client.simple_query("RELOAD").await {
        Ok(_) => Ok(notices.lock().unwrap().join("; ")),
        Err(e) => {
            let db = e.as_db_error().expect("a server error");
            Err((db.code().code().to_string(), db.message().to_string()))
        }
    }
}

fn pool_size(p: &TestProxy, user: &str) -> Option<usize> {
    p.ctx.cluster.pools.all().into_iter().find(|pool| pool.key.user == user).map(|pool| pool.size())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_grows_the_pool_under_load_without_a_client_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, config_text(2, &[("app", "app"), ("u3", "u3")], "127.0.0.1:0")).unwrap();
    let p = start_from_file(&path).await;
    let dsn = p.dsn("u3", "u3", "app");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..12 {
        let c = connect(&dsn).await.unwrap();
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                c.batch_execute("BEGIN; SELECT pg_sleep(0.005); COMMIT").await.expect("no client error during reload");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    assert!(eventually(Duration::from_secs(10), || async { done.load(Ordering::Relaxed) > 50 }).await);
    assert_eq!(pool_size(&p, "u3"), Some(2));

    std::fs::write(&path, config_text(5, &[("app", "app"), ("u3", "u3")], "127.0.0.1:0")).unwrap();
    let notice = reload(&p).await.expect("reload applied");
    assert!(notice.contains("pool.size"), "says what changed: {notice}");
    assert_eq!(pool_size(&p, "u3"), Some(5));
    let backends = || async {
        admin_sql(0, "select count(*) from pg_stat_activity where usename = 'u3' and backend_type = 'client backend'")
            .await
            .parse::<i64>()
            .unwrap()
    };
    assert!(eventually(Duration::from_secs(10), || async { backends().await > 2 }).await, "pool did not grow");
    let before = done.load(Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(10), || async { done.load(Ordering::Relaxed) > before + 50 }).await);

    // And shrinks back: the server sees at most 2 again once the extra connections idle out.
    std::fs::write(&path, config_text(2, &[("app", "app"), ("u3", "u3")], "127.0.0.1:0")).unwrap();
    reload(&p).await.expect("reload applied");
    let before = done.load(Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(10), || async { done.load(Ordering::Relaxed) > before + 50 }).await);
    assert!(
        p.ctx.cluster.pools.all().iter().filter(|pool| pool.key.user == "u3").all(|pool| pool.borrowed_count() <= 2)
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker saw no error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_users_and_refuses_what_cannot_change_live() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, config_text(3, &[("app", "app"), ("u1", "u1")], "127.0.0.1:0")).unwrap();
    let p = start_from_file(&path).await;
    let u1 = connect(&p.dsn("u1", "u1", "app")).await.expect("u1 logs in");
    assert!(connect(&p.dsn("u2", "u2", "app")).await.is_err(), "u2 is not configured yet");

    // A setting that cannot change live: refused by name, and nothing else in the file applied.
    std::fs::write(&path, config_text(7, &[("app", "app"), ("u1", "u1"), ("u2", "u2")], "127.0.0.1:1")).unwrap();
    let (code, message) = reload(&p).await.expect_err("listen cannot change live");
    assert_eq!(code, "F0000");
    assert!(message.contains("listen"), "{message}");
    assert!(connect(&p.dsn("u2", "u2", "app")).await.is_err(), "nothing applied");
    // A broken file: nothing changes, the reason is given.
    std::fs::write(&path, "listen: [oops\n").unwrap();
    let (code, message) = reload(&p).await.expect_err("invalid file");
    assert_eq!(code, "F0000");
    assert!(message.contains("invalid"), "{message}");

    // Users added and passwords changed apply to new logins; sessions already in keep working.
    std::fs::write(&path, config_text(3, &[("app", "app"), ("u1", "u1-new"), ("u2", "u2")], "127.0.0.1:0")).unwrap();
    let notice = reload(&p).await.expect("reload applied");
    assert!(notice.contains("users"), "{notice}");
    connect(&p.dsn("u2", "u2", "app")).await.expect("the added user logs in");
    let err = connect(&p.dsn("u1", "u1", "app")).await.expect_err("the old password is refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
    assert_eq!(simple_value(&u1, "select 41 + 1").await, "42", "a session from before keeps working");
    // (The server still knows u1 by its old password: new server connections for u1 now fail to
    // log in, which is the operator's change to make on the servers too.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    let dsn = |port: u16| format!("host=127.0.0.1 port={port} user=app password=app dbname=app");
    let spawn = |ports: &[u16]| {
        std::fs::write(&path, config_text(2, &[("app", "app")], &format!("127.0.0.1:{}", ports[0]))).unwrap();
        Command::new(env!("CARGO_BIN_EXE_pgmux")).args(["--config"]).arg(&path).stderr(Stdio::null()).spawn().unwrap()
    };
    let (mut child, ports) = spawn_on_free_ports(1, spawn, |p| async move { connect(&dsn(p[0])).await.is_ok() }).await;
    let port = ports[0];
    let listen = format!("127.0.0.1:{port}");
    let client = connect(&dsn(port)).await.expect("pgmux is up");
    let u2 = format!("host=127.0.0.1 port={port} user=u2 password=u2 dbname=app");
    assert!(connect(&u2).await.is_err());
    std::fs::write(&path, config_text(2, &[("app", "app"), ("u2", "u2")], &listen)).unwrap();
    let ok = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    assert!(
        eventually(Duration::from_secs(10), || async { connect(&u2).await.is_ok() }).await,
        "SIGHUP did not reload"
    );
    assert_eq!(simple_value(&client, "select 'still here'").await, "still here");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_servers() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    let users = "users:\n  - name: app\n    password: app\nadmin_users: [app]\n";
    let with_servers = |servers: &[String]| {
        format!(
            "listen: 127.0.0.1:0\nservers: [{}]\npool:\n  size: 3\nhealth:\n  interval: 200ms\n{users}",
            servers.join(", ")
        )
    };
    std::fs::write(&path, with_servers(&[c.addr(0)])).unwrap();
    let p = start_from_file(&path).await;
    let client = connect_app(&p).await;
    let read_only_port =
        || async { simple_value(&client, "BEGIN READ ONLY; SELECT inet_server_port()::text; COMMIT").await };
    // With the primary alone, read-only work falls back to it.
    assert_eq!(read_only_port().await, c.port(0).to_string());

    // The replica is added: probed, then serving read-only transactions.
    std::fs::write(&path, with_servers(&[c.addr(0), c.addr(1)])).unwrap();
    let notice = reload(&p).await.expect("reload applied");
    assert!(notice.contains("servers"), "{notice}");
    let replica_port = c.port(1).to_string();
    assert!(
        eventually(Duration::from_secs(10), || async { read_only_port().await == replica_port }).await,
        "the added replica never served a read-only transaction"
    );

    // Removed again: no new work for it, the client goes on.
    std::fs::write(&path, with_servers(&[c.addr(0)])).unwrap();
    reload(&p).await.expect("reload applied");
    assert!(p.ctx.cluster.servers_view().iter().all(|s| *s.server != *c.addr(1)), "removed server still listed");
    for _ in 0..10 {
        assert_eq!(read_only_port().await, c.port(0).to_string());
    }
}
