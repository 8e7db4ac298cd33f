//! Wiring: turns a validated `Config` into listeners, pools and client context, and runs them.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::Instrument;

use crate::auth::UserDirectory;
use crate::client::{AuthMethod, ClientCtx, ClientSettings, Endpoint, PoolMode};
use crate::cluster::{Cluster, PoolSettings, ReadRouting};
use crate::config::{self, Config};
use crate::listener::{self, Shutdown};
use crate::tls::{self, TlsError, TlsSettings};

/// How often idle server connections are checked against `pool.idle_timeout`.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// A proxy ready to run: its listener is bound, so the address is known (port 0 works).
pub struct Proxy {
    pub ctx: Arc<ClientCtx>,
    listener: TcpListener,
    reader: Option<TcpListener>,
    admin: Option<TcpListener>,
    prober: Option<Prober>,
    drain_timeout: Duration,
}

/// Who and how often the prober asks the servers about themselves.
struct Prober {
    user: String,
    database: String,
    interval: Duration,
}

fn user_directory(config: &Config) -> UserDirectory {
    UserDirectory::new(config.users.iter().map(|u| (u.name.as_str(), u.password.as_str())))
}

/// The users after a reload, with this process's salt key kept (every name keeps its salt).
fn reloaded_users(old: &UserDirectory, config: &Config) -> UserDirectory {
    old.rebuilt(config.users.iter().map(|u| (u.name.as_str(), u.password.as_str())))
}

fn pool_settings(config: &Config, tls: &Arc<TlsSettings>) -> PoolSettings {
    PoolSettings {
        size: config.pool.size,
        connect_timeout: config.pool.connect_timeout,
        init_query: config.pool.init_query.clone(),
        idle_timeout: config.pool.idle_timeout,
        tls: tls.clone(),
        server_auth: config.pool.server_auth.clone(),
    }
}

fn read_routing(config: &Config) -> ReadRouting {
    ReadRouting {
        max_replica_lag: config.routing.max_replica_lag,
        fallback_to_primary: config.routing.fallback_to_primary,
    }
}

fn client_settings(config: &Config) -> ClientSettings {
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
        addresses: crate::client::addresses::AddressLimits {
            max_handshakes: config.clients.max_handshakes_per_address,
            throttle_after: config.clients.login_throttle_after,
            window: config.clients.login_throttle_window,
            delay: config.clients.login_throttle_delay,
            max_delay: config.clients.login_throttle_max_delay,
        },
    }
}

fn prober_of(config: &Config) -> Option<Prober> {
    let user = config.health.user.clone().or_else(|| config.users.first().map(|u| u.name.clone()))?;
    Some(Prober { user, database: config.health.database.clone(), interval: config.health.interval })
}

impl Proxy {
    /// Binds `config.listen` and builds the pools (no server connection is opened yet).
    pub async fn bind(config: &Config, shutdown: &Shutdown) -> std::io::Result<Proxy> {
        Proxy::bind_with_resolver(config, shutdown, Arc::new(crate::cluster::names::SystemResolver)).await
    }

    /// As `bind`, with `resolver` turning the servers' host names into addresses (the system
    /// resolver in `bind`; a library user or test may bring its own name service).
    pub async fn bind_with_resolver(
        config: &Config,
        shutdown: &Shutdown,
        resolver: Arc<dyn crate::cluster::names::Resolve>,
    ) -> std::io::Result<Proxy> {
        let backlog = config.listen_backlog;
        let listener = listener::bind(&config.listen, backlog).await?;
        let reader = match &config.reader_listen {
            Some(addr) => Some(listener::bind(addr, backlog).await?),
            None => None,
        };
        let admin = match &config.admin_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let (acceptor, connector) = tls_from_config(config).map_err(std::io::Error::other)?;
        let tls = Arc::new(TlsSettings::new(acceptor, connector));
        let users = Arc::new(arc_swap::ArcSwap::from_pointee(user_directory(config)));
        let cluster = Arc::new(
            Cluster::new(
                config.servers.iter().map(|s| s.to_string()).collect(),
                pool_settings(config, &tls),
                read_routing(config),
                (config.health.down_after, config.health.up_after),
                users.clone(),
            )
            .with_resolver(resolver, config.health.resolve_interval),
        );
        // Names resolved before the first client, so members do not change under it.
        cluster.refresh_names().await;
        let settings = client_settings(config);
        let config_arc = Arc::new(config.clone());
        let ctx = Arc::new(ClientCtx::new(settings, users, cluster, shutdown.drain.clone(), config_arc, tls));
        let prober = prober_of(config);
        Ok(Proxy { ctx, listener, reader, admin, prober, drain_timeout: config.shutdown_timeout })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin endpoint's address, if `admin_listen` is configured.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The reader endpoint's address, if `reader_listen` is configured.
    pub fn reader_addr(&self) -> Option<std::net::SocketAddr> {
        self.reader.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until shutdown (see `listener::run`).
    pub async fn run(self, shutdown: Shutdown) {
        let cluster = self.ctx.cluster.clone();
        let maintenance = tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            loop {
                tick.tick().await;
                cluster.close_idle();
            }
        });
        let stop_prober = self.ctx.stop_tasks.clone();
        if let Some(p) = &self.prober {
            self.ctx.cluster.spawn_prober(&p.user, &p.database, p.interval, stop_prober.clone());
        }
        watch_reload_signal(self.ctx.clone());
        if let Some(admin) = self.admin {
            let span = tracing::info_span!("admin");
            tokio::spawn(crate::admin::run(admin, self.ctx.clone(), stop_prober.clone()).instrument(span));
        }
        let writer =
            listener::run(self.ctx.clone(), self.listener, Endpoint::Writer, shutdown.clone(), self.drain_timeout);
        let reader = async {
            if let Some(r) = self.reader {
                listener::run(self.ctx.clone(), r, Endpoint::Reader, shutdown.clone(), self.drain_timeout).await;
            }
        };
        tokio::join!(writer, reader);
        stop_prober.cancel();
        maintenance.abort();
    }
}

/// Loads the certificates `config` names and swaps them in for new connections (client-facing
/// `tls` and server-facing `server_tls` together, or neither if anything fails to load). Sessions
/// and server connections already encrypted keep the settings they started with.
pub fn reload_tls(ctx: &ClientCtx, config: &Config) -> Result<(), TlsError> {
    let (acceptor, connector) = tls_from_config(config)?;
    ctx.tls.replace(acceptor, connector);
    tracing::info!("TLS settings reloaded");
    Ok(())
}

fn tls_from_config(config: &Config) -> Result<(tls::Acceptor, tls::Connector), TlsError> {
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

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file to re-read (pgmux was configured from the environment alone, or in memory)")]
    NoFile,
    #[error("the configuration file is invalid; nothing was changed:\n{0}")]
    Invalid(String),
    #[error("these settings cannot change while pgmux runs (restart to change them); nothing was changed: {}", .0.join(", "))]
    NotLive(Vec<&'static str>),
    #[error("TLS files could not be loaded; nothing was changed: {0}")]
    Tls(#[from] TlsError),
}

/// Re-reads the configuration file, validates it whole, and applies it at once: users and
/// passwords, pool sizes and timeouts, servers added or removed, routing, health, TLS
/// certificates. Settings that cannot change live are refused by name, and then nothing changes.
/// Returns the keys whose values changed. No client is dropped.
pub fn reload(ctx: &ClientCtx) -> Result<Vec<String>, ReloadError> {
    let path = ctx.config_path.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or(ReloadError::NoFile)?;
    let new = Config::load(&path).map_err(|e| ReloadError::Invalid(e.to_string()))?;
    let old = ctx.config.load_full();
    let fixed: [(&'static str, bool); 8] = [
        ("listen", old.listen != new.listen),
        ("reader_listen", old.reader_listen != new.reader_listen),
        ("admin_listen", old.admin_listen != new.admin_listen),
        ("workers", old.workers != new.workers),
        ("listen_backlog", old.listen_backlog != new.listen_backlog),
        ("clients.max_handshakes", old.clients.max_handshakes != new.clients.max_handshakes),
        ("log_format", old.log_format != new.log_format),
        ("pool.mode", old.pool.mode != new.pool.mode),
    ];
    let refused: Vec<&'static str> = fixed.iter().filter(|(_, changed)| *changed).map(|(k, _)| *k).collect();
    if !refused.is_empty() {
        return Err(ReloadError::NotLive(refused));
    }
    // The one step that can still fail goes first.
    let (acceptor, connector) = tls_from_config(&new)?;
    let before = old.effective();
    let mut changed: Vec<String> =
        new.effective().into_iter().filter(|kv| !before.contains(kv)).map(|(k, _)| k).collect();
    if old.users != new.users && !changed.iter().any(|k| k.starts_with("users")) {
        changed.push("users".into());
    }
    ctx.tls.replace(acceptor, connector);
    ctx.users.store(Arc::new(reloaded_users(&ctx.users.load(), &new)));
    ctx.settings.store(Arc::new(client_settings(&new)));
    ctx.cluster.apply(
        pool_settings(&new, &ctx.tls),
        read_routing(&new),
        new.servers.iter().map(|s| s.to_string()).collect(),
        (new.health.down_after, new.health.up_after),
        new.health.resolve_interval,
    );
    if let Some(p) = prober_of(&new) {
        ctx.cluster.spawn_prober(&p.user, &p.database, p.interval, ctx.stop_tasks.clone());
    }
    ctx.config.store(Arc::new(new));
    Ok(changed)
}

/// Reloads and logs the outcome (SIGHUP, the console's RELOAD).
pub fn reload_and_log(ctx: &ClientCtx, source: &str) -> Result<Vec<String>, ReloadError> {
    let result = reload(ctx);
    match &result {
        Ok(changed) => tracing::info!(event = "reload_applied", source, changed = ?changed, "configuration reloaded"),
        Err(e) => tracing::error!(event = "reload_refused", source, error = %e, "configuration not reloaded"),
    }
    result
}

/// SIGHUP reloads the configuration.
fn watch_reload_signal(ctx: Arc<ClientCtx>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    let span = tracing::info_span!("reload");
    tokio::spawn(
        async move {
            let stop = ctx.stop_tasks.clone();
            loop {
                tokio::select! {
                    _ = hup.recv() => { let _ = reload_and_log(&ctx, "SIGHUP"); }
                    _ = stop.cancelled() => return,
                }
            }
        }
        .instrument(span),
    );
}
