//! Authentication: clients to pgmux (SCRAM, MD5), pgmux to servers (SCRAM, MD5, cleartext).

mod common;

use common::raw;
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

/// pgmux answers a server asking for MD5 by default, and for a cleartext password only when
/// `pool.server_auth` lists `password` (the connection here has no TLS); a refused method fails that
/// login with 28000 and does not count against the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_to_servers_with_md5_and_cleartext() {
    // (server auth, pool.server_auth, whether pgmux logs in)
    let cases: [(HostAuth, &[(&str, bool)]); 2] = [
        (HostAuth::Md5, &[("", true), ("  server_auth: [scram-sha-256]\n", false), ("  server_auth: [md5]\n", true)]),
        (
            HostAuth::Password,
            &[
                ("", false),
                ("  server_auth: [scram-sha-256, md5]\n", false),
                ("  server_auth: [scram-sha-256, password]\n", true),
            ],
        ),
    ];
    for (auth, configs) in cases {
        let opts = ClusterOptions { replicas: 0, auth, ..ClusterOptions::default() };
        let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(opts)).await.unwrap().expect("cluster");
        for (server_auth, works) in configs {
            let p = start_proxy_yaml(&yaml(&[cluster.addr(0)], &format!("  size: 2\n{server_auth}"), "")).await;
            let what = format!("{auth:?} with {server_auth:?}");
            match connect(&p.dsn("app", "app", "app")).await {
                Ok(c) => {
                    assert!(works, "{what}: logged in");
                    let n: i32 = c.query_one("select 11", &[]).await.unwrap().get(0);
                    assert_eq!(n, 11);
                }
                Err(e) => {
                    assert!(!works, "{what}: {e}");
                    let db = e.as_db_error().unwrap_or_else(|| panic!("{what}: {e}"));
                    assert_eq!((db.code().code(), db.severity()), ("28000", "FATAL"), "{what}: {e}");
                    let method = if auth == HostAuth::Md5 { "md5" } else { "password" };
                    assert!(db.message().contains(&format!("asked for {method} authentication")), "{what}: {e}");
                    assert!(db.message().contains("pool.server_auth"), "{what}: {e}");
                    assert_eq!(p.ctx.cluster.failover_stats().losses, 0, "{what}: the server was declared lost");
                }
            }
            p.shutdown.abort.cancel();
        }
        tokio::task::spawn_blocking(move || drop(cluster)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_scram_login_and_query() {
    let p = start_proxy("  size: 2", "").await;
    assert_eq!(psql_value(p.port(), "", "select current_user").await, "app");
}

/// Starts up as `user`, sends a SCRAM client-first, and returns the server-first's salt and
/// iteration count, with the connection and nonce to finish (or abandon) the exchange.
async fn scram_first(addr: std::net::SocketAddr, user: &str) -> (raw::Raw, String, String) {
    use raw::{Raw, message, startup_packet};
    let mut r = Raw::connect(addr).await;
    r.send(&startup_packet(0, &[("user", user), ("database", "app")])).await;
    let (tag, body) = r.recv().await.expect("auth request");
    assert_eq!((tag, &body[..4]), (b'R', &10i32.to_be_bytes()[..]));
    let first = b"n,,n=,r=clientnonce";
    let mut sasl = b"SCRAM-SHA-256\0".to_vec();
    sasl.extend_from_slice(&(first.len() as i32).to_be_bytes());
    sasl.extend_from_slice(first);
    r.send(&message(b'p', &sasl)).await;
    let (tag, body) = r.recv().await.expect("server-first");
    assert_eq!((tag, &body[..4]), (b'R', &11i32.to_be_bytes()[..]));
    let server_first = String::from_utf8(body[4..].to_vec()).unwrap();
    let nonce = server_first.split(',').find_map(|a| a.strip_prefix("r=")).unwrap().to_string();
    let salt_iter: Vec<_> = server_first.split(',').filter(|a| !a.starts_with("r=")).collect();
    (r, salt_iter.join(","), nonce)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_salt_does_not_tell_whether_a_user_exists() {
    let p = start_proxy("  size: 2", "").await;
    let mut seen = Vec::new();
    for user in ["app", "app", "ghost", "ghost", "ghost2"] {
        seen.push(scram_first(p.addr, user).await.1);
    }
    assert_eq!(seen[0], seen[1], "a real user's salt is stable");
    assert_eq!(seen[2], seen[3], "an unknown user's salt is stable too");
    assert_ne!(seen[2], seen[4], "salts differ between names");
    let iters = |s: &str| s.split(',').find(|a| a.starts_with("i=")).unwrap().to_string();
    assert_eq!(iters(&seen[0]), iters(&seen[2]), "same iteration count");
    assert_eq!(seen[0].len(), seen[2].len(), "same salt length");
}

/// Server-side time from a client-final with a wrong proof to the error: wrong password (a real
/// user) vs unknown user, median of 200 each, interleaved. Reported, not asserted (a noisy box).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_take_the_same_time() {
    // 400 failed logins from one address: the per-address login throttle is off here (it would
    // add its own delay to what is measured).
    let p = start_proxy("  size: 2", "  login_throttle_after: 0").await;
    let mut times: [Vec<std::time::Duration>; 2] = [Vec::new(), Vec::new()];
    let mut errors = Vec::new();
    for i in 0..400 {
        let user = if i % 2 == 0 { "app" } else { "ghost" };
        let (mut r, _, nonce) = scram_first(p.addr, user).await;
        let fin = format!("c=biws,r={nonce},p={}", "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=");
        let msg = raw::message(b'p', fin.as_bytes());
        let start = std::time::Instant::now();
        r.send(&msg).await;
        let (tag, body) = r.recv().await.expect("error");
        times[i % 2].push(start.elapsed());
        assert_eq!(tag, b'E');
        errors.push(raw::field(&body, b'C').unwrap());
    }
    assert!(errors.iter().all(|c| c == "28P01"), "{errors:?}");
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (real, unknown) = (median(&mut times[0]), median(&mut times[1]));
    eprintln!("median time to 28P01: wrong password {real:?}, unknown user {unknown:?}");
}

/// Clients whose logins the server refuses (an auth method pgmux does not speak, an unknown
/// database, a bad startup option) fail alone: the primary is never declared lost, and a good
/// client's writes keep working throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_client_logins_do_not_declare_the_primary_lost() {
    let opts = ClusterOptions {
        replicas: 0,
        extra_hba: vec!["host all u1 127.0.0.1/32 gss".into()],
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(opts)).await.unwrap().expect("cluster");
    let p = start_proxy_yaml(&yaml(&[cluster.addr(0)], "  size: 2", "")).await;
    let good = connect_app(&p).await;
    good.batch_execute("create table if not exists refused_logins (n int)").await.unwrap();
    for i in 0..20 {
        let gss = connect(&p.dsn("u1", "u1", "app")).await.unwrap_err();
        let no_db = connect(&p.dsn("app", "app", "no_such_db")).await.unwrap_err();
        let bad_option = connect(&format!("{} options='-c work_mem=bogus'", p.dsn("app", "app", "app"))).await;
        assert!(sqlstate(&no_db).as_deref() == Some("3D000"), "{no_db}");
        assert!(bad_option.is_err(), "a bad startup option is refused");
        assert!(!gss.to_string().is_empty());
        good.execute("insert into refused_logins values ($1)", &[&i]).await.expect("writes keep working");
        let stats = p.ctx.cluster.failover_stats();
        assert_eq!(stats.losses, 0, "round {i}: the primary was declared lost ({gss})");
    }
    let n: i64 = good.query_one("select count(*) from refused_logins", &[]).await.unwrap().get(0);
    assert_eq!(n, 20);
    drop(good);
    p.shutdown.abort.cancel();
    tokio::task::spawn_blocking(move || drop(cluster)).await.unwrap();
}

/// A login role on the shared cluster with a SCRAM-stored password; returns (name, password,
/// the verifier the server stores for it, as `pg_authid.rolpassword` holds it).
async fn scram_role(prefix: &str) -> (String, String, String) {
    let role = unique(prefix);
    let password = format!("Pw-{role}-s3cret");
    admin_sql(0, &format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        .await;
    let verifier =
        admin_sql(0, &format!("SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = '{role}'")).await;
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    (role, password, verifier)
}

/// pgmux in front of the shared cluster with `app` (password, the prober and admin) and `role`
/// configured only by `secret` (a verifier).
async fn start_with_verifier_user(role: &str, secret: &str, pool: &str) -> TestProxy {
    start_proxy_yaml(&verifier_user_yaml(role, secret, pool)).await
}

fn verifier_user_yaml(role: &str, secret: &str, pool: &str) -> String {
    let c = cluster();
    yaml(&[c.addr(0), c.addr(1)], pool, "").replace(
        "shutdown_timeout: 10s\n",
        &format!("  - name: {role}\n    password: '{secret}'\nshutdown_timeout: 10s\nadmin_users: [app]\n"),
    )
}

/// Every cell of every row `sql` returns, as text.
async fn all_text(c: &tokio_postgres::Client, sql: &str) -> String {
    let mut text = String::new();
    for m in c.simple_query(sql).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            (0..r.len()).for_each(|i| text.push_str(&format!("{}\n", r.get(i).unwrap_or(""))));
        }
    }
    text
}

/// A user configured only by the verifier the server stores logs in through pgmux (tokio-postgres
/// and psql) and runs queries: pgmux checks the client against the verifier, then logs in to the
/// server with the ClientKey the client's proof revealed (pass-through). The first login is the
/// user's first ever, so the key is learnt before the pool opens the connection that greets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_given_by_its_scram_verifier_logs_in_through_pass_through() {
    let (role, password, verifier) = scram_role("pt").await;
    let p = start_with_verifier_user(&role, &verifier, "  size: 2").await;
    let wrong = connect(&p.dsn(&role, "not-the-password", "app")).await.unwrap_err();
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "{wrong}");

    let c = connect(&p.dsn(&role, &password, "app")).await.expect("login with the password");
    assert_eq!(simple_value(&c, "select current_user").await, role);
    let n: i32 = c.query_one("select $1::int + 1", &[&41]).await.unwrap().get(0);
    assert_eq!(n, 42);
    // More server connections than the first, opened with the same key.
    let tx = connect(&p.dsn(&role, &password, "app")).await.unwrap();
    tx.batch_execute("begin; select 1").await.unwrap();
    assert_eq!(simple_value(&c, "select 7").await, "7", "a second server connection, opened by pass-through");
    tx.batch_execute("commit").await.unwrap();

    // psql (libpq) too.
    let port = p.port();
    let (role2, password2) = (role.clone(), password.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .args([
                "-X",
                "-tA",
                "-c",
                "select current_user",
                &format!("host=127.0.0.1 port={port} user={role2} dbname=app"),
            ])
            .env("PGPASSWORD", password2)
            .output()
            .expect("run psql")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), role);

    // Neither the password (pgmux never had it) nor the verifier's keys show anywhere.
    let keys = verifier.rsplit('$').next().unwrap().to_string();
    let admin = connect(&p.dsn("app", "app", "pgmux")).await.expect("console");
    let mut shown = String::new();
    for sql in ["SHOW CONFIG", "SHOW POOLS", "SHOW CLIENTS", "SHOW SERVERS"] {
        shown.push_str(&all_text(&admin, sql).await.replace('\n', " "));
    }
    shown.push_str(&pgmux::admin::status_json(&p.ctx).to_string());
    shown.push_str(&format!("{:?}{:?}", p.ctx.users.load(), p.ctx.config.load()));
    assert!(shown.contains(&role), "the user is listed: {shown}");
    for secret in [&password, &keys] {
        for part in secret.split(':') {
            assert!(!shown.contains(part), "{part:?} shown: {shown}");
        }
    }
    assert_eq!(p.ctx.cluster.failover_stats().losses, 0);
    p.shutdown.abort.cancel();
}

/// A verifier whose salt is not the server's (the same password, stored again): clients still
/// log in to pgmux with the password, but the server's SCRAM cannot be answered with their key:
/// a clean FATAL 28000 naming the cause, and the server is not held against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_with_another_salt_than_the_servers_is_a_clean_error() {
    let (role, password, verifier) = scram_role("ptsalt").await;
    let other = postgres_protocol::password::scram_sha_256(password.as_bytes());
    assert_ne!(other, verifier);
    let p = start_with_verifier_user(&role, &other, "  size: 2").await;
    let e = connect(&p.dsn(&role, &password, "app")).await.unwrap_err();
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
    assert_eq!((db.code().code(), db.severity()), ("28000", "FATAL"), "{e}");
    assert!(db.message().contains("salt or iteration count differ"), "{e}");
    assert!(db.message().contains("pg_authid.rolpassword"), "{e}");
    // A wrong password is still the client's own 28P01.
    let wrong = connect(&p.dsn(&role, "nope", "app")).await.unwrap_err();
    assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"));
    connect_app(&p).await.simple_query("select 1").await.unwrap();
    assert_eq!(p.ctx.cluster.failover_stats().losses, 0);
    p.shutdown.abort.cancel();
}

/// A server asking a verifier-only user for MD5 or a cleartext password (pg_hba) is refused:
/// pgmux has no password to answer with. FATAL 28000 saying so; nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_asking_a_verifier_user_for_a_password_are_refused() {
    let opts = ClusterOptions {
        replicas: 0,
        extra_hba: vec!["host all ptmd5 127.0.0.1/32 md5".into(), "host all ptclear 127.0.0.1/32 password".into()],
        ..ClusterOptions::default()
    };
    let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(opts)).await.unwrap().expect("cluster");
    let sql = "SET password_encryption = 'md5'; CREATE ROLE ptmd5 LOGIN PASSWORD 'pw1'; \
               SET password_encryption = 'scram-sha-256'; CREATE ROLE ptclear LOGIN PASSWORD 'pw2'";
    cluster.psql(0, "postgres", sql).expect("roles");
    let clear_verifier =
        cluster.psql(0, "postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = 'ptclear'").unwrap();
    // The MD5 role's server copy is an MD5 hash: the verifier pgmux checks clients with is made here.
    let md5_verifier = postgres_protocol::password::scram_sha_256(b"pw1");
    let users = format!(
        "  - name: ptmd5\n    password: '{md5_verifier}'\n  - name: ptclear\n    password: '{clear_verifier}'\nshutdown_timeout: 10s\n"
    );
    let text = yaml(&[cluster.addr(0)], "  size: 2\n  server_auth: [scram-sha-256, md5, password]", "")
        .replace("shutdown_timeout: 10s\n", &users);
    let p = start_proxy_yaml(&text).await;
    for (user, password, method) in [("ptmd5", "pw1", "md5"), ("ptclear", "pw2", "password")] {
        let e = connect(&p.dsn(user, password, "app")).await.unwrap_err();
        let db = e.as_db_error().unwrap_or_else(|| panic!("{user}: {e}"));
        assert_eq!((db.code().code(), db.severity()), ("28000", "FATAL"), "{user}: {e}");
        let says = format!("asked for {method} authentication, which needs the password pgmux does not have");
        assert!(db.message().contains(&says), "{user}: {e}");
    }
    connect_app(&p).await.simple_query("select 1").await.unwrap();
    assert_eq!(p.ctx.cluster.failover_stats().losses, 0);
    p.shutdown.abort.cancel();
    tokio::task::spawn_blocking(move || drop(cluster)).await.unwrap();
}

/// pgmux with only `app` configured (the prober) and a superuser `auth.user` (reading pg_authid
/// takes one) for `auth.query`; `auth` adds keys to the `auth` section.
async fn start_with_auth_query(auth: &str) -> (TestProxy, String) {
    let admin = unique("aqadmin");
    admin_sql(0, &format!("CREATE ROLE {admin} LOGIN SUPERUSER PASSWORD '{admin}'")).await;
    let c = cluster();
    let users = format!(
        "users:\n  - name: app\n    password: app\n  - name: {admin}\n    password: {admin}\nauth:\n  user: {admin}\n  database: app\n{auth}"
    );
    let text = yaml(&[c.addr(0), c.addr(1)], "  size: 2", "");
    let (head, _) = text.split_once("users:\n").unwrap();
    let text = format!("{head}{users}shutdown_timeout: 10s\n");
    (start_proxy_yaml(&text).await, admin)
}

/// A user known only to the server logs in through pgmux: `auth.query` finds its verifier, and
/// pgmux logs in to the server by pass-through. A wrong password and an unknown name get the same
/// 28P01, with salts stable per name; a password changed on the server is picked up after one
/// failed attempt (the stale answer is dropped then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_not_in_the_config_are_looked_up_with_auth_query() {
    let (p, admin) = start_with_auth_query("").await;
    let (role, password, verifier) = scram_role("aq").await;
    let c = connect(&p.dsn(&role, &password, "app")).await.expect("a user found by auth.query logs in");
    assert_eq!(simple_value(&c, "select current_user").await, role);
    let (_, salt_iter, _) = scram_first(p.addr, &role).await;
    let salt = verifier.split('$').nth(1).unwrap().split(':').nth(1).unwrap();
    assert!(salt_iter.contains(&format!("s={salt}")), "the server's salt: {salt_iter} vs {verifier}");

    let ghost = unique("ghost");
    let wrong = connect(&p.dsn(&role, "nope", "app")).await.unwrap_err();
    let unknown = connect(&p.dsn(&ghost, "nope", "app")).await.unwrap_err();
    for e in [&wrong, &unknown] {
        assert_eq!(sqlstate(e).as_deref(), Some("28P01"), "{e}");
    }
    let msg = |e: &tokio_postgres::Error, user: &str| e.as_db_error().unwrap().message().replace(user, "U");
    assert_eq!(msg(&wrong, &role), msg(&unknown, &ghost));
    let (a, b) = (scram_first(p.addr, &ghost).await.1, scram_first(p.addr, &ghost).await.1);
    assert_eq!(a, b, "an unknown name's salt is stable");
    connect(&p.dsn(&role, &password, "app")).await.expect("the right password after a wrong one");

    admin_sql(0, &format!("ALTER ROLE {role} PASSWORD 'changed-{role}'")).await;
    let changed = format!("changed-{role}");
    let first = connect(&p.dsn(&role, &changed, "app")).await;
    if let Err(e) = &first {
        // Checked against the answer cached before the change: dropped, asked again next time.
        assert_eq!(sqlstate(e).as_deref(), Some("28P01"), "{e}");
    }
    let c = connect(&p.dsn(&role, &changed, "app")).await.expect("the new password");
    assert_eq!(simple_value(&c, "select 5").await, "5");
    let old = connect(&p.dsn(&role, &password, "app")).await.unwrap_err();
    assert_eq!(sqlstate(&old).as_deref(), Some("28P01"));

    // The lookup connection closed while idle (a server restart, an idle timeout): the next
    // lookup notices and runs on a fresh one, the login does not fail.
    admin_sql(0, &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{admin}'")).await;
    let gone = format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{admin}'");
    assert!(eventually(std::time::Duration::from_secs(10), || async { admin_sql(0, &gone).await == "0" }).await);
    let (later, later_password, _) = scram_role("aqlater").await;
    let c = connect(&p.dsn(&later, &later_password, "app")).await.expect("a lookup after the connection was lost");
    assert_eq!(simple_value(&c, "select current_user").await, later);
    p.shutdown.abort.cancel();
}

/// `auth.user`'s own `search_path` cannot substitute a `pg_authid` of its choosing, even for an
/// unqualified `auth.query`: the lookup connection is pinned to `pg_catalog, pg_temp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_is_immune_to_search_path_tricks() {
    let (role, password, _) = scram_role("aqvictim").await;
    let schema = unique("evil");
    let forged = postgres_protocol::password::scram_sha_256(b"forged");
    let (p, admin) =
        start_with_auth_query("  query: SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1\n").await;
    let sql = format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.pg_authid (rolname text, rolpassword text); \
         INSERT INTO {schema}.pg_authid VALUES ('{role}', '{forged}'); \
         ALTER ROLE {admin} SET search_path = {schema}, pg_catalog"
    );
    tokio::task::spawn_blocking(move || cluster().psql(0, "app", &sql).expect("set the trap")).await.unwrap();
    let e = connect(&p.dsn(&role, "forged", "app")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
    let c = connect(&p.dsn(&role, &password, "app")).await.expect("the real verifier");
    assert_eq!(simple_value(&c, "select current_user").await, role);
    p.shutdown.abort.cancel();
}

/// A reload that keeps a user's verifier keeps the key its clients revealed: after RELOAD, with
/// no new login of that user, its pool still opens server connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_pass_through_key() {
    let (role, password, verifier) = scram_role("ptreload").await;
    let text = verifier_user_yaml(&role, &verifier, "  size: 2");
    let p = start_proxy_yaml(&text).await;
    let path = std::env::temp_dir().join(format!("{}.yaml", unique("pgmux-pass-through")));
    std::fs::write(&path, &text).unwrap();
    *p.ctx.config_path.lock().unwrap() = Some(path.clone());
    let client = connect(&p.dsn(&role, &password, "app")).await.expect("login");
    assert_eq!(simple_value(&client, "select 1").await, "1");
    pgmux::reload::reload(&p.ctx).expect("reload");
    // Its server connection goes away; the next statement needs a new one, opened with the key.
    admin_sql(0, &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")).await;
    let gone = format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'");
    assert!(eventually(std::time::Duration::from_secs(10), || async { admin_sql(0, &gone).await == "0" }).await);
    assert_eq!(simple_value(&client, "select 2").await, "2");
    std::fs::remove_file(&path).unwrap();
    p.shutdown.abort.cancel();
}
