//! Builders for the messages pgmux writes itself (to clients, and the few it injects to servers).
//!
//! Messages to clients are encoded by pgwire's message types (only its encoders: client bytes are
//! read by pgmux's own bounded framing), but for ReadyForQuery, which runs once per transaction
//! (see `ready_for_query`). The few frontend messages pgmux injects into a server
//! connection (Query, Sync, and the Parse/Bind/Describe/Close it rewrites from a client's) keep
//! the hand-written `message`/`put_cstr`: a rewrite copies the client's bytes through unchanged,
//! where pgwire's types would need them decoded (lossily, as UTF-8 strings) and owned first.

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::data::{
    DataRow, FORMAT_CODE_TEXT, FieldDescription, NoData, ParameterDescription, RowDescription,
};
use pgwire::messages::extendedquery::BindComplete;
use pgwire::messages::response::{CommandComplete, EmptyQueryResponse, ErrorResponse, NoticeResponse};
use pgwire::messages::startup::{Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey};

use super::{TxStatus, btag, field, ftag};

/// Writes `tag`, a length placeholder, the body from `f`, then patches the length.
pub fn message(buf: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    f(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Writes `msg` with pgwire's encoder.
///
/// pgwire refuses to encode a non-data message (ParameterStatus, CommandComplete, authentication
/// requests, ...) over libpq's 30,000-byte reading limit, after writing its tag. Such a message
/// (a ParameterStatus the server itself sent that long, say) is written whole instead, as
/// pgmux always did: the limit is a client's to apply, and the bytes are pgwire's either way.
fn put<M: Message>(buf: &mut BytesMut, msg: M) {
    let start = buf.len();
    if msg.encode(buf).is_ok() {
        return;
    }
    buf.truncate(start);
    if let Some(tag) = M::message_type() {
        buf.put_u8(tag);
    }
    buf.put_i32(msg.message_length() as i32);
    // Only a byte-string cancel key (protocol 3.2) can fail to encode; pgmux writes i32 keys.
    let encoded = msg.encode_body(buf);
    debug_assert!(encoded.is_ok(), "{encoded:?}");
}

/// Severity of a proxy-made error or notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Notice,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "FATAL",
            Severity::Error => "ERROR",
            Severity::Notice => "NOTICE",
        }
    }
}

/// ErrorResponse (or NoticeResponse for `Severity::Notice`).
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, msg: &str) {
    let fields = vec![
        (field::SEVERITY, severity.as_str().to_owned()),
        (field::SEVERITY_RAW, severity.as_str().to_owned()),
        (field::CODE, code.to_owned()),
        (field::MESSAGE, msg.to_owned()),
    ];
    match severity {
        Severity::Notice => put(buf, NoticeResponse::new(fields)),
        Severity::Fatal | Severity::Error => put(buf, ErrorResponse::new(fields)),
    }
}

/// ReadyForQuery, hand-written: the one message pgmux writes itself once per transaction (where
/// it answers a Sync alone: a batch of only Parse/Close of statements it already holds, an
/// aborted block). pgwire's encoder costs 94 instructions a call against 54 for these lines
/// (callgrind, release build without LTO; its `Result` and out-of-line body), ~0.3% of a
/// transaction. Its bytes are checked against pgwire's in the tests.
pub fn ready_for_query(buf: &mut BytesMut, status: TxStatus) {
    message(buf, btag::READY_FOR_QUERY, |b| b.put_u8(status.byte()));
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put(buf, ParameterStatus::new(name.to_owned(), value.to_owned()));
}

/// One ParameterStatus per parameter, sorted by name (what PostgreSQL's own greeting looks like
/// to a client reading them in order).
pub fn parameter_statuses<'a>(buf: &mut BytesMut, params: impl IntoIterator<Item = (&'a String, &'a String)>) {
    let mut sorted: Vec<_> = params.into_iter().collect();
    sorted.sort_unstable();
    for (name, value) in sorted {
        parameter_status(buf, name, value);
    }
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    put(buf, BackendKeyData::new(pid, SecretKey::I32(secret)));
}

/// An authentication request (`R` message) pgmux makes of a client.
#[derive(Debug, Clone, Copy)]
pub enum AuthRequest<'a> {
    /// AuthenticationOk.
    Ok,
    /// AuthenticationMD5Password with its salt.
    Md5 { salt: [u8; 4] },
    /// AuthenticationSASL: the mechanisms offered, preferred first.
    Sasl { mechanisms: &'a [&'a str] },
    /// AuthenticationSASLContinue: the server-first message.
    SaslContinue(&'a [u8]),
    /// AuthenticationSASLFinal: the server-final message.
    SaslFinal(&'a [u8]),
}

pub fn authentication(buf: &mut BytesMut, request: AuthRequest) {
    let request = match request {
        AuthRequest::Ok => Authentication::Ok,
        AuthRequest::Md5 { salt } => Authentication::MD5Password(salt.to_vec()),
        AuthRequest::Sasl { mechanisms } => Authentication::SASL(mechanisms.iter().map(|m| (*m).to_owned()).collect()),
        AuthRequest::SaslContinue(data) => Authentication::SASLContinue(Bytes::copy_from_slice(data)),
        AuthRequest::SaslFinal(data) => Authentication::SASLFinal(Bytes::copy_from_slice(data)),
    };
    put(buf, request);
}

pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, options: &[String]) {
    put(buf, NegotiateProtocolVersion::new(minor, options.to_vec()));
}

/// CommandComplete with its command tag (e.g. `ROLLBACK`).
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    put(buf, CommandComplete::new(tag.to_owned()));
}

pub fn bind_complete(buf: &mut BytesMut) {
    put(buf, BindComplete::new());
}

/// NoData: the statement or portal returns no rows.
pub fn no_data(buf: &mut BytesMut) {
    put(buf, NoData::new());
}

pub fn empty_query_response(buf: &mut BytesMut) {
    put(buf, EmptyQueryResponse::new());
}

/// ParameterDescription: the type OIDs of a statement's parameters.
pub fn parameter_description(buf: &mut BytesMut, types: &[u32]) {
    put(buf, ParameterDescription::new(types.to_vec()));
}

/// RowDescription for result columns sent in text format: (name, type OID) each, e.g. 25 = text.
pub fn row_description(buf: &mut BytesMut, columns: &[(&str, u32)]) {
    let fields = columns
        .iter()
        .map(|(name, oid)| {
            // Not a table column (table 0, attribute 0), variable length (-1), no type modifier
            // (-1), text format.
            FieldDescription::new((*name).to_owned(), 0, 0, *oid, -1, -1, FORMAT_CODE_TEXT)
        })
        .collect();
    put(buf, RowDescription::new(fields));
}

/// DataRow with text values; `None` is SQL NULL.
pub fn data_row<S: AsRef<str>>(buf: &mut BytesMut, values: &[Option<S>]) {
    // pgwire's DataRow carries its columns already encoded: each a length (-1 for NULL) and bytes.
    let size = values.iter().map(|v| 4 + v.as_ref().map_or(0, |v| v.as_ref().len())).sum();
    let mut columns = BytesMut::with_capacity(size);
    for value in values {
        match value {
            Some(v) => {
                columns.put_i32(v.as_ref().len() as i32);
                columns.put_slice(v.as_ref().as_bytes());
            }
            None => columns.put_i32(-1),
        }
    }
    put(buf, DataRow::new(columns, values.len() as i16));
}

/// A simple-protocol Query.
/// A Sync (frontend): ends an extended-protocol batch.
pub fn sync(buf: &mut BytesMut) {
    message(buf, ftag::SYNC, |_| {});
}

pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, ftag::QUERY, |b| put_cstr(b, sql.as_bytes()));
}

/// Quotes `s` as an SQL string literal (standard_conforming_strings on, as on every supported server).
pub fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::error_fields;

    #[test]
    fn error_response_round_trips() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "08P01", "bad");
        assert_eq!(b[0], b'E');
        assert_eq!(u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize, b.len() - 1);
        let f = error_fields(&b[5..]);
        assert!(f.contains(&(b'C', "08P01".into())));
        assert!(f.contains(&(b'S', "FATAL".into())));
        assert!(f.contains(&(b'M', "bad".into())));
    }

    #[test]
    fn quotes_literals() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
    }

    #[test]
    fn reply_messages_encode_as_postgres_does() {
        let mut b = BytesMut::new();
        command_complete(&mut b, "ROLLBACK");
        bind_complete(&mut b);
        no_data(&mut b);
        empty_query_response(&mut b);
        parameter_description(&mut b, &[23]);
        let mut want = vec![b'C', 0, 0, 0, 13];
        want.extend_from_slice(b"ROLLBACK\0");
        want.extend_from_slice(&[b'2', 0, 0, 0, 4, b'n', 0, 0, 0, 4, b'I', 0, 0, 0, 4]);
        want.extend_from_slice(&[b't', 0, 0, 0, 10, 0, 1, 0, 0, 0, 23]);
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn rows_encode_as_postgres_does() {
        let mut b = BytesMut::new();
        row_description(&mut b, &[("a", 25)]);
        let mut want = vec![b'T', 0, 0, 0, 26, 0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25];
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert_eq!(&b[..], &want[..]);
        b.clear();
        data_row(&mut b, &[Some("xy"), None]);
        assert_eq!(&b[..], &[b'D', 0, 0, 0, 16, 0, 2, 0, 0, 0, 2, b'x', b'y', 0xff, 0xff, 0xff, 0xff]);
    }

    /// `tag`, the length word, then `body`: the framing every golden message below shares.
    fn framed(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    // Golden bytes: what the hand-written encoders produced before pgwire wrote these messages.

    #[test]
    fn errors_and_notices_golden() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "08P01", "bad");
        error_response(&mut b, Severity::Error, "57014", "it's \"quoted\"");
        error_response(&mut b, Severity::Notice, "00000", "");
        let mut want = framed(b'E', b"SFATAL\0VFATAL\0C08P01\0Mbad\0\0");
        want.extend(framed(b'E', b"SERROR\0VERROR\0C57014\0Mit's \"quoted\"\0\0"));
        want.extend(framed(b'N', b"SNOTICE\0VNOTICE\0C00000\0M\0\0"));
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn parameter_statuses_golden() {
        let mut b = BytesMut::new();
        parameter_status(&mut b, "TimeZone", "UTC");
        parameter_status(&mut b, "application_name", "");
        let params: std::collections::HashMap<String, String> =
            [("b", "2"), ("a", "1")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parameter_statuses(&mut b, params.iter());
        let mut want = framed(b'S', b"TimeZone\0UTC\0");
        want.extend(framed(b'S', b"application_name\0\0"));
        want.extend(framed(b'S', b"a\x001\0"));
        want.extend(framed(b'S', b"b\x002\0"));
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn long_parameter_status_is_written_whole() {
        // Longer than libpq reads (30,000 bytes): written as the server sent it, as before.
        let value = "x".repeat(40_000);
        let mut b = BytesMut::new();
        parameter_status(&mut b, "search_path", &value);
        ready_for_query(&mut b, TxStatus::Idle);
        let mut want = framed(b'S', format!("search_path\0{value}\0").as_bytes());
        want.extend(framed(b'Z', b"I"));
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn backend_key_data_golden() {
        let mut b = BytesMut::new();
        backend_key_data(&mut b, 1234, -5);
        assert_eq!(&b[..], &framed(b'K', &[0, 0, 4, 210, 0xff, 0xff, 0xff, 0xfb])[..]);
    }

    #[test]
    fn authentication_requests_golden() {
        let mut b = BytesMut::new();
        authentication(&mut b, AuthRequest::Ok);
        authentication(&mut b, AuthRequest::Md5 { salt: [1, 2, 3, 4] });
        authentication(&mut b, AuthRequest::Sasl { mechanisms: &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"] });
        authentication(&mut b, AuthRequest::Sasl { mechanisms: &["SCRAM-SHA-256"] });
        authentication(&mut b, AuthRequest::SaslContinue(b"r=abc,s=c2FsdA==,i=4096"));
        authentication(&mut b, AuthRequest::SaslFinal(b"v=c2ln"));
        let mut want = framed(b'R', &[0, 0, 0, 0]);
        want.extend(framed(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]));
        want.extend(framed(b'R', b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"));
        want.extend(framed(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"));
        want.extend(framed(b'R', b"\0\0\0\x0br=abc,s=c2FsdA==,i=4096"));
        want.extend(framed(b'R', b"\0\0\0\x0cv=c2ln"));
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn negotiate_protocol_version_golden() {
        let mut b = BytesMut::new();
        negotiate_protocol_version(&mut b, 0, &["_pq_.a".to_string(), "_pq_.bc".to_string()]);
        negotiate_protocol_version(&mut b, 0, &[]);
        let mut want = framed(b'v', b"\0\0\0\0\0\0\0\x02_pq_.a\0_pq_.bc\0");
        want.extend(framed(b'v', &[0, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn hand_written_ready_for_query_is_pgwires() {
        use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
        let statuses = [
            (TxStatus::Idle, TransactionStatus::Idle),
            (TxStatus::InTransaction, TransactionStatus::Transaction),
            (TxStatus::Failed, TransactionStatus::Error),
        ];
        for (ours, theirs) in statuses {
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            ready_for_query(&mut a, ours);
            ReadyForQuery::new(theirs).encode(&mut b).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn ready_for_query_golden() {
        let mut b = BytesMut::new();
        ready_for_query(&mut b, TxStatus::Idle);
        ready_for_query(&mut b, TxStatus::InTransaction);
        ready_for_query(&mut b, TxStatus::Failed);
        let mut want = framed(b'Z', b"I");
        want.extend(framed(b'Z', b"T"));
        want.extend(framed(b'Z', b"E"));
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn console_table_golden() {
        let mut b = BytesMut::new();
        row_description(&mut b, &[("database", 25), ("cl_active", 20)]);
        data_row(&mut b, &[Some("app"), Some(""), None]);
        data_row::<&str>(&mut b, &[]);
        command_complete(&mut b, "SHOW");
        command_complete(&mut b, "");
        let column = |name: &[u8], oid: u8| {
            let mut c = name.to_vec();
            c.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, oid, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
            c
        };
        let mut description = vec![0, 2];
        description.extend(column(b"database", 25));
        description.extend(column(b"cl_active", 20));
        let mut want = framed(b'T', &description);
        want.extend(framed(b'D', &[0, 3, 0, 0, 0, 3, b'a', b'p', b'p', 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]));
        want.extend(framed(b'D', &[0, 0]));
        want.extend(framed(b'C', b"SHOW\0"));
        want.extend(framed(b'C', b"\0"));
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn extended_replies_golden() {
        let mut b = BytesMut::new();
        bind_complete(&mut b);
        no_data(&mut b);
        empty_query_response(&mut b);
        parameter_description(&mut b, &[]);
        parameter_description(&mut b, &[23, 0xffff_fffe]);
        let mut want = framed(b'2', b"");
        want.extend(framed(b'n', b""));
        want.extend(framed(b'I', b""));
        want.extend(framed(b't', &[0, 0]));
        want.extend(framed(b't', &[0, 2, 0, 0, 0, 23, 0xff, 0xff, 0xff, 0xfe]));
        assert_eq!(&b[..], &want[..]);
    }

    #[test]
    fn ready_for_query_is_six_bytes() {
        let mut b = BytesMut::new();
        ready_for_query(&mut b, TxStatus::InTransaction);
        assert_eq!(&b[..], &[b'Z', 0, 0, 0, 5, b'T']);
    }
}
