//! Primary failover with real servers: the primary is crashed (`pg_ctl stop -m immediate`) under
//! connected clients and a writer loop, a replica is promoted (`pg_ctl promote`) ~2 s later, and
//! pgmux must keep every client connected, fail only what was in flight, follow the new primary by
//! itself, and never write to the old primary once it comes back claiming to be one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    TestProxy, connect, eventually, http_get, psql_value, simple_value, sqlstate, start_proxy_yaml,
    start_proxy_yaml_resolving,
};
use pgmux::localpg::{ClusterOptions, LocalCluster};
use tokio::sync::Mutex;

fn failover_yaml(c: &LocalCluster, lost_session_state: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nservers: [{}, {}]\n\
         pool:\n  size: 12\n  borrow_timeout: 30s\n  connect_timeout: 2s\n  lost_session_state: {lost_session_state}\n\
         health:\n  interval: 200ms\n\
         users:\n  - name: app\n    password: app\n",
        c.addr(0),
        c.addr(1)
    )
}

/// `yaml` with a reader endpoint as well.
fn with_reader_endpoint(yaml: &str) -> String {
    yaml.replace("admin_listen:", "reader_listen: 127.0.0.1:0\nadmin_listen:")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

/// The port of the server that answered, and whether it is in recovery.
async fn where_am_i(c: &tokio_postgres::Client) -> Result<(i32, bool), tokio_postgres::Error> {
    let row = c.query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[]).await?;
    Ok((row.get(0), row.get(1)))
}

async fn status(p: &TestProxy) -> serde_json::Value {
    let (code, body) = http_get(p.admin.expect("admin endpoint"), "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status is JSON")
}

/// Rows a writer loop had acknowledged, with when.
#[derive(Default)]
struct Writes {
    acked: Vec<(i64, Instant)>,
    errors: Vec<(String, Instant)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_keeps_clients_connected_and_follows_the_new_primary() {
    let cluster =
        Arc::new(blocking(|| LocalCluster::start(ClusterOptions::default()).expect("start local PostgreSQL")).await);
    cluster.stop_when_process_exits();
    let (p0, p1) = (cluster.port(0) as i32, cluster.port(1) as i32);
    let proxy = start_proxy_yaml(&failover_yaml(&cluster, "continue")).await;
    let closing = start_proxy_yaml(&failover_yaml(&cluster, "close")).await;
    let dsn = proxy.dsn("app", "app", "app");

    let setup = connect(&dsn).await.expect("connect");
    setup.batch_execute("CREATE TABLE fo (id bigserial PRIMARY KEY, who text NOT NULL)").await.expect("create table");
    assert_eq!(where_am_i(&setup).await.unwrap(), (p0, false));

    // 40 idle clients, each with a named prepared statement and a setting of its own.
    let mut idle = Vec::new();
    for i in 0..40 {
        let c = connect(&dsn).await.expect("idle client connects");
        c.batch_execute(&format!("SET application_name = 'idle{i}'")).await.unwrap();
        let st = c.prepare("SELECT $1::int + 1, current_setting('application_name')").await.unwrap();
        let row = c.query_one(&st, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
        idle.push((c, st));
    }
    // 7 clients inside a transaction that wrote.
    let mut in_tx = Vec::new();
    for i in 0..7 {
        let c = connect(&dsn).await.expect("client connects");
        c.batch_execute(&format!("BEGIN; INSERT INTO fo (who) VALUES ('tx{i}')")).await.unwrap();
        in_tx.push(c);
    }
    // A client pinned by a temp table, and one on the proxy configured to close such clients.
    let pinned = connect(&dsn).await.unwrap();
    pinned.batch_execute("CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)").await.unwrap();
    let pinned_closed = connect(&closing.dsn("app", "app", "app")).await.unwrap();
    pinned_closed.batch_execute("CREATE TEMP TABLE scratch (x int)").await.unwrap();

    // The writer loop: autocommit inserts on one connection, retrying after errors.
    let writes = Arc::new(Mutex::new(Writes::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer_conn = Arc::new(connect(&dsn).await.unwrap());
    let writer = {
        let (writes, stop, c) = (writes.clone(), stop.clone(), writer_conn.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c.query_one("INSERT INTO fo (who) VALUES ('writer') RETURNING id", &[]).await {
                    Ok(row) => writes.lock().await.acked.push((row.get(0), Instant::now())),
                    Err(e) => {
                        writes.lock().await.errors.push((format!("{e} {:?}", sqlstate(&e)), Instant::now()));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        })
    };
    assert!(eventually(Duration::from_secs(10), || async { writes.lock().await.acked.len() >= 50 }).await);
    // Everything acknowledged before this point is on the replica once this returns.
    let replicated = writes.lock().await.acked.len();
    let c2 = cluster.clone();
    blocking(move || c2.wait_replicas_caught_up(Duration::from_secs(30))).await.expect("replica catches up");
    let replicated: Vec<i64> = writes.lock().await.acked[..replicated].iter().map(|(id, _)| *id).collect();

    // Crash the primary; promote the replica about two seconds later.
    let c2 = cluster.clone();
    let crashed_at = Instant::now();
    blocking(move || c2.stop(0, true)).await.expect("crash the primary");

    // While no primary exists: in-flight transactions fail with a clear error, and the clients
    // can end their failed block without waiting for a server.
    for c in &in_tx {
        let err = c.batch_execute("INSERT INTO fo (who) VALUES ('lost')").await.expect_err("the transaction is gone");
        let code = sqlstate(&err).unwrap_or_default();
        assert!(code.starts_with("08") || code == "57P01", "in-flight transaction error: {err:?}");
        let err2 = c.batch_execute("SELECT 1").await.expect_err("still in the failed block");
        assert_eq!(sqlstate(&err2).as_deref(), Some("25P02"), "{err2:?}");
        c.batch_execute("ROLLBACK").await.expect("ROLLBACK of the lost transaction");
    }
    // The pinned client hears that its session state is gone, once.
    let err = pinned.simple_query("SELECT count(*) FROM scratch").await.expect_err("temp table lost");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err:?}");
    let message = err.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert!(message.contains("temp"), "says what was lost: {message}");
    // On the proxy configured so, the pinned client is closed instead.
    assert!(
        eventually(Duration::from_secs(10), || async { pinned_closed.simple_query("SELECT 1").await.is_err() }).await,
        "pinned client not closed"
    );
    assert!(eventually(Duration::from_secs(5), || async { pinned_closed.is_closed() }).await);

    // A client logging in while there is no primary waits for one.
    let newcomer = {
        let dsn = dsn.clone();
        tokio::spawn(async move { connect(&dsn).await })
    };
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(crashed_at.elapsed())).await;
    let c2 = cluster.clone();
    let promote_started = Instant::now();
    blocking(move || c2.promote(1)).await.expect("promote the replica");
    let promoted_at = Instant::now();
    eprintln!("promotion took {:?}", promoted_at - promote_started);

    // New transactions waited for the new primary instead of failing: every client's next one
    // commits there.
    for (i, c) in in_tx.iter().enumerate() {
        let row = c
            .query_one(
                "WITH w AS (INSERT INTO fo (who) VALUES ('after') RETURNING id) \
                 SELECT inet_server_port(), pg_is_in_recovery() FROM w",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("client {i}'s next transaction: {e:?}"));
        assert_eq!((row.get::<_, i32>(0), row.get::<_, bool>(1)), (p1, false));
    }
    let newcomer = newcomer.await.unwrap().expect("a login during the failover succeeds once a primary is known");
    assert_eq!(where_am_i(&newcomer).await.unwrap(), (p1, false));
    // Idle clients noticed nothing: their prepared statements and settings work on the new primary.
    for (i, (c, st)) in idle.iter().enumerate() {
        let row = c.query_one(st, &[&(i as i32)]).await.unwrap_or_else(|e| panic!("idle client {i}: {e:?}"));
        assert_eq!(row.get::<_, i32>(0), i as i32 + 1);
        assert_eq!(row.get::<_, String>(1), format!("idle{i}"), "settings re-established");
        assert_eq!(where_am_i(c).await.unwrap(), (p1, false));
    }
    // The pinned client goes on, unpinned, on the new primary.
    assert_eq!(simple_value(&pinned, "SELECT inet_server_port()::text").await, p1.to_string());
    let err = pinned.simple_query("SELECT count(*) FROM scratch").await.expect_err("temp table is gone");
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"));

    // The writer loop resumed by itself, on its own connection.
    let resumed = || async { writes.lock().await.acked.iter().rev().find(|(_, t)| *t > promoted_at).map(|(_, t)| *t) };
    assert!(eventually(Duration::from_secs(30), || async { resumed().await.is_some() }).await, "writer never resumed");
    let resumed_at = resumed().await.expect("resumed");
    eprintln!("writer resumed {:?} after the promotion finished", resumed_at - promoted_at);
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let w = writes.lock().await;
    for (e, t) in &w.errors {
        eprintln!("writer error {:?} after the crash: {e}", t.saturating_duration_since(crashed_at));
    }
    for (e, t) in &w.errors {
        assert!(*t >= crashed_at, "a write failed before the crash: {e}");
        assert!(e.contains("Some(\"08006\")") || e.contains("Some(\"57P01\")"), "unclear write error: {e}");
    }

    // No client connection was closed by pgmux.
    assert!(!writer_conn.is_closed() && !pinned.is_closed() && !setup.is_closed());
    assert!(idle.iter().all(|(c, _)| !c.is_closed()) && in_tx.iter().all(|c| !c.is_closed()));

    // Every row acknowledged before the crash and replicated is there; so is every later one.
    // (Rows acknowledged between the sync point and the crash may be lost to asynchronous
    // replication, through pgmux or not.)
    let after: Vec<i64> = w.acked.iter().filter(|(_, t)| *t > promote_started).map(|(id, _)| *id).collect();
    assert!(!after.is_empty());
    let ids: Vec<i64> = replicated.iter().chain(after.iter()).copied().collect();
    let present: i64 =
        setup.query_one("SELECT count(*) FROM fo WHERE id = ANY($1)", &[&ids]).await.expect("count").get(0);
    assert_eq!(present, ids.len() as i64, "acknowledged rows missing after the failover");
    let lost: i64 = setup.query_one("SELECT count(*) FROM fo WHERE who = 'lost'", &[]).await.unwrap().get(0);
    assert_eq!(lost, 0);
    drop(w);

    let s = status(&proxy).await;
    assert_eq!(s["primary"], cluster.addr(1), "{s}");
    assert_eq!(s["failover"]["failovers"], 1, "{s}");
    assert_eq!(s["failover"]["in_progress"], false, "{s}");
    assert_eq!(s["failover"]["losses"], 1, "{s}");
    assert!(s["failover"]["recover_ms_total"].as_u64().is_some_and(|ms| ms > 0), "{s}");

    // The old primary comes back without rejoining: it claims to be a primary (on the old
    // timeline). pgmux sees it, and still sends no write to it.
    let c2 = cluster.clone();
    blocking(move || c2.start_node(0)).await.expect("restart the old primary");
    assert_eq!(cluster.psql(0, "app", "SELECT pg_is_in_recovery()").unwrap(), "f");
    let seen = eventually(Duration::from_secs(15), || async {
        let s = status(&proxy).await;
        s["servers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["server"] == cluster.addr(0) && v["up"] == true && v["role"] == "primary")
    })
    .await;
    assert!(seen, "pgmux never saw the old primary come back: {}", status(&proxy).await);
    let before = cluster.psql(0, "app", "SELECT count(*) FROM fo").unwrap();
    for _ in 0..20 {
        let c = connect(&dsn).await.unwrap();
        let row = c
            .query_one(
                "WITH w AS (INSERT INTO fo (who) VALUES ('late') RETURNING id) SELECT inet_server_port() FROM w",
                &[],
            )
            .await
            .expect("write after the old primary returned");
        assert_eq!(row.get::<_, i32>(0), p1, "a write reached the old primary");
    }
    assert_eq!(cluster.psql(0, "app", "SELECT count(*) FROM fo").unwrap(), before, "old primary got writes");
    let s = status(&proxy).await;
    assert_eq!(s["primary"], cluster.addr(1), "{s}");
    assert_eq!(s["failover"]["failovers"], 1, "never flipped back: {s}");

    proxy.shutdown.drain.cancel();
    closing.shutdown.drain.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_beside_a_live_primary_takes_all_writes() {
    let cluster =
        Arc::new(blocking(|| LocalCluster::start(ClusterOptions::default()).expect("start local PostgreSQL")).await);
    cluster.stop_when_process_exits();
    let (p0, p1) = (cluster.port(0) as i32, cluster.port(1) as i32);
    let proxy = start_proxy_yaml(&with_reader_endpoint(&failover_yaml(&cluster, "continue"))).await;
    let dsn = proxy.dsn("app", "app", "app");
    let c = connect(&dsn).await.unwrap();
    c.batch_execute("CREATE TABLE sb (id serial PRIMARY KEY, at int)").await.unwrap();
    // A psql login through the reader endpoint: the replica's pool remembers how the replica
    // greeted it (in_hot_standby = on), for logins with psql's settings.
    let reader = proxy.reader.expect("reader endpoint").port();
    assert_eq!(psql_value(reader, "password=app", "SELECT pg_is_in_recovery()").await, "t");
    assert_eq!(psql_value(reader, "password=app", "SELECT pg_is_in_recovery()").await, "t");
    let holder = connect(&dsn).await.unwrap();
    holder.batch_execute("BEGIN; INSERT INTO sb (at) VALUES (inet_server_port())").await.unwrap();
    assert_eq!(where_am_i(&holder).await.unwrap(), (p0, false));
    let c2 = cluster.clone();
    blocking(move || c2.wait_replicas_caught_up(Duration::from_secs(30))).await.unwrap();

    // Split brain: the replica is promoted while the old primary lives on.
    let c2 = cluster.clone();
    blocking(move || c2.promote(1)).await.expect("promote");
    let moved = eventually(Duration::from_secs(10), || async {
        status(&proxy).await["primary"] == serde_json::json!(cluster.addr(1))
    })
    .await;
    assert!(moved, "pgmux never followed the newer timeline: {}", status(&proxy).await);
    // The transaction open on the old primary was cut, not allowed to commit there.
    let err = holder.batch_execute("COMMIT").await.expect_err("the old primary's transaction must not commit");
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err:?}");
    assert!(!holder.is_closed());
    for _ in 0..10 {
        let row = c
            .query_one("WITH w AS (INSERT INTO sb (at) VALUES (1) RETURNING id) SELECT inet_server_port() FROM w", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), p1);
    }
    assert_eq!(where_am_i(&holder).await.unwrap(), (p1, false));
    assert_eq!(cluster.psql(0, "app", "SELECT count(*) FROM sb").unwrap(), "0", "the old primary got a write");
    // A writer login with the same settings is not told what the server said while it was a
    // replica: libpq's target_session_attrs=read-write reads in_hot_standby from the greeting.
    let writer = proxy.addr.port();
    let port = psql_value(writer, "password=app target_session_attrs=read-write", "SELECT inet_server_port()").await;
    assert_eq!(port, p1.to_string());
    proxy.shutdown.drain.cancel();
}

/// The acknowledged writes and the errors of a writer loop, with the server that took each write.
#[derive(Default)]
struct Probed {
    /// (port, in recovery) of every acknowledged write.
    acked: Vec<(i32, bool)>,
    errors: Vec<String>,
}

/// A writer loop on one connection: `txid_current()` needs a transaction id, which a replica
/// refuses (25006), so any write that reached a replica shows up as an error.
fn spawn_txid_writer(
    c: Arc<tokio_postgres::Client>,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Probed>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Probed::default()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            match c.query_one("SELECT inet_server_port(), pg_is_in_recovery(), txid_current()", &[]).await {
                Ok(row) => s.lock().await.acked.push((row.get(0), row.get(1))),
                Err(e) => {
                    s.lock().await.errors.push(format!("{:?} {e}", sqlstate(&e)));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    (seen, task)
}

async fn metric(p: &TestProxy, name: &str) -> f64 {
    let (_, body) = http_get(p.admin.expect("admin endpoint"), "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_rebuilt_at_the_same_ports_is_followed_once_without_flapping() {
    let cluster = blocking(|| LocalCluster::start(ClusterOptions::default()).expect("start local PostgreSQL")).await;
    cluster.stop_when_process_exits();
    let (p0, p1) = (cluster.port(0) as i32, cluster.port(1) as i32);
    let proxy = start_proxy_yaml(&failover_yaml(&cluster, "continue")).await;
    let c = connect(&proxy.dsn("app", "app", "app")).await.unwrap();
    assert_eq!(where_am_i(&c).await.unwrap(), (p0, false));

    // A failover first: pgmux follows timeline 2, so the rebuilt cluster's timeline 1 is older.
    let cluster = blocking(move || {
        cluster.stop(0, true).unwrap();
        cluster.promote(1).unwrap();
        cluster
    })
    .await;
    assert!(eventually(Duration::from_secs(15), || async { status(&proxy).await["primary"] == cluster.addr(1) }).await);
    assert_eq!(where_am_i(&c).await.unwrap(), (p1, false));
    let losses = status(&proxy).await["failover"]["losses"].as_u64().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (seen, writer) =
        spawn_txid_writer(Arc::new(connect(&proxy.dsn("app", "app", "app")).await.unwrap()), stop.clone());
    assert!(eventually(Duration::from_secs(10), || async { seen.lock().await.acked.len() >= 20 }).await);

    // Torn down and made anew (initdb) at the same ports: primary at node 0, replica at node 1.
    let mut cluster = cluster;
    let rebuilt_at = Instant::now();
    let cluster = blocking(move || {
        cluster.rebuild(&ClusterOptions::default()).expect("rebuild the cluster");
        cluster
    })
    .await;
    let rebuilt = rebuilt_at.elapsed();
    let followed =
        eventually(Duration::from_secs(15), || async { status(&proxy).await["primary"] == cluster.addr(0) }).await;
    assert!(followed, "the rebuilt cluster's primary was never followed: {}", status(&proxy).await);
    eprintln!("rebuild took {rebuilt:?}; followed {:?} after it finished", rebuilt_at.elapsed() - rebuilt);
    let acked = seen.lock().await.acked.len();
    assert!(eventually(Duration::from_secs(10), || async { seen.lock().await.acked.len() >= acked + 50 }).await);
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // Every write reached a primary; none was refused by a replica.
    let seen = seen.lock().await;
    assert!(seen.acked.iter().all(|(_, recovering)| !recovering));
    assert!(seen.acked.last().is_some_and(|(port, _)| *port == p0));
    assert!(seen.errors.iter().all(|e| !e.contains("25006")), "a write reached a replica: {:?}", seen.errors);
    eprintln!("writer errors during the rebuild: {}", seen.errors.len());
    // One loss (the teardown), one replacement, no flapping.
    let s = status(&proxy).await;
    assert_eq!(s["failover"]["losses"].as_u64(), Some(losses + 1), "{s}");
    assert_eq!(s["failover"]["clusters_replaced"], 1, "{s}");
    assert_eq!(metric(&proxy, "pgmux_clusters_replaced_total").await, 1.0);
    // The new cluster's replica is seen as one, and new clients land on the new primary.
    let replica_seen = eventually(Duration::from_secs(10), || async {
        status(&proxy).await["servers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["server"] == cluster.addr(1) && v["role"] == "replica")
    })
    .await;
    assert!(replica_seen, "{}", status(&proxy).await);
    let fresh = connect(&proxy.dsn("app", "app", "app")).await.unwrap();
    assert_eq!(where_am_i(&fresh).await.unwrap(), (p0, false));
    assert_eq!(status(&proxy).await["failover"]["losses"].as_u64(), Some(losses + 1));
    proxy.shutdown.drain.cancel();
}

/// What one writer loop saw around the switchover.
#[derive(Default)]
struct Loop {
    /// Errors, with the in-flight statement's start and end.
    errors: Vec<String>,
    /// Acknowledged writes: (port, when acknowledged).
    acked: Vec<(i32, Instant)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn planned_switchover_under_50_clients() {
    let cluster =
        Arc::new(blocking(|| LocalCluster::start(ClusterOptions::default()).expect("start local PostgreSQL")).await);
    cluster.stop_when_process_exits();
    let (p0, p1) = (cluster.port(0) as i32, cluster.port(1) as i32);
    let proxy = start_proxy_yaml(&with_reader_endpoint(&failover_yaml(&cluster, "continue"))).await;
    let dsn = proxy.dsn("app", "app", "app");
    let reader = proxy.reader.expect("reader endpoint");
    let reader_dsn = format!("host={} port={} user=app password=app dbname=app", reader.ip(), reader.port());
    let setup = connect(&dsn).await.unwrap();
    setup.batch_execute("CREATE TABLE sw (id bigserial PRIMARY KEY, who text NOT NULL)").await.unwrap();

    // 50 clients: 35 idle (a prepared statement and a setting each), 10 inside a transaction that
    // wrote, 5 writer loops. Readers through the reader endpoint fill the replica's pool meanwhile.
    let mut idle = Vec::new();
    for i in 0..35 {
        let c = connect(&dsn).await.unwrap();
        c.batch_execute(&format!("SET application_name = 'idle{i}'")).await.unwrap();
        let st = c.prepare("SELECT $1::int + 1, current_setting('application_name')").await.unwrap();
        c.query_one(&st, &[&i]).await.unwrap();
        idle.push((c, st));
    }
    let mut in_tx = Vec::new();
    for i in 0..10 {
        let c = connect(&dsn).await.unwrap();
        c.batch_execute(&format!("BEGIN; INSERT INTO sw (who) VALUES ('tx{i}')")).await.unwrap();
        in_tx.push(c);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..5 {
        let (c, stop) = (connect(&dsn).await.unwrap(), stop.clone());
        let seen = Arc::new(Mutex::new(Loop::default()));
        let s = seen.clone();
        writers.push((
            seen,
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let sql = "WITH w AS (INSERT INTO sw (who) VALUES ('loop') RETURNING id) SELECT inet_server_port() FROM w";
                    match c.query_one(sql, &[]).await {
                        Ok(row) => s.lock().await.acked.push((row.get(0), Instant::now())),
                        Err(e) => s.lock().await.errors.push(format!("{:?} {e}", sqlstate(&e))),
                    }
                }
            }),
        ));
    }
    let readers: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(connect(&reader_dsn).await.unwrap());
        }
        v
    };
    let replica_reads = eventually(Duration::from_secs(10), || async {
        let mut on_replica = 0;
        for r in &readers {
            on_replica += usize::from(matches!(where_am_i(r).await, Ok((p, true)) if p == p1));
        }
        on_replica == readers.len()
    })
    .await;
    assert!(replica_reads, "reads never reached the replica");
    for (seen, _) in &writers {
        assert!(eventually(Duration::from_secs(10), || async { seen.lock().await.acked.len() >= 10 }).await);
    }
    let c2 = cluster.clone();
    blocking(move || c2.wait_replicas_caught_up(Duration::from_secs(30))).await.unwrap();

    // The switchover: stop the primary cleanly, promote the replica, restart the old primary as
    // its replica.
    let c2 = cluster.clone();
    let started = Instant::now();
    let promoted_at = blocking(move || {
        c2.stop(0, false).expect("stop the primary (fast)");
        c2.promote(1).expect("promote the replica");
        let at = Instant::now();
        c2.demote(0, 1).expect("restart the old primary as a replica");
        at
    })
    .await;
    eprintln!("switchover: promoted {:?} after the stop, demoted {:?} after", promoted_at - started, started.elapsed());

    // In-flight transactions: one error each, then the block ends and new work runs on the new
    // primary.
    for (i, c) in in_tx.iter().enumerate() {
        let err = c.batch_execute("INSERT INTO sw (who) VALUES ('lost')").await.expect_err("the transaction is gone");
        let code = sqlstate(&err).unwrap_or_default();
        assert!(code.starts_with("08") || code == "57P01", "client {i}: {err:?}");
        c.batch_execute("ROLLBACK").await.expect("ROLLBACK of the lost transaction");
        let row = c
            .query_one(
                "WITH w AS (INSERT INTO sw (who) VALUES ('after') RETURNING id) SELECT inet_server_port() FROM w",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("client {i}'s next transaction: {e:?}"));
        assert_eq!(row.get::<_, i32>(0), p1);
    }
    // Idle clients see nothing: their next query works, on the new primary.
    for (i, (c, st)) in idle.iter().enumerate() {
        let row = c.query_one(st, &[&(i as i32)]).await.unwrap_or_else(|e| panic!("idle client {i}: {e:?}"));
        assert_eq!(row.get::<_, String>(1), format!("idle{i}"));
        assert_eq!(where_am_i(c).await.unwrap(), (p1, false), "idle client {i}");
    }
    // Writer loops: at most one error each (what was in flight at the stop), then back on p1.
    for (seen, _) in &writers {
        assert!(
            eventually(Duration::from_secs(10), || async {
                seen.lock().await.acked.iter().any(|(p, t)| *p == p1 && *t > promoted_at)
            })
            .await
        );
    }
    stop.store(true, Ordering::Relaxed);
    for (i, (seen, task)) in writers.into_iter().enumerate() {
        task.await.unwrap();
        let seen = seen.lock().await;
        assert!(seen.errors.len() <= 1, "writer {i} got more than one error: {:?}", seen.errors);
        assert!(seen.acked.iter().all(|(p, _)| *p == p0 || *p == p1));
    }
    // The demoted server joins the reader set once it replays; the new primary leaves it.
    let joined = eventually(Duration::from_secs(20), || async {
        let mut on_old = false;
        for r in &readers {
            match where_am_i(r).await {
                Ok((p, true)) if p == p0 => on_old = true,
                Ok((p, recovering)) => assert!(p != p1 || !recovering, "impossible"),
                Err(_) => {}
            }
        }
        on_old
    })
    .await;
    assert!(joined, "the demoted server never served reads: {}", status(&proxy).await);
    // One loss, one failover: no flapping.
    let s = status(&proxy).await;
    assert_eq!(s["primary"], cluster.addr(1), "{s}");
    assert_eq!(s["failover"]["losses"], 1, "{s}");
    assert_eq!(s["failover"]["failovers"], 1, "{s}");
    assert_eq!(s["failover"]["clusters_replaced"], 0, "{s}");
    assert!(idle.iter().all(|(c, _)| !c.is_closed()) && in_tx.iter().all(|c| !c.is_closed()));
    proxy.shutdown.drain.cancel();
}

/// A name service the test controls: host name → socket addresses (a test resolver may answer
/// with ports too, so two servers on 127.0.0.1 can stand for two hosts). Counts lookups.
#[derive(Debug, Default)]
struct TestNames {
    map: std::sync::Mutex<std::collections::HashMap<String, Vec<std::net::SocketAddr>>>,
    lookups: std::sync::atomic::AtomicUsize,
}

impl TestNames {
    fn set(&self, host: &str, ports: &[u16]) {
        let addrs = ports.iter().map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p))).collect();
        self.map.lock().unwrap().insert(host.into(), addrs);
    }
}

impl pgmux::cluster::names::Resolve for TestNames {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        _port: u16,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<std::net::SocketAddr>>> + Send + 'a>>
    {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let found = self.map.lock().unwrap().get(host).cloned();
        Box::pin(async move { found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")) })
    }
}

async fn members(p: &TestProxy) -> Vec<String> {
    let s = status(p).await;
    s["servers"].as_array().unwrap().iter().map(|v| v["server"].as_str().unwrap().to_string()).collect()
}

/// RDS Multi-AZ style: pgmux knows the writer only by a name, which moves to the new primary on
/// failover; later the name resolves to both servers (two members: a primary and a replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_that_moves_is_followed() {
    let cluster =
        Arc::new(blocking(|| LocalCluster::start(ClusterOptions::default()).expect("start local PostgreSQL")).await);
    cluster.stop_when_process_exits();
    let (p0, p1) = (cluster.port(0), cluster.port(1));
    let names = Arc::new(TestNames::default());
    names.set("writer.db.test", &[p0]);
    let yaml = "listen: 127.0.0.1:0\nreader_listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nservers: [writer.db.test:5432]\n\
         pool:\n  size: 4\n  borrow_timeout: 30s\n  connect_timeout: 2s\n\
         health:\n  interval: 200ms\n  resolve_interval: 200ms\n\
         users:\n  - name: app\n    password: app\n";
    let started = Instant::now();
    let proxy = start_proxy_yaml_resolving(yaml, names.clone()).await;
    assert_eq!(members(&proxy).await, [format!("writer.db.test@127.0.0.1:{p0}")]);
    let c = connect(&proxy.dsn("app", "app", "app")).await.unwrap();
    assert_eq!(where_am_i(&c).await.unwrap(), (p0 as i32, false));

    // Failover: the primary dies, the replica is promoted, and the name moves to it.
    let c2 = cluster.clone();
    blocking(move || {
        c2.stop(0, true).unwrap();
        c2.promote(1).unwrap();
    })
    .await;
    names.set("writer.db.test", &[p1]);
    let moved_at = Instant::now();
    let write = "WITH w AS (SELECT txid_current()) SELECT inet_server_port(), pg_is_in_recovery() FROM w";
    let row = c.query_one(write, &[]).await;
    // The write in flight at the crash may fail once; the next one waits for the moved name.
    let row = match row {
        Ok(r) => r,
        Err(_) => c.query_one(write, &[]).await.expect("a write after the name moved"),
    };
    assert_eq!((row.get::<_, i32>(0), row.get::<_, bool>(1)), (p1 as i32, false));
    let followed = moved_at.elapsed();
    eprintln!("followed the moved name {followed:?} after it moved");
    assert!(followed < Duration::from_secs(5), "took {followed:?}");
    assert_eq!(members(&proxy).await, [format!("writer.db.test@127.0.0.1:{p1}")]);

    // The old primary rejoins as a replica, and the name now resolves to both: two members.
    let c2 = cluster.clone();
    blocking(move || c2.demote(0, 1)).await.expect("old primary rejoins as a replica");
    names.set("writer.db.test", &[p1, p0]);
    let both = eventually(Duration::from_secs(10), || async { members(&proxy).await.len() == 2 }).await;
    assert!(both, "{:?}", members(&proxy).await);
    let reader = proxy.reader.unwrap();
    let r = connect(&format!("host=127.0.0.1 port={} user=app password=app dbname=app", reader.port())).await.unwrap();
    let read_on_p0 = eventually(Duration::from_secs(15), || async {
        matches!(where_am_i(&r).await, Ok((p, true)) if p == p0 as i32)
    })
    .await;
    assert!(read_on_p0, "reads never reached the second address: {}", status(&proxy).await);
    for _ in 0..5 {
        let row = c.query_one(write, &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), p1 as i32, "writes stay on the primary");
    }
    // Resolution respects the minimum interval (probe rounds and new connections ask often).
    let lookups = names.lookups.load(Ordering::Relaxed) as u128;
    let most = started.elapsed().as_millis() / 200 + 2;
    assert!(lookups <= most, "{lookups} lookups in {:?}", started.elapsed());
    proxy.shutdown.drain.cancel();
}
