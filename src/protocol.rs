//! PostgreSQL v3 wire protocol: framing, startup packets, and the few messages pgmux builds or inspects.
//!
//! The hot path never decodes whole messages: it walks 5-byte headers (`frame`) and looks inside only
//! the messages whose tags the proxy must act on, through the bounds-checked, zero-copy views of
//! `messages` (the one place that knows a body's layout).
//!
//! This module owns the protocol's one-byte codes: message tags (`ftag`, `btag`), Describe/Close
//! targets (`target`), error fields (`field`) and the SSLRequest answers (`ssl`); code elsewhere
//! names them through these constants (test fixtures aside).

pub mod build;
pub mod frame;
pub mod messages;
pub mod startup;

/// Tags of frontend (client → server) messages.
pub mod ftag {
    pub const BIND: u8 = b'B';
    pub const CLOSE: u8 = b'C';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const PARSE: u8 = b'P';
    pub const PASSWORD: u8 = b'p';
    pub const QUERY: u8 = b'Q';
    pub const SYNC: u8 = b'S';
    pub const TERMINATE: u8 = b'X';
}

/// Tags of backend (server → client) messages.
pub mod btag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const NO_DATA: u8 = b'n';
    pub const DATA_ROW: u8 = b'D';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
}

/// What a Describe or Close message names: its first body byte.
pub mod target {
    pub const STATEMENT: u8 = b'S';
    pub const PORTAL: u8 = b'P';
}

/// Field codes of ErrorResponse / NoticeResponse.
pub mod field {
    /// Severity, possibly localized.
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized (PostgreSQL 9.6+).
    pub const SEVERITY_RAW: u8 = b'V';
    pub const CODE: u8 = b'C';
    pub const MESSAGE: u8 = b'M';
}

/// The one-byte answers to an SSLRequest or GSSENCRequest.
pub mod ssl {
    pub const ACCEPT: u8 = b'S';
    pub const REFUSE: u8 = b'N';
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// Reads a NUL-terminated string at the start of `buf`; returns it and the rest. Only this module
/// reads message layouts; elsewhere, see `messages`.
fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..end], &buf[end + 1..]))
}

/// An ErrorResponse body's fields as owned (code, text) pairs, for tests that compare them whole.
#[cfg(test)]
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let Some(err) = messages::ErrorResponse::parse(body) else { return Vec::new() };
    err.fields().map(|(code, value)| (code, String::from_utf8_lossy(value).into_owned())).collect()
}
