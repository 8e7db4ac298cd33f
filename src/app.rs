//! Wiring: turns a validated `Config` into listeners, pools and the proxy's shared state, and runs
//! them: each accepted client is served by `client`, and handed to the admin console (`admin`) if
//! it logged in there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::listener::{self, Endpoint, Shutdown};
use crate::state::ProxyState;
use crate::state::settings::{self, Prober};
use crate::tls::TlsSettings;

/// How often idle server connections are checked against `pool.idle_timeout`.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(5);

/// A proxy ready to run: its listener is bound, so the address is known (port 0 works).
pub struct Proxy {
    pub ctx: Arc<ProxyState>,
    listener: TcpListener,
    reader: Option<TcpListener>,
    admin: Option<TcpListener>,
    prober: Option<Prober>,
    drain_timeout: Duration,
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
        let (acceptor, connector) = settings::tls_from_config(config).map_err(std::io::Error::other)?;
        let tls = Arc::new(TlsSettings::new(acceptor, connector));
        let users = Arc::new(arc_swap::ArcSwap::from_pointee(settings::user_directory(config)));
        let cluster = Arc::new(
            Cluster::new(
                config.servers.iter().map(|s| s.to_string()).collect(),
                settings::pool_settings(config, &tls),
                settings::read_routing(config),
                (config.health.down_after, config.health.up_after),
                users.clone(),
            )
            .with_resolver(resolver, config.health.resolve_interval),
        );
        // Names resolved before the first client, so members do not change under it.
        cluster.refresh_names().await;
        let client_settings = settings::client_settings(config);
        let config_arc = Arc::new(config.clone());
        let ctx = Arc::new(ProxyState::new(client_settings, users, cluster, shutdown.drain.clone(), config_arc, tls));
        let prober = settings::prober(config);
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
        crate::reload::watch_signal(self.ctx.clone());
        if let Some(admin) = self.admin {
            let span = tracing::info_span!("admin");
            tokio::spawn(crate::admin::run(admin, self.ctx.clone(), stop_prober.clone()).instrument(span));
        }
        let ctx = &self.ctx;
        let serve_writer = |s, p| serve(ctx.clone(), s, p, Endpoint::Writer);
        let writer =
            listener::run(ctx, self.listener, Endpoint::Writer, shutdown.clone(), self.drain_timeout, serve_writer);
        let reader = async {
            if let Some(r) = self.reader {
                let serve_reader = |s, p| serve(ctx.clone(), s, p, Endpoint::Reader);
                listener::run(ctx, r, Endpoint::Reader, shutdown.clone(), self.drain_timeout, serve_reader).await;
            }
        };
        tokio::join!(writer, reader);
        stop_prober.cancel();
        maintenance.abort();
    }
}

/// One client: a session relaying its transactions, or the admin console if it logged in there.
///
/// The client's future is boxed here, so the task spawned for it is small: spawning moves the
/// task's future (into the tracker's wrapper, then into the task cell) and finishing overwrites
/// it, each a copy of its whole size — several kB for a session, ~4k instructions per login
/// (callgrind) against one allocation of the same size made once.
async fn serve(ctx: Arc<ProxyState>, stream: TcpStream, peer: SocketAddr, endpoint: Endpoint) {
    if let Some(console) = Box::pin(crate::client::serve(ctx.clone(), stream, peer, endpoint)).await {
        Box::pin(crate::admin::console::run(ctx, console)).await;
    }
}
