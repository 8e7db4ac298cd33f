//! A connected client's life after startup: one state machine that borrows a server connection for
//! each transaction (or keeps one for the session), relays both directions, and returns or discards
//! the connection when the conversation allows.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::aborted::{Aborted, Step};
use super::check::{CHECK_SQL, Identity};
use super::handshake::{First, Startup};
use super::io::{IdleTimer, ToClient, flush_now, give_back, read_more, read_server, unsent, write_now};
use super::relay::{self, Active, ServerFault, check_client_header};
use super::replies::{Owner, ReplyQueue, Request};
use super::statements::ClientStatements;
use super::{routing, settings};
use crate::backend::BackendError;
use crate::cluster::ClusterError;
use crate::error::ClientError;
use crate::listener::Endpoint;
use crate::net::{ReadHalf, Stream, WriteHalf};
use crate::pool::{Pool, PoolError, Pooled};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::{ErrorResponse, ReadyForQuery};
use crate::protocol::{TxStatus, build, ftag};
use crate::state::ProxyState;
use crate::state::pause::Held;
use crate::state::pins::PinReasons;
use crate::state::registry::CancelKey;
use crate::state::settings::PoolMode;

/// Stop reading a side while this much is waiting to be written to the other (and stop reading
/// the client while this much of its input waits unhandled, beyond one message being assembled).
const HIGH_WATER: usize = 256 * 1024;
/// Stop taking client requests while this many replies are owed: pgmux answers some requests
/// itself (Close, a Parse the connection has) and queues an entry for every one.
const MAX_OWED: usize = 4096;
/// How long cleanup of an abandoned server connection (ROLLBACK, DISCARD ALL) may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The session's one state.
#[derive(Debug)]
enum State {
    /// No server connection held (transaction mode, between transactions).
    Idle,
    /// A server connection is held for the current transaction (or, in session mode, for good).
    Active(Box<Active>),
    /// The client's current batch failed inside pgmux: drop its messages up to the next Sync.
    Discarding,
    /// The server connection died under the client: its transaction block (or pinned state) is
    /// gone, and pgmux answers for the server until the client has heard and ended the block.
    Aborted(Box<Aborted>),
}

/// Why the session ended.
#[derive(Debug)]
enum End {
    /// The client sent Terminate.
    Terminated,
    /// The client's socket closed or failed.
    Gone,
    /// Tell the client this, then close.
    Fatal(ClientError),
}

pub struct Session {
    ctx: Arc<ProxyState>,
    /// The client socket's halves: reads and writes wait independently.
    client_rd: ReadHalf,
    client_wr: WriteHalf,
    /// Closes the client after `clients.idle_timeout` without a message.
    idle: IdleTimer,
    /// Closes a client idle inside a transaction (`clients.idle_transaction_timeout`).
    idle_tx: Option<IdleTimer>,
    /// `clients.max_message_size`.
    max_message: usize,
    /// Client bytes not yet handled.
    cin: BytesMut,
    /// Bytes for the client its socket has not accepted yet.
    cout: BytesMut,
    /// The client's address, named in this session's log events.
    peer: SocketAddr,
    user: String,
    database: String,
    settings: Vec<(String, String)>,
    key: CancelKey,
    state: State,
    /// The client's named prepared statements (transaction mode).
    statements: ClientStatements,
    /// The listener the client came in on.
    endpoint: Endpoint,
    /// `pool.mode` (fixed for the process: a reload cannot change it).
    mode: PoolMode,
    /// The probe round in which the client's last transaction on the primary ended.
    wrote_in: Option<u64>,
    /// Why the client is pinned to its server connection (empty: it is not).
    pins: PinReasons,
    /// A session-state check is running on the server connection.
    checking: bool,
    /// The pool this client borrowed from last (skips the pool lookup while the primary stays put).
    pool: Option<Arc<Pool>>,
    /// The parameters the client was told (ParameterStatus), to tell it what differs on the next
    /// server connection it is given.
    told: super::told::Told,
    /// Keeps the client counted against max_connections.
    _admitted: crate::state::Admitted,
}

impl Session {
    pub fn new(
        ctx: Arc<ProxyState>,
        client: Stream,
        startup: Startup,
        endpoint: Endpoint,
        peer: SocketAddr,
    ) -> Session {
        let Startup { user, database, settings, key, first, pending, admitted } = startup;
        let (client_rd, client_wr) = client.into_split();
        let limits = ctx.settings.load();
        let (ctx_idle, mode, max_message) = (limits.idle_timeout, limits.mode, limits.max_message_size);
        let idle_tx = limits.idle_transaction_timeout.map(IdleTimer::new);
        let max_statements = limits.max_prepared_statements;
        drop(limits);
        let (pool, told) = match &first {
            First::Borrowed(backend) => (backend.pool().clone(), super::told::Told::new(backend)),
            First::Remembered { pool, greeting } => (pool.clone(), super::told::Told::remembered(greeting)),
        };
        let mut session = Session {
            ctx,
            client_rd,
            client_wr,
            idle: IdleTimer::new(ctx_idle),
            idle_tx,
            max_message,
            cin: pending,
            cout: BytesMut::new(),
            peer,
            user,
            database,
            settings,
            key,
            state: State::Idle,
            statements: ClientStatements::with_limit(max_statements),
            endpoint,
            mode,
            wrote_in: None,
            pins: PinReasons::default(),
            checking: false,
            pool: Some(pool),
            told,
            _admitted: admitted,
        };
        session.key.slot.set_identity(&session.user, &session.database);
        match (session.mode, first) {
            (PoolMode::Session, First::Borrowed(backend)) => session.activate(backend),
            (PoolMode::Transaction, First::Borrowed(backend)) => backend.release(),
            // The first message borrows, as after any transaction.
            (_, First::Remembered { .. }) => {}
        }
        session
    }

    pub async fn run(mut self) {
        let end = loop {
            let step = match self.state {
                State::Idle => self.idle_step().await,
                State::Active(_) => self.active_step().await,
                State::Discarding => self.discard_step().await,
                State::Aborted(_) => self.aborted_step().await,
            };
            if let Err(end) = step {
                break end;
            }
        };
        self.finish(end).await;
    }

    /// The only place the state changes: keeps the cancel target in step, and returns or discards a
    /// server connection the session lets go of.
    fn transition(&mut self, next: State) {
        let from = std::mem::replace(&mut self.state, next);
        if let State::Active(a) = &mut self.state {
            self.key.slot.set(Some(a.backend.cancel_target()));
        }
        if let State::Active(mut a) = from {
            if !matches!(self.state, State::Active(_)) {
                self.key.slot.set(None);
            }
            self.told.saw_loan(&a);
            if a.backend.is_standby() == Some(false) {
                // It may have written: its next reads must see that (read-your-writes).
                self.wrote_in = Some(self.ctx.cluster.probe_round());
            }
            if a.is_free() {
                let out = std::mem::take(&mut a.to_server);
                a.backend.keep_out_buffer(out);
                a.backend.release();
            } else {
                tracing::debug!(user = %self.user, "discarding a server connection in an unknown state");
            }
        }
    }

    /// Takes `backend` for the client, first queueing the SQL that gives it the client's settings
    /// (and drops statements the connection can no longer vouch for).
    fn activate(&mut self, mut backend: Pooled) {
        let mut to_server = std::mem::take(&mut backend.wbuf);
        let mut replies = ReplyQueue::default();
        let mut sql = Vec::new();
        if backend.statements.needs_reset {
            sql.push("DEALLOCATE ALL".to_string());
            backend.statements.clear();
            backend.statements.needs_reset = false;
        }
        // Recorded as applied only once the server confirms it (see `apply_done`).
        if let Some(set) = settings::sql_to_apply(&backend.applied, &self.settings) {
            sql.push(set);
        }
        let applying = !sql.is_empty();
        if applying {
            build::query(&mut to_server, &sql.join("; "));
            replies.push(Request::Query, Owner::InjectedQuery, None);
        }
        self.told.tell(&backend, &mut self.cout);
        let mut a = Active::new(backend, replies, to_server);
        a.applying = applying;
        self.transition(State::Active(Box::new(a)));
    }

    /// pgmux's settings apply ended: on success the connection carries the client's settings and
    /// its messages may go; on failure its batch fails with the server's error and the connection,
    /// in a state nobody asked for, is closed.
    fn apply_done(&mut self) {
        let State::Active(a) = &mut self.state else { return };
        a.applying = false;
        let Some(err) = a.apply_error.take() else {
            a.backend.applied = self.settings.clone();
            return;
        };
        a.replies.poison();
        let fields = ErrorResponse::parse(&err[HEADER_LEN..]);
        tracing::warn!(peer = %self.peer, user = %self.user, ?fields, "could not give a server connection the client's settings; closing it");
        self.cout.extend_from_slice(&err);
        self.transition(State::Discarding);
    }

    fn gone(_: io::Error) -> End {
        End::Gone
    }

    /// Notes a message from the client (both idle clocks restart).
    fn touch(&mut self) {
        let now = tokio::time::Instant::now();
        self.idle.touch_at(now);
        if let Some(t) = &mut self.idle_tx {
            t.touch_at(now);
        }
    }

    /// Whether to read more from the client: not while its unhandled input is over the mark
    /// (beyond the one message being assembled, which `max_message` bounds) or while what pgmux
    /// owes it is (it is not reading).
    fn client_room(&self) -> bool {
        self.cout.len() < HIGH_WATER && input_room(&self.cin, self.max_message)
    }

    /// Reads client bytes (or flushes pending output) until something happens.
    async fn wait_client(&mut self, idle_applies: bool, watch_drain: bool) -> Result<(), End> {
        let draining = &self.ctx.draining;
        let read = self.client_room();
        // `biased`: polled in order, without a random number per wait (~200 instructions a
        // transaction); every branch is gated by back-pressure or idleness, so none starves.
        tokio::select! {
            biased;
            r = read_more(&mut self.client_rd, &mut self.cin), if read => {
                if !r.map_err(Self::gone)? {
                    return Err(End::Gone);
                }
                self.touch();
            }
            r = self.client_wr.writable(), if unsent(&self.client_wr, &self.cout) => {
                r.map_err(Self::gone)?;
                flush_now(&self.client_wr, &mut self.cout).map_err(Self::gone)?;
            }
            _ = &mut self.idle.sleep, if idle_applies => {
                if self.idle.expired() {
                    return Err(End::Fatal(ClientError::IdleTimeout));
                }
            }
            _ = draining.cancelled(), if watch_drain => {}
        }
        Ok(())
    }

    /// No server connection: wait for the client's next message, then borrow one.
    async fn idle_step(&mut self) -> Result<(), End> {
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
                return Ok(());
            }
            // Answers pgmux writes itself wait while the client is not reading them.
            Some((ftag::PARSE, _)) if self.mode == PoolMode::Transaction && self.cout.len() >= HIGH_WATER => {}
            Some((ftag::PARSE, _)) if self.mode == PoolMode::Transaction => {
                if let Some(pool) = &self.pool
                    && let Some(n) =
                        relay::answer_prepare_locally(&self.cin, &mut self.statements, pool, &mut self.cout)
                {
                    relay::consume(&mut self.cin, n);
                    return flush_now(&self.client_wr, &mut self.cout).map_err(Self::gone);
                }
                if matches!(check_client_header(&self.cin, self.max_message), Ok(Some((_, total))) if self.cin.len() >= total)
                {
                    return self.borrow().await;
                }
            }
            Some((_, total)) if self.cin.len() >= total => return self.borrow().await,
            _ => {}
        }
        // Between transactions a client holds no buffers (memory per idle client).
        give_back(&mut self.cin);
        give_back(&mut self.cout);
        self.wait_client(true, true).await
    }

    /// Borrows a server connection for the client's next transaction, through the pause gate.
    async fn borrow(&mut self) -> Result<(), End> {
        let timeout = self.ctx.settings.load().borrow_timeout;
        let left = match self.ctx.pause.enter(timeout, &self.ctx.draining).await {
            Ok(left) => left,
            Err(Held::ShuttingDown) => return Err(End::Fatal(ClientError::Shutdown)),
            Err(Held::TimedOut) => {
                self.fail_batch(ClientError::BorrowTimeout(timeout));
                return Ok(());
            }
        };
        let cluster = &self.ctx.cluster;
        let routed = &self.ctx.metrics.routed;
        let borrowed = if routing::read_only_next(&self.ctx, self.endpoint, &self.settings, &self.cin, &self.statements)
        {
            routed.replica.inc();
            let wrote_in = self.wrote_in.filter(|_| self.ctx.settings.load().read_your_writes);
            cluster.checkout_replica(&self.database, &self.user, left, wrote_in).await
        } else {
            routed.primary.inc();
            cluster.checkout_primary(self.pool.as_ref(), &self.database, &self.user, left).await
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
        // Now holding (the cancel slot shows it) or failed: PAUSE may count this client.
        self.ctx.pause.leave();
        Ok(())
    }

    /// No server connection for the client's batch: tell it why, and drop the rest of the batch.
    fn fail_batch(&mut self, err: ClientError) {
        if let Some(held_back) = self.ctx.log_limits.no_server.check() {
            tracing::warn!(event = "no_server", peer = %self.peer, user = %self.user, database = %self.database, error = %err, held_back, "no server connection for a transaction");
        }
        err.write_to(&mut self.cout, &self.ctx.metrics.errors);
        self.transition(State::Discarding);
    }

    /// After an error pgmux raised for the current batch: drop messages up to its Sync (or the failed
    /// Query itself), then tell the client it may go on.
    async fn discard_step(&mut self) -> Result<(), End> {
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

    /// Answers the client for a server that is gone, until it has ended its lost transaction block
    /// (or heard that its session state was lost).
    async fn aborted_step(&mut self) -> Result<(), End> {
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

    /// Relays between client and server until something needs the state machine.
    async fn active_step(&mut self) -> Result<(), End> {
        let State::Active(a) = &mut self.state else {
            return Ok(());
        };
        let mode = self.mode;
        let errors = &self.ctx.metrics.errors;
        // Client → server: whole frames only, so a half-sent message never reaches a server. While
        // pgmux checks the session after a transaction, the client's next messages wait: they may
        // belong on another connection (a write after a read-only transaction on a replica).
        // So do they while pgmux's own query giving the connection the client's settings runs:
        // they must not run if it fails.
        let may_forward = |a: &Active, checking: bool| {
            a.to_server.len() < HIGH_WATER && !checking && !a.applying && a.replies.len() < MAX_OWED
        };
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
        flush_now(&self.client_wr, &mut self.cout).map_err(Self::gone)?;

        let free = a.replies.is_free();
        let session_idle = free && (self.mode == PoolMode::Session || !self.pins.is_empty());
        if session_idle && self.ctx.draining.is_cancelled() {
            return Err(End::Fatal(ClientError::Shutdown));
        }
        let read_client =
            may_forward(a, false) && self.cout.len() < HIGH_WATER && input_room(&self.cin, self.max_message);
        let idle_in_tx =
            self.idle_tx.is_some() && a.to_server.is_empty() && !self.checking && a.replies.awaiting_client();
        let draining = &self.ctx.draining;
        let crate::backend::BackendConn { rd, wr, rbuf, .. } = &mut *a.backend;
        // `biased` (see `wait_client`): the server's bytes first, then the client's; reading either
        // stops at the high-water marks, which lets the writes and the timers come round.
        tokio::select! {
            biased;
            r = read_server(rd, rbuf), if self.cout.len() < HIGH_WATER => {
                match r {
                    Ok(0) => return self.server_lost("server closed the connection".into()),
                    Ok(_) => {
                        // Idle in transaction counts from the server's last word, not the client's.
                        if let Some(t) = &mut self.idle_tx {
                            t.touch();
                        }
                        return self.on_server_bytes();
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
            _ = &mut self.idle.sleep, if session_idle => {
                if self.idle.expired() {
                    return Err(End::Fatal(ClientError::IdleTimeout));
                }
            }
            _ = fired(&mut self.idle_tx), if idle_in_tx => {
                if self.idle_tx.as_mut().is_some_and(IdleTimer::expired) {
                    return Err(End::Fatal(ClientError::IdleInTransactionTimeout));
                }
            }
            _ = draining.cancelled(), if session_idle => {}
        }
        Ok(())
    }

    /// Handles bytes that arrived from the server, and gives the connection back once the
    /// transaction is over.
    fn on_server_bytes(&mut self) -> Result<(), End> {
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
    fn finish_check(&mut self) {
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
        a.backend.applied = now.clone();
        self.settings = now;
        let old = self.pins;
        let new = PinReasons::from_counts(counts).union(PinReasons::from_bits(old.bits() & PinReasons::LOAD.bits()));
        self.ctx.pin_stats.record(&self.user, self.peer, old, new);
        self.pins = new;
        self.key.slot.set_pins(new);
    }

    /// The server connection failed mid-conversation (a crash, a failover, a terminated backend):
    /// fail what was in flight and keep the client. A client inside a transaction block gets the
    /// block's errors from pgmux until it ends the block; a client whose pinned state died with the
    /// server is told so once (or closed, if configured). The primary is checked at once.
    fn server_lost(&mut self, why: String) -> Result<(), End> {
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

    /// Says goodbye to the client and leaves any server connection clean or closed.
    async fn finish(mut self, end: End) {
        match &end {
            End::Fatal(err) => {
                tracing::info!(peer = %self.peer, user = %self.user, error = %err, sqlstate = err.sqlstate(), "closing client");
                err.write_to(&mut self.cout, &self.ctx.metrics.errors);
            }
            End::Terminated | End::Gone => tracing::debug!(user = %self.user, ?end, "client left"),
        }
        let state = std::mem::replace(&mut self.state, State::Idle);
        self.key.slot.set(None);
        if let State::Active(a) = state {
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

/// Whether `cin` starts with a whole message (or a bad header, for the caller to report).
fn whole_frame(cin: &[u8], max_message: usize) -> bool {
    match check_client_header(cin, max_message) {
        Ok(Some((_, total))) => cin.len() >= total,
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Whether more client input may be read: while a message is being assembled, up to its end
/// (its header was checked against the limits); otherwise while less than the mark waits.
fn input_room(cin: &[u8], max_message: usize) -> bool {
    match check_client_header(cin, max_message) {
        Ok(Some((_, total))) if cin.len() < total => true,
        _ => cin.len() < HIGH_WATER,
    }
}

/// Completes when the optional timer fires; never without one.
async fn fired(timer: &mut Option<IdleTimer>) {
    match timer {
        Some(t) => t.sleep.as_mut().await,
        None => std::future::pending().await,
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
        a.backend.applied.clear();
        a.backend.statements.clear();
    }
    a.backend.release();
}
