//! Pooling through pgmux with real PostgreSQL: sharing, limits, timeouts, cleanup, cancel, shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::*;

/// Server-side connections of `user` (client backends) on the primary.
async fn backends_of(user: &str) -> i64 {
    admin_sql(
        0,
        &format!("select count(*) from pg_stat_activity where usename = '{user}' and backend_type = 'client backend'"),
    )
    .await
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_share_ten_server_connections() {
    let c0 = cluster();
    let p = start_proxy_yaml(&yaml(&[c0.addr(0), c0.addr(1)], "  size: 10", "")).await;
    let t = unique("many");
    admin_sql(0, &format!("create table {t}(client int, i int, primary key (client, i)); grant all on {t} to u1"))
        .await;

    let max_seen = Arc::new(AtomicI64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let (max_seen, stop) = (max_seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let n = backends_of("u1").await;
                max_seen.fetch_max(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for client_id in 0..500 {
        let dsn = p.dsn("u1", "u1", "app");
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&dsn).await.expect("connect");
            for i in 0..20 {
                let tx = c.transaction().await.unwrap();
                tx.execute(&format!("insert into {t} values ($1, $2)"), &[&client_id, &i]).await.unwrap();
                let n: i64 = tx
                    .query_one(&format!("select count(*) from {t} where client = $1 and i = $2"), &[&client_id, &i])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(n, 1);
                let tag = format!("{client_id}-{i}");
                tx.query_one("select set_config('pgmux.tag', $1, true)", &[&tag]).await.unwrap();
                let seen: String = tx.query_one("select current_setting('pgmux.tag')", &[]).await.unwrap().get(0);
                assert_eq!(seen, tag, "another client's transaction-local setting leaked in");
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    stop.cancel();
    watcher.await.unwrap();
    let rows: i64 = admin_sql(0, &format!("select count(*) from {t}")).await.parse().unwrap();
    assert_eq!(rows, 500 * 20);
    let max = max_seen.load(Ordering::Relaxed);
    assert!(max <= 10, "server saw {max} connections for u1 with pool.size 10");
    assert!(max >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrow_timeout_is_error_53300_and_client_stays_connected() {
    let p = start_proxy("  size: 1\n  borrow_timeout: 300ms", "").await;
    let a = connect_app(&p).await;
    let b = connect_app(&p).await;
    a.batch_execute("begin; select 1").await.unwrap();
    let e = b.simple_query("select 2").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"));
    // Extended protocol too: the batch is failed once and the client stays in sync.
    let e = b.query_one("select $1::int", &[&5]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"));
    a.batch_execute("commit").await.unwrap();
    assert_eq!(b.query_one("select $1::int", &[&5]).await.unwrap().get::<_, i32>(0), 5);
}

/// Connects and returns the client plus the task driving its socket (abort = vanish without Terminate).
async fn connect_killable(dsn: &str) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls).await.unwrap();
    let h = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_transaction_commits_nothing_and_next_client_is_clean() {
    let p = start_proxy("  size: 1", "").await;
    let t = unique("killed");
    let setup = connect_app(&p).await;
    setup.batch_execute(&format!("create table {t}(x int)")).await.unwrap();
    let pid_before: i32 = setup.query_one("select pg_backend_pid()", &[]).await.unwrap().get(0);
    drop(setup);

    // Idle inside a transaction when it vanishes: pgmux rolls back and reuses the connection.
    let (a, conn) = connect_killable(&p.dsn("app", "app", "app")).await;
    a.batch_execute(&format!("begin; insert into {t} values (1)")).await.unwrap();
    conn.abort();
    let b = connect_app(&p).await;
    let row = simple_value(
        &b,
        &format!("select count(*) || ',' || pg_backend_pid() || ',' || (now() = statement_timestamp()) from {t}"),
    )
    .await;
    assert_eq!(
        row,
        format!("0,{pid_before},true"),
        "expected: no row committed, same server connection reused, no open transaction"
    );

    // Vanishes while a statement runs inside the transaction: the connection is discarded.
    let (a, conn) = connect_killable(&p.dsn("app", "app", "app")).await;
    a.batch_execute(&format!("begin; insert into {t} values (2)")).await.unwrap();
    let slow = tokio::spawn(async move { a.batch_execute("select pg_sleep(0.5)").await });
    // Cut once the statement runs on the server.
    let running = "select count(*) from pg_stat_activity where state = 'active' and query = 'select pg_sleep(0.5)'";
    assert!(eventually(Duration::from_secs(5), || async { admin_sql(0, running).await.trim() != "0" }).await);
    conn.abort();
    let _ = slow.await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            matches!(b.query_one(&format!("select count(*) from {t}"), &[]).await, Ok(r) if r.get::<_, i64>(0) == 0)
        })
        .await
    );
    assert_eq!(simple_value(&b, "select now() = statement_timestamp()").await, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_killed_in_the_pool_are_not_reused() {
    let p = start_proxy("  size: 2", "").await;
    let c = connect(&p.dsn("u2", "u2", "app")).await.unwrap();
    c.simple_query("select 1").await.unwrap();
    admin_sql(0, "select pg_terminate_backend(pid) from pg_stat_activity where usename = 'u2' and backend_type = 'client backend'").await;
    assert!(
        eventually(Duration::from_secs(5), || async { backends_of("u2").await == 0 }).await,
        "terminated backends should be gone"
    );
    for _ in 0..5 {
        assert_eq!(c.query_one("select 7", &[]).await.unwrap().get::<_, i32>(0), 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_clients_query_only() {
    let p = start_proxy("  size: 2", "").await;
    let c = connect_app(&p).await;
    let token = c.cancel_token();
    let other = connect_app(&p).await;
    let other_token = other.cancel_token();
    let slow = tokio::spawn(async move {
        let r = c.simple_query("select pg_sleep(30)").await;
        (r, c)
    });
    // Cancelling an idle client does nothing to anybody.
    other_token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            admin_sql(
                0,
                "select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'",
            )
            .await
                == "1"
        })
        .await
    );
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (r, c) = tokio::time::timeout(Duration::from_secs(10), slow).await.expect("cancel took effect").unwrap();
    assert_eq!(sqlstate(&r.unwrap_err()).as_deref(), Some("57014"));
    c.simple_query("select 1").await.unwrap();
    other.simple_query("select 1").await.unwrap();
}

/// A cancel pgmux sent while client A held the one server connection, but that reaches the server
/// only after A committed (held up in a relay), must not cancel client B's query on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_cancel_never_reaches_the_next_borrower() {
    use common::faults::{CANCEL_CODE, PeekRelay};
    let c0 = cluster();
    let relay = PeekRelay::start(c0.addr(0).parse().unwrap(), Duration::from_millis(300)).await;
    let p = start_proxy_yaml(&yaml(&[relay.addr.to_string()], "  size: 1", "")).await;
    let a = connect_app(&p).await;
    let mut b = Some(connect_app(&p).await);
    for round in 0..5 {
        a.simple_query("begin").await.unwrap();
        a.simple_query("select 1").await.unwrap();
        let sent = relay.count(CANCEL_CODE);
        a.cancel_token().cancel_query(tokio_postgres::NoTls).await.unwrap();
        // B waits for the connection A holds.
        let client = b.take().unwrap();
        let waiting = tokio::spawn(async move {
            let r = client.simple_query("select pg_sleep(1)").await;
            (r, client)
        });
        // pgmux forwarded the cancel while A held the connection; the relay sits on it.
        assert!(eventually(Duration::from_secs(5), || async { relay.count(CANCEL_CODE) > sent }).await);
        a.simple_query("commit").await.unwrap();
        let (r, client) = waiting.await.unwrap();
        if let Err(e) = &r {
            panic!("round {round}: B's query failed ({:?}): {e}", sqlstate(e));
        }
        b = Some(client);
    }
    assert_eq!(simple_value(&a, "select 'a still works'").await, "a still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_server_connection_and_resets_it() {
    let p = start_proxy("  size: 1\n  mode: session", "").await;
    let c = connect_app(&p).await;
    let pid: i32 = c.query_one("select pg_backend_pid()", &[]).await.unwrap().get(0);
    c.batch_execute("create temp table mine(x int); set statement_timeout = '12s'").await.unwrap();
    for _ in 0..3 {
        let row = c
            .query_one(
                "select pg_backend_pid(), current_setting('statement_timeout'), (select count(*) from mine)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!((row.get::<_, i32>(0), row.get::<_, String>(1)), (pid, "12s".to_string()));
    }
    drop(c);
    let d = connect_app(&p).await;
    let row = d
        .query_one(
            "select pg_backend_pid(), current_setting('statement_timeout'), to_regclass('pg_temp.mine') is null",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), pid, "connection reused");
    assert_eq!(row.get::<_, String>(1), "0", "previous client's SET leaked");
    assert!(row.get::<_, bool>(2), "previous client's temp table leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_is_fatal_53300() {
    let p = start_proxy("  size: 2", "  max_connections: 2").await;
    let _a = connect_app(&p).await;
    let _b = connect_app(&p).await;
    let e = connect(&p.dsn("app", "app", "app")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("53300"));
    drop(_a);
    assert!(eventually(Duration::from_secs(5), || async { connect(&p.dsn("app", "app", "app")).await.is_ok() }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_closed_after_idle_timeout() {
    let p = start_proxy("  size: 2", "  idle_timeout: 300ms").await;
    let c = connect_app(&p).await;
    c.simple_query("select 1").await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { c.is_closed() }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_the_open_transaction_finish_then_closes() {
    let p = start_proxy("  size: 2", "").await;
    let t = unique("drain");
    let a = connect_app(&p).await;
    let idle = connect_app(&p).await;
    a.batch_execute(&format!("create table {t}(x int); begin; insert into {t} values (1)")).await.unwrap();
    p.shutdown.drain.cancel();
    // The idle client is told and closed; no new client gets in.
    assert!(eventually(Duration::from_secs(5), || async { idle.is_closed() }).await);
    assert!(connect(&p.dsn("app", "app", "app")).await.is_err());
    // The transaction in flight finishes.
    a.batch_execute(&format!("insert into {t} values (2); commit")).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || async { a.is_closed() }).await);
    tokio::time::timeout(Duration::from_secs(5), p.handle).await.expect("proxy stopped").unwrap();
    assert_eq!(admin_sql(0, &format!("select count(*) from {t}")).await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_and_extended_complete_without_errors() {
    let p = start_proxy("  size: 5", "").await;
    let init = pgbench(cluster().port(0), &["-i", "-s", "1", "-q"]).await;
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    for mode in ["simple", "extended"] {
        let out = pgbench(p.port(), &["-c", "20", "-j", "2", "-t", "100", "-M", mode, "--no-vacuum"]).await;
        assert_pgbench_clean(&out, 2000, mode);
    }
}

/// Tags, SQLSTATEs of errors and ReadyForQuery statuses of a reply, e.g. ["E08006", "ZE"].
fn outline(msgs: &[common::raw::Msg]) -> Vec<String> {
    msgs.iter()
        .filter(|(t, _)| matches!(t, b'E' | b'Z' | b'C'))
        .map(|(t, b)| match t {
            b'E' => format!("E{}", common::raw::field(b, b'C').unwrap_or_default()),
            b'Z' => format!("Z{}", b[0] as char),
            _ => format!("C{}", String::from_utf8_lossy(&b[..b.len() - 1])),
        })
        .collect()
}

/// Terminates the server session serving `app_name` once it runs `pg_sleep`.
async fn kill_sleeping(app_name: &str) {
    let running = format!(
        "select count(*) from pg_stat_activity where application_name = '{app_name}' and state = 'active' and query like '%pg_sleep%'"
    );
    assert!(eventually(Duration::from_secs(10), || async { admin_sql(0, &running).await == "1" }).await);
    admin_sql(
        0,
        &format!("select pg_terminate_backend(pid) from pg_stat_activity where application_name = '{app_name}'"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_a_pipeline_fails_each_batch_and_keeps_the_client() {
    use common::raw::{Raw, message};
    let p = start_proxy("  size: 2", "").await;
    let name = unique("killed");
    let (mut raw, _) = Raw::login(p.addr, &[("application_name", &name)]).await;
    let query = |sql: &str| message(b'Q', format!("{sql}\0").as_bytes());
    let extended_select = {
        let mut b = message(b'P', b"\0SELECT 1\0\0\0");
        b.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
        b.extend(message(b'E', b"\0\0\0\0\0"));
        b.extend(message(b'S', b""));
        b
    };

    // Inside a transaction block: three batches in flight, the first one sleeping, when the server
    // session dies. Each gets its own error; the block stays aborted until the client ends it.
    assert_eq!(outline(&raw.query("BEGIN").await), ["CBEGIN", "ZT"]);
    let mut pipeline = query("SELECT pg_sleep(30)");
    pipeline.extend(query("SELECT 1"));
    pipeline.extend(&extended_select);
    raw.send(&pipeline).await;
    kill_sleeping(&name).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(outline(&raw.until_ready().await));
    }
    assert_eq!(got, ["E08006", "ZE", "E25P02", "ZE", "E25P02", "ZE"]);
    assert_eq!(outline(&raw.query("SELECT 2").await), ["E25P02", "ZE"]);
    assert_eq!(outline(&raw.query("COMMIT").await), ["CROLLBACK", "ZI"], "COMMIT of an aborted block rolls back");
    let ok = raw.query("SELECT 42").await;
    assert_eq!(outline(&ok), ["CSELECT 1", "ZI"], "{ok:?}");

    // Outside a transaction: every pipelined batch fails on its own, then work goes on.
    let mut pipeline = query("SELECT pg_sleep(30)");
    pipeline.extend(&extended_select);
    pipeline.extend(query("SELECT 3"));
    raw.send(&pipeline).await;
    kill_sleeping(&name).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(outline(&raw.until_ready().await));
    }
    assert_eq!(got, ["E08006", "ZI", "E08006", "ZI", "E08006", "ZI"]);
    assert_eq!(outline(&raw.query("SELECT 4").await), ["CSELECT 1", "ZI"]);
}

/// A pool split over two cores (pgmux's shape on this box: one connection per core here) lends
/// both connections to whichever two clients ask, whatever core each came in on, and a connection
/// given back on one core reaches a client waiting on the other; never more than the pool's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_split_over_cores_lends_every_connection_to_any_client() {
    let p = start_proxy("  size: 2\n  borrow_timeout: 30s", "").await;
    let dsn = p.dsn("u3", "u3", "app");
    let quick = Duration::from_secs(5);
    // The kernel spreads clients over the cores by their ports: rounds of fresh clients land on
    // the same core and on different ones.
    for round in 0..8 {
        let a = connect(&dsn).await.unwrap();
        let b = connect(&dsn).await.unwrap();
        let c = connect(&dsn).await.unwrap();
        let pid = "begin; select pg_backend_pid()";
        tokio::time::timeout(quick, a.simple_query(pid)).await.expect("a borrowed at once").unwrap();
        // With both clients on one core, this borrow takes the other core's connection.
        tokio::time::timeout(quick, b.simple_query(pid)).await.expect("b borrowed at once").unwrap();
        let mut waiter = tokio::spawn(async move {
            c.simple_query("select 1").await.unwrap();
            c
        });
        assert!(
            still_running(&mut waiter, Duration::from_millis(200)).await,
            "round {round}: a third connection was lent"
        );
        // Given back on a's core; the waiter may sit on the other one.
        a.batch_execute("commit").await.unwrap();
        let c = tokio::time::timeout(quick, waiter).await.expect("round {round}: the waiter was served").unwrap();
        b.batch_execute("commit").await.unwrap();
        c.batch_execute("select 1").await.unwrap();
        assert!(backends_of("u3").await <= 2, "round {round}: more server connections than the pool's size");
    }
}

/// A pool smaller than the cores (one connection, two cores: a share of 1 and one of 0) serves
/// clients arriving on either core, one after the other, never opening a second connection; those
/// on the core without a share are counted as borrowing from another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_smaller_than_the_cores_serves_clients_on_every_core() {
    let p = start_proxy("  size: 1\n  borrow_timeout: 30s", "").await;
    let dsn = p.dsn("u4", "u4", "app");
    // Twenty fresh clients: the kernel puts some on each core (all on one: 2 in a million).
    for i in 0..20 {
        let c = connect(&dsn).await.unwrap();
        let v = tokio::time::timeout(Duration::from_secs(5), simple_value(&c, "begin; select 7; commit")).await;
        assert_eq!(v.unwrap_or_else(|_| panic!("client {i} not served")), "7");
        assert!(backends_of("u4").await <= 1, "client {i}: a second server connection");
    }
    let pool = p.ctx.cluster.pools.all().into_iter().find(|pool| pool.key.user == "u4").expect("u4's pool");
    let elsewhere = pool.stats.borrows_other_worker.load(std::sync::atomic::Ordering::Relaxed);
    if test_cores() > 1 {
        assert!(elsewhere > 0, "no client came in on the core without a share");
    } else {
        assert_eq!(elsewhere, 0, "one core has no other worker to borrow from");
    }
}
