//! A client whose server connection is gone, answered without a server until it is back in step.
//!
//! Inside a transaction block this is PostgreSQL's aborted-transaction state: every request fails
//! (first with the error saying why, then 25P02) and ReadyForQuery says `E`, until the client ends
//! the block. Outside one, a client owed an error gets it on its next request. Pure: whole client
//! frames in, replies appended to a buffer.

use std::sync::Arc;

use bytes::BytesMut;

use super::statements::{self, ClientStatements, StatementDef};
use crate::error::{ClientError, ErrorCounts};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::{Bind, Close, Describe, Execute, Parse, Query, Target};
use crate::protocol::{TxStatus, build, ftag};
use crate::sql::Token;

/// What the session does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Still answered here: feed the next frame.
    Continue,
    /// Back in step (the frame was consumed): the session returns to normal, idle.
    Done,
    /// The client sent Terminate.
    Terminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The client's transaction block is lost: emulate it aborted until it ends.
    InTransaction,
    /// Outside a block: the next request fails with the owed error.
    Owed,
}

/// How a statement ends the block. PostgreSQL answers the COMMIT of an aborted block `ROLLBACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndKind {
    Commit,
    Rollback,
}

/// The local stand-in for a lost server.
#[derive(Debug)]
pub struct Aborted {
    mode: Mode,
    /// The error the next failing request gets (owed mode: the owed error, until sent).
    first: Option<ClientError>,
    /// An extended-protocol batch failed: ignore its messages up to Sync.
    skipping: bool,
    /// An Execute in the current batch ended the block: its Sync answers `I`.
    ended: bool,
    /// Statements parsed here (by client name, "" unnamed) whose text ends the block.
    end_statements: foldhash::HashMap<Vec<u8>, EndKind>,
    /// Portals bound here to such statements.
    end_portals: foldhash::HashMap<Vec<u8>, EndKind>,
    /// Where the errors sent are counted.
    errors: Arc<ErrorCounts>,
}

impl Aborted {
    /// The client's transaction block is lost. `first`: error for the next request (None: 25P02).
    /// `skipping`: the client is mid extended-protocol batch whose error was already sent: ignore up to Sync.
    /// `errors` counts the errors sent.
    pub fn in_transaction(first: Option<ClientError>, skipping: bool, errors: Arc<ErrorCounts>) -> Aborted {
        Aborted::new(Mode::InTransaction, first, skipping, errors)
    }

    /// Not in a transaction block: the next request fails with `err`, then Done.
    pub fn owed(err: ClientError, errors: Arc<ErrorCounts>) -> Aborted {
        Aborted::new(Mode::Owed, Some(err), false, errors)
    }

    fn new(mode: Mode, first: Option<ClientError>, skipping: bool, errors: Arc<ErrorCounts>) -> Aborted {
        Aborted {
            mode,
            first,
            skipping,
            ended: false,
            end_statements: Default::default(),
            end_portals: Default::default(),
            errors,
        }
    }

    /// Handles one whole client frame (tag + 4-byte length + body), appending replies to `out`.
    /// Named statements are only those parsed here; see `on_frame_with_statements`.
    pub fn on_frame(&mut self, frame: &[u8], out: &mut BytesMut) -> Result<Step, ClientError> {
        self.handle(frame, None, out)
    }

    /// `on_frame`, with the client's prepared statements: a Bind of one whose text ends the block
    /// (pgJDBC prepares its COMMIT and ROLLBACK after a few uses) ends it, and Parse and Close
    /// update them, since protocol-level statements outlive the transaction.
    pub fn on_frame_with_statements(
        &mut self,
        frame: &[u8],
        stmts: &mut ClientStatements,
        out: &mut BytesMut,
    ) -> Result<Step, ClientError> {
        self.handle(frame, Some(stmts), out)
    }

    fn handle(
        &mut self,
        frame: &[u8],
        stmts: Option<&mut ClientStatements>,
        out: &mut BytesMut,
    ) -> Result<Step, ClientError> {
        let (tag, body) = split_frame(frame)?;
        match tag {
            ftag::TERMINATE => return Ok(Step::Terminate),
            // PostgreSQL drops COPY data after a failed COPY; a Flush has nothing to flush.
            ftag::COPY_DATA | ftag::COPY_DONE | ftag::COPY_FAIL | ftag::FLUSH => return Ok(Step::Continue),
            ftag::SYNC => return Ok(self.sync(out)),
            // Unlike PostgreSQL, a Query ends skipping: whether the client was mid-batch is a guess,
            // and a Query left unanswered would hang it.
            ftag::QUERY => {
                self.skipping = false;
                return Ok(self.query(body, out));
            }
            ftag::PARSE | ftag::BIND | ftag::DESCRIBE | ftag::EXECUTE | ftag::CLOSE | ftag::FUNCTION_CALL => {}
            _ => return Err(ClientError::Protocol(format!("invalid frontend message type {:?}", tag as char))),
        }
        if self.skipping {
            return Ok(Step::Continue);
        }
        if self.mode == Mode::Owed {
            self.fail(out);
            if tag == ftag::FUNCTION_CALL {
                return Ok(self.ready(out));
            }
            self.skipping = true;
            return Ok(Step::Continue);
        }
        self.extended(tag, body, stmts, out)
    }

    fn sync(&mut self, out: &mut BytesMut) -> Step {
        self.skipping = false;
        if self.mode == Mode::Owed && self.first.is_some() {
            // A bare Sync is no request: the error stays owed to the next one.
            build::ready_for_query(out, TxStatus::Idle);
            return Step::Continue;
        }
        self.ready(out)
    }

    fn query(&mut self, body: &[u8], out: &mut BytesMut) -> Step {
        let sql = Query::parse(body).map_or(body, |q| q.sql);
        if self.mode == Mode::InTransaction && !self.ended {
            if let Some(kind) = end_kind(sql) {
                self.end(kind, out);
                return self.ready(out);
            }
            if parse_words(sql).is_some_and(|s| s.is_empty()) {
                // As PostgreSQL: an empty query is no command, so it does not fail.
                build::empty_query_response(out);
                return self.ready(out);
            }
        }
        self.fail(out);
        self.ready(out)
    }

    /// Parse, Bind, Describe, Execute, Close, FunctionCall in a block, outside a failed batch.
    fn extended(
        &mut self,
        tag: u8,
        body: &[u8],
        mut stmts: Option<&mut ClientStatements>,
        out: &mut BytesMut,
    ) -> Result<Step, ClientError> {
        let answered = match tag {
            ftag::CLOSE => self.close(body, stmts, out)?,
            _ if self.ended => false,
            ftag::PARSE => self.parse(body, stmts.as_deref_mut(), out)?,
            ftag::BIND => self.bind(body, stmts.as_deref(), out)?,
            ftag::DESCRIBE => self.describe(body, stmts.as_deref(), out)?,
            ftag::EXECUTE => self.execute(body, out)?,
            _ => {
                // FunctionCall is a request of its own, like a Query.
                self.fail(out);
                return Ok(self.ready(out));
            }
        };
        if !answered {
            self.fail(out);
            self.skipping = true;
        }
        Ok(Step::Continue)
    }

    /// Only a statement that ends the block may be parsed, as in PostgreSQL.
    fn parse(
        &mut self,
        body: &[u8],
        stmts: Option<&mut ClientStatements>,
        out: &mut BytesMut,
    ) -> Result<bool, ClientError> {
        let parse = Parse::parse(body).ok_or_else(|| malformed(ftag::PARSE))?;
        let (name, sql) = (parse.name, parse.query);
        if name.is_empty() {
            self.end_statements.remove(name);
        }
        let Some(kind) = end_kind(sql) else {
            return Ok(false);
        };
        if !name.is_empty() {
            // An existing name is PostgreSQL's 42P05; failing it is close enough.
            if self.end_statements.contains_key(name) || stmts.as_deref().is_some_and(|s| s.get(name).is_some()) {
                return Ok(false);
            }
            if let Some(stmts) = stmts {
                let client_name = String::from_utf8(name.to_vec()).map_err(|_| malformed(ftag::PARSE))?;
                stmts.insert(client_name, Arc::new(StatementDef::new(&parse)));
            }
        }
        self.end_statements.insert(name.to_vec(), kind);
        out.extend_from_slice(&statements::parse_complete());
        Ok(true)
    }

    /// Binds only a statement that ends the block, without parameters (as PostgreSQL).
    fn bind(&mut self, body: &[u8], stmts: Option<&ClientStatements>, out: &mut BytesMut) -> Result<bool, ClientError> {
        let bind = Bind::parse(body).ok_or_else(|| malformed(ftag::BIND))?;
        let params = bind.param_count().ok_or_else(|| malformed(ftag::BIND))?;
        let portal = bind.portal;
        self.end_portals.remove(portal);
        let Some(kind) = self.statement_end_kind(bind.statement, stmts) else {
            return Ok(false);
        };
        if params != 0 {
            return Ok(false);
        }
        self.end_portals.insert(portal.to_vec(), kind);
        build::bind_complete(out);
        Ok(true)
    }

    fn describe(&self, body: &[u8], stmts: Option<&ClientStatements>, out: &mut BytesMut) -> Result<bool, ClientError> {
        let Describe { target, name } = Describe::parse(body).ok_or_else(|| malformed(ftag::DESCRIBE))?;
        let known = match target {
            Target::Statement => self.statement_end_kind(name, stmts).is_some(),
            Target::Portal => self.end_portals.contains_key(name),
        };
        if known {
            if target == Target::Statement {
                build::parameter_description(out, &[]);
            }
            build::no_data(out);
        }
        Ok(known)
    }

    fn execute(&mut self, body: &[u8], out: &mut BytesMut) -> Result<bool, ClientError> {
        let execute = Execute::parse(body).ok_or_else(|| malformed(ftag::EXECUTE))?;
        let Some(kind) = self.end_portals.remove(execute.portal) else {
            return Ok(false);
        };
        if self.end(kind, out) {
            self.skipping = true;
        }
        Ok(true)
    }

    /// Close works in an aborted block too.
    fn close(
        &mut self,
        body: &[u8],
        stmts: Option<&mut ClientStatements>,
        out: &mut BytesMut,
    ) -> Result<bool, ClientError> {
        let Close { target, name } = Close::parse(body).ok_or_else(|| malformed(ftag::CLOSE))?;
        if target == Target::Statement {
            self.end_statements.remove(name);
            if let Some(stmts) = stmts.filter(|_| !name.is_empty()) {
                stmts.remove(name);
            }
        } else {
            self.end_portals.remove(name);
        }
        out.extend_from_slice(&statements::close_complete());
        Ok(true)
    }

    fn statement_end_kind(&self, name: &[u8], stmts: Option<&ClientStatements>) -> Option<EndKind> {
        if let Some(&kind) = self.end_statements.get(name) {
            return Some(kind);
        }
        let def = stmts.filter(|_| !name.is_empty())?.get(name)?;
        end_kind(Parse::parse(def.parse.get(HEADER_LEN..)?)?.query)
    }

    /// Ends the block. A COMMIT still owing the first error fails with it instead (as a COMMIT
    /// failing in PostgreSQL does, leaving no block): the client never learnt that its work is gone,
    /// and most drivers ignore the `ROLLBACK` tag. Returns whether it failed.
    fn end(&mut self, kind: EndKind, out: &mut BytesMut) -> bool {
        self.ended = true;
        if kind == EndKind::Commit
            && let Some(err) = self.first.take()
        {
            err.write_to(out, &self.errors);
            return true;
        }
        build::command_complete(out, "ROLLBACK");
        false
    }

    /// Fails the current request with the error it is owed.
    fn fail(&mut self, out: &mut BytesMut) {
        let err = match (self.ended, self.first.take(), self.mode) {
            (true, ..) => ClientError::ServerLost(
                "the aborted transaction block ended earlier in this batch; the rest was not run".into(),
            ),
            (false, Some(err), _) => err,
            (false, None, Mode::InTransaction) => ClientError::TransactionAborted,
            // Owed mode, a Query after a failed batch's error but before its Sync.
            (false, None, Mode::Owed) => ClientError::ServerLost("not run: the batch before it failed".into()),
        };
        err.write_to(out, &self.errors);
    }

    /// ReadyForQuery for the request just answered.
    fn ready(&mut self, out: &mut BytesMut) -> Step {
        if self.mode == Mode::Owed || self.ended {
            build::ready_for_query(out, TxStatus::Idle);
            Step::Done
        } else {
            build::ready_for_query(out, TxStatus::Failed);
            Step::Continue
        }
    }
}

fn malformed(tag: u8) -> ClientError {
    ClientError::Protocol(format!("malformed message of type {:?}", tag as char))
}

/// Tag and body of a whole frame, checking its length field.
fn split_frame(frame: &[u8]) -> Result<(u8, &[u8]), ClientError> {
    match frame {
        [tag, l0, l1, l2, l3, body @ ..] if u32::from_be_bytes([*l0, *l1, *l2, *l3]) as usize == body.len() + 4 => {
            Ok((*tag, body))
        }
        _ => Err(ClientError::Protocol("invalid message length".into())),
    }
}

/// Whether `sql` is one statement ending a transaction block: ROLLBACK, ABORT, COMMIT or END, with
/// optional WORK / TRANSACTION and AND NO CHAIN. Not ROLLBACK TO, AND CHAIN, PREPARED, or several
/// statements. `sql` may end with the Query body's NUL.
pub fn ends_transaction(sql: &[u8]) -> bool {
    end_kind(sql).is_some()
}

fn end_kind(sql: &[u8]) -> Option<EndKind> {
    let statements = parse_words(sql)?;
    let [words] = statements.as_slice() else {
        return None;
    };
    let (first, rest) = words.split_first()?;
    let kind = match first.as_str() {
        "rollback" | "abort" => EndKind::Rollback,
        "commit" | "end" => EndKind::Commit,
        _ => return None,
    };
    let rest = match rest {
        [w, tail @ ..] if w == "work" || w == "transaction" => tail,
        _ => rest,
    };
    match rest {
        [] => Some(kind),
        [a, n, c] if a == "and" && n == "no" && c == "chain" => Some(kind),
        _ => None,
    }
}

/// Splits `sql` (up to a NUL) into its non-empty statements, each a list of lowercase words.
/// None if it holds anything but words (literals, numbers, operators) or something unterminated:
/// such SQL ends no block.
fn parse_words(sql: &[u8]) -> Option<Vec<Vec<String>>> {
    crate::sql::statements(sql)
        .map(|stmt| {
            stmt.into_iter()
                .map(|t| match t {
                    Token::Word(w) => Some(String::from_utf8_lossy(w).to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::{CommandComplete, ErrorResponse};

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn query(sql: &str) -> Vec<u8> {
        msg(b'Q', &cat(&[sql.as_bytes(), b"\0"]))
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        msg(b'P', &cat(&[name.as_bytes(), b"\0", sql.as_bytes(), b"\0", &[0, 0]]))
    }

    /// Bind without parameters, all results in text.
    fn bind(portal: &str, stmt: &str) -> Vec<u8> {
        msg(b'B', &cat(&[portal.as_bytes(), b"\0", stmt.as_bytes(), b"\0", &[0, 0, 0, 0, 0, 0]]))
    }

    fn describe(kind: u8, name: &str) -> Vec<u8> {
        msg(b'D', &cat(&[&[kind], name.as_bytes(), b"\0"]))
    }

    fn close(kind: u8, name: &str) -> Vec<u8> {
        msg(b'C', &cat(&[&[kind], name.as_bytes(), b"\0"]))
    }

    fn execute(portal: &str) -> Vec<u8> {
        msg(b'E', &cat(&[portal.as_bytes(), b"\0", &[0, 0, 0, 0]]))
    }

    fn sync() -> Vec<u8> {
        msg(b'S', b"")
    }

    fn flush() -> Vec<u8> {
        msg(b'H', b"")
    }

    fn function_call() -> Vec<u8> {
        msg(b'F', &[0, 0, 0, 42, 0, 0, 0, 0, 0, 0])
    }

    /// Each reply as text: its tag, then for ErrorResponse the SQLSTATE, for CommandComplete the
    /// command tag, for ReadyForQuery the status, for ParameterDescription the count.
    fn decode(mut out: &[u8]) -> Vec<String> {
        let mut replies = Vec::new();
        while !out.is_empty() {
            let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
            let (tag, body) = (out[0], &out[5..len + 1]);
            let detail = match tag {
                b'E' => {
                    let err = ErrorResponse::parse(body).unwrap();
                    let get = |c| err.get_str(c).unwrap();
                    assert_eq!(get(b'S'), "ERROR");
                    format!(" {}", get(b'C'))
                }
                b'C' => format!(" {}", std::str::from_utf8(CommandComplete::parse(body).unwrap().tag).unwrap()),
                b'Z' => format!(" {}", body[0] as char),
                b't' => format!(" {}", u16::from_be_bytes([body[0], body[1]])),
                _ => {
                    assert!(body.is_empty(), "{}", tag as char);
                    String::new()
                }
            };
            replies.push(format!("{}{detail}", tag as char));
            out = &out[len + 1..];
        }
        replies
    }

    /// Feeds `frames`; returns the replies and the last step.
    fn run(a: &mut Aborted, frames: &[Vec<u8>]) -> (Vec<String>, Step) {
        let mut out = BytesMut::new();
        let mut step = Step::Continue;
        for f in frames {
            assert_eq!(step, Step::Continue, "a frame after the end");
            step = a.on_frame(f, &mut out).unwrap();
        }
        (decode(&out), step)
    }

    fn lost() -> ClientError {
        ClientError::ServerLostInTransaction("primary failed over".into())
    }

    /// The message of the ErrorResponse at the start of `out`.
    fn message_of(out: &BytesMut) -> String {
        let len = u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        ErrorResponse::parse(&out[5..len + 1]).unwrap().get_str(b'M').unwrap().into_owned()
    }

    #[test]
    fn simple_rollback_ends_the_block() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let (replies, step) = run(&mut a, &[query("ROLLBACK")]);
        assert_eq!((replies, step), (vec!["C ROLLBACK".to_string(), "Z I".into()], Step::Done));
    }

    #[test]
    fn simple_queries_fail_until_the_end_first_error_once() {
        let mut a = Aborted::in_transaction(Some(lost()), false, Default::default());
        let (replies, step) = run(&mut a, &[query("SELECT 1"), query("insert into t values (1)")]);
        assert_eq!(replies, ["E 08006", "Z E", "E 25P02", "Z E"]);
        assert_eq!(step, Step::Continue);
        let (replies, step) = run(&mut a, &[query("abort;")]);
        assert_eq!((replies, step), (vec!["C ROLLBACK".to_string(), "Z I".into()], Step::Done));
    }

    #[test]
    fn commit_is_answered_rollback() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let (replies, step) = run(&mut a, &[query("select 1"), query("COMMIT")]);
        assert_eq!(replies, ["E 25P02", "Z E", "C ROLLBACK", "Z I"]);
        assert_eq!(step, Step::Done);
        let mut a = Aborted::in_transaction(None, false, Default::default());
        assert_eq!(run(&mut a, &[query("end transaction")]).0, ["C ROLLBACK", "Z I"]);
    }

    #[test]
    fn commit_before_any_error_fails_with_the_first_error() {
        // The client never saw an error: a bare ROLLBACK tag would read as success to most drivers.
        let mut a = Aborted::in_transaction(Some(lost()), false, Default::default());
        let (replies, step) = run(&mut a, &[query("COMMIT")]);
        assert_eq!((replies, step), (vec!["E 08006".to_string(), "Z I".into()], Step::Done));
        // A ROLLBACK asked for what happened anyway.
        let mut a = Aborted::in_transaction(Some(lost()), false, Default::default());
        assert_eq!(run(&mut a, &[query("rollback")]).0, ["C ROLLBACK", "Z I"]);
    }

    #[test]
    fn error_messages_are_the_variants() {
        let mut a = Aborted::in_transaction(Some(lost()), false, Default::default());
        let mut out = BytesMut::new();
        a.on_frame(&query("select 1"), &mut out).unwrap();
        assert!(message_of(&out).contains("primary failed over"), "{}", message_of(&out));
        out.clear();
        a.on_frame(&query("select 1"), &mut out).unwrap();
        assert_eq!(message_of(&out), ClientError::TransactionAborted.to_string());
    }

    #[test]
    fn empty_query_does_not_fail() {
        let mut a = Aborted::in_transaction(Some(lost()), false, Default::default());
        let (replies, _) = run(&mut a, &[query(""), query(" ; -- ping"), query("select 1")]);
        assert_eq!(replies, ["I", "Z E", "I", "Z E", "E 08006", "Z E"]);
    }

    #[test]
    fn extended_rollback_like_pgjdbc() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let (replies, step) = run(&mut a, &[parse("", "ROLLBACK"), bind("", ""), execute(""), sync()]);
        assert_eq!(replies, ["1", "2", "C ROLLBACK", "Z I"]);
        assert_eq!(step, Step::Done);
    }

    #[test]
    fn extended_rollback_with_describes_and_flush() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let frames = [
            parse("s1", "rollback work"),
            describe(b'S', "s1"),
            flush(),
            bind("p", "s1"),
            describe(b'P', "p"),
            execute("p"),
            close(b'S', "s1"),
            sync(),
        ];
        let (replies, step) = run(&mut a, &frames);
        assert_eq!(replies, ["1", "t 0", "n", "2", "n", "C ROLLBACK", "3", "Z I"]);
        assert_eq!(step, Step::Done);
    }

    #[test]
    fn extended_commit_is_answered_rollback() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let (replies, step) = run(&mut a, &[parse("", "COMMIT"), bind("", ""), execute(""), sync()]);
        assert_eq!((replies, step), (vec!["1".into(), "2".into(), "C ROLLBACK".into(), "Z I".into()], Step::Done));
        // Owing the first error, the COMMIT fails with it; the block is over all the same.
        let mut a = Aborted::in_transaction(Some(lost()), false, Default::default());
        let (replies, step) = run(&mut a, &[parse("", "COMMIT"), bind("", ""), execute(""), sync()]);
        assert_eq!((replies, step), (vec!["1".into(), "2".into(), "E 08006".into(), "Z I".into()], Step::Done));
    }

    #[test]
    fn failed_extended_batch_sends_one_error() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let frames = [parse("", "SELECT 1"), bind("", ""), describe(b'P', ""), execute(""), sync()];
        let (replies, step) = run(&mut a, &frames);
        assert_eq!((replies, step), (vec!["E 25P02".to_string(), "Z E".into()], Step::Continue));
        // The next batch fails again, then a rollback ends the block.
        let (replies, _) = run(&mut a, &[parse("", "SELECT 2"), sync(), query("ROLLBACK")]);
        assert_eq!(replies, ["E 25P02", "Z E", "C ROLLBACK", "Z I"]);
    }

    #[test]
    fn first_error_once_then_25p02_in_batches() {
        let mut a = Aborted::in_transaction(Some(lost()), false, Default::default());
        let batch = [parse("", "SELECT 1"), bind("", ""), execute(""), sync()];
        assert_eq!(run(&mut a, &batch).0, ["E 08006", "Z E"]);
        assert_eq!(run(&mut a, &batch).0, ["E 25P02", "Z E"]);
    }

    #[test]
    fn each_kind_of_request_fails() {
        for frame in [bind("", "nope"), describe(b'S', "nope"), describe(b'P', "nope"), execute("nope")] {
            let mut a = Aborted::in_transaction(None, false, Default::default());
            assert_eq!(run(&mut a, &[frame, bind("", ""), sync()]).0, ["E 25P02", "Z E"]);
        }
        let mut a = Aborted::in_transaction(None, false, Default::default());
        assert_eq!(run(&mut a, &[function_call()]).0, ["E 25P02", "Z E"]);
        // ROLLBACK TO a savepoint cannot be honoured: the savepoint died with the server.
        let mut a = Aborted::in_transaction(None, false, Default::default());
        assert_eq!(run(&mut a, &[parse("", "ROLLBACK TO SAVEPOINT a"), sync()]).0, ["E 25P02", "Z E"]);
    }

    #[test]
    fn bind_with_parameters_fails() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let b = msg(b'B', b"\0\0\0\0\0\x01\0\0\0\x011\0\0");
        assert_eq!(run(&mut a, &[parse("", "ROLLBACK"), b, execute(""), sync()]).0, ["1", "E 25P02", "Z E"]);
    }

    #[test]
    fn close_works_in_the_aborted_block() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let (replies, step) = run(&mut a, &[close(b'S', "other"), close(b'P', ""), sync()]);
        assert_eq!((replies, step), (vec!["3".to_string(), "3".into(), "Z E".into()], Step::Continue));
        // A closed end statement is gone.
        let frames = [parse("r", "ROLLBACK"), close(b'S', "r"), bind("", "r"), sync()];
        assert_eq!(run(&mut a, &frames).0, ["1", "3", "E 25P02", "Z E"]);
    }

    #[test]
    fn bare_sync_answers_e() {
        let mut a = Aborted::in_transaction(Some(lost()), false, Default::default());
        assert_eq!(run(&mut a, &[sync(), flush()]), (vec!["Z E".to_string()], Step::Continue));
        // The first error is still owed.
        assert_eq!(run(&mut a, &[query("select 1")]).0, ["E 08006", "Z E"]);
    }

    #[test]
    fn starting_mid_batch_skips_to_sync() {
        let mut a = Aborted::in_transaction(None, true, Default::default());
        let frames = [bind("", "x"), execute(""), function_call(), parse("", "ROLLBACK"), sync()];
        assert_eq!(run(&mut a, &frames), (vec!["Z E".to_string()], Step::Continue));
        assert_eq!(run(&mut a, &[query("rollback")]).0, ["C ROLLBACK", "Z I"]);
    }

    #[test]
    fn query_ends_skipping() {
        let mut a = Aborted::in_transaction(None, true, Default::default());
        assert_eq!(
            run(&mut a, &[execute(""), query("ROLLBACK")]),
            (vec!["C ROLLBACK".into(), "Z I".into()], Step::Done)
        );
    }

    #[test]
    fn messages_after_the_end_in_the_same_batch_fail() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let frames = [parse("", "ROLLBACK"), bind("", ""), execute(""), parse("", "BEGIN"), execute(""), sync()];
        let (replies, step) = run(&mut a, &frames);
        assert_eq!(replies, ["1", "2", "C ROLLBACK", "E 08006", "Z I"]);
        assert_eq!(step, Step::Done);
    }

    #[test]
    fn copy_messages_are_dropped_and_terminate_ends() {
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let frames = [msg(b'd', b"1\t2\n"), msg(b'c', b""), msg(b'f', b"oops\0")];
        assert_eq!(run(&mut a, &frames), (vec![], Step::Continue));
        assert_eq!(run(&mut a, &[msg(b'X', b"")]), (vec![], Step::Terminate));
        let mut a = Aborted::in_transaction(None, true, Default::default());
        assert_eq!(run(&mut a, &[msg(b'X', b"")]), (vec![], Step::Terminate));
        let mut a = Aborted::owed(ClientError::SessionStateLost("temp tables".into()), Default::default());
        assert_eq!(run(&mut a, &[msg(b'd', b"x"), msg(b'X', b"")]), (vec![], Step::Terminate));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut out = BytesMut::new();
        for frame in [
            msg(b'p', b"secret\0"),
            msg(b'z', b""),
            parse("", "ROLLBACK")[..8].to_vec(),
            msg(b'P', b"no terminator"),
            msg(b'B', b"\0\0\0"),
            msg(b'D', b"Xname\0"),
            msg(b'E', b"\0"),
            msg(b'C', b"S"),
        ] {
            let mut a = Aborted::in_transaction(None, false, Default::default());
            assert!(matches!(a.on_frame(&frame, &mut out), Err(ClientError::Protocol(_))), "{frame:?}");
        }
        assert!(out.is_empty());
        // Unknown tags are violations even while skipping.
        let mut a = Aborted::in_transaction(None, true, Default::default());
        assert!(a.on_frame(&msg(b'z', b""), &mut out).is_err());
    }

    #[test]
    fn owed_error_on_next_query() {
        let mut a = Aborted::owed(ClientError::SessionStateLost("temp tables".into()), Default::default());
        let mut out = BytesMut::new();
        assert_eq!(a.on_frame(&query("select 1"), &mut out).unwrap(), Step::Done);
        assert_eq!(decode(&out), ["E 08006", "Z I"]);
        assert!(message_of(&out).ends_with("temp tables"));
    }

    #[test]
    fn owed_error_on_next_batch() {
        let mut a = Aborted::owed(ClientError::SessionStateLost("advisory locks".into()), Default::default());
        let frames = [parse("", "select 1"), bind("", ""), describe(b'P', ""), execute(""), flush(), sync()];
        assert_eq!(run(&mut a, &frames), (vec!["E 08006".to_string(), "Z I".into()], Step::Done));
        // Even a ROLLBACK gets it: the client believes it is in no block.
        let mut a = Aborted::owed(ClientError::SessionStateLost("x".into()), Default::default());
        assert_eq!(run(&mut a, &[query("ROLLBACK")]).0, ["E 08006", "Z I"]);
        let mut a = Aborted::owed(ClientError::SessionStateLost("x".into()), Default::default());
        assert_eq!(run(&mut a, &[function_call()]), (vec!["E 08006".to_string(), "Z I".into()], Step::Done));
    }

    #[test]
    fn owed_error_waits_past_a_bare_sync() {
        let mut a = Aborted::owed(ClientError::SessionStateLost("x".into()), Default::default());
        assert_eq!(run(&mut a, &[flush(), sync()]), (vec!["Z I".to_string()], Step::Continue));
        assert_eq!(run(&mut a, &[query("select 1")]), (vec!["E 08006".to_string(), "Z I".into()], Step::Done));
    }

    #[test]
    fn prepared_end_statements_from_the_session() {
        // pgJDBC prepares its ROLLBACK as S_2 after a few uses, long before the failover.
        let mut stmts = ClientStatements::default();
        stmts.insert("S_2".into(), Arc::new(StatementDef::new(&Parse::parse(b"s\0ROLLBACK\0\0\0").unwrap())));
        stmts.insert("S_1".into(), Arc::new(StatementDef::new(&Parse::parse(b"s\0select 1\0\0\0").unwrap())));
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let mut out = BytesMut::new();
        for f in [bind("", "S_1"), sync(), bind("", "S_2"), execute(""), sync()] {
            a.on_frame_with_statements(&f, &mut stmts, &mut out).unwrap();
        }
        assert_eq!(decode(&out), ["E 25P02", "Z E", "2", "C ROLLBACK", "Z I"]);
        // Without the session's statements S_2 is unknown.
        let mut a = Aborted::in_transaction(None, false, Default::default());
        assert_eq!(run(&mut a, &[bind("", "S_2"), sync()]).0, ["E 25P02", "Z E"]);
    }

    #[test]
    fn statements_parsed_and_closed_here_reach_the_session() {
        let mut stmts = ClientStatements::default();
        stmts.insert("old".into(), Arc::new(StatementDef::new(&Parse::parse(b"s\0select 1\0\0\0").unwrap())));
        let mut a = Aborted::in_transaction(None, false, Default::default());
        let mut out = BytesMut::new();
        for f in [parse("S_3", "COMMIT"), parse("bad", "select 2"), sync(), close(b'S', "old"), sync()] {
            a.on_frame_with_statements(&f, &mut stmts, &mut out).unwrap();
        }
        assert_eq!(decode(&out), ["1", "E 25P02", "Z E", "3", "Z E"]);
        assert!(stmts.get(b"S_3").is_some());
        assert!(stmts.get(b"bad").is_none() && stmts.get(b"old").is_none());
        // A name in use cannot be parsed again (PostgreSQL's 42P05).
        out.clear();
        a.on_frame_with_statements(&parse("S_3", "ROLLBACK"), &mut stmts, &mut out).unwrap();
        assert_eq!(decode(&out), ["E 25P02"]);
    }

    #[test]
    fn recognises_block_ends() {
        for sql in [
            "ROLLBACK",
            "rollback\0",
            "  Rollback  Work ;  ",
            "ABORT",
            "abort transaction",
            "COMMIT",
            "commit work;",
            "END",
            "end transaction",
            "ROLLBACK AND NO CHAIN",
            "commit\n\tand no chain;\0",
            "-- driver\nROLLBACK -- why\n",
            "/* a /* nested */ comment */ ROLLBACK /* tail */",
            ";ROLLBACK;;",
        ] {
            assert!(ends_transaction(sql.as_bytes()), "{sql:?}");
        }
        for sql in [
            "",
            ";",
            "ROLLBACK TO a",
            "rollback to savepoint a",
            "ROLLBACK AND CHAIN",
            "COMMIT AND CHAIN",
            "COMMIT PREPARED 'x'",
            "ROLLBACK PREPARED 'x'",
            "ROLLBACK; SELECT 1",
            "SELECT 1; ROLLBACK",
            "BEGIN",
            "rollbackx",
            "ROLLBACK WORK WORK",
            "ROLLBACK AND NO",
            "/* unterminated ROLLBACK",
            "END IF",
            "\"ROLLBACK\"",
            "ROLLBACK 1",
        ] {
            let kind = end_kind(sql.as_bytes());
            assert!(!ends_transaction(sql.as_bytes()) && kind.is_none(), "{sql:?}");
        }
        assert_eq!(end_kind(b"end"), Some(EndKind::Commit));
        assert_eq!(end_kind(b"abort"), Some(EndKind::Rollback));
    }

    #[test]
    fn random_frames_never_panic() {
        let mut seed: u64 = 0x5eed_1234_abcd_ef01;
        let tags = b"QPBDECSHXdcfFpz";
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 20) as usize;
            let body: Vec<u8> =
                (0..len).map(|i| if (seed >> i) & 3 == 0 { 0 } else { (seed >> (i % 8)) as u8 }).collect();
            let frame = msg(tags[(seed >> 40) as usize % tags.len()], &body);
            let mut a = if seed & 1 == 0 {
                Aborted::in_transaction(None, seed & 2 == 0, Default::default())
            } else {
                Aborted::owed(ClientError::SessionStateLost("x".into()), Default::default())
            };
            let _ = a.on_frame(&frame, &mut BytesMut::new());
            let _ = parse_words(&body);
        }
    }
}
