//! Wire protocol through pgmux with real PostgreSQL: query flows, negotiation, and hostile input.

mod common;

use std::time::Duration;

use common::raw::{Raw, field, message, startup_packet};
use common::*;
use futures_util::future::join_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_multi_statement_and_errors_in_and_out_of_transactions() {
    let p = start_proxy("  size: 2", "").await;
    let c = connect_app(&p).await;
    let rows = c.simple_query("select 1; select 2 as two").await.unwrap();
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["1", "2"]);
    let e = c.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("22012"));
    assert_eq!(c.query_one("select 3", &[]).await.unwrap().get::<_, i32>(0), 3);
    c.batch_execute("begin").await.unwrap();
    let e = c.batch_execute("select nope").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42703"));
    let e = c.batch_execute("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25P02"));
    c.batch_execute("rollback").await.unwrap();
    assert_eq!(c.query_one("select 4", &[]).await.unwrap().get::<_, i32>(0), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_pipelined_and_unnamed() {
    let p = start_proxy("  size: 2", "").await;
    let c = connect_app(&p).await;
    // Several Syncs in flight at once on one connection.
    let futs = (0..20).map(|i| {
        let c = &c;
        async move { c.query_one("select $1::int + 1", &[&i]).await.unwrap().get::<_, i32>(0) }
    });
    let got = join_all(futs).await;
    assert_eq!(got, (1..21).collect::<Vec<i32>>());
    let typed = c.query_typed("select $1::text || 'x'", &[(&"a", tokio_postgres::types::Type::TEXT)]).await.unwrap();
    assert_eq!(typed[0].get::<_, String>(0), "ax");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_copy_out() {
    use futures_util::{SinkExt, StreamExt};
    let p = start_proxy("  size: 2", "").await;
    let c = connect_app(&p).await;
    let t = unique("copy");
    c.batch_execute(&format!("create table {t}(x int, s text)")).await.unwrap();
    let sink = c.copy_in(&format!("copy {t} from stdin")).await.unwrap();
    futures_util::pin_mut!(sink);
    let mut data = String::new();
    for i in 0..5000 {
        data.push_str(&format!("{i}\trow {i}\n"));
    }
    sink.send(bytes::Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 5000);
    let stream = c.copy_out(&format!("copy {t} to stdout")).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().iter().filter(|&&b| b == b'\n').count();
    }
    assert_eq!(total, 5000);
    // A failed COPY leaves the client usable.
    let sink = c.copy_in::<_, bytes::Bytes>(&format!("copy {t} from stdin")).await.unwrap();
    futures_util::pin_mut!(sink);
    let _ = sink.send(bytes::Bytes::from_static(b"not a number\tx\n")).await;
    assert!(sink.finish().await.is_err());
    assert_eq!(c.query_one(&format!("select count(*) from {t}"), &[]).await.unwrap().get::<_, i64>(0), 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_notice_and_notification_reach_the_client() {
    let p = start_proxy("  size: 2", "").await;
    let (mut raw, _) = Raw::login(p.addr, &[]).await;
    let oid = admin_sql(0, "select 'int4abs'::regproc::oid").await;
    let oid: u32 = oid.parse().unwrap();
    // FunctionCall: oid, 1 arg format (text), 1 arg "-7", result format text.
    let mut body = oid.to_be_bytes().to_vec();
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&2i32.to_be_bytes());
    body.extend_from_slice(b"-7");
    body.extend_from_slice(&0u16.to_be_bytes());
    raw.send(&message(b'F', &body)).await;
    let reply = raw.until_ready().await;
    let v = reply.iter().find(|m| m.0 == b'V').expect("FunctionCallResponse");
    assert_eq!(&v.1[4..], b"7");

    let reply = raw.query("do $$ begin raise notice 'hello from server'; end $$").await;
    let n = reply.iter().find(|m| m.0 == b'N').expect("notice");
    assert_eq!(field(&n.1, b'M').as_deref(), Some("hello from server"));

    // Delivered at the commit of the implicit transaction, before its ReadyForQuery.
    let reply = raw.query("listen chan; notify chan, 'payload'").await;
    let a = reply.iter().find(|m| m.0 == b'A').expect("notification");
    assert!(a.1.windows(7).any(|w| w == b"payload"));
    raw.query("unlisten chan").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiates_protocol_minor_and_unknown_options() {
    let p = start_proxy("  size: 2", "").await;
    let mut raw = Raw::connect(p.addr).await;
    raw.send(&startup_packet(2, &[("user", "app"), ("database", "app"), ("_pq_.future", "1")])).await;
    let (tag, body) = raw.recv().await.expect("reply");
    assert_eq!(tag, b'v', "NegotiateProtocolVersion first");
    assert_eq!(&body[..4], &0i32.to_be_bytes());
    assert_eq!(&body[4..8], &1i32.to_be_bytes());
    assert_eq!(&body[8..], b"_pq_.future\0");
    let rest = raw.scram("app").await;
    assert_eq!(rest.last().unwrap().0, b'Z');
    // Protocol 2 is refused cleanly.
    let mut raw = Raw::connect(p.addr).await;
    let mut pkt = startup_packet(0, &[("user", "app")]);
    pkt[4..6].copy_from_slice(&2u16.to_be_bytes());
    raw.send(&pkt).await;
    let (tag, body) = raw.recv().await.unwrap();
    assert_eq!((tag, field(&body, b'S').as_deref()), (b'E', Some("FATAL")));
    assert!(raw.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_declined_then_plaintext_works() {
    let p = start_proxy("  size: 2", "").await;
    for code in [80877103u32, 80877104] {
        let mut raw = Raw::connect(p.addr).await;
        let mut req = 8u32.to_be_bytes().to_vec();
        req.extend_from_slice(&code.to_be_bytes());
        raw.send(&req).await;
        assert_eq!(raw.recv_byte().await, Some(b'N'));
        raw.send(&startup_packet(0, &[("user", "app"), ("database", "app")])).await;
        assert_eq!(raw.scram("app").await.last().unwrap().0, b'Z');
    }
    // libpq's default sslmode=prefer goes through the same path.
    assert_eq!(psql_value(p.port(), "sslmode=prefer", "select 42").await, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_reported_and_applied() {
    let p = start_proxy("  size: 1", "").await;
    let (mut raw, greeting) = Raw::login(
        p.addr,
        &[
            ("application_name", "rawapp"),
            ("TimeZone", "Asia/Tokyo"),
            ("options", "-c search_path=pg_catalog,public -c extra_float_digits=1"),
        ],
    )
    .await;
    let status: Vec<(String, String)> = greeting
        .iter()
        .filter(|m| m.0 == b'S')
        .map(|m| {
            let parts: Vec<_> = m.1.split(|&b| b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
            (parts[0].clone(), parts[1].clone())
        })
        .collect();
    let get = |k: &str| status.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("TimeZone"), Some("Asia/Tokyo"));
    assert_eq!(get("application_name"), Some("rawapp"));
    assert!(get("server_version").is_some());
    assert_eq!(get("client_encoding"), Some("UTF8"));
    assert!(greeting.iter().any(|m| m.0 == b'K'), "BackendKeyData");

    // Another client with other settings shares the one server connection; each sees its own.
    let other = connect(&format!("{} application_name=other options='-c TimeZone=UTC'", p.dsn("app", "app", "app")))
        .await
        .unwrap();
    for _ in 0..3 {
        let r = raw.query("select current_setting('application_name') || '|' || current_setting('TimeZone') || '|' || current_setting('search_path') || '|' || current_setting('extra_float_digits')").await;
        let row = r.iter().find(|m| m.0 == b'D').unwrap();
        let text = String::from_utf8_lossy(&row.1[6..]).into_owned();
        assert_eq!(text.replace(' ', ""), "rawapp|Asia/Tokyo|pg_catalog,public|1");
        let row = other
            .query_one("select current_setting('application_name'), current_setting('TimeZone')", &[])
            .await
            .unwrap();
        assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("other".into(), "UTC".into()));
    }
    // An invalid setting fails the startup with the server's error.
    let e = connect(&format!("{} options='-c TimeZone=Nowhere/Never'", p.dsn("app", "app", "app"))).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("22023"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_absurd_lengths_get_08p01_and_others_keep_working() {
    let p = start_proxy("  size: 2", "").await;
    let healthy = connect_app(&p).await;
    // Garbage instead of a startup packet.
    let mut raw = Raw::connect(p.addr).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (tag, body) = raw.recv().await.expect("error reply");
    assert_eq!((tag, field(&body, b'C').as_deref()), (b'E', Some("08P01")));
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    // Absurd length after login.
    let (mut raw, _) = Raw::login(p.addr, &[]).await;
    raw.send(&[b'Q', 0x7f, 0xff, 0xff, 0xff, b's']).await;
    let (tag, body) = raw.recv().await.expect("error reply");
    assert_eq!((tag, field(&body, b'C').as_deref()), (b'E', Some("08P01")));
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    // A message type only servers send.
    let (mut raw, _) = Raw::login(p.addr, &[]).await;
    raw.send(&message(b'Z', b"I")).await;
    let (tag, body) = raw.recv().await.expect("error reply");
    assert_eq!((tag, field(&body, b'C').as_deref()), (b'E', Some("08P01")));
    // Sync with a body.
    let (mut raw, _) = Raw::login(p.addr, &[]).await;
    raw.send(&message(b'S', b"xx")).await;
    let (tag, body) = raw.recv().await.expect("error reply");
    assert_eq!((tag, field(&body, b'C').as_deref()), (b'E', Some("08P01")));
    // Random bytes of many shapes, concurrently with a healthy client.
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for round in 0..40 {
        let mut raw = if round % 2 == 0 { Raw::connect(p.addr).await } else { Raw::login(p.addr, &[]).await.0 };
        let len = 1 + (seed % 300) as usize;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        raw.send(&junk).await;
        drop(raw);
        assert_eq!(healthy.query_one("select 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_finished_startup_is_closed_after_startup_timeout() {
    let p = start_proxy("  size: 2", "  startup_timeout: 300ms").await;
    let mut raw = Raw::connect(p.addr).await;
    raw.send(&[0, 0, 0]).await;
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    // Stuck in the middle of SCRAM.
    let mut raw = Raw::connect(p.addr).await;
    raw.send(&startup_packet(0, &[("user", "app")])).await;
    assert_eq!(raw.recv().await.map(|m| m.0), Some(b'R'));
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    let c = connect_app(&p).await;
    c.simple_query("select 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_closes_cleanly() {
    let p = start_proxy("  size: 1", "").await;
    let (mut raw, _) = Raw::login(p.addr, &[]).await;
    raw.send(&message(b'X', b"")).await;
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    let c = connect_app(&p).await;
    c.simple_query("select 1").await.unwrap();
}
