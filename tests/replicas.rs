//! Read-only work on replicas: the reader endpoint, explicitly read-only transactions on the main
//! endpoint, and a replica that stops and comes back.

mod common;

use std::time::Duration;

use common::*;
use pgmux::localpg::{ClusterOptions, LocalCluster};

fn with_reader(yaml_text: String) -> String {
    yaml_text.replacen("listen: 127.0.0.1:0\n", "listen: 127.0.0.1:0\nreader_listen: 127.0.0.2:0\n", 1)
}

/// Waits until the prober has seen `n` replicas up and caught up (reads go to the primary until then).
async fn replicas_known(p: &TestProxy, n: usize) {
    let ok = eventually(Duration::from_secs(10), || {
        let fit = |s: &&pgmux::cluster::topology::ServerView| {
            s.up && s.role == "replica" && s.lag.is_some_and(|l| l < Duration::from_secs(1))
        };
        let up = p.ctx.cluster.servers_view().iter().filter(fit).count();
        async move { up >= n }
    })
    .await;
    assert!(ok, "prober never reported {n} replica(s): {:?}", p.ctx.cluster.servers_view());
}

fn reader_dsn(p: &TestProxy) -> String {
    let r = p.reader.expect("reader endpoint");
    format!("host={} port={} user=app password=app dbname=app", r.ip(), r.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_endpoint_runs_on_the_replica_and_refuses_writes() {
    let c = cluster();
    let p = start_proxy_yaml(&with_reader(yaml(&[c.addr(0), c.addr(1)], "  size: 2", ""))).await;
    replicas_known(&p, 1).await;
    let r = connect(&reader_dsn(&p)).await.unwrap();
    for _ in 0..5 {
        assert_eq!(simple_value(&r, "select pg_is_in_recovery()").await, "t");
        let row = r.query_one("select pg_is_in_recovery(), inet_server_port()", &[]).await.unwrap();
        assert!(row.get::<_, bool>(0));
        assert_eq!(row.get::<_, i32>(1), c.port(1) as i32);
    }
    let e = r.batch_execute("create table on_replica(x int)").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "the server's own read-only error");
    // The main endpoint of the same proxy writes to the primary.
    let w = connect_app(&p).await;
    assert_eq!(simple_value(&w, "select pg_is_in_recovery()").await, "f");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_read_only_transactions_go_to_a_replica() {
    let p = start_proxy("  size: 2", "").await;
    replicas_known(&p, 1).await;
    let c = connect_app(&p).await;
    assert_eq!(simple_value(&c, "begin read only; select pg_is_in_recovery()").await, "t");
    c.batch_execute("commit").await.unwrap();
    assert_eq!(
        simple_value(&c, "start transaction isolation level repeatable read, read only; select pg_is_in_recovery()")
            .await,
        "t"
    );
    c.batch_execute("commit").await.unwrap();
    assert_eq!(simple_value(&c, "begin; set transaction read only; select pg_is_in_recovery()").await, "t");
    c.batch_execute("commit").await.unwrap();
    // Everything else stays on the primary, reads included.
    for sql in [
        "select pg_is_in_recovery()",
        "begin; select pg_is_in_recovery()",
        "begin read write; select pg_is_in_recovery()",
        "with x as (select 1) select pg_is_in_recovery() from x",
    ] {
        assert_eq!(simple_value(&c, sql).await, "f", "{sql}");
        c.batch_execute("rollback").await.ok();
    }
    // A session that asked for read-only transactions by default.
    let ro = connect(&format!("{} options='-c default_transaction_read_only=on'", p.dsn("app", "app", "app")))
        .await
        .unwrap();
    assert_eq!(simple_value(&ro, "select pg_is_in_recovery()").await, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_is_skipped_and_used_again_when_back() {
    let cluster =
        tokio::task::spawn_blocking(|| LocalCluster::start(ClusterOptions::default())).await.unwrap().unwrap();
    let p = start_proxy_yaml(&with_reader(yaml(&[cluster.addr(0), cluster.addr(1)], "  size: 2", ""))).await;
    replicas_known(&p, 1).await;
    let dsn = reader_dsn(&p);
    let r = connect(&dsn).await.unwrap();
    assert_eq!(simple_value(&r, "select pg_is_in_recovery()").await, "t");
    let cluster = std::sync::Arc::new(cluster);
    let c2 = cluster.clone();
    tokio::task::spawn_blocking(move || c2.stop(1, true)).await.unwrap().unwrap();
    // Reads carry on (on the primary) without an error once the replica is known to be gone.
    let errors = std::sync::atomic::AtomicU32::new(0);
    let fell_back = eventually(Duration::from_secs(10), || async {
        match r.simple_query("select pg_is_in_recovery()").await {
            Ok(_) => simple_value(&r, "select pg_is_in_recovery()").await == "f",
            Err(_) => {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }
        }
    })
    .await;
    assert!(fell_back, "reads never moved off the stopped replica");
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    assert!(errors <= 1, "{errors} errors: at most the transaction in flight when the replica died may fail");
    let c2 = cluster.clone();
    tokio::task::spawn_blocking(move || c2.start_node(1)).await.unwrap().unwrap();
    let back = eventually(Duration::from_secs(20), || async {
        r.simple_query("select 1").await.is_ok() && simple_value(&r, "select pg_is_in_recovery()").await == "t"
    })
    .await;
    assert!(back, "the replica was not used again after it came back");
    p.shutdown.abort.cancel();
}

fn lag_yaml(cluster: &LocalCluster, max_lag: &str) -> String {
    let base = with_reader(yaml(&[cluster.addr(0), cluster.addr(1)], "  size: 2", ""));
    format!("{base}health:\n  interval: 200ms\nrouting:\n  max_replica_lag: {max_lag}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_gets_no_reads_until_it_catches_up() {
    let cluster =
        tokio::task::spawn_blocking(|| LocalCluster::start(ClusterOptions::default())).await.unwrap().unwrap();
    let cluster = std::sync::Arc::new(cluster);
    let p = start_proxy_yaml(&lag_yaml(&cluster, "1s")).await;
    replicas_known(&p, 1).await;
    let r = connect(&reader_dsn(&p)).await.unwrap();
    assert_eq!(simple_value(&r, "select pg_is_in_recovery()").await, "t");
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.psql(1, "app", "select pg_wal_replay_pause()").unwrap();
        c.psql(0, "app", "create table lag_marker(x int); insert into lag_marker values (1)").unwrap();
    })
    .await
    .unwrap();
    let moved =
        eventually(Duration::from_secs(15), || async { simple_value(&r, "select pg_is_in_recovery()").await == "f" })
            .await;
    assert!(moved, "reads stayed on a replica whose replay is paused: {:?}", p.ctx.cluster.servers_view());
    let lagging = p.ctx.cluster.servers_view().into_iter().find(|s| s.role == "replica").unwrap();
    assert!(lagging.lag_bytes.unwrap_or(0) > 0, "{lagging:?}");
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.psql(1, "app", "select pg_wal_replay_resume()").unwrap()).await.unwrap();
    let back =
        eventually(Duration::from_secs(15), || async { simple_value(&r, "select pg_is_in_recovery()").await == "t" })
            .await;
    assert!(back, "reads never returned to the caught-up replica");
    p.shutdown.abort.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_primary_at_a_page_boundary_does_not_make_its_caught_up_replica_lag() {
    // A fresh cluster's last record is pg_basebackup's WAL switch: the primary's insert position is
    // past the new segment's page header, where no record ends, and the replica's replay position
    // stops at the boundary. The replica is caught up, however long the primary stays idle.
    let cluster =
        tokio::task::spawn_blocking(|| LocalCluster::start(ClusterOptions::default())).await.unwrap().unwrap();
    let at = cluster.psql(0, "postgres", "select pg_current_wal_insert_lsn() - '0/0'::pg_lsn").unwrap();
    let at: u64 = at.trim().parse().unwrap();
    eprintln!("the primary's insert position is {at} ({} into a page)", at % 8192);
    let cluster = std::sync::Arc::new(cluster);
    let p = start_proxy_yaml(&lag_yaml(&cluster, "1s")).await;
    replicas_known(&p, 1).await;
    let r = connect(&reader_dsn(&p)).await.unwrap();
    // Well past the lag limit and many probe rounds: every read stays on the replica.
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        let on = simple_value(&r, "select pg_is_in_recovery()").await;
        assert_eq!(on, "t", "an idle, caught-up replica was taken as lagging: {:?}", p.ctx.cluster.servers_view());
    }
    let replica = p.ctx.cluster.servers_view().into_iter().find(|s| s.role == "replica").unwrap();
    assert_eq!(replica.lag_bytes, Some(0), "{replica:?}");
    p.shutdown.abort.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_write_see_it_even_when_the_replica_lags() {
    let cluster =
        tokio::task::spawn_blocking(|| LocalCluster::start(ClusterOptions::default())).await.unwrap().unwrap();
    let cluster = std::sync::Arc::new(cluster);
    // A generous lag limit: the paused replica stays eligible for clients that did not write.
    let p = start_proxy_yaml(&lag_yaml(&cluster, "1h")).await;
    replicas_known(&p, 1).await;
    let setup = connect_app(&p).await;
    setup.batch_execute("create table ryw(x int)").await.unwrap();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.wait_replicas_caught_up(Duration::from_secs(10)).unwrap();
        c.psql(1, "app", "select pg_wal_replay_pause()").unwrap();
    })
    .await
    .unwrap();
    let writer = connect_app(&p).await;
    for i in 0..5 {
        writer.batch_execute(&format!("insert into ryw values ({i})")).await.unwrap();
        let seen = simple_value(&writer, "begin read only; select count(*) from ryw").await;
        writer.batch_execute("commit").await.unwrap();
        assert_eq!(seen, (i + 1).to_string(), "a client did not read its own write");
    }
    // A client that never wrote may read from the (stale) replica.
    let other = connect_app(&p).await;
    let stale = simple_value(&other, "begin read only; select pg_is_in_recovery() || ':' || count(*) from ryw").await;
    other.batch_execute("commit").await.unwrap();
    assert_eq!(stale, "true:0");
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.psql(1, "app", "select pg_wal_replay_resume()").unwrap()).await.unwrap();
    p.shutdown.abort.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_endpoint_spreads_over_both_replicas_and_never_the_primary() {
    let opts = ClusterOptions { replicas: 2, ..ClusterOptions::default() };
    let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(opts)).await.unwrap().unwrap();
    let servers = [cluster.addr(0), cluster.addr(1), cluster.addr(2)];
    let p = start_proxy_yaml(&with_reader(yaml(&servers, "  size: 2", ""))).await;
    replicas_known(&p, 2).await;
    let r = connect(&reader_dsn(&p)).await.unwrap();
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..20 {
        ports.insert(simple_value(&r, "select inet_server_port()").await);
    }
    let want: std::collections::BTreeSet<String> = [1, 2].iter().map(|n| cluster.port(*n).to_string()).collect();
    assert_eq!(ports, want, "reads must reach both replicas and never the primary");
    p.shutdown.abort.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_locking_reads_stay_on_the_primary() {
    let p = start_proxy("  size: 2", "").await;
    replicas_known(&p, 1).await;
    let c = connect_app(&p).await;
    let t = unique("wr");
    c.batch_execute(&format!("create table {t}(x int); create sequence {t}_s")).await.unwrap();
    for sql in [
        format!("with w as (insert into {t} values (1) returning x) select pg_is_in_recovery() from w"),
        format!("select pg_is_in_recovery() from {t} for update"),
        format!("select pg_is_in_recovery() from (select nextval('{t}_s')) s"),
        "select pg_is_in_recovery() from (select pg_advisory_xact_lock(5)) l".to_string(),
    ] {
        assert_eq!(simple_value(&c, &sql).await, "f", "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_and_settings_follow_the_client_to_replicas() {
    // Without read-your-writes, so the read right after the SET may use the replica at once.
    let c0 = cluster();
    let text = format!("{}routing:\n  read_your_writes: false\n", yaml(&[c0.addr(0), c0.addr(1)], "  size: 2", ""));
    let p = start_proxy_yaml(&text).await;
    replicas_known(&p, 1).await;
    let c = connect_app(&p).await;
    let stmt = c.prepare("select pg_is_in_recovery(), current_setting('statement_timeout')").await.unwrap();
    c.batch_execute("set statement_timeout = '11s'").await.unwrap();
    c.batch_execute("begin read only").await.unwrap();
    let row = c.query_one(&stmt, &[]).await.unwrap();
    c.batch_execute("commit").await.unwrap();
    assert!(row.get::<_, bool>(0), "the read-only transaction ran on a replica");
    assert_eq!(row.get::<_, String>(1), "11s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_reads_option_sends_provable_selects_to_replicas() {
    let c0 = cluster();
    let base = yaml(&[c0.addr(0), c0.addr(1)], "  size: 2", "");
    let p =
        start_proxy_yaml(&format!("{base}routing:\n  autocommit_reads: replica\n  read_your_writes: false\n")).await;
    replicas_known(&p, 1).await;
    let c = connect_app(&p).await;
    let t = unique("ac");
    c.batch_execute(&format!("create table {t}(x int); insert into {t} values (1); create sequence {t}_s"))
        .await
        .unwrap();
    assert_eq!(simple_value(&c, "select pg_is_in_recovery()").await, "t");
    // Extended protocol, named statement (tokio-postgres prepares every query).
    let row = c.query_one("select pg_is_in_recovery(), $1::int + 1", &[&1i32]).await.unwrap();
    assert!(row.get::<_, bool>(0));
    // Not provably read-only: the primary.
    for sql in [
        format!("select pg_is_in_recovery() from (select nextval('{t}_s')) s"),
        format!("select pg_is_in_recovery() from {t} for update"),
        "select pg_is_in_recovery(), md5(random()::text)".to_string(),
        "select pg_is_in_recovery(); select 1".to_string(),
    ] {
        let out = c.simple_query(&sql).await.unwrap();
        let first = out
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap();
        assert_eq!(first, "f", "{sql}");
    }
    // Off by default.
    let q = start_proxy("  size: 2", "").await;
    replicas_known(&q, 1).await;
    let d = connect_app(&q).await;
    assert_eq!(simple_value(&d, "select pg_is_in_recovery()").await, "f");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_log_in_and_read_while_the_primary_is_down() {
    let cluster =
        tokio::task::spawn_blocking(|| LocalCluster::start(ClusterOptions::default())).await.unwrap().unwrap();
    let cluster = std::sync::Arc::new(cluster);
    let p = start_proxy_yaml(&lag_yaml(&cluster, "10s")).await;
    replicas_known(&p, 1).await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop(0, true)).await.unwrap().unwrap();
    let r = connect(&reader_dsn(&p)).await.expect("a reader logs in without the primary");
    assert_eq!(simple_value(&r, "select pg_is_in_recovery()").await, "t");
    p.shutdown.abort.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_default_set_as_sql_routes_like_the_startup_parameter() {
    // Without read-your-writes, which would keep reads after the SET (run on the primary) there.
    let p = start_proxy("  size: 2\nrouting:\n  read_your_writes: false", "").await;
    replicas_known(&p, 1).await;
    let c = connect_app(&p).await;
    let on_replica = "select pg_is_in_recovery()";
    assert_eq!(simple_value(&c, on_replica).await, "f");
    c.batch_execute("set session characteristics as transaction read only").await.unwrap();
    assert_eq!(simple_value(&c, on_replica).await, "t", "SET SESSION CHARACTERISTICS … READ ONLY");
    c.batch_execute("set session characteristics as transaction read write").await.unwrap();
    assert_eq!(simple_value(&c, on_replica).await, "f", "… READ WRITE brings it back");
    c.batch_execute("set default_transaction_read_only = on").await.unwrap();
    assert_eq!(simple_value(&c, on_replica).await, "t", "SET default_transaction_read_only = on");
    c.batch_execute("reset default_transaction_read_only").await.unwrap();
    assert_eq!(simple_value(&c, on_replica).await, "f");
}
