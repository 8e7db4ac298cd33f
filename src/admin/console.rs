//! An admin console session: a client logged in to database `pgmux` as one of `admin_users`. It
//! speaks the simple query protocol and never borrows a server connection: each statement of a
//! Query is a console command answered by pgmux (RowDescription + DataRows, or a notice, then
//! CommandComplete), and the Query ends with ReadyForQuery like any other.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::commands::{self, Reply};
use super::tables::Table;
use crate::client::ConsoleClient;
use crate::client::handshake::ConsoleLogin;
use crate::client::relay::check_client_header;
use crate::error::ClientError;
use crate::protocol::build::{self, Severity};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::Query;
use crate::protocol::{TxStatus, ftag};
use crate::state::registry::CancelKey;
use crate::state::{Admitted, ProxyState};

/// Console input is a few words: anything longer is refused rather than buffered.
const MAX_MESSAGE: usize = 1 << 20;

/// Why the session ended.
#[derive(Debug)]
enum End {
    Terminated,
    Gone,
    Fatal(ClientError),
}

struct Console {
    ctx: Arc<ProxyState>,
    user: String,
    /// Client bytes not yet handled.
    cin: BytesMut,
    /// Replies not yet written.
    out: BytesMut,
    /// An extended-protocol batch was refused: its messages are dropped up to its Sync.
    skipping: bool,
    /// Keeps the session listed (SHOW CLIENTS) and counted against `clients.max_connections`.
    _listed: (CancelKey, Admitted),
}

/// Serves the console until the client leaves, idles past `clients.idle_timeout`, or pgmux shuts
/// down (the console does not hold up a drain).
pub async fn run(ctx: Arc<ProxyState>, client: ConsoleClient) {
    let ConsoleClient { mut stream, login, counted: _counted } = client;
    let ConsoleLogin { user, key, pending, admitted } = login;
    let mut console =
        Console { ctx, user, cin: pending, out: BytesMut::new(), skipping: false, _listed: (key, admitted) };
    let end = console.serve(&mut stream).await;
    match &end {
        End::Fatal(err) => {
            tracing::info!(user = %console.user, error = %err, sqlstate = err.sqlstate(), "closing admin console");
            err.write_to(&mut console.out, &console.ctx.metrics.errors);
        }
        End::Terminated | End::Gone => tracing::debug!(user = %console.user, ?end, "admin console left"),
    }
    if !console.out.is_empty() {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), crate::net::write_flush(&mut stream, &console.out))
                .await;
    }
}

impl Console {
    async fn serve(&mut self, stream: &mut crate::net::Stream) -> End {
        let idle = self.ctx.settings.load().idle_timeout;
        loop {
            if let Some(end) = self.handle_input().await {
                return end;
            }
            if !self.out.is_empty() {
                if crate::net::write_flush(stream, &self.out).await.is_err() {
                    return End::Gone;
                }
                self.out.clear();
            }
            if self.ctx.draining.is_cancelled() {
                return End::Fatal(ClientError::Shutdown);
            }
            tokio::select! {
                read = stream.read_buf(&mut self.cin) => match read {
                    Ok(0) | Err(_) => return End::Gone,
                    Ok(_) => {}
                },
                _ = self.ctx.draining.cancelled() => return End::Fatal(ClientError::Shutdown),
                _ = tokio::time::sleep(idle) => return End::Fatal(ClientError::IdleTimeout),
            }
        }
    }

    /// Answers every whole message received so far.
    async fn handle_input(&mut self) -> Option<End> {
        loop {
            let (tag, total) = match check_client_header(&self.cin, MAX_MESSAGE) {
                Err(e) => return Some(End::Fatal(e)),
                Ok(None) => return None,
                Ok(Some((_, total))) if total > MAX_MESSAGE => {
                    let e =
                        ClientError::Protocol(format!("message of {total} bytes is too long for the admin console"));
                    return Some(End::Fatal(e));
                }
                Ok(Some((_, total))) if total > self.cin.len() => return None,
                Ok(Some(header)) => header,
            };
            let frame = self.cin.split_to(total);
            if let Some(end) = self.on_message(tag, &frame[HEADER_LEN..]).await {
                return Some(end);
            }
        }
    }

    async fn on_message(&mut self, tag: u8, body: &[u8]) -> Option<End> {
        match tag {
            ftag::QUERY => {
                let text = Query::parse(body).map(|q| String::from_utf8_lossy(q.sql).into_owned()).unwrap_or_default();
                self.query(&text).await;
                build::ready_for_query(&mut self.out, TxStatus::Idle);
            }
            ftag::TERMINATE => return Some(End::Terminated),
            ftag::SYNC => {
                self.skipping = false;
                build::ready_for_query(&mut self.out, TxStatus::Idle);
            }
            ftag::PARSE | ftag::BIND | ftag::DESCRIBE | ftag::EXECUTE | ftag::CLOSE | ftag::FLUSH => {
                if !self.skipping {
                    extended_protocol_refused().write_to(&mut self.out, &self.ctx.metrics.errors);
                    self.skipping = true;
                }
            }
            ftag::FUNCTION_CALL => {
                extended_protocol_refused().write_to(&mut self.out, &self.ctx.metrics.errors);
                build::ready_for_query(&mut self.out, TxStatus::Idle);
            }
            // Left over from a COPY that never started: PostgreSQL ignores these too.
            ftag::COPY_DATA | ftag::COPY_DONE | ftag::COPY_FAIL => {}
            other => {
                let e = ClientError::Protocol(format!("unexpected message type {:?}", other as char));
                return Some(End::Fatal(e));
            }
        }
        None
    }

    /// Runs each `;`-separated statement in turn (split by the SQL lexer, so comments and quoted
    /// text are what they are in PostgreSQL); the first error ends the Query, as in PostgreSQL.
    async fn query(&mut self, text: &str) {
        let statements: Vec<String> = crate::sql::statement_texts(text.as_bytes())
            .into_iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if statements.is_empty() {
            build::empty_query_response(&mut self.out);
        }
        for statement in statements {
            tracing::debug!(user = %self.user, statement, "admin console command");
            let reply = match commands::parse(&statement) {
                Ok(command) => commands::execute(&self.ctx, command).await,
                Err(e) => Err(e),
            };
            match reply {
                Ok(reply) => write_reply(&mut self.out, reply),
                Err(e) => {
                    e.write_to(&mut self.out, &self.ctx.metrics.errors);
                    break;
                }
            }
        }
    }
}

fn extended_protocol_refused() -> ClientError {
    ClientError::ConsoleUnsupported(
        "the admin console does not support the extended query protocol; send simple queries (psql does)".into(),
    )
}

fn write_reply(out: &mut BytesMut, reply: Reply) {
    match reply {
        Reply::Rows(table) => {
            write_table(out, &table);
            build::command_complete(out, "SHOW");
        }
        Reply::Done { tag, notice } => {
            if let Some(notice) = notice {
                build::error_response(out, Severity::Notice, "00000", &notice);
            }
            build::command_complete(out, tag);
        }
    }
}

fn write_table(out: &mut BytesMut, table: &Table) {
    let columns: Vec<(&str, u32)> = table.columns.iter().map(|(name, ty)| (*name, ty.oid())).collect();
    build::row_description(out, &columns);
    for row in &table.rows {
        build::data_row(out, row);
    }
}
