//! Protocol-level prepared statements in transaction mode: carried to whichever server connection
//! serves the client, shared by text, bounded per connection, and kept in step with the client.

mod common;

use std::time::Duration;

use common::raw::{Raw, field, message};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_statements_follow_the_client_across_server_connections() {
    let p = start_proxy("  size: 3", "").await;
    let mut tasks = Vec::new();
    for client in 0..20i32 {
        let dsn = p.dsn("app", "app", "app");
        tasks.push(tokio::spawn(async move {
            let c = connect(&dsn).await.unwrap();
            let add = c.prepare("select $1::int + $2::int").await.unwrap();
            let pid = c.prepare("select pg_backend_pid()").await.unwrap();
            let mut pids = std::collections::HashSet::new();
            for i in 0..50i32 {
                let row = c.query_one(&add, &[&client, &i]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), client + i);
                pids.insert(c.query_one(&pid, &[]).await.unwrap().get::<_, i32>(0));
            }
            pids.len()
        }));
    }
    let mut moved = 0;
    for t in tasks {
        if t.await.unwrap() > 1 {
            moved += 1;
        }
    }
    assert!(moved > 0, "no client ever changed server connection: the test proves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_text_is_prepared_once_per_server_connection() {
    let p = start_proxy("  size: 1", "").await;
    let a = connect_app(&p).await;
    let b = connect_app(&p).await;
    let sa = a.prepare("select 'shared'::text").await.unwrap();
    let sb = b.prepare("select 'shared'::text").await.unwrap();
    a.query_one(&sa, &[]).await.unwrap();
    b.query_one(&sb, &[]).await.unwrap();
    let n: i64 = a
        .query_one("select count(*) from pg_prepared_statements where statement = 'select ''shared''::text'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "one server-side copy for both clients");
    let names: i64 =
        a.query_one("select count(*) from pg_prepared_statements where name !~ '^pgmux_'", &[]).await.unwrap().get(0);
    assert_eq!(names, 0, "client-chosen names never reach the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_connection_cache_is_bounded() {
    let p = start_proxy("  size: 1", "").await;
    let c = connect_app(&p).await;
    let mut keep = Vec::new();
    for i in 0..1100 {
        keep.push(c.prepare(&format!("select {i} as n")).await.unwrap());
    }
    let on_server: i64 = c.query_one("select count(*) from pg_prepared_statements", &[]).await.unwrap().get(0);
    assert!(on_server <= 1000, "{on_server} statements on one server connection");
    // Evicted ones come back on use.
    assert_eq!(c.query_one(&keep[0], &[]).await.unwrap().get::<_, i32>(0), 0);
    assert_eq!(c.query_one(&keep[1099], &[]).await.unwrap().get::<_, i32>(0), 1099);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_errors_are_the_clients_and_the_stream_stays_in_sync() {
    let p = start_proxy("  size: 2", "").await;
    let c = connect_app(&p).await;
    let e = c.prepare("selec 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42601"));
    let s = c.prepare("select 5").await.unwrap();
    assert_eq!(c.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 5);
    // A duplicate name is refused like PostgreSQL does (42P05), and the first one still works.
    let (mut raw, _) = Raw::login(p.addr, &[]).await;
    let parse = message(b'P', b"dup\0select 1\0\0\0");
    let mut batch = parse.clone();
    batch.extend(message(b'S', b""));
    batch.extend(parse);
    batch.extend(message(b'S', b""));
    batch.extend(message(b'B', b"\0dup\0\0\0\0\0\0\0"));
    batch.extend(message(b'E', b"\0\0\0\0\0"));
    batch.extend(message(b'S', b""));
    raw.send(&batch).await;
    let first = raw.until_ready().await;
    assert_eq!(first.iter().map(|m| m.0).collect::<Vec<_>>(), b"1Z");
    let second = raw.until_ready().await;
    let err = second.iter().find(|m| m.0 == b'E').expect("duplicate refused");
    assert_eq!(field(&err.1, b'C').as_deref(), Some("42P05"));
    let third = raw.until_ready().await;
    assert_eq!(third.iter().map(|m| m.0).collect::<Vec<_>>(), b"2DCZ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_before_bind_close_and_deallocate() {
    let p = start_proxy("  size: 2", "").await;
    let (mut raw, _) = Raw::login(p.addr, &[]).await;
    // Parse + Describe (statement) before any Bind, as pgJDBC and asyncpg do.
    let mut batch = message(b'P', b"q1\0select $1::int * 2\0\0\0");
    batch.extend(message(b'D', b"Sq1\0"));
    batch.extend(message(b'S', b""));
    raw.send(&batch).await;
    let r = raw.until_ready().await;
    assert_eq!(r.iter().map(|m| m.0).collect::<Vec<_>>(), b"1tTZ");
    // Close forgets the client's name; using it afterwards is the usual 26000.
    let mut batch = message(b'C', b"Sq1\0");
    batch.extend(message(b'S', b""));
    raw.send(&batch).await;
    assert_eq!(raw.until_ready().await.iter().map(|m| m.0).collect::<Vec<_>>(), b"3Z");
    let mut batch = message(b'B', b"\0q1\0\0\0\0\0\0\0");
    batch.extend(message(b'S', b""));
    raw.send(&batch).await;
    let r = raw.until_ready().await;
    assert_eq!(field(&r[0].1, b'C').as_deref(), Some("26000"));

    // DEALLOCATE and DEALLOCATE ALL / DISCARD ALL from SQL update the client's view.
    let c = connect_app(&p).await;
    let other = connect_app(&p).await;
    let mine = c.prepare("select 'mine'::text").await.unwrap();
    let theirs = other.prepare("select 'mine'::text").await.unwrap();
    c.batch_execute("deallocate all").await.unwrap();
    let e = c.query_one(&mine, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("26000"));
    assert_eq!(other.query_one(&theirs, &[]).await.unwrap().get::<_, String>(0), "mine");
    let again = c.prepare("select 'again'::text").await.unwrap();
    c.batch_execute("discard all").await.unwrap();
    assert_eq!(sqlstate(&c.query_one(&again, &[]).await.unwrap_err()).as_deref(), Some("26000"));
    assert_eq!(other.query_one(&theirs, &[]).await.unwrap().get::<_, String>(0), "mine");
    let s3 = c.prepare("select 3").await.unwrap();
    assert_eq!(c.query_one(&s3, &[]).await.unwrap().get::<_, i32>(0), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_change_under_a_statement_is_not_a_permanent_failure() {
    let p = start_proxy("  size: 1", "").await;
    let t = unique("ddl");
    let c = connect_app(&p).await;
    c.batch_execute(&format!("create table {t}(a int); insert into {t} values (1)")).await.unwrap();
    let s = c.prepare(&format!("select * from {t}")).await.unwrap();
    c.query(&s, &[]).await.unwrap();
    c.batch_execute(&format!("alter table {t} add column b int")).await.unwrap();
    // The first execution may fail with "cached plan must not change result type" (as it does on
    // PostgreSQL); after that the statement is prepared afresh.
    let ok = eventually(Duration::from_secs(5), || async {
        let fresh = c.prepare(&format!("select * from {t}")).await;
        match fresh {
            Ok(fresh) => c.query(&fresh, &[]).await.is_ok_and(|rows| rows[0].len() == 2),
            Err(_) => false,
        }
    })
    .await;
    assert!(ok, "statements on the connection never recovered from the table change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_re_parse_is_reported_and_stream_stays_in_sync() {
    let p = start_proxy("  size: 2", "").await;
    let t = unique("gone");
    let c = connect_app(&p).await;
    let holder = connect_app(&p).await;
    c.batch_execute(&format!("create table {t}(a int)")).await.unwrap();
    let s = c.prepare(&format!("select a from {t}")).await.unwrap();
    let first_pid: i32 = c.query_one("select pg_backend_pid()", &[]).await.unwrap().get(0);
    c.batch_execute(&format!("drop table {t}")).await.unwrap();
    // Hold the connection the statement lives on, so the next use needs a re-Parse elsewhere.
    holder.batch_execute("begin").await.unwrap();
    let hp: i32 = holder.query_one("select pg_backend_pid()", &[]).await.unwrap().get(0);
    if hp != first_pid {
        holder.batch_execute("commit").await.unwrap();
        return; // the statement's connection was free; nothing to prove this time
    }
    let e = c.query(&s, &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42P01"));
    assert_eq!(c.query_one("select 9", &[]).await.unwrap().get::<_, i32>(0), 9);
    holder.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_mode_completes_without_errors() {
    let p = start_proxy("  size: 3", "").await;
    let init = pgbench(cluster().port(0), &["-i", "-s", "1", "-q", "--foreign-keys"]).await;
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let out = pgbench(p.port(), &["-c", "20", "-j", "2", "-t", "100", "-M", "prepared", "--no-vacuum"]).await;
    assert_pgbench_clean(&out, 2000, "-M prepared");
}
