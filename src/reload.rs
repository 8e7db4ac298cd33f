//! Configuration reload (SIGHUP, the admin console's RELOAD): re-reading the config file and
//! applying it to the running proxy at once, or not at all.

use std::sync::Arc;

use tracing::Instrument;

use crate::config::Config;
use crate::state::ProxyState;
use crate::state::settings::{client_settings, pool_settings, prober, read_routing, reloaded_users, tls_from_config};
use crate::tls::TlsError;

/// Loads the certificates `config` names and swaps them in for new connections (client-facing
/// `tls` and server-facing `server_tls` together, or neither if anything fails to load). Sessions
/// and server connections already encrypted keep the settings they started with.
pub fn reload_tls(ctx: &ProxyState, config: &Config) -> Result<(), TlsError> {
    let (acceptor, connector) = tls_from_config(config)?;
    ctx.tls.replace(acceptor, connector);
    tracing::info!("TLS settings reloaded");
    Ok(())
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
pub fn reload(ctx: &ProxyState) -> Result<Vec<String>, ReloadError> {
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
    if let Some(p) = prober(&new) {
        ctx.cluster.spawn_prober(&p.user, &p.database, p.interval, ctx.stop_tasks.clone());
    }
    ctx.config.store(Arc::new(new));
    Ok(changed)
}

/// Reloads and logs the outcome (SIGHUP, the console's RELOAD).
pub fn reload_and_log(ctx: &ProxyState, source: &str) -> Result<Vec<String>, ReloadError> {
    let result = reload(ctx);
    match &result {
        Ok(changed) => tracing::info!(event = "reload_applied", source, changed = ?changed, "configuration reloaded"),
        Err(e) => tracing::error!(event = "reload_refused", source, error = %e, "configuration not reloaded"),
    }
    result
}

/// SIGHUP reloads the configuration (until the proxy's background tasks stop).
pub fn watch_signal(ctx: Arc<ProxyState>) {
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
