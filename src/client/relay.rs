//! Moving messages across a borrowed server connection: client frames are checked, counted in the
//! reply queue and (in transaction mode) rewritten so named prepared statements work on any server
//! connection; server bytes are passed on, dropped or answered for, by the reply queue's verdicts.
//! Only the messages pgmux acts on are read whole; a long DataRow is passed on as it arrives.

use bytes::{Buf, Bytes, BytesMut};

use super::classify::{Effects, classify, command_tag_is_plain};
use super::replies::{Owner, ReplyQueue, Request, Undo, Verdict};
use super::statements::{self, ClientStatements, StatementCommand, StatementDef};
use crate::error::{ClientError, ErrorCounts};
use crate::pool::Pooled;
use crate::protocol::frame::{FrontendLen, HEADER_LEN, MAX_MESSAGE_LEN, frontend_len, peek_header};
use crate::protocol::messages::{Bind, Close, CommandComplete, Describe, ErrorResponse, Parse, ReadyForQuery, Target};
use crate::protocol::{TxStatus, btag, build, field, ftag};
use crate::state::settings::PoolMode;

/// A server connection lent to the client, and the conversation on it.
#[derive(Debug)]
pub struct Active {
    pub backend: Pooled,
    pub replies: ReplyQueue,
    /// Client bytes (possibly rewritten) the server socket has not accepted yet.
    pub to_server: BytesMut,
    /// Unread remainder of a server message being passed through.
    pub passthrough: usize,
    /// What the client's statements in this transaction might have done to the session.
    pub effects: Effects,
    /// Result sets of pgmux's session-state check, while it runs.
    pub capture: Vec<Vec<Vec<Option<String>>>>,
    /// pgmux failed a message of the client's open batch itself (a Parse past
    /// `clients.max_prepared_statements`): drop the batch's messages up to its Sync, as a server
    /// does after an error.
    pub skip_to_sync: bool,
    /// pgmux's own query giving the connection the client's settings is running: the client's
    /// messages wait, since they must not run if it fails.
    pub applying: bool,
    /// The server's ErrorResponse to that query.
    pub apply_error: Option<Bytes>,
    /// `backend.params_version` when the client was last told the connection's parameters.
    pub params_told: u64,
}

impl Active {
    pub fn new(backend: Pooled, replies: ReplyQueue, to_server: BytesMut) -> Active {
        let params_told = backend.params_version;
        Active {
            backend,
            replies,
            to_server,
            passthrough: 0,
            effects: Effects::default(),
            capture: Vec::new(),
            skip_to_sync: false,
            applying: false,
            apply_error: None,
            params_told,
        }
    }
}

impl Active {
    /// Nothing owed, nothing unsent or half-read, no transaction: the connection can go back.
    pub fn is_free(&self) -> bool {
        self.replies.is_free() && self.to_server.is_empty() && self.passthrough == 0 && self.backend.rbuf.is_empty()
    }
}

/// Validates the header at the start of `buf`, if it is complete, against the limits for its type
/// (`max_large`: `clients.max_message_size`), before anything is allocated for its body.
pub fn check_client_header(buf: &[u8], max_large: usize) -> Result<Option<(u8, usize)>, ClientError> {
    let Some((tag, total)) = peek_header(buf, MAX_MESSAGE_LEN).map_err(|e| ClientError::Protocol(e.to_string()))?
    else {
        return Ok(None);
    };
    match frontend_len(tag, total, max_large) {
        FrontendLen::Ok => Ok(Some((tag, total))),
        FrontendLen::Invalid => Err(ClientError::Protocol(format!(
            "invalid message length {} for message type {:?}",
            total - 1,
            tag as char
        ))),
        FrontendLen::TooLarge => Err(ClientError::MessageTooLarge { tag: tag as char, len: total - 1, max: max_large }),
        FrontendLen::UnknownType => Err(ClientError::Protocol(format!("invalid frontend message type {tag}"))),
    }
}

/// The client's statement called `name`; None for the unnamed statement (passed through as is).
fn named<'s>(stmts: &'s ClientStatements, name: &[u8]) -> Option<&'s StatementDef> {
    if name.is_empty() { None } else { stmts.get(name).map(|d| &**d) }
}

/// Advances `buf` past `n` handled bytes.
pub fn consume(buf: &mut BytesMut, n: usize) {
    buf.advance(n);
}

fn malformed(tag: u8) -> ClientError {
    ClientError::Protocol(format!("malformed message of type {:?}", tag as char))
}

/// Makes sure the server connection has `def`, queueing a Parse pgmux owns if it does not.
fn ensure_prepared(a: &mut Active, def: &StatementDef) {
    if a.backend.statements.touch(&def.server_name) {
        return;
    }
    prepare_on_server(a, def, Owner::Injected, None);
}

/// Sends `def`'s Parse, recording the statement (and closing evicted ones).
fn prepare_on_server(a: &mut Active, def: &StatementDef, owner: Owner, client_name: Option<String>) {
    for old in a.backend.statements.insert(def.server_name.clone()) {
        statements::target_message(&mut a.to_server, ftag::CLOSE, Target::Statement, &old);
        a.replies.push(Request::Close, Owner::Injected, None);
    }
    a.to_server.extend_from_slice(&def.parse);
    a.backend.pool().set_statement_known(&def.server_name, true);
    let undo = Undo::Parse { server_name: def.server_name.clone(), client_name, prepared_here: true };
    a.replies.push(Request::Parse, owner, Some(undo));
}

/// Handles one whole client frame while a server connection is held. Returns false on Terminate.
pub fn client_frame(
    a: &mut Active,
    stmts: &mut ClientStatements,
    mode: PoolMode,
    frame: &[u8],
    errors: &ErrorCounts,
) -> Result<bool, ClientError> {
    let tag = frame[0];
    let body = &frame[HEADER_LEN..];
    if a.skip_to_sync {
        match tag {
            ftag::SYNC => a.skip_to_sync = false,
            ftag::TERMINATE => return Ok(false),
            _ => return Ok(true),
        }
    }
    let rewrite = mode == PoolMode::Transaction;
    if matches!(tag, ftag::QUERY | ftag::EXECUTE | ftag::FUNCTION_CALL) {
        a.backend.note_query();
    }
    if tag == ftag::FUNCTION_CALL {
        // Called by OID: set_config, pg_advisory_lock or a user function — nobody can tell.
        a.effects.merge(Effects::CHECK);
    }
    match tag {
        ftag::PARSE if rewrite => client_parse(a, stmts, frame, errors)?,
        ftag::BIND if rewrite => {
            let bind = Bind::parse(body).ok_or_else(|| malformed(tag))?;
            match named(stmts, bind.statement) {
                Some(def) => {
                    a.effects.merge(def.effects);
                    ensure_prepared(a, def);
                    statements::rewrite_bind(&mut a.to_server, &bind, &def.server_name);
                }
                None => a.to_server.extend_from_slice(frame),
            }
            a.replies.push(Request::Bind, Owner::Client, None);
        }
        ftag::DESCRIBE => {
            let Describe { target, name } = Describe::parse(body).ok_or_else(|| malformed(tag))?;
            let request = match target {
                Target::Statement => Request::DescribeStatement,
                Target::Portal => Request::DescribePortal,
            };
            let statement = if rewrite && target == Target::Statement { named(stmts, name) } else { None };
            match statement {
                Some(def) => {
                    ensure_prepared(a, def);
                    statements::target_message(&mut a.to_server, ftag::DESCRIBE, Target::Statement, &def.server_name);
                }
                None => a.to_server.extend_from_slice(frame),
            }
            a.replies.push(request, Owner::Client, None);
        }
        ftag::CLOSE => {
            let Close { target, name } = Close::parse(body).ok_or_else(|| malformed(tag))?;
            if rewrite && target == Target::Statement && !name.is_empty() {
                // Other clients may share the server's copy: forget the client's name only.
                stmts.remove(name);
                a.replies.push(Request::Close, Owner::Answered(statements::close_complete()), None);
            } else {
                a.to_server.extend_from_slice(frame);
                a.replies.push(Request::Close, Owner::Client, None);
            }
        }
        ftag::QUERY if rewrite => client_query(a, stmts, frame),
        // Everything else passes unchanged; what it owes the client is fixed by its tag.
        ftag::PARSE
        | ftag::BIND
        | ftag::QUERY
        | ftag::FUNCTION_CALL
        | ftag::EXECUTE
        | ftag::SYNC
        | ftag::COPY_DONE
        | ftag::COPY_FAIL => {
            a.to_server.extend_from_slice(frame);
            let request = match tag {
                ftag::PARSE => Request::Parse,
                ftag::BIND => Request::Bind,
                ftag::EXECUTE => Request::Execute,
                ftag::SYNC => Request::Sync,
                ftag::COPY_DONE | ftag::COPY_FAIL => Request::CopyEnd,
                _ => Request::Query,
            };
            a.replies.push(request, Owner::Client, None);
        }
        ftag::FLUSH => {
            a.to_server.extend_from_slice(frame);
            a.replies.note_batch_message();
        }
        ftag::COPY_DATA => a.to_server.extend_from_slice(frame),
        ftag::TERMINATE => return Ok(false),
        _ => {
            return Err(ClientError::Protocol(format!("invalid frontend message type {tag}")));
        }
    }
    Ok(true)
}

/// A Parse in transaction mode: named statements go to the server under their shared name (or are
/// answered for, if the connection already has it).
fn client_parse(
    a: &mut Active,
    stmts: &mut ClientStatements,
    frame: &[u8],
    errors: &ErrorCounts,
) -> Result<(), ClientError> {
    let parse = Parse::parse(&frame[HEADER_LEN..]).ok_or_else(|| malformed(ftag::PARSE))?;
    let name = parse.name;
    if name.is_empty() {
        a.effects.merge(classify(parse.query));
        a.to_server.extend_from_slice(frame);
        a.replies.push(Request::Parse, Owner::Client, None);
    } else if let Some(existing) = stmts.get(name).cloned() {
        // Already exists for this client: let the server raise 42P05 against the shared copy.
        ensure_prepared(a, &existing);
        a.to_server.extend_from_slice(&existing.parse);
        a.replies.push(Request::Parse, Owner::Client, None);
    } else if stmts.full() {
        // Fails like a server-side Parse error: the client hears it in order, and the rest of the
        // batch is skipped up to its Sync (an open transaction block is not marked failed).
        let mut error = BytesMut::new();
        ClientError::TooManyStatements(stmts.len()).write_to(&mut error, errors);
        a.replies.push(Request::Parse, Owner::Answered(error.freeze()), None);
        a.skip_to_sync = true;
    } else {
        let name = String::from_utf8(name.to_vec()).map_err(|_| malformed(ftag::PARSE))?;
        let def = std::sync::Arc::new(StatementDef::new(&parse));
        stmts.insert(name.clone(), def.clone());
        if a.backend.statements.touch(&def.server_name) {
            let undo =
                Undo::Parse { server_name: def.server_name.clone(), client_name: Some(name), prepared_here: false };
            a.replies.push(Request::Parse, Owner::Answered(statements::parse_complete()), Some(undo));
        } else {
            prepare_on_server(a, &def, Owner::Client, Some(name));
        }
    }
    Ok(())
}

/// A simple Query in transaction mode: noted for session-state effects; statement-dropping
/// commands update the client's view of its prepared statements.
fn client_query(a: &mut Active, stmts: &mut ClientStatements, frame: &[u8]) {
    let body = &frame[HEADER_LEN..];
    a.effects.merge(classify(body));
    if let Some(name) = statements::reserved_name_used(body) {
        // pgmux's shared statements are other clients' too: the server refuses on pgmux's behalf,
        // with the effect a server error has on the client's transaction.
        let err = ClientError::ReservedName(name);
        build::query(&mut a.to_server, &statements::raise_sql(&err.to_string(), err.sqlstate()));
        a.replies.push(Request::Query, Owner::Client, None);
        return;
    }
    match statements::statement_command(body) {
        Some(StatementCommand::DropAll) => {
            stmts.clear();
            a.backend.statements.clear();
            a.backend.statements.needs_reset = true;
            // DISCARD ALL also resets settings: re-apply the client's on the next borrow.
            a.backend.applied = Default::default();
            a.to_server.extend_from_slice(frame);
        }
        Some(StatementCommand::Deallocate(name)) if stmts.get(name.as_bytes()).is_some() => {
            let def = stmts.remove(name.as_bytes()).expect("checked");
            a.backend.statements.remove(&def.server_name);
            let sql = format!("DEALLOCATE {}", statements::quote_ident(&def.server_name));
            build::query(&mut a.to_server, &sql);
        }
        _ => a.to_server.extend_from_slice(frame),
    }
    a.replies.push(Request::Query, Owner::Client, None);
}

/// Applies what the reply queue says did not happen.
pub fn apply_undo(a: &mut Active, stmts: &mut ClientStatements) {
    for undo in a.replies.take_undone() {
        match undo {
            Undo::Parse { server_name, client_name, prepared_here } => {
                if prepared_here {
                    a.backend.statements.remove(&server_name);
                    a.backend.pool().set_statement_known(&server_name, false);
                }
                if let Some(name) = client_name {
                    stmts.remove_if(&name, &server_name);
                }
            }
        }
    }
}

/// Where server bytes go.
pub trait ClientSink {
    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

/// Handles the server bytes buffered in `a.backend.rbuf`: forwards, drops or answers per the reply
/// queue. Leaves a partial message (other than a passed-through one) in the buffer.
pub fn server_bytes(
    a: &mut Active,
    stmts: &mut ClientStatements,
    sink: &mut dyn ClientSink,
) -> Result<(), ServerFault> {
    let mut pos = 0;
    let mut span_start = 0;
    let result = loop {
        let rbuf = &a.backend.rbuf;
        if a.passthrough > 0 {
            let n = a.passthrough.min(rbuf.len() - pos);
            pos += n;
            a.passthrough -= n;
            if a.passthrough > 0 {
                break Ok(());
            }
            continue;
        }
        let (tag, total) = match peek_header(&rbuf[pos..], MAX_MESSAGE_LEN) {
            Ok(Some(h)) => h,
            Ok(None) => break Ok(()),
            Err(e) => break Err(ServerFault::Protocol(e.to_string())),
        };
        // Bulk data for the client is passed on before it has all arrived.
        if matches!(tag, btag::DATA_ROW | btag::COPY_DATA) && !a.replies.head_is_injected() && rbuf.len() - pos < total
        {
            if let Err(e) = a.replies.on_server(tag, None) {
                break Err(ServerFault::Protocol(e.to_string()));
            }
            a.passthrough = total;
            continue;
        }
        if rbuf.len() - pos < total {
            break Ok(());
        }
        let verdict = match whole_message(a, pos, total) {
            Ok(v) => v,
            Err(e) => break Err(e),
        };
        if verdict != Verdict::Forward {
            if let Err(e) = sink.send(&a.backend.rbuf[span_start..pos]) {
                break Err(ServerFault::Client(e));
            }
            span_start = pos + total;
        }
        pos += total;
        if a.replies.has_output() {
            if let Err(e) = sink.send(&a.backend.rbuf[span_start..pos]) {
                break Err(ServerFault::Client(e));
            }
            span_start = pos;
            for bytes in a.replies.take_answered() {
                if let Err(e) = sink.send(&bytes) {
                    return Err(ServerFault::Client(e));
                }
            }
            apply_undo(a, stmts);
        }
    };
    let sent = sink.send(&a.backend.rbuf[span_start..pos]);
    consume(&mut a.backend.rbuf, pos);
    result?;
    sent.map_err(ServerFault::Client)
}

/// Acts on one whole server message at `pos` (ReadyForQuery status, ParameterStatus, errors that
/// invalidate statements, rows pgmux reads) and returns the reply queue's verdict on it.
fn whole_message(a: &mut Active, pos: usize, total: usize) -> Result<Verdict, ServerFault> {
    let frame = &a.backend.rbuf[pos..pos + total];
    let (tag, body) = (frame[0], &frame[HEADER_LEN..]);
    let status = if tag == btag::READY_FOR_QUERY {
        let ready = ReadyForQuery::parse(body).ok_or_else(|| ServerFault::Protocol("bad ReadyForQuery".into()))?;
        Some(ready.status)
    } else {
        None
    };
    let clients = matches!(tag, btag::COMMAND_COMPLETE | btag::PARAMETER_STATUS) && !a.replies.head_is_injected();
    if tag == btag::COMMAND_COMPLETE
        && clients
        && !CommandComplete::parse(body).is_some_and(|c| command_tag_is_plain(c.tag))
    {
        a.effects.merge(Effects::CHECK);
    } else if tag == btag::PARAMETER_STATUS {
        // Reported parameters changed under the client's statements (a function, a view, SET):
        // the client was told (ParameterStatus always reaches it); the next borrower must not be.
        if clients {
            a.effects.merge(Effects::CHECK);
        }
        let body = body.to_vec();
        a.backend.note_parameter(&body);
    } else if tag == btag::ERROR_RESPONSE
        && let Some(err) = ErrorResponse::parse(body)
    {
        if let Some(message) = fatal_message(&err) {
            // The server ends this session (shutdown, crash, terminated backend): the client's
            // stays, so it hears of it from pgmux as a lost server connection, not as a FATAL.
            return Err(ServerFault::Fatal(message));
        }
        let (reset, lost) =
            (invalidates_statements(&err) || duplicate_pgmux_statement(&err), lost_pgmux_statement(&err));
        if reset {
            a.backend.statements.needs_reset = true;
        }
        if let Some(name) = lost {
            // Prepared again on its next use, even by this client's next batch on this loan.
            a.backend.statements.remove(&name);
        }
    }
    let verdict = a.replies.on_server(tag, status).map_err(|e| ServerFault::Protocol(e.to_string()))?;
    match verdict {
        Verdict::Capture => {
            let frame = a.backend.rbuf[pos..pos + total].to_vec();
            capture(a, &frame);
        }
        Verdict::DropError if a.applying => {
            if a.apply_error.is_none() {
                a.apply_error = Some(Bytes::copy_from_slice(&a.backend.rbuf[pos..pos + total]));
            }
        }
        Verdict::DropError => {
            let fields = ErrorResponse::parse(&a.backend.rbuf[pos + HEADER_LEN..pos + total]);
            tracing::warn!(?fields, "a query pgmux ran for the client failed");
        }
        Verdict::Forward | Verdict::Drop => {}
    }
    Ok(verdict)
}

/// Keeps a row description (starts a result set) or a text row of pgmux's own query.
fn capture(a: &mut Active, frame: &[u8]) {
    if frame[0] == btag::ROW_DESCRIPTION {
        a.capture.push(Vec::new());
        return;
    }
    let row = crate::backend::decode_text_row(&frame[HEADER_LEN..]);
    if let Some(set) = a.capture.last_mut() {
        set.push(row);
    }
}

/// A table changed under a shared statement ("cached plan must not change result type"): the
/// connection's statements must be prepared afresh before the next borrower.
fn invalidates_statements(err: &ErrorResponse) -> bool {
    err.get(field::CODE) == Some(b"0A000")
        && err.get(field::MESSAGE).is_some_and(|m| m.starts_with(b"cached plan must not change result type"))
}

/// A pgmux statement the server says it does not have (something out of pgmux's sight — dynamic
/// SQL, a function behind a view — deallocated it): its name.
fn lost_pgmux_statement(err: &ErrorResponse) -> Option<String> {
    if err.get(field::CODE) != Some(b"26000") {
        return None;
    }
    let message = err.get_str(field::MESSAGE)?;
    let name = message.strip_prefix("prepared statement \"")?.split('"').next()?;
    name.starts_with("pgmux_").then(|| name.to_string())
}

/// The server already has a statement under a pgmux name pgmux did not put there: the connection's
/// statements must be prepared afresh before the next borrower.
fn duplicate_pgmux_statement(err: &ErrorResponse) -> bool {
    err.get(field::CODE) == Some(b"42P05") && err.get_str(field::MESSAGE).is_some_and(|m| m.contains("\"pgmux_"))
}

/// The message of an ErrorResponse that ends the server session (FATAL or PANIC), if it is one.
fn fatal_message(err: &ErrorResponse) -> Option<String> {
    let severity = err.get(field::SEVERITY_RAW).or_else(|| err.get(field::SEVERITY))?;
    matches!(severity, b"FATAL" | b"PANIC").then(|| {
        format!(
            "{} (SQLSTATE {})",
            err.get_str(field::MESSAGE).unwrap_or("server session ended".into()),
            err.get_str(field::CODE).unwrap_or("?".into())
        )
    })
}

/// Why relaying server bytes stopped.
#[derive(Debug)]
pub enum ServerFault {
    /// The server ended the session with this FATAL error.
    Fatal(String),
    /// The server broke the protocol: the connection cannot be trusted.
    Protocol(String),
    /// The client's socket failed.
    Client(std::io::Error),
}

/// Answers a client's `Parse… Sync` batch (named statements the pool's servers already accepted,
/// and statement Closes) without a server connection, as a PQprepare outside a transaction sends
/// it. Returns the bytes consumed from `cin`, or `None` if the batch needs a server.
pub fn answer_prepare_locally(
    cin: &[u8],
    stmts: &mut ClientStatements,
    pool: &crate::pool::Pool,
    out: &mut BytesMut,
) -> Option<usize> {
    enum Step {
        Prepare(String, std::sync::Arc<StatementDef>),
        Close(Vec<u8>),
    }
    let mut steps = Vec::new();
    let mut pos = 0;
    // Statements past the limit take the server path, which refuses them.
    let limit = stmts.remaining_room() + stmts.len();
    loop {
        let (tag, total) = check_client_header(&cin[pos..], MAX_MESSAGE_LEN).ok()??;
        if cin.len() - pos < total {
            return None;
        }
        let body = &cin[pos + HEADER_LEN..pos + total];
        pos += total;
        match tag {
            // An unnamed statement (a name is NUL-terminated): the usual extended-protocol query,
            // for a server; told before its text is read.
            ftag::PARSE if body.first() == Some(&0) => return None,
            ftag::PARSE => {
                let parse = Parse::parse(body)?;
                let name = parse.name;
                if name.is_empty() || stmts.get(name).is_some() || stmts.len() + steps.len() >= limit {
                    return None;
                }
                let def = StatementDef::new(&parse);
                if !pool.statement_known(&def.server_name) {
                    return None;
                }
                steps.push(Step::Prepare(String::from_utf8(name.to_vec()).ok()?, std::sync::Arc::new(def)));
            }
            ftag::CLOSE => match Close::parse(body)? {
                Close { target: Target::Statement, name } if !name.is_empty() => steps.push(Step::Close(name.to_vec())),
                _ => return None,
            },
            ftag::SYNC if !steps.is_empty() => break,
            _ => return None,
        }
    }
    for step in steps {
        match step {
            Step::Prepare(name, def) => {
                stmts.insert(name, def);
                out.extend_from_slice(&statements::parse_complete());
            }
            Step::Close(name) => {
                stmts.remove(&name);
                out.extend_from_slice(&statements::close_complete());
            }
        }
    }
    build::ready_for_query(out, TxStatus::Idle);
    Some(pos)
}
