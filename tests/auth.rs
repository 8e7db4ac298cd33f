//! Authentication: clients to pgmux (SCRAM, MD5), pgmux to servers (SCRAM, MD5, cleartext).

mod common;

use common::*;
use pgmux::localpg::{ClusterOptions, HostAuth, LocalCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_look_the_same() {
    let p = start_proxy("  size: 2", "").await;
    let bad_pw = connect(&p.dsn("app", "wrong", "app")).await.unwrap_err();
    let no_user = connect(&p.dsn("nobody", "app", "app")).await.unwrap_err();
    for e in [&bad_pw, &no_user] {
        assert_eq!(sqlstate(e).as_deref(), Some("28P01"));
        assert_eq!(e.as_db_error().unwrap().severity(), "FATAL");
    }
    let msg = |e: &tokio_postgres::Error, user: &str| e.as_db_error().unwrap().message().replace(user, "U");
    assert_eq!(msg(&bad_pw, "app"), msg(&no_user, "nobody"));
    connect_app(&p).await.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_gets_the_servers_3d000() {
    let p = start_proxy("  size: 2", "").await;
    let e = connect(&p.dsn("app", "app", "no_such_db")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("3D000"));
    connect_app(&p).await.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_client_authentication() {
    let p = start_proxy("  size: 2", "  auth_method: md5").await;
    connect_app(&p).await.simple_query("select 1").await.unwrap();
    let e = connect(&p.dsn("app", "nope", "app")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"));
    // psql (libpq) too.
    assert_eq!(psql_value(p.port(), "", "select 'md5 ok'").await, "md5 ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_to_servers_with_md5_and_cleartext() {
    for auth in [HostAuth::Md5, HostAuth::Password] {
        let opts = ClusterOptions { replicas: 0, auth, ..ClusterOptions::default() };
        let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(opts)).await.unwrap().expect("cluster");
        let p = start_proxy_yaml(&yaml(&[cluster.addr(0)], "  size: 2", "")).await;
        let c = connect_app(&p).await;
        let n: i32 = c.query_one("select 11", &[]).await.unwrap().get(0);
        assert_eq!(n, 11);
        drop(c);
        p.shutdown.abort.cancel();
        tokio::task::spawn_blocking(move || drop(cluster)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_scram_login_and_query() {
    let p = start_proxy("  size: 2", "").await;
    assert_eq!(psql_value(p.port(), "", "select current_user").await, "app");
}
