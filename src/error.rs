//! The one place that turns a pgmux-made failure into what the client sees: severity, SQLSTATE, message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;

use crate::protocol::build::{Severity, error_response};

/// Failures pgmux itself reports to a client. Errors a server sends pass through untouched instead.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("{0}")]
    AuthProtocol(String),
    #[error("sorry, too many clients already")]
    TooManyClients,
    /// More clients from one address in their handshake than `clients.max_handshakes_per_address`
    /// for the whole of `startup_timeout`.
    #[error("too many connections from this address are logging in at once (clients.max_handshakes_per_address: {0})")]
    TooManyHandshakesFromAddress(usize),
    /// A plaintext client while `tls.mode` is `require`.
    #[error("pgmux accepts only TLS connections (tls.mode: require): connect with sslmode=require or stronger")]
    TlsRequired,
    #[error("timed out after {0:?} waiting for a server connection")]
    BorrowTimeout(Duration),
    /// A login that waited `pool.borrow_timeout` for a server connection to greet it (the
    /// connection closes, so FATAL where a transaction's `BorrowTimeout` is an ERROR).
    #[error("timed out after {0:?} waiting for a server connection to log in")]
    LoginBorrowTimeout(Duration),
    /// A client that did not finish its startup and authentication within
    /// `clients.startup_timeout` (time it spent waiting for pgmux not counted).
    #[error("client login timeout: startup and authentication did not finish within {0:?} (clients.startup_timeout)")]
    StartupTimeout(Duration),
    #[error("could not connect to server: {0}")]
    ServerUnavailable(String),
    #[error("could not connect to server: {0}")]
    StartupFailed(String),
    /// The server asked pgmux for an authentication method `pool.server_auth` does not allow, at
    /// the client's login (FATAL) ...
    #[error("could not log in to the server: {0}")]
    ServerAuthRefused(String),
    /// ... or for a transaction (ERROR: the client may try again).
    #[error("could not log in to the server: {0}")]
    ServerAuthRefusedNow(String),
    #[error("server connection lost (the server may be failing over; new work waits for a primary): {0}")]
    ServerLost(String),
    #[error(
        "server connection lost (the server may be failing over); the transaction block was aborted and must be rolled back: {0}"
    )]
    ServerLostInTransaction(String),
    /// PostgreSQL's own error (and wording) for a request inside an aborted transaction block.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    TransactionAborted,
    /// Session state that lived only on a lost server connection (`{0}` says which) is gone.
    #[error("server connection lost; session state that could not be carried over is gone: {0}")]
    SessionStateLost(String),
    /// As `SessionStateLost`, for a client configured to be closed then (`lost_session_state: close`).
    #[error("terminating connection: the server connection was lost, and with it session state: {0}")]
    SessionStateLostClosed(String),
    /// A reload changed nothing (invalid file, a setting that cannot change live).
    #[error("{0}")]
    ReloadRefused(String),
    #[error("terminating connection due to administrator command")]
    Shutdown,
    #[error("terminating connection due to idle-session timeout")]
    IdleTimeout,
    /// PostgreSQL's wording for its idle_in_transaction_session_timeout.
    #[error("terminating connection due to idle-in-transaction timeout")]
    IdleInTransactionTimeout,
    /// A data-carrying message over `clients.max_message_size`.
    #[error("message of type {tag:?} is {len} bytes, more than clients.max_message_size ({max} bytes)")]
    MessageTooLarge { tag: char, len: usize, max: usize },
    /// A Parse of one more named statement than `clients.max_prepared_statements` allows.
    #[error(
        "too many prepared statements: this connection holds {0}, the limit set by clients.max_prepared_statements; close (Close / DEALLOCATE) some first"
    )]
    TooManyStatements(usize),
    #[error("{0}")]
    FeatureNotSupported(String),
    /// A login to the admin console (database `pgmux`) by a user not in `admin_users`; the
    /// wording starts like PgBouncer's.
    #[error("not allowed: user \"{0}\" may not use the admin console (not in admin_users)")]
    ConsoleNotAllowed(String),
    /// Admin console input that is not one of its commands.
    #[error("{0}")]
    ConsoleSyntax(String),
    /// An admin console command (or protocol feature) pgmux does not offer (yet).
    #[error("{0}")]
    ConsoleUnsupported(String),
    /// A client's DEALLOCATE / PREPARE / EXECUTE named one of pgmux's shared statements.
    #[error(
        "prepared statement \"{0}\": names beginning with pgmux_ are reserved for the statements pgmux shares between clients"
    )]
    ReservedName(String),
    /// PAUSE waited this long and transactions were still running (the pause stays in effect).
    #[error(
        "PAUSE gave up waiting after {waited:?}: {busy} transaction(s) still running; new transactions stay held until RESUME"
    )]
    PauseTimeout { waited: Duration, busy: usize },
}

impl ClientError {
    /// Whether the client's connection ends with this error (FATAL) or carries on (ERROR).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            ClientError::BorrowTimeout(_)
                | ClientError::ServerUnavailable(_)
                | ClientError::ServerAuthRefusedNow(_)
                | ClientError::ServerLost(_)
                | ClientError::ServerLostInTransaction(_)
                | ClientError::TransactionAborted
                | ClientError::SessionStateLost(_)
                | ClientError::ConsoleSyntax(_)
                | ClientError::ConsoleUnsupported(_)
                | ClientError::PauseTimeout { .. }
                | ClientError::ReloadRefused(_)
                | ClientError::TooManyStatements(_)
                | ClientError::ReservedName(_)
        )
    }

    pub fn sqlstate(&self) -> &'static str {
        match self {
            ClientError::Protocol(_) | ClientError::AuthProtocol(_) => "08P01",
            ClientError::AuthFailed(_) => "28P01",
            // As PostgreSQL's own refusal of a login (pg_hba.conf).
            ClientError::TlsRequired | ClientError::ServerAuthRefused(_) | ClientError::ServerAuthRefusedNow(_) => {
                "28000"
            }
            ClientError::TooManyClients
            | ClientError::TooManyHandshakesFromAddress(_)
            | ClientError::BorrowTimeout(_)
            | ClientError::LoginBorrowTimeout(_) => "53300",
            // PgBouncer's code for its client_login_timeout.
            ClientError::StartupTimeout(_) => "08P01",
            ClientError::ServerUnavailable(_) | ClientError::StartupFailed(_) => "08001",
            ClientError::ServerLost(_)
            | ClientError::ServerLostInTransaction(_)
            | ClientError::SessionStateLost(_)
            | ClientError::SessionStateLostClosed(_) => "08006",
            ClientError::TransactionAborted => "25P02",
            ClientError::ReloadRefused(_) => "F0000",
            ClientError::Shutdown => "57P01",
            ClientError::IdleTimeout => "57P05",
            ClientError::IdleInTransactionTimeout => "25P03",
            ClientError::MessageTooLarge { .. } => "54000",
            ClientError::TooManyStatements(_) => "53400",
            ClientError::FeatureNotSupported(_) | ClientError::ConsoleUnsupported(_) => "0A000",
            // PostgreSQL's code for a role that may not connect to a database.
            ClientError::ConsoleNotAllowed(_) => "42501",
            ClientError::ConsoleSyntax(_) => "42601",
            ClientError::ReservedName(_) => "42939",
            // As for a statement timeout.
            ClientError::PauseTimeout { .. } => "57014",
        }
    }

    pub fn severity(&self) -> Severity {
        if self.is_fatal() { Severity::Fatal } else { Severity::Error }
    }

    /// Appends the ErrorResponse for this error to `buf`, and counts it: every error pgmux sends
    /// goes through here.
    pub fn write_to(&self, buf: &mut BytesMut, counts: &ErrorCounts) {
        let code = self.sqlstate();
        counts.count(code);
        error_response(buf, self.severity(), code, &self.to_string());
    }
}

/// Every SQLSTATE `ClientError::sqlstate` returns (a test keeps the two in step).
pub const SQLSTATES: [&str; 18] = [
    "08P01", "28P01", "28000", "53300", "08001", "08006", "25P02", "57P01", "57P05", "0A000", "42501", "42601",
    "57014", "F0000", "25P03", "54000", "53400", "42939",
];

/// Errors pgmux sent to clients, by SQLSTATE (indexed like `SQLSTATES`).
#[derive(Debug, Default)]
pub struct ErrorCounts([AtomicU64; SQLSTATES.len()]);

impl ErrorCounts {
    fn count(&self, code: &str) {
        if let Some(i) = SQLSTATES.iter().position(|c| *c == code) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (SQLSTATE, errors sent with it so far), for every SQLSTATE pgmux may send.
    pub fn snapshot(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        SQLSTATES.iter().zip(&self.0).map(|(code, n)| (*code, n.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_table() {
        let cases: Vec<(ClientError, &str, Severity)> = vec![
            (ClientError::Protocol("x".into()), "08P01", Severity::Fatal),
            (ClientError::AuthFailed("u".into()), "28P01", Severity::Fatal),
            (ClientError::TlsRequired, "28000", Severity::Fatal),
            (ClientError::ServerAuthRefused("x".into()), "28000", Severity::Fatal),
            (ClientError::ServerAuthRefusedNow("x".into()), "28000", Severity::Error),
            (ClientError::TooManyClients, "53300", Severity::Fatal),
            (ClientError::TooManyHandshakesFromAddress(20), "53300", Severity::Fatal),
            (ClientError::BorrowTimeout(Duration::from_secs(1)), "53300", Severity::Error),
            (ClientError::LoginBorrowTimeout(Duration::from_secs(1)), "53300", Severity::Fatal),
            (ClientError::StartupTimeout(Duration::from_secs(1)), "08P01", Severity::Fatal),
            (ClientError::ServerUnavailable("x".into()), "08001", Severity::Error),
            (ClientError::ServerLost("x".into()), "08006", Severity::Error),
            (ClientError::StartupFailed("x".into()), "08001", Severity::Fatal),
            (ClientError::ServerLostInTransaction("x".into()), "08006", Severity::Error),
            (ClientError::TransactionAborted, "25P02", Severity::Error),
            (ClientError::ReloadRefused("x".into()), "F0000", Severity::Error),
            (ClientError::SessionStateLostClosed("x".into()), "08006", Severity::Fatal),
            (ClientError::SessionStateLost("temp tables".into()), "08006", Severity::Error),
            (ClientError::Shutdown, "57P01", Severity::Fatal),
            (ClientError::IdleTimeout, "57P05", Severity::Fatal),
            (ClientError::FeatureNotSupported("x".into()), "0A000", Severity::Fatal),
            (ClientError::ConsoleNotAllowed("u".into()), "42501", Severity::Fatal),
            (ClientError::ConsoleSyntax("x".into()), "42601", Severity::Error),
            (ClientError::ConsoleUnsupported("x".into()), "0A000", Severity::Error),
            (ClientError::PauseTimeout { waited: Duration::from_secs(1), busy: 2 }, "57014", Severity::Error),
            (ClientError::ReservedName("pgmux_x".into()), "42939", Severity::Error),
        ];
        let counts = ErrorCounts::default();
        for (err, code, sev) in &cases {
            assert_eq!((err.sqlstate(), err.severity()), (*code, *sev), "{err}");
            err.write_to(&mut BytesMut::new(), &counts);
        }
        // Every error written was counted under its SQLSTATE: the table knows them all.
        let total: u64 = counts.snapshot().map(|(_, n)| n).sum();
        assert_eq!(total, cases.len() as u64);
        let busy = counts.snapshot().find(|(c, _)| *c == "53300").map(|(_, n)| n);
        assert_eq!(busy, Some(4));
    }

    #[test]
    fn aborted_transaction_wording_is_postgres_own() {
        assert_eq!(
            ClientError::TransactionAborted.to_string(),
            "current transaction is aborted, commands ignored until end of transaction block"
        );
    }
}
