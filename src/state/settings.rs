//! The settings each part of the running proxy works with, and how the config in force gives them:
//! built once by `app` at start and again by `reload` (the one translation from `Config` to them).

use std::sync::Arc;
use std::time::Duration;

use super::addresses::AddressLimits;
use crate::auth::UserDirectory;
use crate::cluster::{PoolSettings, ReadRouting};
use crate::config::{self, Config};
use crate::tls::{self, TlsError, TlsSettings};

/// Transaction or session pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    Transaction,
    Session,
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
    /// Clients in their handshake at once (fixed at start: sizes `ProxyState::handshakes`).
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
    pub addresses: AddressLimits,
}

/// Who and how often the prober asks the servers about themselves.
#[derive(Debug, Clone)]
pub struct Prober {
    pub user: String,
    pub database: String,
    pub interval: Duration,
}

pub fn user_directory(config: &Config) -> UserDirectory {
    UserDirectory::new(config.users.iter().map(|u| (u.name.as_str(), u.password.as_str())))
}

/// The users after a reload, with this process's salt key kept (every name keeps its salt).
pub fn reloaded_users(old: &UserDirectory, config: &Config) -> UserDirectory {
    old.rebuilt(config.users.iter().map(|u| (u.name.as_str(), u.password.as_str())))
}

pub fn pool_settings(config: &Config, tls: &Arc<TlsSettings>) -> PoolSettings {
    PoolSettings {
        size: config.pool.size,
        connect_timeout: config.pool.connect_timeout,
        init_query: config.pool.init_query.clone(),
        idle_timeout: config.pool.idle_timeout,
        tls: tls.clone(),
        server_auth: config.pool.server_auth.clone(),
    }
}

pub fn read_routing(config: &Config) -> ReadRouting {
    ReadRouting {
        max_replica_lag: config.routing.max_replica_lag,
        fallback_to_primary: config.routing.fallback_to_primary,
    }
}

pub fn client_settings(config: &Config) -> ClientSettings {
    ClientSettings {
        mode: match config.pool.mode {
            config::PoolMode::Transaction => PoolMode::Transaction,
            config::PoolMode::Session => PoolMode::Session,
        },
        auth: match config.clients.auth_method {
            config::ClientAuthMethod::ScramSha256 => AuthMethod::ScramSha256,
            config::ClientAuthMethod::Md5 => AuthMethod::Md5,
        },
        max_connections: config.clients.max_connections,
        idle_timeout: config.clients.idle_timeout,
        startup_timeout: config.clients.startup_timeout,
        max_handshakes: config.clients.max_handshakes,
        borrow_timeout: config.pool.borrow_timeout,
        read_your_writes: config.routing.read_your_writes,
        autocommit_reads_to_replica: config.routing.autocommit_reads_to_replica,
        close_on_lost_session_state: config.pool.lost_session_state == config::LostSessionState::Close,
        max_message_size: config.clients.max_message_size,
        max_prepared_statements: config.clients.max_prepared_statements,
        idle_transaction_timeout: config.clients.idle_transaction_timeout,
        addresses: AddressLimits {
            max_handshakes: config.clients.max_handshakes_per_address,
            throttle_after: config.clients.login_throttle_after,
            window: config.clients.login_throttle_window,
            delay: config.clients.login_throttle_delay,
            max_delay: config.clients.login_throttle_max_delay,
        },
    }
}

/// The health prober's user, database and interval (None: no user to probe as).
pub fn prober(config: &Config) -> Option<Prober> {
    let user = config.health.user.clone().or_else(|| config.users.first().map(|u| u.name.clone()))?;
    Some(Prober { user, database: config.health.database.clone(), interval: config.health.interval })
}

/// Loads the certificates `config` names: client-facing `tls` and server-facing `server_tls`.
pub fn tls_from_config(config: &Config) -> Result<(tls::Acceptor, tls::Connector), TlsError> {
    let t = &config.tls;
    let mode = match t.mode {
        config::TlsMode::Disable => tls::ClientMode::Disable,
        config::TlsMode::Allow => tls::ClientMode::Allow,
        config::TlsMode::Prefer => tls::ClientMode::Prefer,
        config::TlsMode::Require => tls::ClientMode::Require,
    };
    let files = t.cert_file.as_deref().zip(t.key_file.as_deref());
    let acceptor = tls::Acceptor::new(mode, files)?;
    let s = &config.server_tls;
    let mode = match s.mode {
        config::ServerTlsMode::Disable => tls::ServerMode::Disable,
        config::ServerTlsMode::Prefer => tls::ServerMode::Prefer,
        config::ServerTlsMode::Require => tls::ServerMode::Require,
        config::ServerTlsMode::VerifyCa => tls::ServerMode::VerifyCa,
        config::ServerTlsMode::VerifyFull => tls::ServerMode::VerifyFull,
    };
    let connector = tls::Connector::new(mode, s.ca_file.as_deref())?;
    Ok((acceptor, connector))
}
