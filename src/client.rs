//! One client connection, from its first byte to its close: handshake, then the session that relays
//! its transactions over borrowed server connections. What clients share (the registry, the pause
//! gate, settings, the cluster) is the proxy's state (`state`).
//!
//! Modules, in the order a client meets them:
//! - `negotiate`: SSLRequest / GSSENCRequest and direct TLS, before the startup packet.
//! - `handshake`: the startup packet, authentication, the first server connection, the greeting.
//! - `lookup`: whose secret a login is checked against (a configured user's, or `auth.query`'s).
//! - `cancel`: forwarding a CancelRequest to the server connection its client holds.
//! - `session`: the session state machine: one transaction after another on borrowed connections;
//!   its states' steps: `borrow` (between transactions), `active` (relaying on a held connection),
//!   `lost` (the connection gone under the client), `goodbye` (the session's end).
//! - `routing`: whether the next transaction may run on a replica.
//! - `classify`: a coarse look at SQL text: session state it may change or pin, read-only SELECTs.
//! - `statements`: the client's named prepared statements, under pgmux-owned names on the servers.
//! - `settings`: the client's startup settings, and the SQL that makes a connection match them.
//! - `check`: the session-state check after a transaction that may have changed session state.
//! - `relay`: moving messages across a borrowed server connection, rewritten where needed.
//! - `replies`: the replies a server owes, and whose they are: when a connection is free.
//! - `aborted`: a client whose server connection is gone, answered until it is back in step.
//! - `told`: the reported parameters (ParameterStatus) the client was told, to tell it what differs.
//! - `io`: socket plumbing for the session: ordered non-blocking writes, reads, the idle timer.

pub mod aborted;
mod active;
mod borrow;
pub mod cancel;
pub mod check;
pub mod classify;
mod goodbye;
pub mod handshake;
pub mod io;
mod lookup;
mod lost;
pub mod negotiate;
pub mod relay;
pub mod replies;
pub mod routing;
pub mod session;
pub mod settings;
pub mod statements;
pub mod told;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::ClientError;
use crate::listener::Endpoint;
use crate::net::{Stream, write_flush};
use crate::state::ProxyState;

/// A client that logged in to the admin console: served by the caller (`admin::console`), as
/// nothing in this module knows the console's commands.
#[derive(Debug)]
pub struct ConsoleClient {
    pub stream: Stream,
    pub login: handshake::ConsoleLogin,
    /// Keeps the connection counted as open in the metrics while the console serves it.
    pub counted: crate::metrics::OpenClient,
}

/// What an accepted connection became once its handshake ended.
pub enum Served {
    /// A client logged in for sessions: the caller runs it (see `Session::run`), which keeps the
    /// connection counted as open until it ends.
    Session(Box<session::Session>, Box<crate::metrics::OpenClient>),
    /// A client of the admin console, greeted.
    Console(ConsoleClient),
    /// The connection is closed (refused, or gone during its handshake).
    Closed,
}

/// Takes one accepted client connection through its handshake: a session's client is handed
/// back ready to run, a client of the admin console once greeted.
pub async fn serve(ctx: Arc<ProxyState>, mut tcp: TcpStream, peer: SocketAddr, endpoint: Endpoint) -> Served {
    let mut open = ctx.metrics.clients.accepted();
    crate::listener::client_socket_options(&tcp);
    // Queued, not refused, past max_handshakes; the wait is pgmux's, so the deadline starts after.
    ctx.handshakes_queued.fetch_add(1, Ordering::Relaxed);
    let turn = take_turn(&ctx, &mut tcp, peer).await;
    ctx.handshakes_queued.fetch_sub(1, Ordering::Relaxed);
    let Some(turn) = turn else {
        return Served::Closed;
    };
    // Encryption and login share one deadline: the client's own time, from admission.
    let limit = ctx.settings.load().startup_timeout;
    let deadline = Instant::now() + limit;
    // The handshake's future (TLS, SCRAM) is boxed: inline it would size the task's allocation
    // for the client's whole life, idle or not. One box for both phases: each is a few kB, and
    // allocations that size cost glibc ~1,000 instructions apiece, once per login.
    let (mut stream, tls, greeted) =
        match Box::pin(negotiate_and_log_in(&ctx, tcp, endpoint, deadline, limit, turn)).await {
            Handshake::Negotiated { stream, tls, greeted } => (stream, tls, greeted),
            Handshake::Refused(HandshakeEnd::Told(err)) => {
                refused(&ctx, peer, &err);
                return Served::Closed;
            }
            Handshake::Refused(end) => {
                tracing::debug!(%peer, reason = ?end, "client left during TLS negotiation");
                return Served::Closed;
            }
        };
    if tls {
        open.encrypted();
    }
    let startup = match greeted {
        Ok(Some(handshake::Greeted::Session(s))) => s,
        Ok(Some(handshake::Greeted::Console(login))) => {
            tracing::info!(%peer, user = %login.user, tls, "admin console session");
            open.setup_succeeded();
            return Served::Console(ConsoleClient { stream, login, counted: open });
        }
        Ok(None) => return Served::Closed,
        Err(HandshakeEnd::Quiet(reason)) => {
            tracing::debug!(%peer, reason, "client left during startup");
            return Served::Closed;
        }
        Err(HandshakeEnd::Told(err)) => {
            refused(&ctx, peer, &err);
            return Served::Closed;
        }
        Err(HandshakeEnd::Error(err)) => {
            refused(&ctx, peer, &err);
            if matches!(err, ClientError::AuthFailed(_)) {
                open.setup_failed_auth();
            }
            if matches!(err, ClientError::AuthFailed(_) | ClientError::AuthProtocol(_)) {
                ctx.addresses.failed(peer.ip(), &ctx.settings.load().addresses);
            }
            let mut buf = BytesMut::new();
            err.write_to(&mut buf, &ctx.metrics.errors);
            let _ = write_flush(&mut stream, &buf).await;
            return Served::Closed;
        }
        Err(HandshakeEnd::ServerError(frame)) => {
            let _ = write_flush(&mut stream, &frame).await;
            return Served::Closed;
        }
    };
    open.setup_succeeded();
    tracing::debug!(%peer, user = %startup.user, database = %startup.database, tls, "client connected");
    Served::Session(Box::new(session::Session::new(ctx, stream, *startup, endpoint, peer)), Box::new(open))
}

/// How a handshake went: TLS negotiation failed, or it succeeded and the login went as `greeted`
/// says (over `stream`, which carries any error still to tell).
enum Handshake {
    Refused(HandshakeEnd),
    Negotiated { stream: Stream, tls: bool, greeted: Result<Option<handshake::Greeted>, HandshakeEnd> },
}

/// Negotiates encryption, then runs the login.
async fn negotiate_and_log_in(
    ctx: &Arc<ProxyState>,
    tcp: TcpStream,
    endpoint: Endpoint,
    deadline: Instant,
    limit: Duration,
    turn: Turn,
) -> Handshake {
    let negotiate::Transport { mut stream, security, pending } =
        match negotiate::run(ctx.tls.clients(), tcp, &ctx.metrics.errors, deadline, limit).await {
            Ok(t) => t,
            Err(end) => return Handshake::Refused(end),
        };
    let tls = security.channel_binding.is_some();
    let greeted = handshake::run(ctx, &mut stream, &security, pending, endpoint, deadline, turn).await;
    Handshake::Negotiated { stream, tls, greeted }
}

/// A client's places for its handshake: one of its address's, then one of `max_handshakes`, both
/// given back once it is authenticated.
#[derive(Debug)]
pub struct Turn {
    _global: tokio::sync::OwnedSemaphorePermit,
    _address: tokio::sync::OwnedSemaphorePermit,
}

/// Waits for the client's turn to start its handshake: first a place among its own address's
/// (`max_handshakes_per_address`, waited for up to `startup_timeout`, else FATAL 53300), then the
/// delay its address earned with failed logins, then a global place. An address flooding pgmux
/// waits in its own queue, without taking global places from other addresses.
async fn take_turn(ctx: &Arc<ProxyState>, tcp: &mut TcpStream, peer: SocketAddr) -> Option<Turn> {
    let (limits, startup_timeout) = {
        let s = ctx.settings.load();
        (s.addresses.clone(), s.startup_timeout)
    };
    let ip = peer.ip();
    let address = match tokio::time::timeout(startup_timeout, ctx.addresses.enter(ip, &limits)).await {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(_) => {
            let err = ClientError::TooManyHandshakesFromAddress(limits.max_handshakes);
            refused(ctx, peer, &err);
            let mut buf = BytesMut::new();
            err.write_to(&mut buf, &ctx.metrics.errors);
            let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&buf)).await;
            return None;
        }
    };
    if let Some((delay, failures)) = ctx.addresses.delay_for(ip, &limits) {
        ctx.metrics.login_throttled.inc();
        if let Some(held_back) = ctx.log_limits.login_throttled.check() {
            tracing::warn!(event = "login_throttled", %peer, failures, delay_ms = delay.as_millis() as u64, held_back, "delaying a login from an address with failed logins");
        }
        tokio::time::sleep(delay).await;
    }
    let global = ctx.handshakes.clone().acquire_owned().await.ok()?;
    Some(Turn { _global: global, _address: address })
}

/// Logs (rate-limited) a client pgmux refused or timed out at startup.
fn refused(ctx: &ProxyState, peer: SocketAddr, err: &ClientError) {
    if matches!(err, ClientError::StartupTimeout(_)) {
        if let Some(held_back) = ctx.log_limits.client_timed_out.check() {
            tracing::info!(event = "client_timed_out", %peer, error = %err, sqlstate = err.sqlstate(), held_back, "client login timed out");
        }
    } else if let Some(held_back) = ctx.log_limits.client_rejected.check() {
        tracing::info!(event = "client_rejected", %peer, error = %err, sqlstate = err.sqlstate(), held_back, "client rejected");
    }
}

/// Why a handshake did not produce a session.
#[derive(Debug)]
pub enum HandshakeEnd {
    /// Nothing to tell the client (it left, or never spoke the protocol).
    Quiet(&'static str),
    /// Tell the client this, then close.
    Error(ClientError),
    /// Already told (or, mid-TLS-handshake, impossible to tell): only log it.
    Told(ClientError),
    /// A server's ErrorResponse to pass on, then close.
    ServerError(bytes::Bytes),
}

impl From<ClientError> for HandshakeEnd {
    fn from(e: ClientError) -> Self {
        HandshakeEnd::Error(e)
    }
}
