//! The end of a session: the client told why, and a server connection it held left clean or
//! closed.

use std::time::Duration;

use super::io::unsent;
use super::relay::Active;
use super::session::{End, Session, State};
use crate::protocol::messages::ReadyForQuery;
use crate::protocol::{TxStatus, build};
use crate::state::pins::PinReasons;
use crate::state::settings::PoolMode;

/// How long cleanup of an abandoned server connection (ROLLBACK, DISCARD ALL) may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

impl Session {
    /// Says goodbye to the client and leaves any server connection clean or closed.
    pub(super) async fn finish(mut self, end: End) {
        match &end {
            End::Fatal(err) => {
                tracing::info!(peer = %self.peer, user = %self.user, error = %err, sqlstate = err.sqlstate(), "closing client");
                err.write_to(&mut self.cout, &self.ctx.metrics.errors);
            }
            End::Terminated | End::Gone => tracing::debug!(user = %self.user, ?end, "client left"),
        }
        let state = std::mem::replace(&mut self.state, State::Idle);
        if let State::Active(a) = state {
            // Cancels no longer reach it: what runs on it now is pgmux's cleanup.
            a.backend.let_go();
            // What the client's unfinished transaction did may outlive its ROLLBACK (session
            // advisory locks, PREPARE): unless nothing could have changed, DISCARD ALL.
            let reset = self.mode == PoolMode::Session || !self.pins.is_empty() || a.effects.any();
            if !self.pins.contains(PinReasons::LOAD) && !a.effects.load {
                let _ = tokio::time::timeout(CLEANUP_TIMEOUT, cleanup(*a, reset)).await;
            }
        }
        if !self.pins.is_empty() {
            self.ctx.pin_stats.record(&self.user, self.peer, self.pins, PinReasons::default());
        }
        if unsent(&self.client_wr, &self.cout) {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), crate::net::write_flush(&mut self.client_wr, &self.cout))
                    .await;
        }
    }
}

/// Makes an abandoned server connection reusable and returns it: what the server still owes is read
/// (an open extended-protocol batch ended with a Sync), an open transaction rolled back, and the
/// session reset where it may hold state (session mode, pins, an unchecked transaction). Anything
/// less certain (mid-message, mid-COPY, an error) closes it, which ends its transaction too.
async fn cleanup(mut a: Active, reset: bool) {
    use crate::protocol::btag;
    // Unread server bytes may be replies the queue already counted (relaying stopped when the
    // client's socket failed): nothing left to read can be trusted to start a reply, so close.
    if a.passthrough != 0 || a.replies.copy_in() || !a.backend.rbuf.is_empty() {
        return;
    }
    // A settings apply still running leaves the connection's settings unknown to pgmux.
    let mut reset = reset || a.effects.any() || a.replies.capture_open() || a.applying;
    let mut owed = a.replies.ready_owed();
    if a.replies.batch_open() {
        build::sync(&mut a.to_server);
        owed += 1;
    }
    if !a.to_server.is_empty() {
        let out = std::mem::take(&mut a.to_server);
        if a.backend.write(&out).await.is_err() {
            return;
        }
    }
    let mut status = a.replies.status();
    while owed > 0 {
        let Ok(frame) = a.backend.read_frame().await else { return };
        match frame.tag {
            btag::READY_FOR_QUERY => {
                owed -= 1;
                match ReadyForQuery::parse(frame.body()) {
                    Some(ready) => status = ready.status,
                    None => return,
                }
            }
            btag::COPY_IN_RESPONSE | btag::COPY_OUT_RESPONSE | btag::COPY_BOTH_RESPONSE => return,
            btag::PARAMETER_STATUS => a.backend.note_parameter(frame.body()),
            // A failed request may have been a Parse pgmux counted on: start the session afresh.
            btag::ERROR_RESPONSE => reset = true,
            _ => {}
        }
    }
    if status != TxStatus::Idle && !matches!(a.backend.simple_query("ROLLBACK").await, Ok(None)) {
        return;
    }
    if reset {
        if !matches!(a.backend.simple_query("DISCARD ALL").await, Ok(None)) {
            return;
        }
        a.backend.applied = Default::default();
        a.backend.statements.clear();
    }
    a.backend.release();
}
