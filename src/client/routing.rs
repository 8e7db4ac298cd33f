//! Where a client's next transaction runs: the primary, or a replica (reader endpoint, explicitly
//! read-only transactions, read-only sessions, and provably read-only autocommit SELECTs).

use super::classify;
use super::relay::check_client_header;
use super::statements::ClientStatements;
use crate::listener::Endpoint;
use crate::protocol::frame::{HEADER_LEN, MAX_MESSAGE_LEN};
use crate::protocol::ftag;
use crate::protocol::messages::{Bind, Parse};
use crate::state::ProxyState;

/// Whether the next transaction may run on a replica: every transaction of the reader endpoint;
/// on the main endpoint, an explicit BEGIN/START TRANSACTION READ ONLY, or a session whose
/// default_transaction_read_only is on.
pub fn read_only_next(
    ctx: &ProxyState,
    endpoint: Endpoint,
    settings: &[(String, String)],
    cin: &[u8],
    statements: &ClientStatements,
) -> bool {
    if endpoint == Endpoint::Reader {
        return true;
    }
    if settings.iter().any(|(n, v)| n == "default_transaction_read_only" && classify::is_on(v)) {
        return true;
    }
    match check_client_header(cin, MAX_MESSAGE_LEN) {
        Ok(Some((ftag::QUERY, total))) if cin.len() >= total => {
            let sql = &cin[HEADER_LEN..total];
            classify::begins_read_only(sql)
                || ctx.settings.load().autocommit_reads_to_replica && select_read_only(ctx, sql)
        }
        Ok(Some((ftag::PARSE | ftag::BIND, _))) if ctx.settings.load().autocommit_reads_to_replica => {
            extended_batch_read_only(ctx, cin, statements)
        }
        _ => false,
    }
}

/// An extended-protocol batch up to its Sync that only runs provably read-only SELECTs:
/// unnamed Parse of one, Binds of it or of named ones, Describe, Execute.
fn extended_batch_read_only(ctx: &ProxyState, cin: &[u8], statements: &ClientStatements) -> bool {
    let mut pos = 0;
    loop {
        let Ok(Some((tag, total))) = check_client_header(&cin[pos..], MAX_MESSAGE_LEN) else { return false };
        if cin.len() - pos < total {
            return false;
        }
        let body = &cin[pos + HEADER_LEN..pos + total];
        pos += total;
        let ok = match tag {
            ftag::PARSE => Parse::parse(body).is_some_and(|p| p.name.is_empty() && select_read_only(ctx, p.query)),
            ftag::BIND => Bind::parse(body)
                .is_some_and(|b| b.statement.is_empty() || statements.get(b.statement).is_some_and(|d| d.read_only)),
            ftag::DESCRIBE | ftag::EXECUTE => true,
            ftag::SYNC => return true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
}

/// Whether query text `sql` is a provably read-only SELECT, cached by text.
fn select_read_only(ctx: &ProxyState, sql: &[u8]) -> bool {
    ctx.select_verdicts.get_or(sql, classify::select_is_read_only)
}
