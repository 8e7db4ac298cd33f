//! Cancel requests: each client gets its own BackendKeyData from pgmux (its key in the client
//! registry, `state::registry`); a CancelRequest carrying it is sent on to whichever server
//! connection that client holds at that moment, and nowhere otherwise (the connection's cancel gate
//! keeps it from being lent on while the cancel is in flight: see `backend::cancel`).

use crate::backend::cancel::{CancelError, CancelPermit};
use crate::state::registry::CancelTarget;

/// Sends a CancelRequest for `target` to its server (over TLS as `server_tls` says) and waits
/// until the server has acted on it.
pub async fn send_cancel(
    target: &CancelTarget,
    permit: CancelPermit,
    tls: &crate::tls::Connector,
) -> Result<(), CancelError> {
    crate::backend::cancel::send(&target.server, target.pid, target.secret, tls, permit).await
}
