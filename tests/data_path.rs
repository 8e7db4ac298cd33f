//! The data path under pressure: COPY both ways through throttled, stalled and cut links, floods
//! that pgmux must not buffer, message and statement limits, and the idle-in-transaction timeout.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::certs::{certs, client_config, ssl_cluster};
use common::faults::Relay;
use common::raw::{Raw, field, message};
use common::rng::Rng;
use common::*;
use futures_util::{SinkExt, StreamExt};
use md5::{Digest, Md5};

/// `rows` lines of COPY text (`id \t payload`), about 107 bytes each.
fn copy_text(rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows * 110);
    for i in 0..rows {
        out.extend_from_slice(format!("{i}\t{}\n", "x".repeat(100 - (i % 7))).as_bytes());
    }
    out
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

async fn copy_in(
    c: &tokio_postgres::Client,
    sql: &str,
    data: &[u8],
    rng: &mut Rng,
) -> Result<u64, tokio_postgres::Error> {
    let sink = c.copy_in::<_, Bytes>(sql).await?;
    futures_util::pin_mut!(sink);
    let mut off = 0;
    while off < data.len() {
        let n = (1 + rng.below(256 * 1024) as usize).min(data.len() - off);
        sink.send(Bytes::copy_from_slice(&data[off..off + n])).await?;
        off += n;
    }
    sink.finish().await
}

async fn copy_out(c: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    let stream = c.copy_out(sql).await.expect("copy out");
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("copy out chunk"));
    }
    out
}

/// COPY FROM STDIN and TO STDOUT of 10 MB, many times, through links that throttle, stall and
/// chunk at random on both sides of pgmux; every round trip checked byte for byte, with failed
/// COPYs (duplicate key, CopyFail) in between. With `tls`, both sides are encrypted (the links
/// relay TLS records, so faults split records anywhere).
async fn copy_under_faults(mode: &str, reps: usize, tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), "");
    let ssl_server = if tls { Some(ssl_cluster(&certs).await) } else { None };
    let server_addr = ssl_server.as_ref().map_or_else(|| cluster().addr(0), |s| s.addr(0));
    let server_relay = Relay::start(server_addr.parse().unwrap()).await;
    let mut config = yaml(&[server_relay.addr.to_string()], &format!("  mode: {mode}\n  size: 2"), "");
    if tls {
        config.push_str(&format!(
            "tls:\n  mode: require\n  cert_file: {}\n  key_file: {}\nserver_tls: {{mode: require}}\n",
            certs.cert.display(),
            certs.key.display()
        ));
    }
    let p = start_proxy_yaml(&config).await;
    let client_relay = Relay::start(p.addr).await;
    let dsn =
        format!("host=localhost hostaddr=127.0.0.1 port={} user=app password=app dbname=app", client_relay.addr.port());
    let client = if tls {
        let (client, conn) = tokio_postgres::connect(
            &format!("{dsn} sslmode=require"),
            tokio_postgres_rustls::MakeRustlsConnect::new(client_config(&certs.ca, &[])),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        client
    } else {
        connect(&dsn).await.unwrap()
    };
    let table = unique("copyt");
    client.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY, payload text)")).await.unwrap();
    let data = copy_text(100_000);
    assert!(data.len() >= 10_000_000);
    let want = md5_hex(&data);
    let copy_in_sql = format!("COPY {table} (id, payload) FROM STDIN");
    let copy_out_sql = format!("COPY (SELECT id, payload FROM {table} ORDER BY id) TO STDOUT");
    let mut rng = Rng::from_env("PGMUX_TEST_SEED");
    for rep in 0..reps {
        // Faults for this round: each side, each direction, its own.
        for relay in [&server_relay, &client_relay] {
            relay.faults.clear();
            for d in [&relay.faults.up, &relay.faults.down] {
                if rng.below(3) == 0 {
                    d.throttle(20_000_000 + rng.below(80_000_000));
                }
                if rng.below(3) == 0 {
                    // Odd sizes that split messages anywhere (tiny ones: the pipeline test).
                    d.chunk(500 + rng.below(64 * 1024));
                }
            }
        }
        let stall = (rng.below(2) == 0).then(|| {
            let (relay, up) = match rng.below(4) {
                0 => (server_relay.faults.clone(), true),
                1 => (server_relay.faults.clone(), false),
                2 => (client_relay.faults.clone(), true),
                _ => (client_relay.faults.clone(), false),
            };
            let after = Duration::from_millis(rng.below(300));
            let len = Duration::from_millis(50 + rng.below(250));
            tokio::spawn(async move {
                let d = if up { &relay.up } else { &relay.down };
                tokio::time::sleep(after).await;
                d.stall(true);
                tokio::time::sleep(len).await;
                d.stall(false);
            })
        });
        client.batch_execute(&format!("TRUNCATE {table}")).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(60), copy_in(&client, &copy_in_sql, &data, &mut rng))
            .await
            .unwrap_or_else(|_| panic!("{mode} rep {rep}: COPY FROM STDIN stalled"))
            .unwrap_or_else(|e| panic!("{mode} rep {rep}: COPY FROM STDIN failed: {e}"));
        assert_eq!(n, 100_000, "{mode} rep {rep}");
        let server_md5 = simple_value(
            &client,
            &format!("SELECT md5(string_agg(id || E'\\t' || payload || E'\\n', '' ORDER BY id)) FROM {table}"),
        )
        .await;
        assert_eq!(server_md5, want, "{mode} rep {rep}: the server holds other bytes than were sent");
        let out = tokio::time::timeout(Duration::from_secs(60), copy_out(&client, &copy_out_sql))
            .await
            .unwrap_or_else(|_| panic!("{mode} rep {rep}: COPY TO STDOUT stalled"));
        assert_eq!(md5_hex(&out), want, "{mode} rep {rep}: COPY TO STDOUT returned other bytes");
        if rep % 5 == 0 {
            // A COPY that fails half-way on a duplicate key, then one the client abandons.
            let e = copy_in(&client, &copy_in_sql, &data, &mut rng).await.expect_err("duplicate keys");
            assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{mode} rep {rep}: {e}");
            {
                let sink = client.copy_in::<_, Bytes>(&copy_in_sql).await.unwrap();
                futures_util::pin_mut!(sink);
                sink.send(Bytes::copy_from_slice(&data[..500_000])).await.unwrap();
                // Dropped unfinished: tokio-postgres sends CopyFail.
            }
            assert_eq!(simple_value(&client, &format!("SELECT count(*) FROM {table}")).await, "100000");
        }
        if let Some(s) = stall {
            s.await.unwrap();
        }
    }
    server_relay.faults.clear();
    client_relay.faults.clear();
    client.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
    if let Some(server) = ssl_server {
        drop(client);
        p.shutdown.abort.cancel();
        tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
    }
}

fn reps() -> usize {
    std::env::var("PGMUX_COPY_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(50)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trips_under_faults_in_transaction_mode() {
    copy_under_faults("transaction", reps(), false).await;
}

/// The same over TLS on both sides of pgmux (fewer rounds: each one is 40 MB through rustls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trips_under_faults_over_tls() {
    copy_under_faults("transaction", reps().div_ceil(5), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trips_under_faults_in_session_mode() {
    copy_under_faults("session", reps(), false).await;
}

/// The defect first seen with psycopg: a COPY that fails on its first row while the client keeps
/// streaming, then the next statements. pgmux stalled with the end of the stream in its buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_then_more_work_never_stalls() {
    let p = start_proxy("  size: 2", "").await;
    let client = connect_app(&p).await;
    let table = unique("copyfail");
    client.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY, payload text)")).await.unwrap();
    let data = copy_text(100_000);
    let sql = format!("COPY {table} (id, payload) FROM STDIN");
    let mut rng = Rng::from_env("PGMUX_TEST_SEED");
    for round in 0..10 {
        client.batch_execute(&format!("TRUNCATE {table}")).await.unwrap();
        let step = tokio::time::timeout(Duration::from_secs(60), async {
            copy_in(&client, &sql, &data, &mut rng).await.unwrap();
            let e = copy_in(&client, &sql, &data, &mut rng).await.expect_err("duplicate keys");
            assert_eq!(sqlstate(&e).as_deref(), Some("23505"));
            simple_value(&client, &format!("SELECT count(*) FROM {table}")).await
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: stalled"));
        assert_eq!(step, "100000");
    }
}

/// Kilobytes pgmux may grow by while one client floods it (see the README's memory bound).
const GROWTH_LIMIT_KB: u64 = 4 * 1024;

/// A client that pipelines 100,000 queries without reading their results, and one that sends
/// 100,000 Closes pgmux answers itself while the server sleeps: pgmux's memory stays bounded and
/// another client is served as usual; both floods are answered in full once the clients read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_that_are_not_read_stay_bounded() {
    let c = cluster();
    let proxy = ChildProxy::start(&yaml(&[c.addr(0)], "  size: 4", ""));
    let other = connect(&proxy.dsn("app", "app")).await.unwrap();
    other.simple_query("SELECT 1").await.unwrap();
    let base = proxy.rss_kb();

    // 1. 100,000 × SELECT repeat('x', 1000) (100 MB of results), nothing read.
    let (flood, _) = Raw::login(proxy.addr, &[]).await;
    let query = message(b'Q', b"SELECT repeat('x', 1000)\0");
    let mut batch = Vec::with_capacity(query.len() * 100_000);
    for _ in 0..100_000 {
        batch.extend_from_slice(&query);
    }
    let (mut rd, wr) = flood.stream.into_split();
    let writer = write_in_background(wr, batch);
    let peak = watch_rss(&proxy, base, Duration::from_secs(3)).await;
    eprintln!("pipelined flood: pgmux RSS {base} kB -> peak {peak} kB");
    assert!(peak - base < GROWTH_LIMIT_KB, "pipelined flood grew pgmux by {} kB", peak - base);
    let t = Instant::now();
    other.simple_query("SELECT 1").await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "another client waited {:?}", t.elapsed());
    // Now read it all: every query answered.
    let readies = tokio::time::timeout(Duration::from_secs(120), count_until(&mut rd, b'Z', 100_000))
        .await
        .expect("the flood's results never all came");
    assert_eq!(readies, 100_000);
    let wr = writer.await.unwrap();
    drop((rd, wr));

    // 2. A long query, then 100,000 Closes pgmux answers itself, nothing read.
    let (flood, _) = Raw::login(proxy.addr, &[]).await;
    let (mut rd, wr) = flood.stream.into_split();
    let mut batch = message(b'Q', b"SELECT pg_sleep(2)\0");
    let mut close = vec![b'S'];
    close.extend_from_slice(b"never_prepared\0");
    let close = message(b'C', &close);
    for _ in 0..100_000 {
        batch.extend_from_slice(&close);
    }
    batch.extend_from_slice(&message(b'S', b""));
    let writer = write_in_background(wr, batch);
    let base = proxy.rss_kb();
    let peak = watch_rss(&proxy, base, Duration::from_secs(2)).await;
    eprintln!("Close flood: pgmux RSS {base} kB -> peak {peak} kB");
    assert!(peak - base < GROWTH_LIMIT_KB, "Close flood grew pgmux by {} kB", peak - base);
    let t = Instant::now();
    other.simple_query("SELECT 1").await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "another client waited {:?}", t.elapsed());
    let closes = tokio::time::timeout(Duration::from_secs(60), count_until(&mut rd, b'3', 100_000))
        .await
        .expect("the Closes were never all answered");
    assert_eq!(closes, 100_000);
    drop(writer.await.unwrap());
}

/// Writes `batch` whole from a task of its own (it blocks once pgmux stops reading); the task
/// hands the socket back when done.
fn write_in_background(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    batch: Vec<u8>,
) -> tokio::task::JoinHandle<tokio::net::tcp::OwnedWriteHalf> {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        wr.write_all(&batch).await.unwrap();
        wr
    })
}

/// The highest RSS seen over `time` (polled), at least `base`.
async fn watch_rss(proxy: &ChildProxy, base: u64, time: Duration) -> u64 {
    let end = Instant::now() + time;
    let mut peak = base;
    while Instant::now() < end {
        peak = peak.max(proxy.rss_kb());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peak
}

/// Reads messages until `want` of type `tag` arrived; returns how many did.
async fn count_until(rd: &mut tokio::net::tcp::OwnedReadHalf, tag: u8, want: usize) -> usize {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
    let mut seen = 0;
    loop {
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < len + 1 {
                break;
            }
            if buf[0] == b'E' {
                panic!("error in flood: {:?}", field(&buf[5..len + 1], b'M'));
            }
            if buf[0] == tag {
                seen += 1;
            }
            let _ = buf.split_to(len + 1);
        }
        if seen >= want {
            return seen;
        }
        if rd.read_buf(&mut buf).await.unwrap() == 0 {
            return seen;
        }
    }
}

/// A client that reads a 200 MB result slowly: pgmux does not buffer it; the server waits to
/// write instead (ClientWrite), and the whole result arrives once the client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_throttles_the_server_not_pgmux() {
    let c = cluster();
    let proxy = ChildProxy::start(&yaml(&[c.addr(0)], "  size: 4", ""));
    let relay = Relay::start(proxy.addr).await;
    let base = proxy.rss_kb();
    let (raw, _) = Raw::login(relay.addr, &[("application_name", "slowreader")]).await;
    relay.faults.down.stall(true);
    let (mut rd, mut wr) = raw.stream.into_split();
    {
        use tokio::io::AsyncWriteExt;
        wr.write_all(&message(b'Q', b"SELECT repeat('x', 1000) FROM generate_series(1, 200000)\0")).await.unwrap();
    }
    let throttled = eventually(Duration::from_secs(20), || async {
        admin_sql(0, "SELECT wait_event FROM pg_stat_activity WHERE application_name = 'slowreader'").await.trim()
            == "ClientWrite"
    })
    .await;
    assert!(throttled, "the server never waited on a slow reader");
    let peak = watch_rss(&proxy, base, Duration::from_secs(1)).await;
    eprintln!("slow reader: pgmux RSS {base} kB -> peak {peak} kB");
    assert!(peak - base < GROWTH_LIMIT_KB, "slow reader grew pgmux by {} kB", peak - base);
    relay.faults.down.stall(false);
    let rows = tokio::time::timeout(Duration::from_secs(120), count_until(&mut rd, b'D', 200_000))
        .await
        .expect("the result never all came");
    assert_eq!(rows, 200_000);
    drop(wr);
}

/// Message size limits: a data-carrying message over clients.max_message_size, a small message
/// over PostgreSQL's 10,000-byte limit and a body on a body-less message each end that client
/// with the right SQLSTATE; others carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_end_only_that_client() {
    let p = start_proxy("  size: 2", "  max_message_size: 1MB").await;
    let other = connect_app(&p).await;
    let big = format!("SELECT '{}'\0", "x".repeat(1_100_000));
    let mut close = vec![b'S'];
    close.extend_from_slice(&vec![b'n'; 20_000]);
    close.push(0);
    let cases: [(Vec<u8>, &str); 3] =
        [(message(b'Q', big.as_bytes()), "54000"), (message(b'C', &close), "08P01"), (message(b'S', b"junk"), "08P01")];
    for (bytes, code) in cases {
        let (mut raw, _) = Raw::login(p.addr, &[]).await;
        // Only the header matters: pgmux judges the length before reading the body.
        raw.send(&bytes[..bytes.len().min(64 * 1024)]).await;
        let reply = tokio::time::timeout(Duration::from_secs(5), raw.recv()).await.expect("no answer");
        let (tag, body) = reply.expect("closed without an error");
        assert_eq!(tag, b'E');
        assert_eq!(field(&body, b'C').as_deref(), Some(code));
        assert_eq!(field(&body, b'V').as_deref(), Some("FATAL"));
        assert!(raw.closed_within(Duration::from_secs(5)).await);
    }
    // A message just under the limit is fine.
    let ok = format!("SELECT length('{}')", "x".repeat(1_000_000));
    assert_eq!(simple_value(&other, &ok).await, "1000000");
}

/// clients.max_prepared_statements: past it, a Parse fails with 53400 (the batch is skipped to
/// its Sync) and the connection carries on; closing one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_per_client_are_capped() {
    let p = start_proxy("  size: 2", "  max_prepared_statements: 3").await;
    let client = connect_app(&p).await;
    let mut kept = Vec::new();
    for i in 0..3 {
        kept.push(client.prepare(&format!("SELECT {i}")).await.unwrap());
    }
    let e = client.prepare("SELECT 99").await.expect_err("over the cap");
    assert_eq!(sqlstate(&e).as_deref(), Some("53400"), "{e}");
    let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    assert!(message.contains("max_prepared_statements"), "{message}");
    let row = client.query_one(&kept[2], &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    // tokio-postgres closes a statement when its last handle (rows hold one) goes.
    drop((row, kept.pop()));
    let s = client.prepare("SELECT 42").await.unwrap();
    assert_eq!(client.query_one(&s, &[]).await.unwrap().get::<_, i32>(0), 42);
}

/// clients.idle_transaction_timeout: a client idle inside a transaction (or an unfinished
/// extended-protocol batch) gets FATAL 25P03; its work is rolled back and the server connection
/// serves the next client, clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_clients_are_closed_and_rolled_back() {
    let p = start_proxy("  size: 1", "  idle_transaction_timeout: 1s").await;
    let table = unique("idletx");
    admin_sql(0, &format!("CREATE TABLE {table} (id int); GRANT ALL ON {table} TO PUBLIC")).await;
    let setup = connect(&p.dsn("u2", "u2", "app")).await.unwrap();
    let pid = simple_value(&setup, "SELECT pg_backend_pid()").await;
    drop(setup);
    for unfinished_batch in [false, true] {
        let (mut raw, _) = Raw::login_as(p.addr, "u2", "u2", &[]).await;
        raw.query("BEGIN").await;
        raw.query(&format!("INSERT INTO {table} VALUES (1)")).await;
        if unfinished_batch {
            let mut parse = b"\0".to_vec();
            parse.extend_from_slice(b"SELECT 1\0\0\0");
            raw.send(&message(b'P', &parse)).await;
        }
        let start = Instant::now();
        let (tag, body) =
            tokio::time::timeout(Duration::from_secs(10), raw.recv()).await.expect("no timeout").expect("an error");
        assert_eq!(tag, b'E');
        assert_eq!(field(&body, b'C').as_deref(), Some("25P03"));
        assert_eq!(field(&body, b'V').as_deref(), Some("FATAL"));
        assert!(start.elapsed() >= Duration::from_millis(900), "fired after {:?}", start.elapsed());
        assert!(raw.closed_within(Duration::from_secs(5)).await);
        // Nothing committed; the same server connection serves the next client, outside any
        // transaction.
        let next = connect(&p.dsn("u2", "u2", "app")).await.unwrap();
        assert_eq!(simple_value(&next, &format!("SELECT count(*) FROM {table}")).await, "0");
        assert_eq!(simple_value(&next, "SELECT pg_backend_pid()").await, pid, "the connection was not reused");
        next.batch_execute(&format!("INSERT INTO {table} VALUES (2)")).await.unwrap();
        assert_eq!(admin_sql(0, &format!("SELECT count(*) FROM {table}")).await.trim(), "1");
        next.batch_execute(&format!("DELETE FROM {table}")).await.unwrap();
    }
    // A long query is not idleness.
    let client = connect(&p.dsn("u2", "u2", "app")).await.unwrap();
    client.batch_execute("BEGIN; SELECT pg_sleep(1.5); COMMIT").await.unwrap();
}

/// A pinned client (a temp table keeps it on one server connection) moves COPY both ways through
/// the same faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trips_under_faults_while_pinned() {
    let c = cluster();
    let relay = Relay::start(c.addr(0).parse().unwrap()).await;
    let p = start_proxy_yaml(&yaml(&[relay.addr.to_string()], "  size: 2", "")).await;
    let client = connect_app(&p).await;
    client.batch_execute("CREATE TEMP TABLE pinned_copy (id int PRIMARY KEY, payload text)").await.unwrap();
    let data = copy_text(100_000);
    let want = md5_hex(&data);
    let mut rng = Rng::from_env("PGMUX_TEST_SEED");
    for rep in 0..10 {
        relay.faults.clear();
        relay.faults.up.chunk(1 + rng.below(64 * 1024));
        relay.faults.down.throttle(30_000_000 + rng.below(70_000_000));
        client.batch_execute("TRUNCATE pinned_copy").await.unwrap();
        let n = tokio::time::timeout(
            Duration::from_secs(60),
            copy_in(&client, "COPY pinned_copy (id, payload) FROM STDIN", &data, &mut rng),
        )
        .await
        .unwrap_or_else(|_| panic!("rep {rep}: COPY FROM STDIN stalled"))
        .unwrap();
        assert_eq!(n, 100_000);
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            copy_out(&client, "COPY (SELECT id, payload FROM pinned_copy ORDER BY id) TO STDOUT"),
        )
        .await
        .unwrap_or_else(|_| panic!("rep {rep}: COPY TO STDOUT stalled"));
        assert_eq!(md5_hex(&out), want, "rep {rep}");
    }
}

/// Pipelined extended-protocol queries through links that cut every message into a few bytes
/// and throttle the way back: every reply arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_survive_tiny_chunks_and_throttling() {
    let c = cluster();
    let server_relay = Relay::start(c.addr(0).parse().unwrap()).await;
    let p = start_proxy_yaml(&yaml(&[server_relay.addr.to_string()], "  size: 2", "")).await;
    let client_relay = Relay::start(p.addr).await;
    client_relay.faults.up.chunk(3);
    server_relay.faults.up.chunk(7);
    server_relay.faults.down.chunk(5);
    client_relay.faults.down.throttle(2_000_000);
    let dsn = format!("host=127.0.0.1 port={} user=app password=app dbname=app", client_relay.addr.port());
    let client = connect(&dsn).await.unwrap();
    let stmt = client.prepare("SELECT $1::int + 1, repeat('y', $1::int)").await.unwrap();
    let queries = (0..500).map(|i| {
        let (client, stmt) = (&client, &stmt);
        async move { client.query_one(stmt, &[&i]).await.map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1).len())) }
    });
    let results = tokio::time::timeout(Duration::from_secs(120), futures_util::future::join_all(queries))
        .await
        .expect("the pipeline stalled");
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), (i as i32 + 1, i), "reply {i}");
    }
}

/// Links cut mid-COPY: towards the server, the client gets an error and its next COPY works; on
/// the client's side, pgmux lets the server connection go (no transaction left open, nothing
/// committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_during_copy_end_cleanly() {
    let c = cluster();
    let server_relay = Relay::start(c.addr(0).parse().unwrap()).await;
    let p = start_proxy_yaml(&yaml(&[server_relay.addr.to_string()], "  size: 2", "")).await;
    let client_relay = Relay::start(p.addr).await;
    let table = unique("cutcopy");
    let setup = connect_app(&p).await;
    setup.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY, payload text)")).await.unwrap();
    let data = copy_text(100_000);
    let sql = format!("COPY {table} (id, payload) FROM STDIN");
    let mut rng = Rng::from_env("PGMUX_TEST_SEED");

    // The server side is cut while the client streams.
    server_relay.faults.up.throttle(5_000_000);
    let faults = server_relay.faults.clone();
    let cutter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        faults.cut();
    });
    let e = tokio::time::timeout(Duration::from_secs(30), copy_in(&setup, &sql, &data, &mut rng))
        .await
        .expect("stalled after the cut")
        .expect_err("the server connection was cut");
    assert_eq!(sqlstate(&e).as_deref(), Some("08006"), "{e}");
    cutter.await.unwrap();
    server_relay.faults.clear();
    let n = tokio::time::timeout(Duration::from_secs(30), copy_in(&setup, &sql, &data, &mut rng))
        .await
        .expect("stalled after recovery")
        .unwrap();
    assert_eq!(n, 100_000);
    setup.batch_execute(&format!("TRUNCATE {table}")).await.unwrap();

    // The client side is cut mid-COPY, inside a transaction block.
    let dsn = format!(
        "host=127.0.0.1 port={} user=app password=app dbname=app application_name=cutvictim",
        client_relay.addr.port()
    );
    let victim = connect(&dsn).await.unwrap();
    victim.batch_execute("BEGIN").await.unwrap();
    client_relay.faults.up.throttle(5_000_000);
    let faults = client_relay.faults.clone();
    let cutter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        faults.cut();
    });
    let _ = tokio::time::timeout(Duration::from_secs(30), copy_in(&victim, &sql, &data, &mut rng)).await;
    cutter.await.unwrap();
    let released = eventually(Duration::from_secs(10), || async {
        p.ctx.cluster.pools.all().iter().all(|pool| pool.borrowed_count() == 0)
    })
    .await;
    assert!(released, "pgmux still holds the cut client's server connection");
    assert_eq!(simple_value(&setup, &format!("SELECT count(*) FROM {table}")).await, "0");
    let busy = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cutvictim' AND state <> 'idle'";
    let settled = eventually(Duration::from_secs(10), || async { admin_sql(0, busy).await.trim() == "0" }).await;
    assert!(settled, "the cut client's transaction was left open");
}
