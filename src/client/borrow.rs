//! Between transactions: waiting for the client's next request and borrowing a server connection
//! for it, or dropping the rest of a batch pgmux failed.

use std::sync::Arc;

use super::io::{flush_now, give_back};
use super::relay::{self, check_client_header};
use super::routing;
use super::session::{End, HIGH_WATER, Session, State};
use crate::backend::BackendError;
use crate::cluster::ClusterError;
use crate::error::ClientError;
use crate::pool::PoolError;
use crate::protocol::{TxStatus, build, ftag};
use crate::state::pause::Held;
use crate::state::settings::PoolMode;

/// What a session without a server connection does next (see `Session::idle_next`).
pub(super) enum IdleNext {
    /// A request is here: borrow a server connection for it (`Session::borrow`).
    Borrow,
    /// Wait for the client (`Session::wait_client`, idle clocks and the drain armed).
    Wait,
    /// Handled without waiting: look again.
    Again,
}

impl Session {
    /// No server connection: what to do with the client's next message. Decided without a future
    /// of its own: the session's loop awaits the borrow or the wait itself, one level of state (a
    /// line of memory per transaction) less.
    pub(super) fn idle_next(&mut self) -> Result<IdleNext, End> {
        if self.ctx.draining.is_cancelled() {
            return Err(End::Fatal(ClientError::Shutdown));
        }
        match check_client_header(&self.cin, self.max_message).map_err(End::Fatal)? {
            Some((ftag::TERMINATE, _)) => return Err(End::Terminated),
            // What a failed COPY's client still sends: a server drops it outside copy mode, so no
            // server connection is borrowed for it.
            Some((ftag::COPY_DATA | ftag::COPY_DONE | ftag::COPY_FAIL | ftag::FLUSH, total))
                if self.cin.len() >= total =>
            {
                relay::consume(&mut self.cin, total);
                return Ok(IdleNext::Again);
            }
            // Answers pgmux writes itself wait while the client is not reading them.
            Some((ftag::PARSE, _)) if self.mode == PoolMode::Transaction && self.cout.len() >= HIGH_WATER => {}
            Some((ftag::PARSE, _)) if self.mode == PoolMode::Transaction => {
                if let Some(pool) = &self.pool
                    && let Some(n) =
                        relay::answer_prepare_locally(&self.cin, &mut self.statements, pool, &mut self.cout)
                {
                    relay::consume(&mut self.cin, n);
                    flush_now(&self.client_wr, &mut self.cout).map_err(Self::gone)?;
                    return Ok(IdleNext::Again);
                }
                if matches!(check_client_header(&self.cin, self.max_message), Ok(Some((_, total))) if self.cin.len() >= total)
                {
                    return Ok(IdleNext::Borrow);
                }
            }
            Some((_, total)) if self.cin.len() >= total => return Ok(IdleNext::Borrow),
            _ => {}
        }
        // Between transactions a client holds no buffers (memory per idle client).
        give_back(&mut self.cin);
        give_back(&mut self.cout);
        Ok(IdleNext::Wait)
    }

    /// Borrows a server connection for the client's next transaction, through the pause gate.
    pub(super) async fn borrow(&mut self) -> Result<(), End> {
        let timeout = self.ctx.settings.load().borrow_timeout;
        // The gate's wait is boxed: only a PAUSE closes it, and inline it would be one more level
        // of state every borrow writes.
        let left = if self.ctx.pause.try_enter() {
            timeout
        } else {
            match Box::pin(self.ctx.pause.enter(timeout, &self.ctx.draining)).await {
                Ok(left) => left,
                Err(Held::ShuttingDown) => return Err(End::Fatal(ClientError::Shutdown)),
                Err(Held::TimedOut) => {
                    self.fail_batch(ClientError::BorrowTimeout(timeout));
                    return Ok(());
                }
            }
        };
        let cluster = &self.ctx.cluster;
        let routed = &self.ctx.metrics.routed;
        let borrowed = if routing::read_only_next(&self.ctx, self.endpoint, &self.settings, &self.cin, &self.statements)
        {
            routed.replica.inc();
            let wrote_in = self.wrote_in.filter(|_| self.ctx.settings.load().read_your_writes);
            // Boxed: inline, the replica borrow's state (~630 bytes) would size every session's
            // future and put this future's state tag lines away from what a primary borrow
            // touches (callgrind: a cache miss per transaction with thousands of clients).
            Box::pin(cluster.checkout_replica(&self.database, &self.user, left, wrote_in, &mut self.wait_timer)).await
        } else {
            routed.primary.inc();
            // The common borrow, from the pool the client used last while it still serves the
            // primary, is awaited here: one level of state less than through the cluster. What
            // the cluster must look at (another pool, a fresh or standby connection, an error)
            // goes on there, boxed.
            let first = match cluster.hinted_primary(self.pool.as_ref()) {
                Some(pool) => Some(pool.checkout(left, &mut self.wait_timer).await),
                None => None,
            };
            match first {
                Some(Ok(conn)) if cluster.settled_primary_loan(&conn) => Ok(conn),
                first => {
                    let (hint, database, user) = (self.pool.as_ref(), &self.database, &self.user);
                    Box::pin(cluster.checkout_primary(hint, first, database, user, left, &mut self.wait_timer)).await
                }
            }
        };
        match borrowed {
            Ok(backend) => {
                if !self.pool.as_ref().is_some_and(|p| Arc::ptr_eq(p, backend.pool())) {
                    self.pool = Some(backend.pool().clone());
                }
                self.activate(backend);
            }
            Err(ClusterError::Pool(PoolError::Timeout)) => self.fail_batch(ClientError::BorrowTimeout(timeout)),
            Err(ClusterError::Pool(PoolError::Connect(
                e @ (BackendError::AuthRefused { .. } | BackendError::PassThrough { .. }),
            ))) => self.fail_batch(ClientError::ServerAuthRefusedNow(e.to_string())),
            Err(ClusterError::Pool(PoolError::Connect(BackendError::Server { message, .. }))) => {
                self.fail_batch(ClientError::ServerUnavailable(message))
            }
            Err(e) => self.fail_batch(ClientError::ServerUnavailable(e.to_string())),
        }
        // Now holding (its connection's cancel target names it) or failed: PAUSE may count it.
        self.ctx.pause.leave();
        Ok(())
    }

    /// No server connection for the client's batch: tell it why, and drop the rest of the batch.
    pub(super) fn fail_batch(&mut self, err: ClientError) {
        if let Some(held_back) = self.ctx.log_limits.no_server.check() {
            tracing::warn!(event = "no_server", peer = %self.peer, user = %self.user, database = %self.database, error = %err, held_back, "no server connection for a transaction");
        }
        err.write_to(&mut self.cout, &self.ctx.metrics.errors);
        self.transition(State::Discarding);
    }

    /// After an error pgmux raised for the current batch: drop messages up to its Sync (or the failed
    /// Query itself), then tell the client it may go on.
    pub(super) async fn discard_step(&mut self) -> Result<(), End> {
        while let Some((tag, total)) = check_client_header(&self.cin, self.max_message).map_err(End::Fatal)? {
            if self.cin.len() < total {
                break;
            }
            relay::consume(&mut self.cin, total);
            match tag {
                ftag::TERMINATE => return Err(End::Terminated),
                ftag::SYNC | ftag::QUERY | ftag::FUNCTION_CALL => {
                    build::ready_for_query(&mut self.cout, TxStatus::Idle);
                    flush_now(&self.client_wr, &mut self.cout).map_err(Self::gone)?;
                    self.transition(State::Idle);
                    return Ok(());
                }
                _ => {}
            }
        }
        self.wait_client(false, false).await
    }
}
