//! Holding a server connection: relaying both ways, and letting the connection go once the
//! transaction (and any session-state check after it) is over.

use super::check::{CHECK_SQL, Identity};
use super::io::{IdleTimer, ToClient, flush_now, give_back, read_more, read_server, unsent, write_now};
use super::relay::{self, Active, ServerFault, check_client_header};
use super::replies::{Owner, Request};
use super::session::{End, HIGH_WATER, Session, State};
use crate::error::ClientError;
use crate::protocol::build;
use crate::state::pins::PinReasons;
use crate::state::settings::PoolMode;

/// Stop taking client requests while this many replies are owed: pgmux answers some requests
/// itself (Close, a Parse the connection has) and queues an entry for every one.
const MAX_OWED: usize = 4096;

impl Session {
    /// Relays between client and server until something needs the state machine.
    pub(super) async fn active_step(&mut self) -> Result<(), End> {
        self.forward_client()?;
        // Forwarding may have lost the server connection: the new state says what comes next.
        if !matches!(self.state, State::Active(_)) {
            return Ok(());
        }
        self.wait_active().await
    }

    /// Client → server: whole frames only, so a half-sent message never reaches a server; then
    /// the replies pgmux answered itself go to the client, and both sides are flushed.
    fn forward_client(&mut self) -> Result<(), End> {
        let State::Active(a) = &mut self.state else {
            return Ok(());
        };
        let mode = self.mode;
        let errors = &self.ctx.metrics.errors;
        loop {
            while may_forward(a, self.checking) {
                let Some((_, total)) = check_client_header(&self.cin, self.max_message).map_err(End::Fatal)? else {
                    break;
                };
                if self.cin.len() < total {
                    break;
                }
                // Handled in place: no shared-buffer header and reference counts per frame of a
                // pipelined batch (Bind, Describe, Execute, Sync arrive in one read).
                let more = relay::client_frame(a, &mut self.statements, mode, &self.cin[..total], errors)
                    .map_err(End::Fatal)?;
                relay::consume(&mut self.cin, total);
                if !more {
                    return Err(End::Terminated);
                }
            }
            // A request read whole leaves no memory behind (the next read starts on the stack).
            give_back(&mut self.cin);
            let answered = a.replies.take_answered();
            for bytes in &answered {
                write_now(&self.client_wr, &mut self.cout, bytes).map_err(Self::gone)?;
            }
            relay::apply_undo(a, &mut self.statements);
            if let Err(e) = flush_now(&a.backend.wr, &mut a.to_server) {
                return self.server_lost(e.to_string());
            }
            // Whole messages already read raise no readiness event: if the flush made room, move
            // them now rather than wait for client bytes that may never come (a COPY whose last
            // messages sat here while the server, having drained the rest, waited for them).
            if !(may_forward(a, self.checking) && whole_frame(&self.cin, self.max_message)) {
                break;
            }
        }
        flush_now(&self.client_wr, &mut self.cout).map_err(Self::gone)
    }

    /// Waits for the server's bytes, the client's, room on either socket, or a timer.
    async fn wait_active(&mut self) -> Result<(), End> {
        let client_room = self.client_room();
        let State::Active(a) = &mut self.state else {
            return Ok(());
        };
        let free = a.replies.is_free();
        let session_idle = free && (self.mode == PoolMode::Session || !self.pins.is_empty());
        if session_idle && self.ctx.draining.is_cancelled() {
            return Err(End::Fatal(ClientError::Shutdown));
        }
        let read_client = may_forward(a, false) && client_room;
        let idle_in_tx =
            self.idle_tx.is_some() && a.to_server.is_empty() && !self.checking && a.replies.awaiting_client();
        let drain = self.drain.fired(&self.ctx.draining);
        let crate::backend::BackendConn { rd, wr, rbuf, .. } = &mut *a.backend;
        // `biased` (see `wait_client`): the server's bytes first, then the client's; reading either
        // stops at the high-water marks, which lets the writes and the timers come round.
        tokio::select! {
            biased;
            r = read_server(rd, rbuf), if self.cout.len() < HIGH_WATER => {
                match r {
                    Ok(0) => return self.server_lost("server closed the connection".into()),
                    Ok(_) => {
                        let handled = self.on_server_bytes();
                        // Idle in transaction counts from the server's last word, not the client's;
                        // only a session still holding its connection can be idle in one (a
                        // transaction that ended gave it back: no clock read for it).
                        if let (Some(t), State::Active(_)) = (&mut self.idle_tx, &self.state) {
                            t.touch();
                        }
                        return handled;
                    }
                    Err(e) => return self.server_lost(e.to_string()),
                }
            }
            r = read_more(&mut self.client_rd, &mut self.cin), if read_client => {
                if !r.map_err(Self::gone)? {
                    return Err(End::Gone);
                }
                self.touch();
            }
            r = wr.writable(), if unsent(wr, &a.to_server) => {
                if let Err(e) = r {
                    return self.server_lost(e.to_string());
                }
            }
            r = self.client_wr.writable(), if unsent(&self.client_wr, &self.cout) => { r.map_err(Self::gone)?; }
            _ = self.idle.fired(), if session_idle => {
                if self.idle.expired() {
                    return Err(End::Fatal(ClientError::IdleTimeout));
                }
            }
            _ = fired(&mut self.idle_tx), if idle_in_tx => {
                if self.idle_tx.as_mut().is_some_and(|t| t.expired()) {
                    return Err(End::Fatal(ClientError::IdleInTransactionTimeout));
                }
            }
            _ = drain, if session_idle => {}
        }
        Ok(())
    }

    /// Handles bytes that arrived from the server, and gives the connection back once the
    /// transaction is over.
    pub(super) fn on_server_bytes(&mut self) -> Result<(), End> {
        let State::Active(a) = &mut self.state else {
            return Ok(());
        };
        let mut sink = ToClient { sock: &self.client_wr, residue: &mut self.cout };
        match relay::server_bytes(a, &mut self.statements, &mut sink) {
            Ok(()) => {}
            Err(ServerFault::Client(e)) => return Err(Self::gone(e)),
            Err(ServerFault::Protocol(e)) => {
                return self.server_lost(format!("protocol error: {e}"));
            }
            Err(ServerFault::Fatal(e)) => return self.server_lost(e),
        }
        if a.applying {
            if !a.replies.injected_query_open() {
                self.apply_done();
            }
            return Ok(());
        }
        if self.mode != PoolMode::Transaction || !a.is_free() {
            return Ok(());
        }
        if self.checking {
            self.finish_check();
        } else if a.effects.any() || self.pins.contains(PinReasons::UNVERIFIED) {
            // The transaction may have changed settings or pinning state: ask the server.
            if a.effects.load {
                self.pins = self.pins.union(PinReasons::LOAD);
            }
            a.effects = Default::default();
            build::query(&mut a.to_server, CHECK_SQL);
            a.replies.push(Request::Query, Owner::Capture, None);
            self.checking = true;
            return Ok(());
        }
        if self.pins.is_empty() {
            self.transition(State::Idle);
        }
        Ok(())
    }

    /// Reads the session-state check: the client's settings become what the server reports, and
    /// the pin reasons what it holds.
    pub(super) fn finish_check(&mut self) {
        self.checking = false;
        let State::Active(a) = &mut self.state else { return };
        let sets = std::mem::take(&mut a.capture);
        let (Some(settings), Some(counts)) = (sets.first(), sets.get(1).and_then(|s| s.first())) else {
            tracing::warn!(peer = %self.peer, user = %self.user, "session-state check failed; keeping the client pinned");
            let old = self.pins;
            self.pins = old.union(PinReasons::UNVERIFIED);
            self.ctx.pin_stats.record(&self.user, self.peer, old, self.pins);
            self.key.slot.set_pins(self.pins);
            return;
        };
        let identity = Identity::from_row(counts, &self.user);
        let mut now: Vec<(String, String)> = settings
            .iter()
            .filter_map(|row| match row.as_slice() {
                [Some(n), Some(v)] => Some((n.to_ascii_lowercase(), v.clone())),
                _ => None,
            })
            .filter(|(n, _)| n != "role" && n != "session_authorization")
            .chain(identity.settings())
            .collect();
        now.sort();
        if identity.statements.is_some_and(|n| n != a.backend.statements.len()) {
            // Something out of pgmux's sight dropped or made pgmux-named statements.
            a.backend.statements.needs_reset = true;
        }
        let now = self.ctx.setting_lists.intern(now);
        a.backend.applied = now.clone();
        self.settings = now;
        let old = self.pins;
        let new = PinReasons::from_counts(counts).union(PinReasons::from_bits(old.bits() & PinReasons::LOAD.bits()));
        self.ctx.pin_stats.record(&self.user, self.peer, old, new);
        self.pins = new;
        self.key.slot.set_pins(new);
    }
}

/// Whether the client's next messages may go to the server now. While pgmux checks the session
/// after a transaction they wait: they may belong on another connection (a write after a
/// read-only transaction on a replica). So do they while pgmux's own query giving the connection
/// the client's settings runs: they must not run if it fails.
fn may_forward(a: &Active, checking: bool) -> bool {
    a.to_server.len() < HIGH_WATER && !checking && !a.applying && a.replies.len() < MAX_OWED
}

/// Whether `cin` starts with a whole message (or a bad header, for the caller to report).
fn whole_frame(cin: &[u8], max_message: usize) -> bool {
    match check_client_header(cin, max_message) {
        Ok(Some((_, total))) => cin.len() >= total,
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Completes when the optional timer fires; never without one.
async fn fired(timer: &mut Option<Box<IdleTimer>>) {
    match timer {
        Some(t) => t.fired().await,
        None => std::future::pending().await,
    }
}
