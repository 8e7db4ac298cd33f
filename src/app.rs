//! Wiring: turns a validated `Config` into listeners, pools and the proxy's shared state, and runs
//! them: each accepted client is served by `client`, and handed to the admin console (`admin`) if
//! it logged in there.

pub mod runtime;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::client::Served;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::listener::{self, Endpoint, Shutdown};
use crate::pool::cores::Cores;
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
    /// With one runtime per core: the listeners of cores 1.. (core 0 accepts on `listener` and
    /// `reader`; the cores are the pools', `ctx.cluster.pools.cores()`).
    more: Vec<CoreListeners>,
}

/// The sockets one further core accepts clients on (bound, not yet on its runtime).
struct CoreListeners {
    writer: std::net::TcpListener,
    reader: Option<std::net::TcpListener>,
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
        Proxy::bind_on(config, shutdown, resolver, Cores::default()).await
    }

    /// As `bind`, serving clients on one single-threaded runtime per core of `cores`: each core
    /// accepts on its own socket of each listener (see `listener::bind_per_core`) and every pool
    /// keeps a shard per core. Call it, and `run`, on core 0.
    pub async fn bind_on_cores(config: &Config, shutdown: &Shutdown, cores: Cores) -> std::io::Result<Proxy> {
        Proxy::bind_on(config, shutdown, Arc::new(crate::cluster::names::SystemResolver), cores).await
    }

    /// As `bind_on_cores`, resolving the servers' host names with `resolver`.
    pub async fn bind_on(
        config: &Config,
        shutdown: &Shutdown,
        resolver: Arc<dyn crate::cluster::names::Resolve>,
        cores: Cores,
    ) -> std::io::Result<Proxy> {
        let backlog = config.listen_backlog;
        let n = cores.count();
        let (listener, writers) = listener::bind_per_core(&config.listen, backlog, n).await?;
        let (reader, mut readers) = match &config.reader_listen {
            Some(addr) => {
                let (r, more) = listener::bind_per_core(addr, backlog, n).await?;
                (Some(r), more.into_iter().map(Some).collect())
            }
            None => (None, Vec::new()),
        };
        readers.resize_with(writers.len(), || None);
        let more = writers.into_iter().zip(readers).map(|(writer, reader)| CoreListeners { writer, reader }).collect();
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
            .with_resolver(resolver, config.health.resolve_interval)
            .with_cores(cores),
        );
        // Names resolved before the first client, so members do not change under it.
        cluster.refresh_names().await;
        let client_settings = settings::client_settings(config);
        let config_arc = Arc::new(config.clone());
        let ctx = Arc::new(ProxyState::new(client_settings, users, cluster, shutdown.drain.clone(), config_arc, tls));
        let prober = settings::prober(config);
        Ok(Proxy { ctx, listener, reader, admin, prober, drain_timeout: config.shutdown_timeout, more })
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
        // Cores 1.. accept on their own runtimes; core 0 (this one) below.
        let mut others = Vec::new();
        for (i, l) in self.more.into_iter().enumerate() {
            if let Some(core) = self.ctx.cluster.pools.cores().handle(i + 1) {
                let task = accept_on_core(self.ctx.clone(), l, shutdown.clone(), self.drain_timeout);
                others.push(core.spawn(task.instrument(tracing::info_span!("core", n = i + 1))));
            }
        }
        accept(&self.ctx, self.listener, self.reader, &shutdown, self.drain_timeout).await;
        for core in others {
            let _ = core.await;
        }
        stop_prober.cancel();
        maintenance.abort();
    }
}

/// Accepts clients on `writer` and `reader` until shutdown (see `listener::run`).
async fn accept(
    ctx: &Arc<ProxyState>,
    writer: TcpListener,
    reader: Option<TcpListener>,
    shutdown: &Shutdown,
    drain_timeout: Duration,
) {
    let serve_writer = |s, p, t| serve(ctx.clone(), s, p, Endpoint::Writer, t);
    let writer = listener::run(ctx, writer, Endpoint::Writer, shutdown.clone(), drain_timeout, serve_writer);
    let reader = async {
        if let Some(r) = reader {
            let serve_reader = |s, p, t| serve(ctx.clone(), s, p, Endpoint::Reader, t);
            listener::run(ctx, r, Endpoint::Reader, shutdown.clone(), drain_timeout, serve_reader).await;
        }
    };
    tokio::join!(writer, reader);
}

/// A further core's accept loops, on its runtime (its sockets are registered with it here).
async fn accept_on_core(ctx: Arc<ProxyState>, l: CoreListeners, shutdown: Shutdown, drain_timeout: Duration) {
    let on_this_core =
        |l| TcpListener::from_std(l).inspect_err(|e| tracing::error!(error = %e, "cannot accept on this core")).ok();
    let Some(writer) = on_this_core(l.writer) else {
        return;
    };
    let reader = l.reader.and_then(on_this_core);
    accept(&ctx, writer, reader, &shutdown, drain_timeout).await;
}

/// One client: a session relaying its transactions, or the admin console if it logged in there.
///
/// The handshake's future is boxed here, so the task spawned for it is small: spawning moves the
/// task's future (into the tracker's wrapper, then into the task cell) and finishing overwrites
/// it, each a copy of its whole size — several kB, ~4k instructions per login (callgrind) against
/// one allocation of the same size made once.
///
/// A session then runs as a task of its own, on `tracker` (shutdown waits for it as for this one,
/// which ends): each wake-up polls the session's state machine straight from its task, not
/// through this task's future and the handshake's box — lines of memory a transaction would
/// touch on top (callgrind, 2,000 clients: ~3 cache misses per transaction).
async fn serve(ctx: Arc<ProxyState>, stream: TcpStream, peer: SocketAddr, endpoint: Endpoint, tracker: TaskTracker) {
    let served = Box::pin(crate::client::serve(ctx.clone(), stream, peer, endpoint)).await;
    match served {
        // In the client's span (this task's).
        Served::Session(session, open) => drop(tracker.spawn(session.run(open).instrument(tracing::Span::current()))),
        Served::Console(console) => Box::pin(crate::admin::console::run(ctx, console)).await,
        Served::Closed => {}
    }
}
