//! One connection from pgmux to a PostgreSQL server: connect, log in, and the few exchanges pgmux
//! runs on it by itself. Relaying client traffic over it is the client module's job.

pub mod cancel;
pub mod prepared;
pub mod tls;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::AsyncReadExt;

use tokio::net::TcpStream;

use crate::auth::{ServerSecret, scram};
use crate::config::{ServerAuth, ServerAuthMethod};
use crate::net::{ReadHalf, WriteHalf};
use crate::protocol::frame::{Frame, MAX_MESSAGE_LEN, split_frame};
use crate::protocol::messages::{
    Authentication, BackendKeyData, DataRow, ErrorResponse, ParameterStatus, ReadyForQuery,
};
use crate::protocol::{TxStatus, btag, build, field, ftag};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{server}: {source}")]
    Io {
        server: Arc<str>,
        #[source]
        source: io::Error,
    },
    #[error("{server}: timed out")]
    Timeout { server: Arc<str> },
    /// The server answered with an ErrorResponse; `frame` is passed to the client as it is.
    #[error("{server}: {message}")]
    Server { server: Arc<str>, code: String, message: String, frame: Frame },
    #[error("{server}: protocol error: {detail}")]
    Protocol { server: Arc<str>, detail: String },
    /// TLS was required and could not be set up (refused, or the certificate failed verification).
    #[error("{server}: TLS: {detail}")]
    Tls { server: Arc<str>, detail: String },
    /// The server asked for an authentication method `pool.server_auth` does not allow.
    #[error(
        "{server}: the server asked for {method} authentication{plain}, which pool.server_auth does not allow (allowed: {allowed})",
        method = method.name(),
        plain = if *over_tls { "" } else { " over a connection without TLS" }
    )]
    AuthRefused { server: Arc<str>, method: ServerAuthMethod, over_tls: bool, allowed: String },
    /// A user given by its SCRAM verifier (SCRAM pass-through) cannot answer this server.
    #[error("{server}: user {user} is configured by its SCRAM verifier: {reason}")]
    PassThrough { server: Arc<str>, user: String, reason: PassThroughError },
}

/// Why a login with SCRAM pass-through failed.
#[derive(Debug, thiserror::Error)]
pub enum PassThroughError {
    #[error("no client of this user has logged in with SCRAM yet, so pgmux has no key to log in with")]
    NoKeyYet,
    #[error("the server asked for {} authentication, which needs the password pgmux does not have", .0.name())]
    NeedsPassword(ServerAuthMethod),
    #[error(transparent)]
    Scram(#[from] scram::KeyClientError),
}

/// Silence after which a client socket's keepalive probes start.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// TCP keepalive for every socket pgmux holds: a peer that vanished without a FIN is noticed in
/// about a minute and a half instead of the kernel's two hours.
pub fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(Duration::from_secs(10)).with_retries(3)
}

/// Keepalive for server sockets: tighter, since a silent server holds up its clients' transactions.
fn server_keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5))
        .with_retries(3)
}

/// How long data sent to a server may stay unacknowledged before the socket fails
/// (TCP_USER_TIMEOUT): a server that vanished (network partition, dead host) is noticed by the
/// first statement sent to it, not after the kernel's retransmissions give up (~15 min).
const SERVER_USER_TIMEOUT: Duration = Duration::from_secs(20);

/// The SCRAM client of one server login.
enum ScramClient {
    Password(ScramSha256),
    Keys(scram::KeyClient),
}

impl ScramClient {
    fn first(&self) -> Vec<u8> {
        match self {
            ScramClient::Password(s) => s.message().to_vec(),
            ScramClient::Keys(k) => k.client_first().into_bytes(),
        }
    }
}

/// Who to log in as, where.
#[derive(Debug, Clone)]
pub struct LoginParams {
    pub user: String,
    /// A password, or pass-through (see `auth::PassThrough`).
    pub secret: ServerSecret,
    pub database: String,
    pub connect_timeout: Duration,
    pub init_query: String,
    /// `server_tls`, read at each connect (a reload applies to new connections).
    pub tls: Arc<crate::tls::TlsSettings>,
    /// `pool.server_auth`: the authentication requests pgmux answers.
    pub server_auth: ServerAuth,
}

/// A slot for what a borrower keeps with a connection between loans, typed by the borrower (this
/// layer does not know its types).
pub type Spare = Option<Box<dyn std::any::Any + Send + Sync>>;

/// A logged-in server connection.
#[derive(Debug)]
pub struct BackendConn {
    /// The socket's halves: reading and writing wait independently in the relay.
    pub rd: ReadHalf,
    pub wr: WriteHalf,
    /// Bytes read from the server and not yet handled.
    pub rbuf: BytesMut,
    /// Empty between loans: the buffer a borrower collects client bytes for this server in, kept
    /// so a transaction does not allocate one (bounded: see `keep_out_buffer`).
    pub wbuf: BytesMut,
    /// Storage a borrower keeps with the connection between loans (its reply queue's: see
    /// `client::replies`), so a transaction does not allocate it.
    pub spare: Spare,
    pub server: Arc<str>,
    pub pid: i32,
    pub secret: i32,
    /// Latest value of every parameter the server reported (ParameterStatus).
    /// Shared (copy on write) with every client told them: thousands of idle clients hold one copy.
    pub params: std::sync::Arc<HashMap<String, String>>,
    /// Counts ParameterStatus messages noted (a client that saw none since it was told needs no update).
    pub params_version: u64,
    /// An order-independent digest of `params` (XOR of each entry's hash).
    pub params_digest: u64,
    /// Client startup settings pgmux applied with set_config, sorted by name (the client's own
    /// list: see `state::SettingLists`).
    pub applied: Arc<[(String, String)]>,
    /// The server's latest `in_hot_standby` report (checked on every borrow, so kept decoded).
    standby: Option<bool>,
    /// pgmux-named prepared statements that exist on this connection.
    pub statements: prepared::ServerStatements,
    /// Shuts the socket down from elsewhere (see `Pool::retire`).
    pub cutter: Arc<socket2::Socket>,
    pub created: Instant,
    /// The pool generation this connection was opened in (see `Pool::retire`).
    pub generation: u64,
    /// The connection runs over TLS (`server_tls`).
    pub tls: bool,
    pub last_used: Instant,
    /// Cancels in flight against this connection (see `cancel`): it is lent again only once they
    /// are done.
    pub cancels: cancel::CancelGate,
    /// The connection as a cancel names it, with its holder (built on the first loan and handed
    /// to `enrol` then: the client registry finds cancels' connections among those).
    target: Option<Arc<cancel::CancelTarget>>,
}

impl BackendConn {
    /// The connection as a cancel names it (see `target`).
    pub fn cancel_target(&mut self, enrol: impl FnOnce(&Arc<cancel::CancelTarget>)) -> &cancel::CancelTarget {
        self.target.get_or_insert_with(|| {
            let t =
                Arc::new(cancel::CancelTarget::new(self.server.clone(), self.pid, self.secret, self.cancels.clone()));
            enrol(&t);
            t
        })
    }

    /// No client holds the connection any more (see `cancel`, rule 1).
    pub fn let_go(&self) {
        if let Some(t) = &self.target {
            t.let_go();
        }
    }

    /// Takes back a borrower's emptied output buffer unless a large transfer grew it.
    pub fn keep_out_buffer(&mut self, mut buf: BytesMut) {
        if buf.capacity() <= 16 * 1024 {
            buf.clear();
            self.wbuf = buf;
        }
    }

    /// Connects to `server` and logs in; runs `init_query` if set.
    pub async fn connect(server: Arc<str>, login: &LoginParams) -> Result<BackendConn, BackendError> {
        let s = server.clone();
        tokio::time::timeout(login.connect_timeout, Self::connect_inner(server, login))
            .await
            .map_err(|_| BackendError::Timeout { server: s })?
    }

    async fn connect_inner(server: Arc<str>, login: &LoginParams) -> Result<BackendConn, BackendError> {
        let servers_tls = login.tls.servers();
        match Self::connect_over(server.clone(), login, &servers_tls).await {
            // libpq's `prefer`: a server that agreed to TLS but could not complete it is tried
            // again in plaintext, on a new connection.
            Err(BackendError::Tls { detail, .. }) if servers_tls.mode == crate::tls::ServerMode::Prefer => {
                tracing::warn!(server = %server, error = %detail, "TLS to the server failed; trying plaintext (server_tls.mode: prefer)");
                Self::connect_over(server, login, &crate::tls::Connector::disabled()).await
            }
            other => other,
        }
    }

    async fn connect_over(
        server: Arc<str>,
        login: &LoginParams,
        servers_tls: &crate::tls::Connector,
    ) -> Result<BackendConn, BackendError> {
        let s2 = server.clone();
        let io_err = move |source| BackendError::Io { server: s2.clone(), source };
        let stream = TcpStream::connect(crate::net::member_addr(&server)).await.map_err(&io_err)?;
        stream.set_nodelay(true).map_err(&io_err)?;
        let sock = socket2::SockRef::from(&stream);
        let _ = sock.set_tcp_keepalive(&server_keepalive());
        let _ = sock.set_tcp_user_timeout(Some(SERVER_USER_TIMEOUT));
        // A second handle on the socket, so the pool can cut it while a client holds it.
        let cutter = Arc::new(sock.try_clone().map_err(&io_err)?);
        let stream = tls::negotiate(stream, servers_tls, &server).await?;
        let over_tls = stream.is_tls();
        let (rd, wr) = stream.into_split();
        let mut conn = BackendConn {
            rd,
            wr,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::new(),
            spare: None,
            server,
            pid: 0,
            secret: 0,
            params: Default::default(),
            params_version: 0,
            params_digest: 0,
            applied: Arc::default(),
            statements: prepared::ServerStatements::default(),
            standby: None,
            cutter,
            created: Instant::now(),
            generation: 0,
            tls: over_tls,
            last_used: Instant::now(),
            cancels: cancel::CancelGate::default(),
            target: None,
        };
        let mut out = BytesMut::new();
        let params = [("user", login.user.as_str()), ("database", login.database.as_str())];
        frontend::startup_message(params, &mut out).map_err(&io_err)?;
        conn.write(&out).await?;
        conn.authenticate(login).await?;
        conn.read_until_ready().await?;
        if !login.init_query.is_empty()
            && let Some(err) = conn.simple_query(&login.init_query).await?
        {
            return Err(conn.server_error(err));
        }
        Ok(conn)
    }

    fn protocol(&self, detail: impl Into<String>) -> BackendError {
        BackendError::Protocol { server: self.server.clone(), detail: detail.into() }
    }

    fn server_error(&self, frame: Frame) -> BackendError {
        let err = ErrorResponse::parse(frame.body());
        let get = |c: u8| err.and_then(|e| e.get_str(c)).unwrap_or_default().into_owned();
        BackendError::Server {
            server: self.server.clone(),
            code: get(field::CODE),
            message: get(field::MESSAGE),
            frame,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        let server = self.server.clone();
        crate::net::write_flush(&mut self.wr, bytes).await.map_err(|source| BackendError::Io { server, source })
    }

    /// Reads one whole message from the server.
    pub async fn read_frame(&mut self) -> Result<Frame, BackendError> {
        loop {
            match split_frame(&mut self.rbuf, MAX_MESSAGE_LEN) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            let n = self
                .rd
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|source| BackendError::Io { server: self.server.clone(), source })?;
            if n == 0 {
                return Err(BackendError::Io {
                    server: self.server.clone(),
                    source: io::ErrorKind::UnexpectedEof.into(),
                });
            }
        }
    }

    /// Refuses a method `pool.server_auth` does not allow (before anything is sent for it).
    fn check_method(&self, login: &LoginParams, method: ServerAuthMethod) -> Result<(), BackendError> {
        if login.server_auth.allows(method, self.tls) {
            return Ok(());
        }
        tracing::warn!(
            event = "server_auth_refused",
            server = %self.server,
            user = %login.user,
            method = method.name(),
            tls = self.tls,
            "refusing the server's authentication request (pool.server_auth)"
        );
        Err(BackendError::AuthRefused {
            server: self.server.clone(),
            method,
            over_tls: self.tls,
            allowed: login.server_auth.describe(),
        })
    }

    async fn authenticate(&mut self, login: &LoginParams) -> Result<(), BackendError> {
        let mut scram: Option<ScramClient> = None;
        // Whether the server asked for anything before AuthenticationOk (else: `none`).
        let mut asked = false;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                btag::ERROR_RESPONSE => return Err(self.server_error(frame)),
                btag::AUTHENTICATION => {}
                btag::NEGOTIATE_PROTOCOL_VERSION | btag::NOTICE_RESPONSE => continue,
                t => {
                    return Err(self.protocol(format!("unexpected message {:?} during login", t as char)));
                }
            }
            let Some(Authentication { code, data }) = Authentication::parse(frame.body()) else {
                return Err(self.protocol("short authentication message"));
            };
            let mut out = BytesMut::new();
            let method = match code {
                0 if !asked => Some(ServerAuthMethod::None),
                3 => Some(ServerAuthMethod::Password),
                5 => Some(ServerAuthMethod::Md5),
                10 => Some(ServerAuthMethod::ScramSha256),
                _ => None,
            };
            if let Some(method) = method {
                self.check_method(login, method)?;
            }
            asked = true;
            let password = || match &login.secret {
                ServerSecret::Password(p) => Ok(p.as_bytes()),
                ServerSecret::PassThrough(_) => {
                    let method = method.unwrap_or(ServerAuthMethod::Password);
                    Err(self.pass_through_failed(login, PassThroughError::NeedsPassword(method)))
                }
            };
            match code {
                0 => return Ok(()),
                3 => frontend::password_message(password()?, &mut out).map_err(|e| self.protocol(e.to_string()))?,
                5 => {
                    let salt: [u8; 4] = data.try_into().map_err(|_| self.protocol("bad md5 salt"))?;
                    let hash = postgres_protocol::authentication::md5_hash(login.user.as_bytes(), password()?, salt);
                    frontend::password_message(hash.as_bytes(), &mut out).map_err(|e| self.protocol(e.to_string()))?;
                }
                10 => {
                    let offers_scram = data.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
                    if !offers_scram {
                        return Err(self.protocol("server offers no SASL mechanism pgmux supports"));
                    }
                    let s = self.scram_client(login)?;
                    frontend::sasl_initial_response("SCRAM-SHA-256", &s.first(), &mut out)
                        .map_err(|e| self.protocol(e.to_string()))?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram.as_mut().ok_or_else(|| self.protocol("SASL continue before start"))?;
                    let message = match s {
                        ScramClient::Password(s) => {
                            s.update(data).map_err(|e| self.protocol(e.to_string()))?;
                            s.message().to_vec()
                        }
                        ScramClient::Keys(k) => {
                            k.client_final(data).map_err(|e| self.pass_through_failed(login, e.into()))?.into_bytes()
                        }
                    };
                    frontend::sasl_response(&message, &mut out).map_err(|e| self.protocol(e.to_string()))?;
                }
                12 => {
                    let s = scram.as_mut().ok_or_else(|| self.protocol("SASL final before start"))?;
                    match s {
                        ScramClient::Password(s) => {
                            s.finish(data).map_err(|e| self.protocol(format!("server signature invalid: {e}")))?
                        }
                        ScramClient::Keys(k) => {
                            k.verify_server_final(data).map_err(|e| self.pass_through_failed(login, e.into()))?
                        }
                    }
                    continue;
                }
                other => {
                    return Err(self.protocol(format!("unsupported authentication method {other}")));
                }
            }
            self.write(&out).await?;
        }
    }

    /// The SCRAM client for this login: from the password, or from the key a client revealed.
    fn scram_client(&self, login: &LoginParams) -> Result<ScramClient, BackendError> {
        match &login.secret {
            ServerSecret::Password(p) => {
                Ok(ScramClient::Password(ScramSha256::new(p.as_bytes(), ChannelBinding::unsupported())))
            }
            ServerSecret::PassThrough(pass) => match pass.client_key() {
                Some(key) => Ok(ScramClient::Keys(scram::KeyClient::new(pass.verifier.clone(), key))),
                None => Err(self.pass_through_failed(login, PassThroughError::NoKeyYet)),
            },
        }
    }

    fn pass_through_failed(&self, login: &LoginParams, reason: PassThroughError) -> BackendError {
        tracing::warn!(
            event = "pass_through_failed",
            server = %self.server,
            user = %login.user,
            reason = %reason,
            "cannot log in to the server with SCRAM pass-through"
        );
        BackendError::PassThrough { server: self.server.clone(), user: login.user.clone(), reason }
    }

    /// After AuthenticationOk: collect ParameterStatus and BackendKeyData up to ReadyForQuery.
    async fn read_until_ready(&mut self) -> Result<(), BackendError> {
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                btag::PARAMETER_STATUS => self.note_parameter(frame.body()),
                btag::BACKEND_KEY_DATA => {
                    let key = BackendKeyData::parse(frame.body()).ok_or_else(|| self.protocol("bad BackendKeyData"))?;
                    (self.pid, self.secret) = (key.pid, key.secret);
                }
                btag::READY_FOR_QUERY => return Ok(()),
                btag::ERROR_RESPONSE => return Err(self.server_error(frame)),
                btag::NOTICE_RESPONSE => {}
                t => {
                    return Err(self.protocol(format!("unexpected message {:?} during startup", t as char)));
                }
            }
        }
    }

    /// Records a ParameterStatus body (ignored if malformed).
    pub fn note_parameter(&mut self, body: &[u8]) {
        let Some(ParameterStatus { name, value }) = ParameterStatus::parse(body) else { return };
        if name == b"in_hot_standby" {
            self.standby = Some(value == b"on");
        }
        self.params_version += 1;
        let (name, value) = (String::from_utf8_lossy(name).into_owned(), String::from_utf8_lossy(value).into_owned());
        if let Some(old) = self.params.get(&name) {
            self.params_digest ^= param_hash(&name, old);
        }
        self.params_digest ^= param_hash(&name, &value);
        std::sync::Arc::make_mut(&mut self.params).insert(name, value);
    }

    /// Runs `sql` as a simple query and reads every reply up to ReadyForQuery; returns the first
    /// ErrorResponse, if any. Replies are not forwarded anywhere.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Option<Frame>, BackendError> {
        let mut out = BytesMut::new();
        build::query(&mut out, sql);
        self.write(&out).await?;
        let mut error = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                btag::PARAMETER_STATUS => self.note_parameter(frame.body()),
                btag::ERROR_RESPONSE if error.is_none() => error = Some(frame),
                btag::READY_FOR_QUERY => {
                    if ReadyForQuery::parse(frame.body()).map(|r| r.status) != Some(TxStatus::Idle) {
                        return Err(self.protocol("server left a transaction open"));
                    }
                    return Ok(error);
                }
                _ => {}
            }
        }
    }

    /// Runs `sql` as a simple query and returns its rows as text (an ErrorResponse is an error).
    pub async fn query_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, BackendError> {
        let mut out = BytesMut::new();
        build::query(&mut out, sql);
        self.rows_of(&out).await
    }

    /// Runs `sql` with text parameters `$1`… over the extended protocol (the values are never
    /// spliced into the SQL) and returns its rows as text (an ErrorResponse is an error).
    pub async fn query_rows_with(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<Vec<Option<String>>>, BackendError> {
        let mut out = BytesMut::new();
        build::message(&mut out, ftag::PARSE, |b| {
            build::put_cstr(b, b"");
            build::put_cstr(b, sql.as_bytes());
            b.put_i16(0);
        });
        build::message(&mut out, ftag::BIND, |b| {
            build::put_cstr(b, b"");
            build::put_cstr(b, b"");
            b.put_i16(0);
            b.put_i16(params.len() as i16);
            for p in params {
                b.put_i32(p.len() as i32);
                b.put_slice(p.as_bytes());
            }
            b.put_i16(0);
        });
        build::message(&mut out, ftag::EXECUTE, |b| {
            build::put_cstr(b, b"");
            b.put_i32(0);
        });
        build::sync(&mut out);
        self.rows_of(&out).await
    }

    /// Sends `out` (one query, up to a Sync) and collects its DataRows up to ReadyForQuery.
    async fn rows_of(&mut self, out: &[u8]) -> Result<Vec<Vec<Option<String>>>, BackendError> {
        self.write(out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                btag::DATA_ROW => rows.push(decode_text_row(frame.body())),
                btag::PARAMETER_STATUS => self.note_parameter(frame.body()),
                btag::ERROR_RESPONSE if error.is_none() => error = Some(frame),
                btag::READY_FOR_QUERY => {
                    return match error {
                        Some(frame) => Err(self.server_error(frame)),
                        None => Ok(rows),
                    };
                }
                _ => {}
            }
        }
    }

    /// Whether the server says it is a hot standby (PostgreSQL 14+ reports `in_hot_standby`).
    pub fn is_standby(&self) -> Option<bool> {
        self.standby
    }

    /// True if the idle socket has nothing to say: no unread data and not closed. Checked on checkout
    /// so a connection the server closed (or sent a FATAL on) while pooled is never handed out.
    pub fn looks_idle(&mut self) -> bool {
        self.rbuf.is_empty() && self.rd.is_quiet()
    }

    /// Waits for and reads more server bytes into the read buffer; `Ok(0)` at end of stream.
    /// Cancel safe (nothing is read if the future is dropped before completing).
    pub async fn read_more(&mut self) -> io::Result<usize> {
        self.rbuf.reserve(16 * 1024);
        self.rd.read_buf(&mut self.rbuf).await
    }

    /// Drops handled bytes from the read buffer.
    pub fn consume(&mut self, n: usize) {
        self.rbuf.advance(n);
    }
}

fn param_hash(name: &str, value: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (name, value).hash(&mut h);
    h.finish()
}

/// The columns of a DataRow body, as text (NULL as None); no columns if it is malformed.
pub fn decode_text_row(body: &[u8]) -> Vec<Option<String>> {
    let Some(row) = DataRow::parse(body) else { return Vec::new() };
    row.columns().map(|c| c.map(|v| String::from_utf8_lossy(v).into_owned())).collect()
}
