//! A client's named prepared statements in transaction mode. Each is stored on servers under a
//! pgmux-owned name derived from its text and parameter types, so clients preparing the same text
//! share one server-side statement and any server connection can serve any client.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::classify::{Effects, classify};
use crate::protocol::messages::{Bind, Parse, Target};
use crate::protocol::{btag, build, ftag};
use crate::sql::Token;

/// One statement as the server knows it.
#[derive(Debug, PartialEq, Eq)]
pub struct StatementDef {
    pub server_name: Arc<str>,
    /// A Parse message that prepares it under `server_name`.
    pub parse: Bytes,
    /// What executing it might do to the session.
    pub effects: Effects,
    /// A provably read-only SELECT (autocommit executions may go to a replica).
    pub read_only: bool,
}

impl StatementDef {
    /// The statement a client's Parse defines, whatever the client calls it.
    pub fn new(parse: &Parse) -> StatementDef {
        let (rest, query) = (parse.definition, parse.query);
        let digest = Sha256::digest(rest);
        let server_name: Arc<str> = format!("pgmux_{}", hex::encode(&digest[..16])).into();
        let mut parse = BytesMut::with_capacity(rest.len() + 64);
        build::message(&mut parse, ftag::PARSE, |b| {
            build::put_cstr(b, server_name.as_bytes());
            b.put_slice(rest);
        });
        StatementDef {
            server_name,
            parse: parse.freeze(),
            effects: classify(query),
            read_only: super::classify::select_is_read_only(query),
        }
    }
}

/// The statements a client created under its own names, at most `limit` of them.
#[derive(Debug)]
pub struct ClientStatements {
    /// foldhash, seeded per map: names are the client's own, hashed once or twice per Bind.
    by_name: foldhash::HashMap<String, Arc<StatementDef>>,
    limit: usize,
}

impl Default for ClientStatements {
    fn default() -> Self {
        ClientStatements::with_limit(usize::MAX)
    }
}

impl ClientStatements {
    pub fn with_limit(limit: usize) -> ClientStatements {
        ClientStatements { by_name: Default::default(), limit }
    }

    /// How many more statements the client may create.
    pub fn remaining_room(&self) -> usize {
        self.limit.saturating_sub(self.by_name.len())
    }

    /// Whether one more statement would pass `clients.max_prepared_statements`.
    pub fn full(&self) -> bool {
        self.by_name.len() >= self.limit
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<StatementDef>> {
        std::str::from_utf8(name).ok().and_then(|n| self.by_name.get(n))
    }

    pub fn insert(&mut self, name: String, def: Arc<StatementDef>) {
        self.by_name.insert(name, def);
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<StatementDef>> {
        std::str::from_utf8(name).ok().and_then(|n| self.by_name.remove(n))
    }

    /// Forgets `name` if it still stands for `server_name` (undo of a Parse that did not happen).
    pub fn remove_if(&mut self, name: &str, server_name: &str) {
        if self.by_name.get(name).is_some_and(|d| &*d.server_name == server_name) {
            self.by_name.remove(name);
        }
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Bind with the statement name replaced.
pub fn rewrite_bind(out: &mut BytesMut, bind: &Bind, server_name: &str) {
    build::message(out, ftag::BIND, |b| {
        build::put_cstr(b, bind.portal);
        build::put_cstr(b, server_name.as_bytes());
        b.put_slice(bind.rest);
    });
}

/// Describe or Close of a statement under its server name.
pub fn target_message(out: &mut BytesMut, tag: u8, target: Target, name: &str) {
    build::message(out, tag, |b| {
        b.put_u8(target.byte());
        build::put_cstr(b, name.as_bytes());
    });
}

/// ParseComplete / CloseComplete, for requests pgmux answers itself.
pub fn parse_complete() -> Bytes {
    Bytes::from_static(&[btag::PARSE_COMPLETE, 0, 0, 0, 4])
}

pub fn close_complete() -> Bytes {
    Bytes::from_static(&[btag::CLOSE_COMPLETE, 0, 0, 0, 4])
}

/// Simple-query commands that touch prepared statements, as pgmux must see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementCommand {
    /// DISCARD ALL, DEALLOCATE [PREPARE] ALL: the client's statements are gone.
    DropAll,
    /// DEALLOCATE [PREPARE] name.
    Deallocate(String),
}

/// Recognises a single DISCARD ALL / DEALLOCATE statement (a cheap check that runs only on queries
/// starting with those words).
pub fn statement_command(sql: &[u8]) -> Option<StatementCommand> {
    let first = sql.iter().position(|b| !b.is_ascii_whitespace())?;
    if !sql[first].eq_ignore_ascii_case(&b'd') {
        return None;
    }
    let mut statements = crate::sql::statements(sql);
    let (stmt, None) = (statements.next()?, statements.next()) else { return None };
    let all = |t: &Token| t.is_word("all");
    match stmt.as_slice() {
        [d, a] if (d.is_word("discard") || d.is_word("deallocate")) && all(a) => Some(StatementCommand::DropAll),
        [d, p, a] if d.is_word("deallocate") && p.is_word("prepare") && all(a) => Some(StatementCommand::DropAll),
        [d, name] | [d, _, name] if d.is_word("deallocate") && (stmt.len() == 2 || stmt[1].is_word("prepare")) => {
            statement_name(name).map(StatementCommand::Deallocate)
        }
        _ => None,
    }
}

/// A statement name as the server reads it: an unquoted word folded to lower case, or a quoted
/// identifier (not `U&"…"`, whose escapes pgmux does not decode).
fn statement_name(token: &Token) -> Option<String> {
    match *token {
        Token::Word(w) => Some(String::from_utf8_lossy(w).to_ascii_lowercase()),
        Token::QuotedIdent(q) if q.first() == Some(&b'"') => {
            Some(String::from_utf8_lossy(&q[1..q.len() - 1]).replace("\"\"", "\""))
        }
        _ => None,
    }
}

/// The pgmux-reserved statement name (`pgmux_…`, any case, quoted or not) a simple query's
/// DEALLOCATE, PREPARE or EXECUTE names, if any: those names belong to pgmux's shared statements.
/// Cheap when the text has no `pgmux_` at all (every query pays only that scan).
pub fn reserved_name_used(sql: &[u8]) -> Option<String> {
    // Runs on every query: look at the few `_` and what precedes them, not at every 6-byte window.
    let has_prefix = memchr::memchr_iter(b'_', sql).any(|i| i >= 5 && sql[i - 5..i].eq_ignore_ascii_case(b"pgmux"));
    if !has_prefix {
        return None;
    }
    for stmt in crate::sql::statements(sql) {
        let name = match stmt.as_slice() {
            [d, p, name, ..] if d.is_word("deallocate") && p.is_word("prepare") => name,
            [c, name, ..] if c.is_word("deallocate") || c.is_word("prepare") || c.is_word("execute") => name,
            _ => continue,
        };
        let bare = match *name {
            Token::Word(w) => w,
            Token::QuotedIdent(q) => q.iter().position(|&b| b == b'"').map_or(q, |p| &q[p..]),
            _ => continue,
        };
        let bare = bare.strip_prefix(b"\"").unwrap_or(bare);
        let bare = bare.strip_suffix(b"\"").unwrap_or(bare);
        if bare.len() >= 6 && bare[..6].eq_ignore_ascii_case(b"pgmux_") {
            return Some(String::from_utf8_lossy(bare).into_owned());
        }
    }
    None
}

/// SQL that makes the server raise `message` with `sqlstate`, as its own error would (the client's
/// transaction block, if any, is aborted).
pub fn raise_sql(message: &str, sqlstate: &str) -> String {
    format!(
        "DO $pgmux$BEGIN RAISE EXCEPTION USING ERRCODE = {}, MESSAGE = {}; END$pgmux$",
        build::quote_literal(sqlstate),
        build::quote_literal(message)
    )
}

/// Quotes an identifier for SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(body: &[u8]) -> StatementDef {
        StatementDef::new(&Parse::parse(body).unwrap())
    }

    #[test]
    fn same_text_same_server_name() {
        let a = def(b"s1\0select 1\0\0\0");
        let b = def(b"s2\0select 1\0\0\0");
        let c = def(b"s1\0select 2\0\0\0");
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert!(a.server_name.len() < 63);
        assert_eq!(a.parse[0], b'P');
        let p = Parse::parse(&a.parse[5..]).unwrap();
        assert_eq!((p.name, p.definition), (a.server_name.as_bytes(), &b"select 1\0\0\0"[..]));
        // The parameter types are part of what defines a statement.
        assert_ne!(a.server_name, def(b"s1\0select 1\0\0\x01\0\0\0\x17").server_name);
    }

    #[test]
    fn rewrites_bind() {
        let bind = Bind::parse(b"portal\0s1\0\0\0\0\0\0\0").unwrap();
        let mut out = BytesMut::new();
        rewrite_bind(&mut out, &bind, "pgmux_x");
        let b2 = Bind::parse(&out[5..]).unwrap();
        assert_eq!((b2.portal, b2.statement, b2.rest), (bind.portal, &b"pgmux_x"[..], bind.rest));
    }

    #[test]
    fn recognises_statement_commands() {
        use StatementCommand::*;
        assert_eq!(statement_command(b"DISCARD ALL\0"), Some(DropAll));
        assert_eq!(statement_command(b"  deallocate   prepare all ;"), Some(DropAll));
        assert_eq!(statement_command(b"DEALLOCATE S1"), Some(Deallocate("s1".into())));
        assert_eq!(statement_command(b"deallocate \"S1\""), Some(Deallocate("S1".into())));
        assert_eq!(statement_command(b"delete from t"), None);
        assert_eq!(statement_command(b"select 1"), None);
        assert_eq!(statement_command(b"discard temp"), None);
        assert_eq!(statement_command(b"deallocate a; select 1"), None);
        assert_eq!(statement_command(b"deallocate \"a\"\"b\" -- x"), Some(Deallocate("a\"b".into())));
        assert_eq!(statement_command(b"deallocate prepare X;"), Some(Deallocate("x".into())));
    }

    #[test]
    fn finds_reserved_names() {
        assert_eq!(reserved_name_used(b"DEALLOCATE pgmux_ab12\0"), Some("pgmux_ab12".into()));
        assert_eq!(reserved_name_used(b"begin; deallocate prepare \"PGMUX_x\";"), Some("PGMUX_x".into()));
        assert_eq!(reserved_name_used(b"prepare pgmux_q(int) as select $1"), Some("pgmux_q".into()));
        assert_eq!(reserved_name_used(b"execute pgmux_q(1)"), Some("pgmux_q".into()));
        assert_eq!(reserved_name_used(b"select 'pgmux_x'"), None);
        // A `;` inside a literal does not start a statement.
        assert_eq!(reserved_name_used(b"select '; deallocate pgmux_x'"), None);
        assert_eq!(reserved_name_used(b"select 1 /* ; */; execute \"pgmux_y\""), Some("pgmux_y".into()));
        assert_eq!(reserved_name_used(b"deallocate mine"), None);
        assert_eq!(reserved_name_used(b"deallocate all"), None);
    }

    #[test]
    fn random_bodies_never_panic() {
        let mut seed: u64 = 0xdeadbeefcafef00d;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let body: Vec<u8> =
                (0..len).map(|i| if (seed >> i) & 3 == 0 { 0 } else { (seed >> (i % 8)) as u8 }).collect();
            let _ = statement_command(&body);
            let _ = reserved_name_used(&body);
            let _ = crate::client::classify::classify(&body);
        }
    }
}
