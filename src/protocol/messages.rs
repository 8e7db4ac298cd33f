//! Typed, zero-copy views of the message bodies pgmux reads: each `parse` takes a body (the bytes
//! after the 5-byte header), checks its layout against the bounds and returns the fields as slices
//! of it, or `None` if the body is truncated or malformed. Nothing here allocates, so the relay can
//! read the messages it acts on without paying more than the bytes it looks at.
//!
//! Frontend views: Query, Parse, Bind, Describe, Close, Execute, PasswordMessage,
//! SASLInitialResponse. Backend views: Authentication, BackendKeyData, ParameterStatus,
//! ReadyForQuery, CommandComplete, ErrorResponse (and NoticeResponse), DataRow.

use std::borrow::Cow;
use std::fmt;

use super::{TxStatus, cstr, target};

/// An Int16 at the start of `buf`, and the rest.
fn u16_at(buf: &[u8]) -> Option<(u16, &[u8])> {
    let (n, rest) = buf.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*n), rest))
}

/// An Int32 at the start of `buf`, and the rest.
fn i32_at(buf: &[u8]) -> Option<(i32, &[u8])> {
    let (n, rest) = buf.split_first_chunk::<4>()?;
    Some((i32::from_be_bytes(*n), rest))
}

/// A NUL-terminated string that must be the whole of `buf`.
fn only_cstr(buf: &[u8]) -> Option<&[u8]> {
    match cstr(buf)? {
        (s, []) => Some(s),
        _ => None,
    }
}

// ---- Frontend (client → server) ----

/// Query: one SQL text (possibly several statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// The text, without its NUL.
    pub sql: &'a [u8],
}

impl<'a> Query<'a> {
    pub fn parse(body: &'a [u8]) -> Option<Query<'a>> {
        Some(Query { sql: only_cstr(body)? })
    }
}

/// Parse: a statement name, its query text and the parameter types the client fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Empty for the unnamed statement.
    pub name: &'a [u8],
    /// The text, without its NUL.
    pub query: &'a [u8],
    pub param_types: ParamTypes<'a>,
    /// Everything after the name (query text and parameter types, as sent): what defines the
    /// statement whatever it is called.
    pub definition: &'a [u8],
}

impl<'a> Parse<'a> {
    // Every view's constructor is `parse`, this one's too.
    #[allow(clippy::self_named_constructors)]
    pub fn parse(body: &'a [u8]) -> Option<Parse<'a>> {
        let (name, definition) = cstr(body)?;
        let (query, rest) = cstr(definition)?;
        let (count, oids) = u16_at(rest)?;
        (oids.len() == 4 * count as usize).then_some(Parse {
            name,
            query,
            param_types: ParamTypes { oids },
            definition,
        })
    }
}

/// The parameter type OIDs of a Parse (0: left to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamTypes<'a> {
    /// Whole 4-byte OIDs (checked by `Parse::parse`).
    oids: &'a [u8],
}

impl<'a> ParamTypes<'a> {
    pub fn len(&self) -> usize {
        self.oids.len() / 4
    }

    pub fn is_empty(&self) -> bool {
        self.oids.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        self.oids.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// Bind: a portal, the statement it binds, and the parameters and formats, unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Empty for the unnamed statement.
    pub statement: &'a [u8],
    /// Parameter formats, parameter values, result formats, as sent.
    pub rest: &'a [u8],
}

impl<'a> Bind<'a> {
    /// Reads the two names only: the parameters pass through unread (see `param_count`).
    pub fn parse(body: &'a [u8]) -> Option<Bind<'a>> {
        let (portal, rest) = cstr(body)?;
        let (statement, rest) = cstr(rest)?;
        Some(Bind { portal, statement, rest })
    }

    /// How many parameter values follow the parameter formats, if the counts are there.
    pub fn param_count(&self) -> Option<u16> {
        let (formats, rest) = u16_at(self.rest)?;
        let (count, _) = u16_at(rest.get(2 * formats as usize..)?)?;
        Some(count)
    }
}

/// What a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Statement,
    Portal,
}

impl Target {
    pub fn from_byte(b: u8) -> Option<Target> {
        match b {
            target::STATEMENT => Some(Target::Statement),
            target::PORTAL => Some(Target::Portal),
            _ => None,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            Target::Statement => target::STATEMENT,
            Target::Portal => target::PORTAL,
        }
    }
}

/// The shared layout of Describe and Close: a target byte and a name.
fn target_and_name(body: &[u8]) -> Option<(Target, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    Some((Target::from_byte(kind)?, only_cstr(rest)?))
}

/// Describe of a statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Describe<'a> {
    pub target: Target,
    /// Empty for the unnamed one.
    pub name: &'a [u8],
}

impl<'a> Describe<'a> {
    pub fn parse(body: &'a [u8]) -> Option<Describe<'a>> {
        let (target, name) = target_and_name(body)?;
        Some(Describe { target, name })
    }
}

/// Close of a statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close<'a> {
    pub target: Target,
    /// Empty for the unnamed one.
    pub name: &'a [u8],
}

impl<'a> Close<'a> {
    pub fn parse(body: &'a [u8]) -> Option<Close<'a>> {
        let (target, name) = target_and_name(body)?;
        Some(Close { target, name })
    }
}

/// Execute of a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execute<'a> {
    /// Empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Row limit, 0 for none.
    pub max_rows: i32,
}

impl<'a> Execute<'a> {
    pub fn parse(body: &'a [u8]) -> Option<Execute<'a>> {
        let (portal, rest) = cstr(body)?;
        match i32_at(rest)? {
            (max_rows, []) => Some(Execute { portal, max_rows }),
            _ => None,
        }
    }
}

/// PasswordMessage carrying a password (cleartext or MD5 response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordMessage<'a> {
    pub password: &'a [u8],
}

impl<'a> PasswordMessage<'a> {
    pub fn parse(body: &'a [u8]) -> Option<PasswordMessage<'a>> {
        Some(PasswordMessage { password: only_cstr(body)? })
    }
}

/// SASLInitialResponse: the mechanism the client chose and its first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a [u8],
    /// None when the client sent length -1 (no initial response).
    pub data: Option<&'a [u8]>,
}

impl<'a> SaslInitialResponse<'a> {
    pub fn parse(body: &'a [u8]) -> Option<SaslInitialResponse<'a>> {
        let (mechanism, rest) = cstr(body)?;
        let (len, data) = i32_at(rest)?;
        let data = match len {
            -1 if data.is_empty() => None,
            n if n >= 0 && n as usize == data.len() => Some(data),
            _ => return None,
        };
        Some(SaslInitialResponse { mechanism, data })
    }
}

// ---- Backend (server → client) ----

/// An authentication request: its code (0 ok, 3 cleartext, 5 MD5, 10/11/12 SASL) and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authentication<'a> {
    pub code: i32,
    pub data: &'a [u8],
}

impl<'a> Authentication<'a> {
    pub fn parse(body: &'a [u8]) -> Option<Authentication<'a>> {
        let (code, data) = i32_at(body)?;
        Some(Authentication { code, data })
    }
}

/// BackendKeyData: what a CancelRequest for this session must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKeyData {
    pub pid: i32,
    pub secret: i32,
}

impl BackendKeyData {
    pub fn parse(body: &[u8]) -> Option<BackendKeyData> {
        let (pid, rest) = i32_at(body)?;
        match i32_at(rest)? {
            (secret, []) => Some(BackendKeyData { pid, secret }),
            _ => None,
        }
    }
}

/// ParameterStatus: a reported run-time parameter's new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterStatus<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> ParameterStatus<'a> {
    pub fn parse(body: &'a [u8]) -> Option<ParameterStatus<'a>> {
        let (name, rest) = cstr(body)?;
        Some(ParameterStatus { name, value: only_cstr(rest)? })
    }
}

/// ReadyForQuery: the server's transaction status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyForQuery {
    pub status: TxStatus,
}

impl ReadyForQuery {
    pub fn parse(body: &[u8]) -> Option<ReadyForQuery> {
        match *body {
            [b] => Some(ReadyForQuery { status: TxStatus::from_byte(b)? }),
            _ => None,
        }
    }
}

/// CommandComplete: the command tag (`SELECT 1`, `INSERT 0 5`, `SET`…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandComplete<'a> {
    /// Without its NUL.
    pub tag: &'a [u8],
}

impl<'a> CommandComplete<'a> {
    pub fn parse(body: &'a [u8]) -> Option<CommandComplete<'a>> {
        Some(CommandComplete { tag: only_cstr(body)? })
    }
}

/// ErrorResponse or NoticeResponse: (field code, value) pairs, codes from `protocol::field`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrorResponse<'a> {
    /// Checked by `parse`: whole fields, then the terminating NUL.
    fields: &'a [u8],
}

impl<'a> ErrorResponse<'a> {
    pub fn parse(body: &'a [u8]) -> Option<ErrorResponse<'a>> {
        let mut rest = body;
        loop {
            match rest.split_first()? {
                (0, []) => return Some(ErrorResponse { fields: &body[..body.len() - 1] }),
                (0, _) => return None,
                (_, tail) => rest = cstr(tail)?.1,
            }
        }
    }

    /// The fields in the order sent.
    pub fn fields(&self) -> Fields<'a> {
        Fields { rest: self.fields }
    }

    /// The first value of field `code`.
    pub fn get(&self, code: u8) -> Option<&'a [u8]> {
        self.fields().find(|&(c, _)| c == code).map(|(_, v)| v)
    }

    /// The first value of field `code`, as text (invalid UTF-8 replaced).
    pub fn get_str(&self, code: u8) -> Option<Cow<'a, str>> {
        self.get(code).map(String::from_utf8_lossy)
    }
}

/// Shows the fields as `{'C': "42P01", …}` (for logs).
impl fmt::Debug for ErrorResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.fields().map(|(c, v)| (c as char, String::from_utf8_lossy(v)))).finish()
    }
}

/// The fields of an `ErrorResponse`.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&code, tail) = self.rest.split_first()?;
        let (value, rest) = cstr(tail)?;
        self.rest = rest;
        Some((code, value))
    }
}

/// DataRow: column values (None for NULL), in any format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRow<'a> {
    count: u16,
    /// Checked by `parse`: exactly `count` length-prefixed values.
    values: &'a [u8],
}

impl<'a> DataRow<'a> {
    /// Walks every value once to check the lengths.
    pub fn parse(body: &'a [u8]) -> Option<DataRow<'a>> {
        let (count, values) = u16_at(body)?;
        let mut columns = Columns { left: count, rest: values };
        for _ in 0..count {
            columns.next_checked()?;
        }
        columns.rest.is_empty().then_some(DataRow { count, values })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn columns(&self) -> Columns<'a> {
        Columns { left: self.count, rest: self.values }
    }
}

/// The values of a `DataRow`.
#[derive(Debug, Clone)]
pub struct Columns<'a> {
    left: u16,
    rest: &'a [u8],
}

impl<'a> Columns<'a> {
    fn next_checked(&mut self) -> Option<Option<&'a [u8]>> {
        let (len, tail) = i32_at(self.rest)?;
        if len == -1 {
            self.rest = tail;
            return Some(None);
        }
        let value = tail.get(..usize::try_from(len).ok()?)?;
        self.rest = &tail[value.len()..];
        Some(Some(value))
    }
}

impl<'a> Iterator for Columns<'a> {
    type Item = Option<&'a [u8]>;

    fn next(&mut self) -> Option<Option<&'a [u8]>> {
        self.left = self.left.checked_sub(1)?;
        self.next_checked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies, and what their view should read from each (None: refused).
    type Cases<'a, T> = &'a [(&'a [u8], Option<T>)];

    /// Every strict prefix of `body` (a valid message) is refused by `parse`.
    fn prefixes_refused(body: &[u8], parses: impl Fn(&[u8]) -> bool) {
        for n in 0..body.len() {
            assert!(!parses(&body[..n]), "prefix {n} of {body:?} parsed");
        }
    }

    #[test]
    fn query() {
        let cases: Cases<&[u8]> = &[
            (b"select 1\0", Some(b"select 1")),
            (b"\0", Some(b"")),
            (b"select 1", None),
            (b"select 1\0x", None),
            (b"", None),
        ];
        for &(body, want) in cases {
            assert_eq!(Query::parse(body).map(|q| q.sql), want, "{body:?}");
        }
        prefixes_refused(b"select 1\0", |b| Query::parse(b).is_some());
    }

    #[test]
    fn parse() {
        let ok = b"s1\0select $1\0\0\x01\0\0\0\x17";
        let p = Parse::parse(ok).unwrap();
        assert_eq!((p.name, p.query, p.definition), (&b"s1"[..], &b"select $1"[..], &ok[3..]));
        assert_eq!((p.param_types.len(), p.param_types.iter().collect::<Vec<_>>()), (1, vec![23]));
        let p = Parse::parse(b"\0select 1\0\0\0").unwrap();
        assert_eq!((p.name, p.query, p.param_types.is_empty()), (&b""[..], &b"select 1"[..], true));
        let bad: &[&[u8]] = &[
            b"",
            b"s1",
            b"s1\0select",
            b"s1\0select 1\0",
            b"s1\0select 1\0\0",
            b"s1\0select 1\0\0\x01",
            b"s1\0select 1\0\0\x01\0\0\0",
            b"s1\0select 1\0\0\0\0",
            b"s1\0select 1\0\0\x01\0\0\0\x17\0",
            b"s1\0select 1\0\xff\xff",
        ];
        for body in bad {
            assert_eq!(Parse::parse(body), None, "{body:?}");
        }
        prefixes_refused(ok, |b| Parse::parse(b).is_some());
    }

    #[test]
    fn bind() {
        let ok = b"p\0s1\0\0\x01\0\x01\0\x02\0\0\0\x011\xff\xff\xff\xff\0\0";
        let b = Bind::parse(ok).unwrap();
        assert_eq!((b.portal, b.statement, b.rest), (&b"p"[..], &b"s1"[..], &ok[5..]));
        assert_eq!(b.param_count(), Some(2));
        let cases: Cases<(&[u8], &[u8], Option<u16>)> = &[
            (b"\0\0\0\0\0\0\0\0", Some((b"", b"", Some(0)))),
            (b"\0s\0", Some((b"", b"s", None))),
            (b"\0s\0\0\x02\0\0", Some((b"", b"s", None))),
            (b"\0s\0\0\x02\0\0\0\0\0", Some((b"", b"s", None))),
            (b"\0s\0\0\x02\0\0\0\0\0\x07", Some((b"", b"s", Some(7)))),
            (b"", None),
            (b"portal", None),
            (b"portal\0stmt", None),
        ];
        for &(body, want) in cases {
            assert_eq!(Bind::parse(body).map(|b| (b.portal, b.statement, b.param_count())), want, "{body:?}");
        }
    }

    #[test]
    fn describe_and_close() {
        let cases: Cases<(Target, &[u8])> = &[
            (b"Sname\0", Some((Target::Statement, b"name"))),
            (b"P\0", Some((Target::Portal, b""))),
            (b"Xname\0", None),
            (b"Sname", None),
            (b"Sname\0\0", None),
            (b"S", None),
            (b"", None),
        ];
        for &(body, want) in cases {
            assert_eq!(Describe::parse(body).map(|d| (d.target, d.name)), want, "{body:?}");
            assert_eq!(Close::parse(body).map(|c| (c.target, c.name)), want, "{body:?}");
        }
        for t in [Target::Statement, Target::Portal] {
            assert_eq!(Target::from_byte(t.byte()), Some(t));
        }
    }

    #[test]
    fn execute() {
        let cases: Cases<(&[u8], i32)> = &[
            (b"\0\0\0\0\0", Some((b"", 0))),
            (b"p1\0\0\0\x01\0", Some((b"p1", 256))),
            (b"p1\0\0\0\x01", None),
            (b"p1\0\0\0\x01\0\0", None),
            (b"p1", None),
            (b"", None),
        ];
        for &(body, want) in cases {
            assert_eq!(Execute::parse(body).map(|e| (e.portal, e.max_rows)), want, "{body:?}");
        }
        prefixes_refused(b"p1\0\0\0\x01\0", |b| Execute::parse(b).is_some());
    }

    #[test]
    fn password_and_sasl() {
        assert_eq!(PasswordMessage::parse(b"md5abc\0").map(|p| p.password), Some(&b"md5abc"[..]));
        assert_eq!(PasswordMessage::parse(b"md5abc"), None);
        assert_eq!(PasswordMessage::parse(b"a\0b"), None);
        let cases: Cases<(&[u8], Option<&[u8]>)> = &[
            (b"SCRAM-SHA-256\0\0\0\0\x03abc", Some((b"SCRAM-SHA-256", Some(b"abc")))),
            (b"SCRAM-SHA-256\0\0\0\0\0", Some((b"SCRAM-SHA-256", Some(b"")))),
            (b"SCRAM-SHA-256\0\xff\xff\xff\xff", Some((b"SCRAM-SHA-256", None))),
            (b"SCRAM-SHA-256\0\xff\xff\xff\xffx", None),
            (b"SCRAM-SHA-256\0\xff\xff\xff\xfe", None),
            (b"SCRAM-SHA-256\0\0\0\0\x04abc", None),
            (b"SCRAM-SHA-256\0\0\0\0\x02abc", None),
            (b"SCRAM-SHA-256\0\0\0", None),
            (b"SCRAM-SHA-256", None),
        ];
        for &(body, want) in cases {
            assert_eq!(SaslInitialResponse::parse(body).map(|s| (s.mechanism, s.data)), want, "{body:?}");
        }
        prefixes_refused(b"SCRAM-SHA-256\0\0\0\0\x03abc", |b| SaslInitialResponse::parse(b).is_some());
    }

    #[test]
    fn authentication_and_key_data() {
        let cases: Cases<(i32, &[u8])> =
            &[(b"\0\0\0\0", Some((0, b""))), (b"\0\0\0\x05salt", Some((5, b"salt"))), (b"\0\0\0", None), (b"", None)];
        for &(body, want) in cases {
            assert_eq!(Authentication::parse(body).map(|a| (a.code, a.data)), want, "{body:?}");
        }
        let key = b"\0\0\x01\0\xff\xff\xff\xfe";
        assert_eq!(BackendKeyData::parse(key), Some(BackendKeyData { pid: 256, secret: -2 }));
        assert_eq!(BackendKeyData::parse(b"\0\0\x01\0\xff\xff\xff\xfe\0"), None);
        prefixes_refused(key, |b| BackendKeyData::parse(b).is_some());
    }

    #[test]
    fn parameter_status() {
        let cases: Cases<(&[u8], &[u8])> = &[
            (b"TimeZone\0UTC\0", Some((b"TimeZone", b"UTC"))),
            (b"x\0\0", Some((b"x", b""))),
            (b"TimeZone\0UTC", None),
            (b"TimeZone\0UTC\0\0", None),
            (b"TimeZone", None),
        ];
        for &(body, want) in cases {
            assert_eq!(ParameterStatus::parse(body).map(|p| (p.name, p.value)), want, "{body:?}");
        }
        prefixes_refused(b"TimeZone\0UTC\0", |b| ParameterStatus::parse(b).is_some());
    }

    #[test]
    fn ready_for_query() {
        let cases: Cases<TxStatus> = &[
            (b"I", Some(TxStatus::Idle)),
            (b"T", Some(TxStatus::InTransaction)),
            (b"E", Some(TxStatus::Failed)),
            (b"X", None),
            (b"", None),
            (b"II", None),
        ];
        for &(body, want) in cases {
            assert_eq!(ReadyForQuery::parse(body).map(|r| r.status), want, "{body:?}");
        }
    }

    #[test]
    fn command_complete() {
        assert_eq!(CommandComplete::parse(b"INSERT 0 5\0").map(|c| c.tag), Some(&b"INSERT 0 5"[..]));
        assert_eq!(CommandComplete::parse(b"SET"), None);
        assert_eq!(CommandComplete::parse(b"SET\0x"), None);
        prefixes_refused(b"SET\0", |b| CommandComplete::parse(b).is_some());
    }

    #[test]
    fn error_response() {
        let ok = b"SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0\0";
        let e = ErrorResponse::parse(ok).unwrap();
        assert_eq!(e.get(b'C'), Some(&b"42P01"[..]));
        assert_eq!(e.get_str(b'M').as_deref(), Some("relation \"t\" does not exist"));
        assert_eq!(e.get(b'D'), None);
        assert_eq!(e.fields().map(|(c, _)| c).collect::<Vec<_>>(), b"SVCM");
        assert_eq!(
            format!("{e:?}"),
            r#"{'S': "ERROR", 'V': "ERROR", 'C': "42P01", 'M': "relation \"t\" does not exist"}"#
        );
        assert_eq!(ErrorResponse::parse(b"\0").map(|e| e.fields().count()), Some(0));
        let bad: &[&[u8]] = &[b"", b"SERROR\0", b"SERROR", b"SERROR\0\0\0", b"S\0\0x", b"\0\0"];
        for body in bad {
            assert_eq!(ErrorResponse::parse(body), None, "{body:?}");
        }
        prefixes_refused(ok, |b| ErrorResponse::parse(b).is_some());
    }

    #[test]
    fn data_row() {
        let ok = b"\0\x03\0\0\0\x02ab\xff\xff\xff\xff\0\0\0\0";
        let row = DataRow::parse(ok).unwrap();
        assert_eq!(row.len(), 3);
        assert_eq!(row.columns().collect::<Vec<_>>(), vec![Some(&b"ab"[..]), None, Some(&b""[..])]);
        assert_eq!(DataRow::parse(b"\0\0").map(|r| r.is_empty()), Some(true));
        let bad: &[&[u8]] = &[
            b"",
            b"\0",
            b"\0\x01",
            b"\0\x01\0\0\0\x03ab",
            b"\0\x01\0\0\0\x01ab",
            b"\0\x01\xff\xff\xff\xfe",
            b"\0\x01\x80\0\0\0",
            b"\0\0x",
        ];
        for body in bad {
            assert_eq!(DataRow::parse(body), None, "{body:?}");
        }
        prefixes_refused(ok, |b| DataRow::parse(b).is_some());
    }

    #[test]
    fn random_bodies_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..50_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 32) as usize;
            let body: Vec<u8> = (0..len)
                .map(|i| match (seed >> (i % 60)) & 7 {
                    0 | 1 => 0,
                    2 => 0xff,
                    _ => (seed >> (i % 56)) as u8,
                })
                .collect();
            let _ = Query::parse(&body);
            let _ = Parse::parse(&body).map(|p| p.param_types.iter().count());
            let _ = Bind::parse(&body).map(|b| b.param_count());
            let _ = Describe::parse(&body);
            let _ = Close::parse(&body);
            let _ = Execute::parse(&body);
            let _ = PasswordMessage::parse(&body);
            let _ = SaslInitialResponse::parse(&body);
            let _ = Authentication::parse(&body);
            let _ = BackendKeyData::parse(&body);
            let _ = ParameterStatus::parse(&body);
            let _ = ReadyForQuery::parse(&body);
            let _ = CommandComplete::parse(&body);
            let _ = ErrorResponse::parse(&body).map(|e| (e.fields().count(), format!("{e:?}")));
            let _ = DataRow::parse(&body).map(|r| r.columns().count());
        }
    }
}
