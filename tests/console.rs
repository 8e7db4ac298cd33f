//! The admin console (database `pgmux`, users in `admin_users`): SHOW output read by real clients
//! (tokio-postgres and psql), refusals and errors, PAUSE / RESUME, SHUTDOWN.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use tokio_postgres::SimpleQueryMessage;

/// Admin user of these tests (`app` is not one).
const ADMIN: &str = "u1";

/// pgmux in front of the shared cluster with `u1` as its admin user; `pool` and `extra` as for `yaml`.
async fn start(pool: &str, shutdown_timeout: &str) -> TestProxy {
    let c = cluster();
    let text = yaml(&[c.addr(0), c.addr(1)], pool, "")
        .replace("shutdown_timeout: 10s\n", &format!("shutdown_timeout: {shutdown_timeout}\nadmin_users: [{ADMIN}]\n"));
    start_proxy_yaml(&text).await
}

async fn console(p: &TestProxy) -> tokio_postgres::Client {
    connect(&p.dsn(ADMIN, ADMIN, "pgmux")).await.expect("admin console login")
}

type Row = HashMap<String, Option<String>>;

/// The rows of every result set of `sql`, each row by column name.
async fn rows(c: &tokio_postgres::Client, sql: &str) -> Result<Vec<Row>, tokio_postgres::Error> {
    let messages = c.simple_query(sql).await?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_string(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

async fn show(c: &tokio_postgres::Client, sql: &str) -> Vec<Row> {
    rows(c, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn get<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column).unwrap_or_else(|| panic!("no column {column} in {row:?}")).as_deref().unwrap_or("")
}

fn num(row: &Row, column: &str) -> i64 {
    get(row, column).parse().unwrap_or_else(|_| panic!("{column} is not a number in {row:?}"))
}

/// The value of `key` in SHOW STATE.
async fn state(c: &tokio_postgres::Client, key: &str) -> String {
    let rows = show(c, "SHOW STATE").await;
    rows.iter().find(|r| get(r, "key") == key).map(|r| get(r, "value").to_string()).expect("a SHOW STATE key")
}

/// Runs psql with `args` against the console as the admin user; returns (success, stdout, stderr).
async fn psql_console(port: u16, args: &[&str]) -> (bool, String, String) {
    let dsn = format!("host=127.0.0.1 port={port} user={ADMIN} dbname=pgmux");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("psql")
            .arg("-X")
            .args(&args)
            .arg(&dsn)
            .env("PGPASSWORD", ADMIN)
            .output()
            .expect("run psql");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_list_clients_pools_and_servers() {
    let p = start("  size: 3", "10s").await;
    let pinned = connect_app(&p).await;
    let in_tx = connect_app(&p).await;
    pinned.batch_execute("create temp table console_scratch(x int)").await.unwrap();
    in_tx.batch_execute("begin; select 1").await.unwrap();
    let admin = console(&p).await;

    // SHOW CLIENTS: the pinned client with its reason, the one in a transaction, and this console.
    let pinned_ok = eventually(Duration::from_secs(5), || async {
        show(&admin, "SHOW CLIENTS").await.iter().any(|r| get(r, "pin_reasons") == "temp_object")
    })
    .await;
    assert!(pinned_ok, "no pinned client listed");
    let clients = show(&admin, "show clients;").await;
    assert_eq!(clients.len(), 3, "{clients:?}");
    let pinned_row = clients.iter().find(|r| get(r, "pin_reasons") == "temp_object").unwrap();
    assert_eq!((get(pinned_row, "pinned"), get(pinned_row, "user")), ("t", "app"));
    assert!(!get(pinned_row, "server").is_empty(), "a pinned client holds its server connection");
    assert!(num(pinned_row, "id") > 0);
    let busy = clients.iter().filter(|r| get(r, "database") == "app" && get(r, "pinned") == "f").count();
    assert_eq!(busy, 1);
    assert!(
        clients.iter().any(|r| get(r, "database") == "pgmux" && get(r, "user") == ADMIN && get(r, "server").is_empty())
    );

    // SHOW POOLS: the primary's pool lends two connections (the pin and the open transaction).
    let pools = show(&admin, "SHOW POOLS").await;
    let pool = pools.iter().find(|r| get(r, "database") == "app" && get(r, "role") == "primary").expect("app pool");
    assert_eq!((get(pool, "user"), get(pool, "mode"), num(pool, "size")), ("app", "transaction", 3));
    assert_eq!(num(pool, "borrowed"), 2, "{pool:?}");
    assert_eq!(num(pool, "waiting"), 0);

    let servers = show(&admin, "SHOW SERVERS").await;
    assert_eq!(servers.len(), 2, "{servers:?}");
    let primary = servers.iter().find(|r| get(r, "role") == "primary").expect("a primary");
    assert_eq!((get(primary, "up"), num(primary, "borrowed")), ("t", 2));
    assert!(servers.iter().any(|r| get(r, "role") == "replica"), "{servers:?}");

    let topology = show(&admin, "SHOW TOPOLOGY").await;
    let followed: Vec<&Row> = topology.iter().filter(|r| get(r, "followed") == "t").collect();
    assert_eq!(followed.len(), 1, "{topology:?}");
    assert_eq!(get(followed[0], "role"), "primary");
    assert!(num(followed[0], "timeline") >= 1);
    assert!(topology.iter().all(|r| get(r, "failovers") == "0" && get(r, "failover_in_progress") == "f"));

    let stats = show(&admin, "SHOW STATS").await;
    let stat = stats.iter().find(|r| get(r, "server") == get(pool, "server") && get(r, "database") == "app").unwrap();
    // The first login borrows and the two transactions do (the second login is greeted from memory).
    assert!(num(stat, "borrows") >= 3 && num(stat, "opened") >= 2, "{stat:?}");
    assert_eq!(num(stat, "pinned"), 1);
    let pins = show(&admin, "SHOW PINS").await;
    let temp = pins.iter().find(|r| get(r, "reason") == "temp_object").unwrap();
    assert_eq!((num(temp, "pinned_now"), num(temp, "pins_total")), (1, 1));

    let config = show(&admin, "SHOW CONFIG").await;
    let value = |key: &str| config.iter().find(|r| get(r, "key") == key).map(|r| get(r, "value").to_string());
    assert_eq!(value("admin_users").as_deref(), Some(ADMIN));
    assert_eq!(value("pool.size").as_deref(), Some("3"));
    assert_eq!(value("users[0].name").as_deref(), Some("app"));
    assert!(config.iter().all(|r| !get(r, "key").contains("password")), "{config:?}");
    assert_eq!(state(&admin, "paused").await, "f");
    assert_eq!(state(&admin, "transactions_running").await, "1");

    // Several statements in one Query: one result set each.
    let both = show(&admin, "SHOW VERSION; show state").await;
    assert!(get(&both[0], "version").starts_with("pgmux "), "{both:?}");
    assert_eq!(get(&both[1], "key"), "paused");
    // The same data as JSON would be at GET /status.
    let json = pgmux::admin::status_json(&p.ctx);
    assert_eq!(json["pools"].as_array().map(Vec::len), Some(pools.len()));
    in_tx.batch_execute("commit").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reads_the_console() {
    let p = start("  size: 2", "10s").await;
    let app = connect_app(&p).await;
    app.batch_execute("select 1").await.unwrap();
    let (ok, out, err) = psql_console(p.port(), &["-c", "SHOW POOLS"]).await;
    assert!(ok, "{err}");
    let header = out.lines().next().unwrap_or_default();
    for column in ["database", "user", "server", "role", "size", "borrowed", "idle", "waiting"] {
        assert!(header.contains(column), "{column} missing: {out}");
    }
    assert!(out.contains("(1 row)"), "{out}");
    let (ok, out, err) = psql_console(p.port(), &["-tA", "-c", "show clients"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "the app client and psql itself: {out}");
    let (ok, _, err) = psql_console(p.port(), &["-c", "SHOW HELP"]).await;
    assert!(ok && err.contains("SHOW POOLS"), "{err}");
    let (ok, _, err) = psql_console(p.port(), &["-c", "SHOW TABLES"]).await;
    assert!(!ok && err.contains("unknown SHOW topic"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_users_get_the_console() {
    let p = start("  size: 2", "10s").await;
    let refused = connect(&p.dsn("app", "app", "pgmux")).await.expect_err("app is not an admin user");
    assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "{refused}");
    assert!(refused.as_db_error().is_some_and(|e| e.message().starts_with("not allowed")), "{refused}");
    let bad_password = connect(&p.dsn(ADMIN, "wrong", "pgmux")).await.expect_err("wrong password");
    assert_eq!(sqlstate(&bad_password).as_deref(), Some("28P01"));
    // The admin user reaches real databases like anyone.
    let plain = connect(&p.dsn(ADMIN, ADMIN, "app")).await.expect("u1 on app");
    assert_eq!(simple_value(&plain, "select current_user").await, ADMIN);
    let admin = console(&p).await;
    // The console borrowed no server connection: only u1's own session pool exists.
    let pools = show(&admin, "SHOW POOLS").await;
    assert!(pools.iter().all(|r| get(r, "database") != "pgmux"), "{pools:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_and_extended_protocol_are_errors() {
    let p = start("  size: 2", "10s").await;
    let admin = console(&p).await;
    let code = |e: tokio_postgres::Error| sqlstate(&e).unwrap_or_default();
    assert_eq!(code(admin.simple_query("SELECT 1").await.unwrap_err()), "42601");
    assert_eq!(code(admin.simple_query("SHOW NOTHING").await.unwrap_err()), "42601");
    assert_eq!(code(admin.simple_query("SHOW DATABASES").await.unwrap_err()), "0A000");
    // This proxy was built from a config in memory: there is no file to re-read.
    let reload = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(code(reload), "F0000");
    // The first error ends the Query, as in PostgreSQL.
    assert_eq!(code(admin.simple_query("SHOW VERSION; BOGUS; SHUTDOWN").await.unwrap_err()), "42601");
    assert!(!p.shutdown.drain.is_cancelled());
    // tokio-postgres' `query` uses the extended protocol (Parse/Describe/Sync).
    let extended = admin.query("SHOW POOLS", &[]).await.unwrap_err();
    assert_eq!(code(extended), "0A000");
    // The session goes on.
    assert_eq!(show(&admin, "show version").await.len(), 1);
    assert!(admin.simple_query("").await.is_ok());
    assert!(admin.simple_query(";").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_running_transactions_and_holds_new_ones_until_resume() {
    let p = start("  size: 2\n  borrow_timeout: 30s", "10s").await;
    let running = connect_app(&p).await;
    let next = std::sync::Arc::new(connect_app(&p).await);
    let admin = std::sync::Arc::new(console(&p).await);
    let watcher = console(&p).await;
    running.batch_execute("begin; select 1").await.unwrap();

    let a = admin.clone();
    let mut pause = tokio::spawn(async move { a.simple_query("PAUSE").await });
    assert!(eventually(Duration::from_secs(5), || async { state(&watcher, "paused").await == "t" }).await);
    assert!(
        still_running(&mut pause, Duration::from_millis(300)).await,
        "PAUSE returned while a transaction was running"
    );

    // A transaction started now waits at the gate. A new login is greeted from what the pool
    // remembers (no server connection needed); its first query waits at the gate too.
    let n = next.clone();
    let mut held = tokio::spawn(async move { n.simple_query("select 2").await });
    let newcomer = tokio::time::timeout(Duration::from_secs(5), connect_app(&p)).await.expect("login while paused");
    let mut login = tokio::spawn(async move { newcomer.simple_query("select 4").await.map(|_| ()) });
    assert!(eventually(Duration::from_secs(5), || async { state(&watcher, "held_by_pause").await == "2" }).await);

    running.batch_execute("commit").await.unwrap();
    let paused = tokio::time::timeout(Duration::from_secs(5), pause).await.expect("PAUSE returns after COMMIT");
    paused.expect("join").expect("PAUSE succeeds");
    assert!(still_running(&mut held, Duration::from_millis(300)).await, "held work ran while paused");
    assert!(still_running(&mut login, Duration::ZERO).await, "a held login's query ran while paused");
    assert_eq!(state(&watcher, "transactions_running").await, "0");

    admin.simple_query("RESUME").await.expect("RESUME");
    let done = tokio::time::timeout(Duration::from_secs(5), held).await.expect("released by RESUME");
    assert!(done.expect("join").is_ok());
    tokio::time::timeout(Duration::from_secs(5), login).await.expect("query released").expect("join").unwrap();
    assert_eq!(state(&watcher, "paused").await, "f");
    assert_eq!(simple_value(&running, "select 3").await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_gives_up_after_shutdown_timeout_and_held_work_after_borrow_timeout() {
    let p = start("  size: 2\n  borrow_timeout: 1s", "1s").await;
    let running = connect_app(&p).await;
    let next = connect_app(&p).await;
    let admin = console(&p).await;
    running.batch_execute("begin; select 1").await.unwrap();
    let err = admin.simple_query("PAUSE").await.expect_err("a transaction stays open");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert_eq!(state(&admin, "paused").await, "t", "the pause stays in effect");
    let err = next.simple_query("select 2").await.expect_err("held past borrow_timeout");
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{err}");
    running.batch_execute("commit").await.unwrap();
    admin.simple_query("PAUSE").await.expect("nothing runs now");
    admin.simple_query("RESUME").await.expect("RESUME");
    assert_eq!(simple_value(&next, "select 4").await, "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_like_sigterm() {
    let p = start("  size: 2", "10s").await;
    let running = connect_app(&p).await;
    running.batch_execute("begin; select 1").await.unwrap();
    let admin = console(&p).await;
    admin.simple_query("SHUTDOWN").await.expect("SHUTDOWN answers before draining");
    assert!(p.shutdown.drain.is_cancelled());
    // The listener closes; the running transaction still finishes.
    let dsn = p.dsn("app", "app", "app");
    assert!(eventually(Duration::from_secs(5), || async { connect(&dsn).await.is_err() }).await);
    assert_eq!(simple_value(&running, "select 5").await, "5");
    running.batch_execute("commit").await.expect("COMMIT after SHUTDOWN");
    let err = running.simple_query("select 6").await.expect_err("closed once its transaction ended");
    assert!(err.as_db_error().is_none_or(|e| e.code().code() == "57P01"), "{err}");
    tokio::time::timeout(Duration::from_secs(10), p.handle).await.expect("pgmux stops").expect("join");
    assert!(admin.simple_query("SHOW STATE").await.is_err(), "the console is closed too");
}
