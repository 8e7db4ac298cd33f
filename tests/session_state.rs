//! Session state in transaction mode: settings follow the client, pinning state pins it (with a
//! reason, visible and counted) until it is undone, and nothing reaches another client.

mod common;

use common::*;
use pgmux::state::pins::PinReasons;

/// The pin reasons of every connected client that has any.
fn pinned(p: &TestProxy) -> Vec<Vec<&'static str>> {
    p.ctx.cancels.status().into_iter().map(|c| c.pins).filter(|r| !r.is_empty()).collect()
}

/// Waits for the pin reasons to read `want`: pgmux checks the server right after the client's
/// transaction, while the client already goes on.
async fn pins_become(p: &TestProxy, want: Vec<Vec<&'static str>>) -> bool {
    eventually(std::time::Duration::from_secs(5), || {
        let ok = pinned(p) == want;
        async move { ok }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_the_client_and_never_leak() {
    let p = start_proxy("  size: 1", "").await;
    let a = connect_app(&p).await;
    let b = connect_app(&p).await;
    a.batch_execute("set statement_timeout = '7s'").await.unwrap();
    a.query_one("select set_config('work_mem', '3MB', false)", &[]).await.unwrap();
    for _ in 0..3 {
        assert_eq!(simple_value(&b, "show statement_timeout").await, "0");
        assert_eq!(simple_value(&b, "show work_mem").await, "4MB");
        assert_eq!(simple_value(&a, "show statement_timeout").await, "7s");
        assert_eq!(simple_value(&a, "show work_mem").await, "3MB");
    }
    // SET LOCAL and a rolled-back SET last only as long as their transaction.
    a.batch_execute("begin; set local statement_timeout = '9s'; commit").await.unwrap();
    a.batch_execute("begin; set work_mem = '5MB'; rollback").await.unwrap();
    assert_eq!(simple_value(&b, "show work_mem").await, "4MB");
    assert_eq!(simple_value(&a, "show statement_timeout").await, "7s");
    assert_eq!(simple_value(&a, "show work_mem").await, "3MB");
    a.batch_execute("reset statement_timeout").await.unwrap();
    assert_eq!(simple_value(&b, "show work_mem").await, "4MB");
    assert_eq!(simple_value(&a, "show statement_timeout").await, "0");
    assert!(pinned(&p).is_empty(), "settings never pin");
}

/// Creates the state with `pin_sql`, checks the pin and its reason, then undoes it with `unpin_sql`.
async fn pin_and_unpin(pin_sql: &str, reason: PinReasons, name: &'static str, unpin_sql: &str) {
    let p = start_proxy("  size: 2", "").await;
    let a = connect_app(&p).await;
    let other = connect_app(&p).await;
    let before = p.ctx.pin_stats.count(reason);
    a.batch_execute(pin_sql).await.unwrap();
    assert!(pins_become(&p, vec![vec![name]]).await, "after {pin_sql}: {:?}", pinned(&p));
    assert_eq!(p.ctx.pin_stats.count(reason), before + 1);
    // Pinned: every transaction runs on the same server connection; others are still served.
    let pid = simple_value(&a, "select pg_backend_pid()").await;
    for _ in 0..3 {
        other.batch_execute("select 1").await.unwrap();
        assert_eq!(simple_value(&a, "select pg_backend_pid()").await, pid);
    }
    a.batch_execute(unpin_sql).await.unwrap();
    assert!(pins_become(&p, vec![]).await, "still pinned after {unpin_sql}");
    assert_eq!(p.ctx.pin_stats.pinned_now.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_table_pins_until_discard_temp() {
    pin_and_unpin("create temp table scratch(x int)", PinReasons::TEMP_OBJECT, "temp_object", "discard temp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_advisory_lock_pins_until_unlocked() {
    pin_and_unpin(
        "select pg_advisory_lock(4242)",
        PinReasons::ADVISORY_LOCK,
        "advisory_lock",
        "select pg_advisory_unlock(4242)",
    )
    .await;
    // Transaction-level advisory locks never pin.
    let p = start_proxy("  size: 2", "").await;
    let a = connect_app(&p).await;
    a.batch_execute("select pg_advisory_xact_lock(77)").await.unwrap();
    a.batch_execute("select 1").await.unwrap();
    assert!(pinned(&p).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_until_unlisten() {
    pin_and_unpin("listen events", PinReasons::LISTEN, "listen", "unlisten *").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_with_hold_pins_until_closed() {
    pin_and_unpin(
        "begin; declare c cursor with hold for select 1; commit",
        PinReasons::CURSOR_WITH_HOLD,
        "cursor_with_hold",
        "close all",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_pins_until_deallocate() {
    pin_and_unpin("prepare twice(int) as select $1 * 2", PinReasons::SQL_PREPARE, "sql_prepare", "deallocate all")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_unpins_everything() {
    let p = start_proxy("  size: 2", "").await;
    let a = connect_app(&p).await;
    a.batch_execute("create temp table t1(x int); select pg_advisory_lock(1); listen x").await.unwrap();
    assert!(pins_become(&p, vec![vec!["temp_object", "advisory_lock", "listen"]]).await, "{:?}", pinned(&p));
    a.batch_execute("discard all").await.unwrap();
    assert!(pins_become(&p, vec![]).await);
    async {}.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_clients_state_never_reaches_the_next_client() {
    let p = start_proxy("  size: 1", "").await;
    let a = connect_app(&p).await;
    a.batch_execute("create temp table mine(x int); listen mine; select pg_advisory_lock(9); prepare p1 as select 1")
        .await
        .unwrap();
    let all = vec![vec!["temp_object", "advisory_lock", "listen", "sql_prepare"]];
    assert!(pins_become(&p, all).await, "{:?}", pinned(&p));
    let pid = simple_value(&a, "select pg_backend_pid()").await;
    drop(a);
    let b = connect_app(&p).await;
    let row = simple_value(
        &b,
        "select pg_backend_pid() || '|' || (select count(*) from pg_class where relnamespace = pg_my_temp_schema()) || '|' || \
         (select count(*) from pg_listening_channels()) || '|' || \
         (select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) || '|' || \
         (select count(*) from pg_prepared_statements where from_sql)",
    )
    .await;
    assert_eq!(row, format!("{pid}|0|0|0|0"), "the connection is reused, and clean");
    assert!(pins_become(&p, vec![]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_reasons_are_listed_by_the_status_call() {
    let c0 = cluster();
    let text = yaml(&[c0.addr(0), c0.addr(1)], "  size: 2", "").replacen(
        "listen: 127.0.0.1:0\n",
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.3:0\n",
        1,
    );
    let p = start_proxy_yaml(&text).await;
    let admin = p.admin.expect("admin endpoint");
    let a = connect_app(&p).await;
    let _b = connect_app(&p).await;
    a.batch_execute("listen status_test").await.unwrap();
    assert!(pins_become(&p, vec![vec!["listen"]]).await);
    let (code, body) = http_get(admin, "/status").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let clients = v["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2);
    let pinned: Vec<_> = clients.iter().filter(|c| c["pins"] == serde_json::json!(["listen"])).collect();
    assert_eq!(pinned.len(), 1, "{body}");
    assert_eq!(pinned[0]["user"], "app");
    assert!(pinned[0]["server"].is_string(), "a pinned client holds its server connection");
    assert_eq!(v["pins"]["pinned_now"], 1);
    assert_eq!(v["pins"]["by_reason"]["listen"], 1);
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    a.batch_execute("unlisten *").await.unwrap();
    assert!(pins_become(&p, vec![]).await);
    let v: serde_json::Value = serde_json::from_str(&http_get(admin, "/status").await.1).unwrap();
    assert_eq!(v["pins"]["pinned_now"], 0);
}
