//! Session isolation in transaction mode: whatever a client does to its server session — through
//! SQL the word filter cannot read, protocol-level function calls, roles, a hostile search_path,
//! pgmux's own statement names — never reaches the next client of that server connection.

mod common;

use std::collections::HashMap;

use common::raw::{Msg, Raw, field, message};
use common::rng::Rng;
use common::*;

/// A proxy whose clients all share one server connection.
async fn one_connection() -> TestProxy {
    start_proxy("  size: 1", "").await
}

/// Runs `sql` as superuser on the primary, ignoring "already exists".
async fn setup(sql: &str) {
    admin_sql(0, sql).await;
}

/// A raw client that keeps what the server (through pgmux) told it with ParameterStatus.
struct Told {
    raw: Raw,
    params: HashMap<String, String>,
}

impl Told {
    async fn login(p: &TestProxy, user: &str, extra: &[(&str, &str)]) -> Told {
        let mut raw = Raw::connect(p.addr).await;
        let mut params = vec![("user", user), ("database", "app")];
        params.extend_from_slice(extra);
        raw.send(&common::raw::startup_packet(0, &params)).await;
        let greeting = raw.scram(user).await;
        assert_eq!(greeting.last().map(|m| m.0), Some(b'Z'), "login failed: {greeting:?}");
        let mut t = Told { raw, params: HashMap::new() };
        t.note(&greeting);
        t
    }

    fn note(&mut self, msgs: &[Msg]) {
        for (tag, body) in msgs {
            if *tag == b'S' {
                let mut parts = body.split(|&b| b == 0);
                let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                self.params.insert(name, value);
            }
        }
    }

    /// Runs a simple query; returns the first column of its first row, or the error's SQLSTATE.
    async fn value(&mut self, sql: &str) -> Result<String, String> {
        let msgs = self.raw.query(sql).await;
        self.note(&msgs);
        if let Some((_, body)) = msgs.iter().find(|m| m.0 == b'E') {
            return Err(field(body, b'C').unwrap_or_default());
        }
        let (_, row) = msgs.iter().find(|m| m.0 == b'D').unwrap_or_else(|| panic!("no row for {sql}: {msgs:?}"));
        let len = i32::from_be_bytes([row[2], row[3], row[4], row[5]]);
        Ok(if len < 0 { "NULL".into() } else { String::from_utf8_lossy(&row[6..6 + len as usize]).into_owned() })
    }
}

/// A FunctionCall message calling `oid` with text arguments, text result.
fn function_call(oid: u32, args: &[&str]) -> Vec<u8> {
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&(args.len() as i16).to_be_bytes());
    for a in args {
        body.extend_from_slice(&(a.len() as i32).to_be_bytes());
        body.extend_from_slice(a.as_bytes());
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    message(b'F', &body)
}

/// What a fresh client sees of the session it is given.
async fn view(c: &tokio_postgres::Client) -> String {
    simple_value(
        c,
        "select current_user || '|' || session_user || '|' || current_setting('work_mem') || '|' || \
         current_setting('statement_timeout') || '|' || current_setting('DateStyle') || '|' || \
         (select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) || '|' || \
         (select count(*) from pg_class where relnamespace = pg_my_temp_schema()) || '|' || \
         (select count(*) from pg_prepared_statements where from_sql)",
    )
    .await
}

const FRESH: &str = "app|app|4MB|0|ISO, MDY|0|0|0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_messages_are_checked() {
    let p = one_connection().await;
    let b = connect_app(&p).await;
    let oid = |sig: &str| format!("select '{sig}'::regprocedure::oid");
    let set_config: u32 = simple_value(&b, &oid("set_config(text,text,boolean)")).await.parse().unwrap();
    let lock: u32 = simple_value(&b, &oid("pg_advisory_lock(bigint)")).await.parse().unwrap();
    let (mut a, _) = Raw::login(p.addr, &[]).await;
    a.send(&function_call(set_config, &["work_mem", "7MB", "false"])).await;
    let reply = a.until_ready().await;
    assert_eq!(reply.first().map(|m| m.0), Some(b'V'), "{reply:?}");
    assert_eq!(view(&b).await, FRESH, "a FunctionCall's set_config reached another client");
    assert!(a.query("show work_mem").await.iter().any(|m| m.0 == b'D' && m.1.ends_with(b"7MB")));
    a.send(&function_call(lock, &["4711"])).await;
    a.until_ready().await;
    let pinned = || p.ctx.cancels.status().into_iter().any(|c| c.pins == vec!["advisory_lock"]);
    assert!(eventually(std::time::Duration::from_secs(5), || std::future::ready(pinned())).await, "not pinned");
    drop(a);
    assert_eq!(view(&b).await, FRESH, "a FunctionCall's session advisory lock reached another client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changed_inside_functions_do_blocks_and_procedures_is_checked() {
    let p = one_connection().await;
    let a = connect_app(&p).await;
    let b = connect_app(&p).await;
    let f = unique("iso_f");
    a.batch_execute(&format!(
        "create function {f}_set() returns void language plpgsql as $$begin perform set_config('work_mem', '6MB', false); end$$; \
         create procedure {f}_proc() language plpgsql as $$begin perform set_config('statement_timeout', '5s', false); end$$; \
         create function {f}_temp() returns void language plpgsql as $$begin execute 'create temp table ' || 'iso_t(x int)'; end$$"
    ))
    .await
    .unwrap();
    a.batch_execute(&format!("select {f}_set()")).await.unwrap();
    assert_eq!(view(&b).await, FRESH, "set_config inside a function");
    a.batch_execute(&format!("call {f}_proc()")).await.unwrap();
    assert_eq!(view(&b).await, FRESH, "set_config inside a procedure");
    a.batch_execute("do $$begin execute 'se' || 't DateStyle = German'; end$$").await.unwrap();
    assert_eq!(view(&b).await, FRESH, "SET built at run time in a DO block");
    // The settings follow their client.
    assert_eq!(
        simple_value(&a, "select current_setting('work_mem') || current_setting('statement_timeout')").await,
        "6MB5s"
    );
    assert_eq!(simple_value(&a, "show DateStyle").await, "German, DMY");
    a.batch_execute(&format!("select {f}_temp()")).await.unwrap();
    // Pinned: B waits for A's connection, so let A go to see B's view.
    assert_eq!(simple_value(&a, "select count(*) from pg_class where relname = 'iso_t'").await, "1");
    drop(a);
    assert_eq!(view(&b).await, FRESH, "a temp table created by dynamic SQL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_from_the_server_is_acted_on() {
    let p = one_connection().await;
    let a = connect_app(&p).await;
    let mut b = Told::login(&p, "app", &[]).await;
    let v = unique("iso_v");
    // A view hides the call: only the server's ParameterStatus says something changed.
    a.batch_execute(&format!("create view {v} as select set_config('DateStyle', 'German', false) as x")).await.unwrap();
    a.batch_execute(&format!("select * from {v}")).await.unwrap();
    assert_eq!(b.value("show DateStyle").await.unwrap(), "ISO, MDY", "DateStyle set through a view leaked");
    assert_eq!(simple_value(&a, "show DateStyle").await, "German, DMY");
    // What each client was told matches what its session runs with.
    assert_eq!(b.value("show DateStyle").await.unwrap(), b.params["DateStyle"]);
    // A server-side default changes under pgmux: the next server connection reports it, and the
    // client is told before it reads its results.
    let user = "u3";
    let mut c = Told::login(&p, user, &[]).await;
    let told_before = c.params["IntervalStyle"].clone();
    setup(&format!("alter role {user} set IntervalStyle = 'iso_8601'")).await;
    // Its server connection goes away; the next one starts with the new default.
    setup(&format!(
        "select pg_terminate_backend(pid, 10000) from pg_stat_activity where usename = '{user}' and pid <> pg_backend_pid()"
    ))
    .await;
    let now = c.value("show IntervalStyle").await.unwrap();
    setup(&format!("alter role {user} reset IntervalStyle")).await;
    assert_eq!(told_before, "postgres");
    assert_eq!(c.params["IntervalStyle"], now, "the client was never told its session's IntervalStyle");
}

/// SQL creating the roles two tests use, then `grants`; both tests may run at once, so each
/// statement takes in its stride what the other test did between a check and the change.
fn iso_roles(grants: &[&str]) -> String {
    let mut statements = vec!["create role iso_low", "create role iso_su login superuser password 'iso_su'"];
    statements.extend_from_slice(grants);
    let blocks: String = statements
        .iter()
        .map(|st| format!("begin {st}; exception when duplicate_object or unique_violation then null; end; "))
        .collect();
    format!("do $$begin {blocks}end$$")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_never_reach_another_client() {
    setup(&iso_roles(&["grant iso_low to app"])).await;
    let c = cluster();
    let text = yaml(&[c.addr(0), c.addr(1)], "  size: 1", "").replacen(
        "shutdown_timeout:",
        "  - name: iso_su\n    password: iso_su\nshutdown_timeout:",
        1,
    );
    let p = start_proxy_yaml(&text).await;
    let a = connect_app(&p).await;
    let b = connect_app(&p).await;
    a.batch_execute("set role iso_low").await.unwrap();
    assert_eq!(view(&b).await, FRESH, "SET ROLE leaked");
    assert_eq!(simple_value(&a, "select current_user").await, "iso_low", "the role follows its client");
    a.batch_execute("reset role").await.unwrap();
    assert_eq!(simple_value(&a, "select current_user").await, "app");
    a.query_one("select set_config('role', 'iso_low', false)", &[]).await.unwrap();
    assert_eq!(view(&b).await, FRESH, "set_config('role') leaked");
    assert_eq!(simple_value(&a, "select current_user").await, "iso_low");

    let su = p.dsn("iso_su", "iso_su", "app");
    let x = connect(&su).await.unwrap();
    let y = connect(&su).await.unwrap();
    x.batch_execute("set session authorization app").await.unwrap();
    let who = "select session_user || '|' || current_user";
    assert_eq!(simple_value(&y, who).await, "iso_su|iso_su", "SET SESSION AUTHORIZATION leaked");
    assert_eq!(simple_value(&x, who).await, "app|app");
    x.batch_execute("set role iso_low").await.unwrap();
    assert_eq!(simple_value(&y, who).await, "iso_su|iso_su");
    assert_eq!(simple_value(&x, who).await, "app|iso_low");
    x.batch_execute("reset session authorization").await.unwrap();
    assert_eq!(simple_value(&x, who).await, "iso_su|iso_su");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_search_path_cannot_blind_the_check() {
    let p = one_connection().await;
    let a = connect_app(&p).await;
    let b = connect_app(&p).await;
    let s = unique("iso_evil");
    a.batch_execute(&format!(
        "create schema {s}; \
         create function {s}.never(text, text) returns boolean language sql immutable as 'select false'; \
         create operator {s}.= (leftarg = text, rightarg = text, function = {s}.never); \
         create function {s}.never2(name, text) returns boolean language sql immutable as 'select true'; \
         create operator {s}.<> (leftarg = name, rightarg = text, function = {s}.never2); \
         create function {s}.zero(bigint) returns bigint language sql as 'select 0::bigint'; \
         create aggregate {s}.count(*) (sfunc = {s}.zero, stype = bigint, initcond = '0')"
    ))
    .await
    .unwrap();
    a.batch_execute(&format!("set search_path = {s}, pg_catalog, public; set work_mem = '9MB'")).await.unwrap();
    assert_eq!(view(&b).await, FRESH, "settings hidden from the check by look-alike operators");
    a.batch_execute("select pg_advisory_lock(99)").await.unwrap();
    drop(a);
    assert_eq!(view(&b).await, FRESH, "an advisory lock hidden from the check by a look-alike count()");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgmux_statement_names_are_out_of_clients_reach() {
    let p = one_connection().await;
    let a = connect_app(&p).await;
    let b = connect_app(&p).await;
    let text = format!("select '{}'::text", unique("iso_shared"));
    let st = a.prepare(&text).await.unwrap();
    a.query_one(&st, &[]).await.unwrap();
    let name =
        simple_value(&b, &format!("select name from pg_prepared_statements where statement = $q${text}$q$")).await;
    assert!(name.starts_with("pgmux_"), "{name}");
    let e = b.batch_execute(&format!("deallocate {name}")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42939"), "{e:?} {:?}", e.as_db_error());
    let e = b.batch_execute(&format!("execute {name}")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42939"), "{e:?}");
    let e = b.batch_execute(&format!("begin; prepare \"{name}x\" as select 1")).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42939"), "{e:?}");
    b.batch_execute("rollback").await.unwrap();
    a.query_one(&st, &[]).await.expect("A's statement survives B's DEALLOCATE");
    // Out of sight of any word filter: a DO block.
    b.batch_execute(&format!("do $$begin execute 'deallocate {name}'; end$$")).await.unwrap();
    a.query_one(&st, &[]).await.expect("A's statement survives a DEALLOCATE in a DO block");
    // Hidden behind a view: the server's 26000 is seen once, then the statement is prepared afresh.
    let v = unique("iso_dv");
    b.batch_execute(&format!(
        "create function {v}_f() returns int language plpgsql as $$begin execute 'deallocate {name}'; return 1; end$$; \
         create view {v} as select {v}_f() as x"
    ))
    .await
    .unwrap();
    b.batch_execute(&format!("select * from {v}")).await.unwrap();
    let mut ok = 0;
    for _ in 0..3 {
        match a.query_one(&st, &[]).await {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(sqlstate(&e).as_deref(), Some("26000"), "{e:?}"),
        }
    }
    assert!(ok >= 2, "the statement never came back after the server lost it ({ok} of 3)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_settings_apply_fails_the_batch_and_discards_the_connection() {
    let p = one_connection().await;
    let dsn = format!("{} options='-c temp_buffers=16MB'", p.dsn("app", "app", "app"));
    let b = connect(&dsn).await.unwrap();
    let a = connect_app(&p).await;
    // A touches temp tables: temp_buffers can no longer change on that session.
    a.batch_execute("create temp table iso_tb(x int); insert into iso_tb values (1); discard temp").await.unwrap();
    assert_eq!(simple_value(&a, "show temp_buffers").await, "8MB");
    let e = b.simple_query("show temp_buffers").await.expect_err("ran with the previous client's settings");
    assert_eq!(sqlstate(&e).as_deref(), Some("22023"), "{e:?}");
    assert_eq!(simple_value(&b, "show temp_buffers").await, "16MB", "a fresh server connection serves it next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_left_by_a_client_that_vanishes_mid_transaction_is_cleaned() {
    let p = one_connection().await;
    let b = connect_app(&p).await;
    let a = connect_app(&p).await;
    a.batch_execute("begin; select pg_advisory_lock(11); prepare iso_gone as select 1; set work_mem = '2MB'")
        .await
        .unwrap();
    drop(a);
    assert_eq!(view(&b).await, FRESH);
}

/// Settings A plays with, and values for them.
const KNOBS: &[(&str, &[&str])] = &[
    ("work_mem", &["1MB", "2MB", "64kB"]),
    ("statement_timeout", &["0", "5s", "1min"]),
    ("DateStyle", &["German", "SQL, DMY", "ISO, YMD"]),
    ("search_path", &["public", "pg_catalog, public"]),
    ("application_name", &["a1", "a2"]),
    ("lock_timeout", &["1s", "0"]),
    ("TimeZone", &["UTC", "Asia/Tokyo", "America/New_York"]),
    ("IntervalStyle", &["iso_8601", "sql_standard"]),
    ("extra_float_digits", &["0", "3"]),
    ("client_encoding", &["LATIN1", "UTF8"]),
    ("standard_conforming_strings", &["off", "on"]),
    ("iso.custom", &["x", "y"]),
    ("log_min_duration_statement", &["1h", "-1"]),
];

/// One thing client A does to the connection.
#[derive(Debug, Clone)]
enum Op {
    /// A simple query; its replies are read.
    Query(String),
    /// A protocol-level set_config call.
    SetConfigCall(String, String),
    /// Parse (named), Bind, Execute, Sync of one statement.
    Extended(String),
    /// Parse, Bind, Execute of one statement with no Sync, then the client vanishes.
    HalfPipeline(String),
    /// The client sends this and vanishes without reading the reply.
    SendAndVanish(String),
}

/// A single session-changing statement.
fn statement(r: &mut Rng, n: usize) -> String {
    let (name, values) = *r.pick(KNOBS);
    let value = *r.pick(values);
    match r.below(19) {
        0 | 1 => format!("SET {name} TO '{value}'"),
        2 => format!("RESET {name}"),
        3 => "RESET ALL".into(),
        4 => format!("SELECT set_config('{name}', '{value}', {})", r.chance(70)),
        5 => r.pick(&["SET ROLE iso_low", "RESET ROLE", "SELECT set_config('role', 'iso_low', false)"]).to_string(),
        6 => r.pick(&["SET SESSION AUTHORIZATION app", "RESET SESSION AUTHORIZATION"]).to_string(),
        7 => format!("CREATE TEMP TABLE iso_t{n}(x int)"),
        8 => "DISCARD TEMP".into(),
        9 => format!("SELECT pg_advisory_lock({})", r.below(5)),
        10 => "SELECT pg_advisory_unlock_all()".into(),
        11 => format!("LISTEN iso_ch{}", r.below(3)),
        12 => "UNLISTEN *".into(),
        13 => format!("PREPARE iso_p{n} AS SELECT {n}"),
        14 => "DEALLOCATE ALL".into(),
        15 => format!("DO $$BEGIN EXECUTE 'SET {name} TO ''{value}'''; END$$"),
        16 => format!("SELECT iso_rand_set('{name}', '{value}')"),
        17 => format!("SELECT iso_rand_temp({n})"),
        _ => format!("-- a comment first\nSET {name} TO '{value}'"),
    }
}

/// One of A's transactions (or a disconnect).
fn transaction(r: &mut Rng, n: usize) -> Op {
    let s = statement(r, n);
    match r.below(20) {
        0..=6 => Op::Query(s),
        7 => Op::Query(format!("BEGIN; {s}; COMMIT")),
        8 => Op::Query(format!("BEGIN; {s}; ROLLBACK")),
        9 => Op::Query(format!("BEGIN; {s}; SELECT 1/0; COMMIT")),
        10 => Op::Query(format!("BEGIN; DECLARE iso_c{n} CURSOR WITH HOLD FOR SELECT 1; COMMIT")),
        11 => Op::Query("CLOSE ALL".into()),
        12 => Op::Query(format!("BEGIN; SELECT pg_advisory_xact_lock({}); COMMIT", r.below(5))),
        13 => {
            let (name, values) = *r.pick(KNOBS);
            Op::SetConfigCall(name.into(), r.pick(values).to_string())
        }
        14 => Op::Query(format!("CALL iso_rand_proc('{}')", r.pick(&["1MB", "3MB"]))),
        15 | 16 if !s.starts_with("--") && !s.starts_with("DO") => Op::Extended(s),
        15 | 16 => Op::Query(s),
        17 => Op::HalfPipeline(s),
        18 => Op::SendAndVanish(format!("BEGIN; {s}")),
        _ => Op::Query("DISCARD ALL".into()),
    }
}

/// A raw client logged in as `user` (password = user) with startup parameters.
async fn raw_login(p: &TestProxy, user: &str, extra: &[(&str, &str)]) -> Raw {
    Told::login(p, user, extra).await.raw
}

fn extended(name: &str, sql: &str, sync: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut parse = name.as_bytes().to_vec();
    parse.push(0);
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    out.extend(message(b'P', &parse));
    let mut bind = vec![0u8];
    bind.extend_from_slice(name.as_bytes());
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    out.extend(message(b'B', &bind));
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    if sync {
        out.extend(message(b'S', &[]));
    }
    out
}

/// Waits until no client holds a server connection, or one is pinned to it (true).
async fn settled(p: &TestProxy, history: &[String]) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = p.ctx.cancels.status();
        let pinned = status.iter().any(|c| !c.pins.is_empty());
        if pinned || status.iter().all(|c| c.server.is_none()) {
            return pinned;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never settled: {status:?}\nA's last transactions: {:#?}",
            &history[history.len().saturating_sub(6)..]
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// B's whole view of its session.
const VIEW_SQL: &str = "SELECT coalesce((SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings \
     WHERE source NOT IN ('default', 'override')), '') || ' | ' || current_user || ' | ' || session_user || ' | ' || \
     coalesce((SELECT string_agg(c, ',' ORDER BY c) FROM pg_listening_channels() c), '') || ' | ' || \
     coalesce((SELECT string_agg(locktype || ':' || mode || ':' || coalesce(objid::text, ''), ',') FROM pg_locks \
     WHERE pid = pg_backend_pid() AND locktype NOT IN ('relation', 'virtualxid')), '') || ' | ' || \
     (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) || ' | ' || \
     coalesce((SELECT string_agg(name, ',') FROM pg_prepared_statements WHERE from_sql), '') || ' | ' || \
     coalesce((SELECT string_agg(name, ',') FROM pg_cursors), '')";

/// Client A runs random session-changing transactions on the one server connection; after each,
/// client B's whole view of its session must be that of a fresh session with its startup settings.
/// `PGMUX_ISOLATION_SEED` replays a seed, `PGMUX_ISOLATION_STEPS` sets the length (default 3000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sessions_never_reach_another_client() {
    setup(&iso_roles(&["grant iso_low to app", "grant iso_low to iso_su"])).await;
    let seed: u64 = std::env::var("PGMUX_ISOLATION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    let steps: usize = std::env::var("PGMUX_ISOLATION_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    eprintln!("random isolation test: seed {seed} (PGMUX_ISOLATION_SEED={seed} replays it), {steps} steps");
    let c = cluster();
    let text = yaml(&[c.addr(0), c.addr(1)], "  size: 1", "").replacen(
        "shutdown_timeout:",
        "  - name: iso_su\n    password: iso_su\nshutdown_timeout:",
        1,
    );
    let p = start_proxy_yaml(&text).await;
    let su = p.dsn("iso_su", "iso_su", "app");
    let b =
        connect(&format!("{su} application_name=iso_b options='-c work_mem=5MB -c DateStyle=Postgres'")).await.unwrap();
    b.batch_execute(
        "create or replace function iso_rand_set(n text, v text) returns void language plpgsql as \
         $$begin perform set_config(n, v, false); end$$; \
         create or replace function iso_rand_temp(n int) returns void language plpgsql as \
         $$begin execute format('create temp table if not exists iso_ft%s(x int)', n); end$$; \
         create or replace procedure iso_rand_proc(v text) language plpgsql as \
         $$begin perform set_config('work_mem', v, false); end$$",
    )
    .await
    .unwrap();
    let fresh = simple_value(&b, VIEW_SQL).await;
    let a_params: &[(&str, &str)] =
        &[("options", "-c lock_timeout=2s -c DateStyle=German"), ("application_name", "iso_a")];
    let mut a = raw_login(&p, "iso_su", a_params).await;
    let set_config: u32 =
        simple_value(&b, "select 'set_config(text,text,boolean)'::regprocedure::oid").await.parse().unwrap();
    let mut rng = Rng::new(seed);
    let mut history: Vec<String> = Vec::new();
    for step in 0..steps {
        let op = transaction(&mut rng, step);
        history.push(format!("{op:?}"));
        let vanished = match &op {
            Op::Query(sql) => {
                // A failed statement skips the rest of the string, COMMIT included: end the block.
                if a.query(sql).await.last().is_some_and(|(_, body)| body.first() != Some(&b'I')) {
                    a.query("ROLLBACK").await;
                }
                false
            }
            Op::SetConfigCall(name, value) => {
                a.send(&function_call(set_config, &[name, value, "false"])).await;
                a.until_ready().await;
                false
            }
            Op::Extended(sql) => {
                a.send(&extended(&format!("iso_s{step}"), sql, true)).await;
                a.until_ready().await;
                false
            }
            Op::HalfPipeline(sql) => {
                a.send(&extended("", sql, false)).await;
                true
            }
            Op::SendAndVanish(sql) => {
                let mut body = sql.as_bytes().to_vec();
                body.push(0);
                a.send(&message(b'Q', &body)).await;
                true
            }
        };
        if vanished {
            drop(a);
            a = raw_login(&p, "iso_su", a_params).await;
        } else if settled(&p, &history).await {
            // Pinned: B could not get the connection. A lets go of it one way or another.
            if rng.chance(50) {
                drop(a);
                a = raw_login(&p, "iso_su", a_params).await;
                history.push("(A reconnected)".into());
            } else {
                a.query("DISCARD ALL").await;
                history.push("DISCARD ALL (to unpin)".into());
                if settled(&p, &history).await {
                    drop(a);
                    a = raw_login(&p, "iso_su", a_params).await;
                    history.push("(A reconnected)".into());
                }
            }
        }
        let seen = simple_value(&b, VIEW_SQL).await;
        if seen != fresh {
            let last: Vec<_> = history.iter().rev().take(8).rev().collect();
            panic!(
                "seed {seed}, step {step}: B's session differs from a fresh one\n  fresh: {fresh}\n  seen:  {seen}\n\
                 A's last transactions: {last:#?}\n(replay with PGMUX_ISOLATION_SEED={seed})"
            );
        }
    }
}
