//! The frame splitter on arbitrary bytes: every frame it returns lies within the input and its
//! declared length; a bad header is an error, never a panic or a huge allocation. Each frame's
//! body then goes through every message view (`protocol::messages`), whatever its tag: a view
//! that parses accounts for every byte of the body.
#![no_main]
#![forbid(unsafe_code)]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::protocol::frame::{frontend_len, peek_header, split_frame};
use pgmux::protocol::messages::{
    Authentication, BackendKeyData, Bind, Close, CommandComplete, DataRow, Describe, ErrorResponse, Execute,
    ParameterStatus, Parse, PasswordMessage, Query, ReadyForQuery, SaslInitialResponse,
};

/// Small enough that "too long" is reachable, large enough for real messages.
const MAX: usize = 1 << 16;

/// Every view of `body` that parses covers exactly its bytes (names and strings plus their NULs,
/// counts and lengths plus the values they announce).
fn check_views(body: &[u8]) {
    let n = body.len();
    if let Some(q) = Query::parse(body) {
        assert_eq!(q.sql.len() + 1, n);
    }
    if let Some(p) = Parse::parse(body) {
        assert_eq!(p.name.len() + 1 + p.definition.len(), n);
        assert_eq!(p.query.len() + 1 + 2 + 4 * p.param_types.len(), p.definition.len());
        assert_eq!(p.param_types.iter().count(), p.param_types.len());
    }
    if let Some(b) = Bind::parse(body) {
        assert_eq!(b.portal.len() + b.statement.len() + 2 + b.rest.len(), n);
        let _ = b.param_count();
    }
    if let Some(d) = Describe::parse(body) {
        assert_eq!(d.name.len() + 2, n);
        assert_eq!(Close::parse(body).map(|c| (c.target, c.name)), Some((d.target, d.name)));
    }
    if let Some(e) = Execute::parse(body) {
        assert_eq!(e.portal.len() + 5, n);
    }
    if let Some(p) = PasswordMessage::parse(body) {
        assert_eq!(p.password.len() + 1, n);
    }
    if let Some(s) = SaslInitialResponse::parse(body) {
        assert_eq!(s.mechanism.len() + 5 + s.data.map_or(0, <[u8]>::len), n);
    }
    if let Some(a) = Authentication::parse(body) {
        assert_eq!(a.data.len() + 4, n);
    }
    if BackendKeyData::parse(body).is_some() {
        assert_eq!(n, 8);
    }
    if let Some(p) = ParameterStatus::parse(body) {
        assert_eq!(p.name.len() + p.value.len() + 2, n);
    }
    if ReadyForQuery::parse(body).is_some() {
        assert_eq!(n, 1);
    }
    if let Some(c) = CommandComplete::parse(body) {
        assert_eq!(c.tag.len() + 1, n);
    }
    if let Some(e) = ErrorResponse::parse(body) {
        assert_eq!(e.fields().map(|(_, v)| v.len() + 2).sum::<usize>() + 1, n);
        let _ = format!("{e:?}");
    }
    if let Some(r) = DataRow::parse(body) {
        assert_eq!(r.columns().count(), r.len());
        assert_eq!(r.columns().map(|c| 4 + c.map_or(0, <[u8]>::len)).sum::<usize>() + 2, n);
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = peek_header(data, MAX);
    check_views(data);
    let mut buf = BytesMut::from(data);
    let mut taken = 0;
    while let Ok(Some(frame)) = split_frame(&mut buf, MAX) {
        let len = frame.bytes.len();
        assert!((5..=MAX + 1).contains(&len), "frame of {len} bytes");
        let _ = frontend_len(frame.tag, len, MAX);
        check_views(frame.body());
        taken += len;
        assert_eq!(taken + buf.len(), data.len());
    }
});
