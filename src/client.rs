//! One client connection, from its first byte to its close: handshake, then the session that relays
//! its transactions over borrowed server connections.

pub mod aborted;
pub mod addresses;
pub mod cancel;
pub mod classify;
pub mod collector;
pub mod handshake;
pub mod io;
mod lookup;
pub mod negotiate;
pub mod pause;
pub mod pins;
pub mod relay;
pub mod replies;
pub mod routing;
pub mod session;
pub mod settings;
pub mod statements;
pub mod told;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::UserDirectory;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::ClientError;
use crate::metrics::Metrics;
use crate::net::Stream;
use crate::tls::TlsSettings;
use cancel::CancelRegistry;

/// Transaction or session pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Transaction,
    Session,
}

/// Which listener a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `listen`: transactions go to the primary, explicitly read-only ones to a replica.
    Writer,
    /// `reader_listen`: every transaction goes to a replica (the primary if none is usable).
    Reader,
}

/// How clients authenticate to pgmux.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ScramSha256,
    Md5,
}

/// Client-facing settings, from the config.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub mode: PoolMode,
    pub auth: AuthMethod,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub startup_timeout: Duration,
    /// Clients in their handshake at once (fixed at start: sizes `ClientCtx::handshakes`).
    pub max_handshakes: usize,
    pub borrow_timeout: Duration,
    /// After a write, a client's reads go only to replicas that replayed it.
    pub read_your_writes: bool,
    /// Single autocommit SELECTs proven read-only go to replicas.
    pub autocommit_reads_to_replica: bool,
    /// Close (rather than error once and continue) a client whose pinned state died with its server.
    pub close_on_lost_session_state: bool,
    /// Largest Query/Parse/Bind/FunctionCall/CopyData message from a client.
    pub max_message_size: usize,
    /// Named prepared statements per client.
    pub max_prepared_statements: usize,
    /// Idle time inside a transaction before the client is closed (FATAL 25P03).
    pub idle_transaction_timeout: Option<Duration>,
    /// Per-source-address handshake places and failed-login delays.
    pub addresses: addresses::AddressLimits,
}

/// What every client task shares.
#[derive(Debug)]
pub struct ClientCtx {
    /// Swapped whole on reload; a session reads it once per transaction.
    pub settings: arc_swap::ArcSwap<ClientSettings>,
    /// Shared with the cluster (server logins); swapped whole on reload.
    pub users: Arc<arc_swap::ArcSwap<UserDirectory>>,
    pub cluster: Arc<Cluster>,
    pub cancels: Arc<CancelRegistry>,
    pub pin_stats: Arc<pins::PinStats>,
    /// Rate limits for log events that can storm.
    pub log_limits: crate::log_limit::LogLimits,
    /// The proxy's metrics registry and hot-path handles (scraped at GET /metrics).
    pub metrics: Metrics,
    /// Read-only verdicts of autocommit queries, by text hash (bounded; a miss costs ~1 µs).
    pub select_verdicts: std::sync::Mutex<std::collections::HashMap<u64, bool>>,
    /// Set on SIGTERM (or the admin console's SHUTDOWN): finish the current transaction, then leave.
    pub draining: CancellationToken,
    /// PAUSE / RESUME: every borrow of a server connection passes it.
    pub pause: pause::PauseGate,
    /// The configuration in force (SHOW CONFIG, admin_users).
    pub config: arc_swap::ArcSwap<Config>,
    /// The file the config came from, re-read on reload (None: built in memory).
    pub config_path: std::sync::Mutex<Option<std::path::PathBuf>>,
    /// Stops the background tasks (prober, reload signal) when the proxy stops.
    pub stop_tasks: CancellationToken,
    /// pgmux's certificate and TLS modes (swapped on reload; sessions keep what they started with).
    pub tls: Arc<TlsSettings>,
    connected: AtomicUsize,
    /// One permit per client in its TLS + startup + authentication (`clients.max_handshakes`);
    /// the rest wait for one after accept.
    handshakes: Arc<tokio::sync::Semaphore>,
    /// Clients accepted and waiting for a handshake permit.
    handshakes_queued: AtomicUsize,
    /// Per-source-address handshake places and failed logins.
    pub addresses: addresses::Addresses,
    /// The main listener is accepting clients (for readiness).
    accepting: AtomicBool,
}

impl ClientCtx {
    pub fn new(
        settings: ClientSettings,
        users: Arc<arc_swap::ArcSwap<UserDirectory>>,
        cluster: Arc<Cluster>,
        draining: CancellationToken,
        config: Arc<Config>,
        tls: Arc<TlsSettings>,
    ) -> ClientCtx {
        let cancels = Arc::new(CancelRegistry::default());
        let pin_stats = Arc::new(pins::PinStats::default());
        let metrics = Metrics::new();
        metrics.register(crate::cluster::collector::ClusterCollector::new(cluster.clone()));
        metrics.register(collector::ClientCollector::new(
            cluster.clone(),
            cancels.clone(),
            pin_stats.clone(),
            metrics.errors.clone(),
        ));
        let handshakes = Arc::new(tokio::sync::Semaphore::new(settings.max_handshakes.max(1)));
        ClientCtx {
            handshakes,
            handshakes_queued: AtomicUsize::new(0),
            addresses: Default::default(),
            settings: arc_swap::ArcSwap::from_pointee(settings),
            users,
            cluster,
            cancels,
            pin_stats,
            log_limits: Default::default(),
            metrics,
            select_verdicts: Default::default(),
            draining,
            pause: pause::PauseGate::default(),
            config: arc_swap::ArcSwap::new(config),
            config_path: Default::default(),
            stop_tasks: CancellationToken::new(),
            tls,
            connected: AtomicUsize::new(0),
            accepting: AtomicBool::new(false),
        }
    }

    /// Whether the main listener accepts clients now (false before it starts and once draining).
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    pub(crate) fn set_accepting(&self, on: bool) {
        self.accepting.store(on, Ordering::Relaxed);
    }

    /// Whether query text `sql` is a provably read-only SELECT, cached by text.
    pub fn select_read_only(&self, sql: &[u8]) -> bool {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let key = BuildHasherDefault::<DefaultHasher>::default().hash_one(sql);
        if let Some(v) = self.select_verdicts.lock().ok().and_then(|m| m.get(&key).copied()) {
            return v;
        }
        let verdict = classify::select_is_read_only(sql);
        if let Ok(mut m) = self.select_verdicts.lock() {
            if m.len() >= 10_000 {
                m.clear();
            }
            m.insert(key, verdict);
        }
        verdict
    }

    /// Clients accepted and waiting for their turn to start a handshake (`clients.max_handshakes`).
    pub fn handshakes_queued(&self) -> usize {
        self.handshakes_queued.load(Ordering::Relaxed)
    }

    /// Clients past their handshake right now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    fn admit(self: &Arc<Self>) -> Result<Admitted, ClientError> {
        let n = self.connected.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self.clone());
        if n >= self.settings.load().max_connections {
            return Err(ClientError::TooManyClients);
        }
        Ok(admitted)
    }
}

/// Counts a client against `max_connections` while it lives.
#[derive(Debug)]
pub struct Admitted(Arc<ClientCtx>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client that logged in to the admin console: served by the caller (`admin::console`), as
/// nothing in this module knows the console's commands.
#[derive(Debug)]
pub struct ConsoleClient {
    pub stream: Stream,
    pub login: handshake::ConsoleLogin,
    /// Keeps the connection counted as open in the metrics while the console serves it.
    pub counted: crate::metrics::OpenClient,
}

/// Serves one accepted client connection until it closes; a client of the admin console is handed
/// back once greeted.
pub async fn serve(
    ctx: Arc<ClientCtx>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    endpoint: Endpoint,
) -> Option<ConsoleClient> {
    let mut open = ctx.metrics.clients.accepted();
    crate::listener::client_socket_options(&tcp);
    // Queued, not refused, past max_handshakes; the wait is pgmux's, so the deadline starts after.
    ctx.handshakes_queued.fetch_add(1, Ordering::Relaxed);
    let turn = take_turn(&ctx, &mut tcp, peer).await;
    ctx.handshakes_queued.fetch_sub(1, Ordering::Relaxed);
    let turn = turn?;
    // Encryption and login share one deadline: the client's own time, from admission.
    let limit = ctx.settings.load().startup_timeout;
    let deadline = Instant::now() + limit;
    // The handshake's futures (TLS, SCRAM) are boxed: inline they would size the task's
    // allocation for the client's whole life, idle or not.
    let negotiated = Box::pin(negotiate::run(ctx.tls.clients(), tcp, &ctx.metrics.errors, deadline, limit)).await;
    let transport = match negotiated {
        Ok(t) => t,
        Err(HandshakeEnd::Told(err)) => {
            refused(&ctx, peer, &err);
            return None;
        }
        Err(end) => {
            tracing::debug!(%peer, reason = ?end, "client left during TLS negotiation");
            return None;
        }
    };
    let negotiate::Transport { mut stream, security, pending } = transport;
    let tls = security.channel_binding.is_some();
    if tls {
        open.encrypted();
    }
    let greeted = Box::pin(handshake::run(&ctx, &mut stream, &security, pending, endpoint, deadline, turn)).await;
    let startup = match greeted {
        Ok(Some(handshake::Greeted::Session(s))) => s,
        Ok(Some(handshake::Greeted::Console(login))) => {
            tracing::info!(%peer, user = %login.user, tls, "admin console session");
            open.setup_succeeded();
            return Some(ConsoleClient { stream, login, counted: open });
        }
        Ok(None) => return None,
        Err(HandshakeEnd::Quiet(reason)) => {
            tracing::debug!(%peer, reason, "client left during startup");
            return None;
        }
        Err(HandshakeEnd::Told(err)) => {
            refused(&ctx, peer, &err);
            return None;
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
            let _ = stream.write_all(&buf).await;
            return None;
        }
        Err(HandshakeEnd::ServerError(frame)) => {
            let _ = stream.write_all(&frame).await;
            return None;
        }
    };
    open.setup_succeeded();
    tracing::debug!(%peer, user = %startup.user, database = %startup.database, tls, "client connected");
    session::Session::new(ctx, stream, *startup, endpoint).run().await;
    drop(open);
    None
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
async fn take_turn(ctx: &Arc<ClientCtx>, tcp: &mut TcpStream, peer: SocketAddr) -> Option<Turn> {
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
fn refused(ctx: &ClientCtx, peer: SocketAddr, err: &ClientError) {
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
