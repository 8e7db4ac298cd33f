//! A client's startup: protocol negotiation, authentication against the configured users, and the
//! greeting (ParameterStatus, BackendKeyData): from what the pool remembers, or from a first server
//! connection that proves the database, user and settings.

use std::sync::Arc;

use bytes::BytesMut;
use rand::RngExt;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::cancel::send_cancel;
use super::negotiate::Security;
use super::{HandshakeEnd, settings};
use crate::auth::{ServerSecret, md5, scram};
use crate::backend::BackendError;
use crate::cluster::ClusterError;
use crate::error::ClientError;
use crate::listener::Endpoint;
use crate::net::{Stream, write_flush};
use crate::pool::{Greeting, Pool, PoolError, Pooled, WaitTimer};
use crate::protocol::build::{self, AuthRequest};
use crate::protocol::frame::{Frame, split_frame};
use crate::protocol::messages::{PasswordMessage, SaslInitialResponse};
use crate::protocol::startup::{self, MAX_STARTUP_LEN, StartupPacket};
use crate::protocol::{TxStatus, ftag};
use crate::state::pause::Held;
use crate::state::registry::CancelKey;
use crate::state::settings::{AuthMethod, PoolMode};
use crate::state::{Admitted, ProxyState, SettingList};

/// A client that finished its startup.
#[derive(Debug)]
pub struct Startup {
    pub user: String,
    pub database: String,
    pub settings: SettingList,
    pub key: CancelKey,
    /// Where the greeting came from.
    pub first: First,
    /// Bytes the client sent after its startup, not yet handled.
    pub pending: BytesMut,
    pub(crate) admitted: Admitted,
}

/// What a client was greeted from.
#[derive(Debug)]
pub enum First {
    /// A server connection borrowed for the greeting; kept in session mode.
    Borrowed(Pooled),
    /// What `pool` remembered of a connection that carried the same settings (transaction mode).
    Remembered { pool: Arc<Pool>, greeting: Greeting },
}

/// The virtual database of the admin console.
pub const CONSOLE_DATABASE: &str = "pgmux";

/// A client that logged in to the admin console (database `pgmux`) as one of `admin_users`, and
/// was greeted. It never borrows a server connection.
#[derive(Debug)]
pub struct ConsoleLogin {
    pub user: String,
    pub key: CancelKey,
    /// Bytes the client sent after its startup, not yet handled.
    pub pending: BytesMut,
    pub(crate) admitted: Admitted,
}

/// Where a client goes after its startup.
#[derive(Debug)]
pub enum Greeted {
    Session(Box<Startup>),
    Console(ConsoleLogin),
}

type Result<T> = std::result::Result<T, HandshakeEnd>;

/// Runs the startup: the packet exchange and authentication until `deadline` (the end of
/// `clients.startup_timeout`, FATAL 08P01 past it), then the greeting, whose wait for a server
/// connection is not the client's doing and is bounded by `pool.borrow_timeout` instead. `turn`:
/// this client's place among `clients.max_handshakes`, given back once it is authenticated. `pending`: client bytes already read. `Ok(None)`: a cancel
/// request, handled.
pub async fn run(
    ctx: &Arc<ProxyState>,
    stream: &mut Stream,
    security: &Security,
    pending: BytesMut,
    endpoint: Endpoint,
    deadline: Instant,
    turn: super::Turn,
) -> Result<Option<Greeted>> {
    let login = tokio::time::timeout_at(deadline, login(ctx, stream, security, pending)).await;
    // The next client's handshake may start while this one waits for a server connection.
    drop(turn);
    let login = match login {
        Ok(Ok(Some(login))) => login,
        Ok(Ok(None)) => return Ok(None),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ClientError::StartupTimeout(ctx.settings.load().startup_timeout).into()),
    };
    if login.database == CONSOLE_DATABASE {
        return greet_console(ctx, stream, login).await.map(|c| Some(Greeted::Console(c)));
    }
    greet(ctx, stream, login, endpoint).await.map(|s| Some(Greeted::Session(Box::new(s))))
}

/// What the admin console reports about itself at startup (PgBouncer's console does the same).
fn console_parameters(user: &str) -> [(&'static str, &str); 10] {
    [
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("IntervalStyle", "postgres"),
        ("is_superuser", "on"),
        ("server_encoding", "UTF8"),
        // Clients read the major version from the leading number.
        ("server_version", concat!("15.0 (pgmux ", env!("CARGO_PKG_VERSION"), ")")),
        ("session_authorization", user),
        ("standard_conforming_strings", "on"),
    ]
}

/// Admits one of `admin_users` to the console (anyone else, authenticated like any client, is
/// refused after authentication, as PostgreSQL refuses a database a role may not connect to).
async fn greet_console(ctx: &ProxyState, stream: &mut Stream, login: Login) -> Result<ConsoleLogin> {
    let Login { user, buf, mut out, admitted, .. } = login;
    if !ctx.config.load().admin_users.contains(&user) {
        send(stream, &mut out).await?;
        return Err(ClientError::ConsoleNotAllowed(user).into());
    }
    let key = ctx.cancels.register();
    key.slot.set_identity(&user, CONSOLE_DATABASE);
    for (name, value) in console_parameters(&user) {
        build::parameter_status(&mut out, name, value);
    }
    build::parameter_status(&mut out, "TimeZone", "UTC");
    build::backend_key_data(&mut out, key.pid, key.secret);
    build::ready_for_query(&mut out, TxStatus::Idle);
    send(stream, &mut out).await?;
    Ok(ConsoleLogin { user, key, pending: buf, admitted })
}

/// A client that proved who it is.
struct Login {
    user: String,
    database: String,
    settings: SettingList,
    buf: BytesMut,
    out: BytesMut,
    admitted: Admitted,
}

async fn login(
    ctx: &Arc<ProxyState>,
    stream: &mut Stream,
    security: &Security,
    pending: BytesMut,
) -> Result<Option<Login>> {
    let mut buf = pending;
    buf.reserve(1024);
    let (minor, params, unsupported) = loop {
        let packet = read_startup_packet(stream, &mut buf).await?;
        match startup::parse(&packet).map_err(|e| ClientError::Protocol(e.to_string()))? {
            StartupPacket::Ssl | StartupPacket::GssEnc => {
                // TLS was settled before the first packet (negotiate): a second request is declined.
                write_flush(stream, b"N").await.map_err(|_| HandshakeEnd::Quiet("write failed"))?;
            }
            StartupPacket::Cancel { pid, secret } => {
                if let Some((target, permit)) = ctx.cancels.lookup(pid, secret)
                    && let Err(e) = send_cancel(&target, permit, &ctx.tls.servers()).await
                {
                    tracing::warn!(server = %target.server, error = %e, "could not forward cancel request");
                }
                return Ok(None);
            }
            StartupPacket::Startup { .. } if security.tls_required && security.channel_binding.is_none() => {
                return Err(ClientError::TlsRequired.into());
            }
            StartupPacket::Startup { minor, params, unsupported_options } => {
                break (minor, params, unsupported_options);
            }
        }
    };
    let admitted = ctx.admit()?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let user = get("user").unwrap_or_default();
    let database = get("database").filter(|d| !d.is_empty()).unwrap_or_else(|| user.clone());
    let settings = ctx.setting_lists.intern(settings::from_startup(&params)?);

    // Room for the authentication requests and a typical greeting without regrowing.
    let mut out = BytesMut::with_capacity(1024);
    if minor > 0 || !unsupported.is_empty() {
        build::negotiate_protocol_version(&mut out, 0, &unsupported);
    }
    let binding = security.channel_binding.as_deref();
    authenticate(ctx, stream, &mut buf, &mut out, &user, binding).await?;
    build::authentication(&mut out, AuthRequest::Ok);
    Ok(Some(Login { user, database, settings, buf, out, admitted }))
}

/// Greets the client from what its pool remembers of the same settings (transaction mode), else
/// from a first server connection that proves the database exists and takes the settings; then
/// sends ParameterStatus, BackendKeyData and ReadyForQuery.
async fn greet(ctx: &Arc<ProxyState>, stream: &mut Stream, login: Login, endpoint: Endpoint) -> Result<Startup> {
    let Login { user, database, settings, buf, mut out, admitted } = login;
    let first = match remembered(ctx, &database, &user, &settings, endpoint) {
        Some(_) if ctx.draining.is_cancelled() => return Err(ClientError::Shutdown.into()),
        Some(first) => first,
        None => First::Borrowed(greeting_backend(ctx, &database, &user, &settings, endpoint).await?),
    };
    match &first {
        First::Borrowed(backend) => build::parameter_statuses(&mut out, backend.params.iter()),
        First::Remembered { greeting, .. } => out.extend_from_slice(&greeting.encoded),
    }
    let key = ctx.cancels.register();
    build::backend_key_data(&mut out, key.pid, key.secret);
    build::ready_for_query(&mut out, TxStatus::Idle);
    write_flush(stream, &out).await.map_err(|_| HandshakeEnd::Quiet("write failed"))?;
    Ok(Startup { user, database, settings, key, first, pending: buf, admitted })
}

/// A greeting the pool the login would borrow from remembers for these settings. Only in
/// transaction mode: a session-mode client needs its own connection at once anyway.
fn remembered(
    ctx: &ProxyState,
    database: &str,
    user: &str,
    settings: &[(String, String)],
    endpoint: Endpoint,
) -> Option<First> {
    if ctx.settings.load().mode != PoolMode::Transaction {
        return None;
    }
    let pool = ctx.cluster.login_pool(endpoint == Endpoint::Reader, database, user)?;
    let greeting = pool.greeting(settings)?;
    // Remembered while the server was a replica (it was promoted since): a writer login is
    // greeted by a connection that says what the server is now.
    if endpoint != Endpoint::Reader && greeting.params.get("in_hot_standby").is_some_and(|v| v == "on") {
        return None;
    }
    Some(First::Remembered { pool, greeting })
}

/// Borrows a first server connection, gives it the client's settings (a setting the server
/// refuses fails the login with its error), and has its pool remember what it reports.
async fn greeting_backend(
    ctx: &ProxyState,
    database: &str,
    user: &str,
    settings: &SettingList,
    endpoint: Endpoint,
) -> Result<Pooled> {
    let mut backend = first_backend(ctx, database, user, endpoint).await?;
    if let Some(sql) = settings::sql_to_apply(&backend.applied, settings) {
        let err = backend.simple_query(&sql).await.map_err(server_lost)?;
        if let Some(frame) = err {
            backend.release();
            return Err(HandshakeEnd::ServerError(frame.bytes));
        }
        backend.applied = settings.clone();
    }
    backend.pool().remember_greeting(settings, &backend);
    Ok(backend)
}

fn server_lost(e: BackendError) -> HandshakeEnd {
    HandshakeEnd::Error(ClientError::StartupFailed(e.to_string()))
}

/// The first server connection proves the database exists and the settings are valid (a reader's
/// comes from a replica, so readers can log in while the primary is away).
async fn first_backend(ctx: &ProxyState, database: &str, user: &str, endpoint: Endpoint) -> Result<Pooled> {
    let timeout = ctx.settings.load().borrow_timeout;
    // While paused, logins wait too (a login borrows, and a paused server may be restarting).
    let left = match ctx.pause.enter(timeout, &ctx.draining).await {
        Ok(left) => left,
        Err(Held::TimedOut) => return Err(ClientError::LoginBorrowTimeout(timeout).into()),
        Err(Held::ShuttingDown) => return Err(ClientError::Shutdown.into()),
    };
    let timer = &mut WaitTimer::default();
    let borrowed = match endpoint {
        Endpoint::Writer => ctx.cluster.checkout_primary(None, None, database, user, left, timer).await,
        Endpoint::Reader => ctx.cluster.checkout_replica(database, user, left, None, timer).await,
    };
    ctx.pause.leave();
    match borrowed {
        Ok(b) => Ok(b),
        Err(ClusterError::Pool(PoolError::Connect(BackendError::Server { frame, .. }))) => {
            Err(HandshakeEnd::ServerError(frame.bytes))
        }
        Err(ClusterError::Pool(PoolError::Timeout)) => Err(ClientError::LoginBorrowTimeout(timeout).into()),
        Err(ClusterError::Pool(PoolError::Connect(e @ BackendError::AuthRefused { .. }))) => {
            Err(ClientError::ServerAuthRefused(e.to_string()).into())
        }
        Err(ClusterError::Pool(PoolError::Connect(e @ BackendError::PassThrough { .. }))) => {
            // A verifier `auth.query` found may be stale (the password changed): asked again next time.
            ctx.users.load().forget_found(user);
            Err(ClientError::ServerAuthRefused(e.to_string()).into())
        }
        Err(e) => Err(HandshakeEnd::Error(ClientError::StartupFailed(e.to_string()))),
    }
}

/// Reads one length-prefixed startup packet (no tag byte).
async fn read_startup_packet(stream: &mut Stream, buf: &mut BytesMut) -> Result<BytesMut> {
    loop {
        if let Some(len) = startup::packet_len(buf).map_err(|e| ClientError::Protocol(e.to_string()))?
            && buf.len() >= len
        {
            return Ok(buf.split_to(len));
        }
        let n = stream.read_buf(buf).await.map_err(|_| HandshakeEnd::Quiet("read failed"))?;
        if n == 0 {
            return Err(HandshakeEnd::Quiet("closed during startup"));
        }
    }
}

/// Reads one password-phase message (`p`); anything else is a protocol violation.
async fn read_password_message(stream: &mut Stream, buf: &mut BytesMut) -> Result<Frame> {
    loop {
        match split_frame(buf, MAX_STARTUP_LEN).map_err(|e| ClientError::Protocol(e.to_string()))? {
            Some(f) if f.tag == ftag::PASSWORD => return Ok(f),
            Some(f) if f.tag == ftag::TERMINATE => {
                return Err(HandshakeEnd::Quiet("terminated during auth"));
            }
            Some(f) => {
                return Err(ClientError::Protocol(format!(
                    "expected password response, got message type {:?}",
                    f.tag as char
                ))
                .into());
            }
            None => {}
        }
        let n = stream.read_buf(buf).await.map_err(|_| HandshakeEnd::Quiet("read failed"))?;
        if n == 0 {
            return Err(HandshakeEnd::Quiet("closed during authentication"));
        }
    }
}

async fn send(stream: &mut Stream, out: &mut BytesMut) -> Result<()> {
    write_flush(stream, out).await.map_err(|_| HandshakeEnd::Quiet("write failed"))?;
    out.clear();
    Ok(())
}

async fn authenticate(
    ctx: &ProxyState,
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    user: &str,
    channel_binding: Option<&[u8]>,
) -> Result<()> {
    let secret = super::lookup::user_secret(ctx, user).await;
    let users = ctx.users.load();
    let ok = match ctx.settings.load().auth {
        AuthMethod::ScramSha256 => {
            // An unknown user goes through the same steps, against a decoy stable per name (four
            // HMACs: a few microseconds, far below a login's network round trips).
            let decoy;
            let verifier = match &secret {
                Some(s) => &s.scram,
                None => {
                    decoy = users.decoy_verifier(user);
                    &decoy
                }
            };
            match scram_exchange(stream, buf, out, verifier, channel_binding).await? {
                Some(key) => {
                    // Pass-through: learnt before this login goes on to open (or borrow) a server
                    // connection as this user, which needs it.
                    if let Some(ServerSecret::PassThrough(p)) = secret.as_ref().map(|s| &s.server) {
                        p.remember(key);
                    }
                    true
                }
                None => false,
            }
        }
        AuthMethod::Md5 => {
            // A user given by its SCRAM verifier has no password: the config refuses
            // `auth_method: md5` then. An unknown user is checked against a decoy password.
            let password = match secret.as_ref().and_then(|s| s.server.password()) {
                Some(p) => p.to_string(),
                None => users.decoy_password(user),
            };
            // The challenge salt is fresh per attempt for every user (a stable one would let a
            // recorded response be replayed); it says nothing about whether the user exists.
            let salt: [u8; 4] = rand::rng().random();
            build::authentication(out, AuthRequest::Md5 { salt });
            send(stream, out).await?;
            let frame = read_password_message(stream, buf).await?;
            let response = PasswordMessage::parse(frame.body()).map(|p| p.password).unwrap_or_default();
            md5::verify(user, &password, salt, response)
        }
    };
    if !ok && secret.is_some() && !users.is_configured(user) {
        // Perhaps the password changed on the server: the next attempt asks it again.
        users.forget_found(user);
    }
    if ok && secret.is_some() { Ok(()) } else { Err(ClientError::AuthFailed(user.to_string()).into()) }
}

/// SCRAM-SHA-256, and over TLS SCRAM-SHA-256-PLUS too (bound to pgmux's certificate,
/// `channel_binding`), offered first as PostgreSQL does. Returns the ClientKey the client's proof
/// revealed, or None for a wrong proof.
async fn scram_exchange(
    stream: &mut Stream,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    verifier: &scram::Verifier,
    channel_binding: Option<&[u8]>,
) -> Result<Option<scram::ClientKey>> {
    let mechanisms: &[&str] =
        if channel_binding.is_some() { &[scram::MECHANISM_PLUS, scram::MECHANISM] } else { &[scram::MECHANISM] };
    build::authentication(out, AuthRequest::Sasl { mechanisms });
    send(stream, out).await?;

    let frame = read_password_message(stream, buf).await?;
    let (chosen, client_first) = parse_sasl_initial(frame.body(), channel_binding.is_some())?;
    let binding = scram::Binding { offered: channel_binding, chosen };
    let (exchange, server_first) = scram::server_first(verifier, client_first, binding).map_err(scram_err)?;
    build::authentication(out, AuthRequest::SaslContinue(server_first.as_bytes()));
    send(stream, out).await?;

    let frame = read_password_message(stream, buf).await?;
    match exchange.server_final(frame.body()) {
        Ok(proven) => {
            build::authentication(out, AuthRequest::SaslFinal(proven.server_final.as_bytes()));
            Ok(Some(proven.client_key))
        }
        Err(scram::ScramError::BadProof) => Ok(None),
        Err(e) => Err(scram_err(e)),
    }
}

fn scram_err(e: scram::ScramError) -> HandshakeEnd {
    match e {
        scram::ScramError::Protocol(m) => ClientError::AuthProtocol(format!("malformed SCRAM message: {m}")).into(),
        scram::ScramError::BadProof => HandshakeEnd::Error(ClientError::AuthProtocol("bad proof".into())),
    }
}

/// SASLInitialResponse body: mechanism name, then an Int32 length and that many bytes. Returns
/// whether the client chose SCRAM-SHA-256-PLUS (only valid when `plus_offered`), and the data.
fn parse_sasl_initial(body: &[u8], plus_offered: bool) -> Result<(bool, &[u8])> {
    let bad = |m: &str| HandshakeEnd::Error(ClientError::AuthProtocol(m.to_string()));
    let initial = SaslInitialResponse::parse(body).ok_or_else(|| bad("malformed SASL initial response"))?;
    let plus = match initial.mechanism {
        m if m == scram::MECHANISM.as_bytes() => false,
        m if m == scram::MECHANISM_PLUS.as_bytes() && plus_offered => true,
        _ => return Err(bad("client selected an invalid SASL authentication mechanism")),
    };
    let data = initial.data.ok_or_else(|| bad("malformed SASL initial response"))?;
    Ok((plus, data))
}
