//! A server connection lost under the client: what was in flight fails, and pgmux answers for the
//! server until the client has heard.

use super::aborted::{Aborted, Step};
use super::io::flush_now;
use super::relay::check_client_header;
use super::session::{End, HIGH_WATER, Session, State};
use crate::error::ClientError;
use crate::protocol::{TxStatus, build};
use crate::state::pins::PinReasons;
use crate::state::settings::PoolMode;

impl Session {
    /// Answers the client for a server that is gone, until it has ended its lost transaction block
    /// (or heard that its session state was lost).
    pub(super) async fn aborted_step(&mut self) -> Result<(), End> {
        if self.ctx.draining.is_cancelled() {
            return Err(End::Fatal(ClientError::Shutdown));
        }
        while let Some((_, total)) = check_client_header(&self.cin, self.max_message).map_err(End::Fatal)? {
            if self.cin.len() < total || self.cout.len() >= HIGH_WATER {
                break;
            }
            let frame = self.cin.split_to(total);
            let State::Aborted(ab) = &mut self.state else { return Ok(()) };
            match ab.on_frame_with_statements(&frame, &mut self.statements, &mut self.cout).map_err(End::Fatal)? {
                Step::Continue => {}
                Step::Terminate => return Err(End::Terminated),
                Step::Done => {
                    flush_now(&self.client_wr, &mut self.cout).map_err(Self::gone)?;
                    self.transition(State::Idle);
                    return Ok(());
                }
            }
        }
        flush_now(&self.client_wr, &mut self.cout).map_err(Self::gone)?;
        self.wait_client(false, true).await
    }

    /// The server connection failed mid-conversation (a crash, a failover, a terminated backend):
    /// fail what was in flight and keep the client. A client inside a transaction block gets the
    /// block's errors from pgmux until it ends the block; a client whose pinned state died with the
    /// server is told so once (or closed, if configured). The primary is checked at once.
    pub(super) fn server_lost(&mut self, why: String) -> Result<(), End> {
        let State::Active(a) = &self.state else {
            return Ok(());
        };
        let tracker = &a.replies;
        let (status, pending) = (tracker.status(), tracker.pending_ready());
        // A COPY FROM STDIN begun by Execute owes its error like an open batch does (the client
        // streams on, then ends with Sync); one begun by a Query is answered with that Query.
        let batch_open = tracker.batch_open() || (tracker.copy_in() && pending == 0);
        let server = a.backend.server.clone();
        if let Some(held_back) = self.ctx.log_limits.server_lost.check() {
            tracing::warn!(event = "server_lost", peer = %self.peer, user = %self.user, server = %server, reason = %why, held_back, "server connection lost");
        }
        self.ctx.cluster.suspect(&server);
        let session_mode = self.mode == PoolMode::Session;
        let lost_state = (!self.pins.is_empty() || session_mode).then(|| {
            let mut what = self.pins.names().join(", ");
            if session_mode {
                what =
                    if what.is_empty() { "the session (session mode)".into() } else { format!("the session: {what}") };
            }
            what
        });
        if !self.pins.is_empty() {
            // What pinned the client lived on that connection and is gone with it.
            self.ctx.pin_stats.record(&self.user, self.peer, self.pins, PinReasons::default());
            self.pins = PinReasons::default();
            self.key.slot.set_pins(self.pins);
        }
        if let Some(what) = &lost_state
            && self.ctx.settings.load().close_on_lost_session_state
        {
            return Err(End::Fatal(ClientError::SessionStateLostClosed(what.clone())));
        }
        let in_block = status != TxStatus::Idle;
        let error = |first: bool| match &lost_state {
            Some(what) if first => ClientError::SessionStateLost(format!("{what} ({why})")),
            _ if in_block && !first => ClientError::TransactionAborted,
            _ if in_block => ClientError::ServerLostInTransaction(why.clone()),
            _ => ClientError::ServerLost(why.clone()),
        };
        // Like the server would: each request owed an answer fails (every batch its own error
        // before its ReadyForQuery, or a driver reading the next batch's replies is lost); a block
        // stays aborted.
        let mut told = false;
        let ready = if in_block { TxStatus::Failed } else { TxStatus::Idle };
        for _ in 0..pending {
            error(!told).write_to(&mut self.cout, &self.ctx.metrics.errors);
            told = true;
            build::ready_for_query(&mut self.cout, ready);
        }
        if batch_open {
            error(!told).write_to(&mut self.cout, &self.ctx.metrics.errors);
            told = true;
        }
        let next = if in_block {
            State::Aborted(Box::new(Aborted::in_transaction(
                (!told).then(|| error(true)),
                batch_open,
                self.ctx.metrics.errors.clone(),
            )))
        } else if batch_open {
            State::Discarding
        } else if !told && lost_state.is_some() {
            // Nothing in flight: the next request hears of it.
            State::Aborted(Box::new(Aborted::owed(error(true), self.ctx.metrics.errors.clone())))
        } else {
            State::Idle
        };
        self.transition(next);
        flush_now(&self.client_wr, &mut self.cout).map_err(Self::gone)
    }
}
