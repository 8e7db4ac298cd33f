//! A connected client's life after startup: one state machine that borrows a server connection for
//! each transaction (or keeps one for the session), relays both directions, and returns or discards
//! the connection when the conversation allows.
//!
//! This module holds the session, its one state and the one place that changes it
//! (`transition`); the states' steps live beside it in `client`: `borrow` (between transactions:
//! the next request, a borrow, a failed batch dropped), `active` (relaying while a server
//! connection is held), `lost` (a server connection gone under the client), `goodbye` (the end).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;

use super::aborted::Aborted;
use super::borrow::IdleNext;
use super::handshake::{First, Startup};
use super::io::{DrainSignal, IdleTimer, flush_now, read_more, unsent};
use super::relay::{Active, check_client_header};
use super::replies::{Owner, ReplyQueue, Request};
use super::settings;
use super::statements::ClientStatements;
use crate::error::ClientError;
use crate::listener::Endpoint;
use crate::net::{ReadHalf, Stream, WriteHalf};
use crate::pool::{Pool, Pooled, WaitTimer};
use crate::protocol::build;
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::messages::ErrorResponse;
use crate::state::pins::PinReasons;
use crate::state::registry::CancelKey;
use crate::state::settings::PoolMode;
use crate::state::{ProxyState, SettingList};

/// Stop reading a side while this much is waiting to be written to the other (and stop reading
/// the client while this much of its input waits unhandled, beyond one message being assembled).
pub(super) const HIGH_WATER: usize = 256 * 1024;

/// The session's one state.
#[derive(Debug)]
pub(super) enum State {
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
pub(super) enum End {
    /// The client sent Terminate.
    Terminated,
    /// The client's socket closed or failed.
    Gone,
    /// Tell the client this, then close.
    Fatal(ClientError),
}

/// `repr(C)`, in this order: the fields a transaction reads or writes first, packed into the
/// fewest lines of memory (~5 of 64 bytes), the rest after — with thousands of clients, each line
/// a transaction touches is a likely cache miss (callgrind with a 1 MiB last level, 2,000 clients).
#[repr(C)]
pub struct Session {
    pub(super) state: State,
    pub(super) ctx: Arc<ProxyState>,
    /// The client socket's halves: reads and writes wait independently.
    pub(super) client_rd: ReadHalf,
    pub(super) client_wr: WriteHalf,
    /// The pool this client borrowed from last (skips the pool lookup while the primary stays put).
    pub(super) pool: Option<Arc<Pool>>,
    /// Client bytes not yet handled.
    pub(super) cin: BytesMut,
    /// Bytes for the client its socket has not accepted yet.
    pub(super) cout: BytesMut,
    /// Closes the client after `clients.idle_timeout` without a message.
    pub(super) idle: IdleTimer,
    /// Tells a session waiting between transactions that pgmux drains.
    pub(super) drain: DrainSignal,
    /// Times the waits for a server connection (kept armed between borrows: see `WaitTimer`).
    pub(super) wait_timer: WaitTimer,
    pub(super) key: CancelKey,
    /// The parameters the client was told (ParameterStatus), to tell it what differs on the next
    /// server connection it is given.
    told: super::told::Told,
    pub(super) settings: SettingList,
    /// The probe round in which the client's last transaction on the primary ended.
    pub(super) wrote_in: Option<u64>,
    /// `clients.max_message_size`.
    pub(super) max_message: usize,
    /// The listener the client came in on.
    pub(super) endpoint: Endpoint,
    /// `pool.mode` (fixed for the process: a reload cannot change it).
    pub(super) mode: PoolMode,
    /// A session-state check is running on the server connection.
    pub(super) checking: bool,
    /// Why the client is pinned to its server connection (empty: it is not).
    pub(super) pins: PinReasons,
    /// Closes a client idle inside a transaction (`clients.idle_transaction_timeout`). Boxed: off
    /// by default, and inline it would take a line of memory among the ones every transaction reads.
    pub(super) idle_tx: Option<Box<IdleTimer>>,
    /// The client's named prepared statements (transaction mode).
    pub(super) statements: ClientStatements,
    pub(super) user: String,
    pub(super) database: String,
    /// The client's address, named in this session's log events.
    pub(super) peer: SocketAddr,
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
        let idle_tx = limits.idle_transaction_timeout.map(|t| Box::new(IdleTimer::new(t)));
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
            wait_timer: WaitTimer::default(),
            drain: DrainSignal::default(),
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

    /// Serves the client until it leaves. Sized for memory per client: an `async move` block
    /// keeps the session once (an `async fn`'s `mut self` is kept twice, as the argument and as
    /// its local copy), and the goodbye, the largest of the steps, waits in a box of its own.
    /// `counted` keeps the connection counted as open (metrics) until the session ends.
    #[allow(clippy::manual_async_fn, reason = "an async fn would keep `mut self` twice")]
    pub fn run(mut self, counted: Box<crate::metrics::OpenClient>) -> impl Future<Output = ()> {
        async move {
            let end = loop {
                let step = match self.state {
                    // The decision is taken out of its `Result` before awaiting: held across the
                    // await, the `Result` (32 bytes, with an error to drop) would be kept in this
                    // future's state, written on every transaction on a line of its own.
                    State::Idle => {
                        let next = match self.idle_next() {
                            Ok(next) => next,
                            Err(end) => break end,
                        };
                        match next {
                            IdleNext::Borrow => self.borrow().await,
                            IdleNext::Wait => self.wait_client(true, true).await,
                            IdleNext::Again => Ok(()),
                        }
                    }
                    State::Active(_) => self.active_step().await,
                    State::Discarding => self.discard_step().await,
                    State::Aborted(_) => self.aborted_step().await,
                };
                if let Err(end) = step {
                    break end;
                }
            };
            Box::pin(self.finish(end)).await;
            drop(counted);
        }
    }

    /// The only place the state changes: keeps the cancel target in step, and returns or discards a
    /// server connection the session lets go of.
    pub(super) fn transition(&mut self, next: State) {
        let from = std::mem::replace(&mut self.state, next);
        if let State::Active(a) = &mut self.state {
            self.key.holds(&mut a.backend);
        }
        if let State::Active(mut a) = from {
            a.backend.let_go();
            self.told.saw_loan(&a);
            if a.backend.is_standby() == Some(false) {
                // It may have written: its next reads must see that (read-your-writes).
                self.wrote_in = Some(self.ctx.cluster.probe_round());
            }
            if a.is_free() {
                let out = std::mem::take(&mut a.to_server);
                a.backend.keep_out_buffer(out);
                a.replies.leave_storage(&mut a.backend.spare);
                a.backend.release();
            } else {
                tracing::debug!(user = %self.user, "discarding a server connection in an unknown state");
            }
        }
    }

    /// Takes `backend` for the client, first queueing the SQL that gives it the client's settings
    /// (and drops statements the connection can no longer vouch for).
    pub(super) fn activate(&mut self, mut backend: Pooled) {
        let mut to_server = std::mem::take(&mut backend.wbuf);
        let mut replies = ReplyQueue::from_spare(&mut backend.spare);
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
    pub(super) fn apply_done(&mut self) {
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

    pub(super) fn gone(_: io::Error) -> End {
        End::Gone
    }

    /// Notes a message from the client (both idle clocks restart).
    pub(super) fn touch(&mut self) {
        let now = tokio::time::Instant::now();
        self.idle.touch_at(now);
        if let Some(t) = &mut self.idle_tx {
            t.touch_at(now);
        }
    }

    /// Whether to read more from the client: not while its unhandled input is over the mark
    /// (beyond the one message being assembled, which `max_message` bounds) or while what pgmux
    /// owes it is (it is not reading).
    pub(super) fn client_room(&self) -> bool {
        self.cout.len() < HIGH_WATER && input_room(&self.cin, self.max_message)
    }

    /// Reads client bytes (or flushes pending output) until something happens.
    pub(super) async fn wait_client(&mut self, idle_applies: bool, watch_drain: bool) -> Result<(), End> {
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
            _ = self.idle.fired(), if idle_applies => {
                if self.idle.expired() {
                    return Err(End::Fatal(ClientError::IdleTimeout));
                }
            }
            _ = self.drain.fired(&self.ctx.draining), if watch_drain => {}
        }
        Ok(())
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
