//! The proxy-wide state every client task, the listeners and the operator's interfaces share,
//! built by `app` from a config and partly swapped by `reload`.
//!
//! Modules:
//! - `settings`: the settings each part runs with, as the config in force gives them.
//! - `registry`: the client registry: every connected client's cancel key and what it holds now.
//! - `pins`: pin reasons, and the proxy's pin counters.
//! - `pause`: the PAUSE / RESUME gate every borrow of a server connection passes.
//! - `drain`: the drain signal, read without a lock.
//! - `addresses`: per-source-address handshake places and failed-login delays.
//! - `collector`: the client-side metrics read at scrape time (pins, errors sent).

pub mod addresses;
pub mod collector;
pub mod drain;
pub mod pause;
pub mod pins;
pub mod registry;
pub mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

use crate::auth::UserDirectory;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::error::ClientError;
use crate::metrics::Metrics;
use crate::tls::TlsSettings;
pub use drain::Drain;
use registry::CancelRegistry;
use settings::ClientSettings;

/// What every client task, the listeners and the operator's interfaces share (one per proxy).
#[derive(Debug)]
pub struct ProxyState {
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
    pub select_verdicts: SelectVerdicts,
    /// Clients' startup settings, one copy per distinct list.
    pub setting_lists: SettingLists,
    /// Set on SIGTERM (or the admin console's SHUTDOWN): finish the current transaction, then leave.
    pub draining: Drain,
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
    pub(crate) handshakes: Arc<tokio::sync::Semaphore>,
    /// Clients accepted and waiting for a handshake permit.
    pub(crate) handshakes_queued: AtomicUsize,
    /// Per-source-address handshake places and failed logins.
    pub addresses: addresses::Addresses,
    /// The main listener is accepting clients (for readiness).
    accepting: AtomicBool,
}

impl ProxyState {
    pub fn new(
        settings: ClientSettings,
        users: Arc<arc_swap::ArcSwap<UserDirectory>>,
        cluster: Arc<Cluster>,
        draining: Drain,
        config: Arc<Config>,
        tls: Arc<TlsSettings>,
    ) -> ProxyState {
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
        ProxyState {
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
            setting_lists: Default::default(),
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

    /// Clients accepted and waiting for their turn to start a handshake (`clients.max_handshakes`).
    pub fn handshakes_queued(&self) -> usize {
        self.handshakes_queued.load(Ordering::Relaxed)
    }

    /// Clients past their handshake right now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Counts one more client against `max_connections`, or refuses it.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Admitted, ClientError> {
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
pub struct Admitted(Arc<ProxyState>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client's startup settings (name, value; sorted), shared by every client that logged in with
/// the same ones, and by the server connections that carry them.
pub type SettingList = Arc<[(String, String)]>;

/// One `SettingList` per distinct list in use: clients logging in with the same settings (most
/// of an application's clients) share it, so giving a server connection a client's settings, the
/// per-transaction comparison of what the connection carries with what the client wants, is
/// usually a pointer comparison — not a walk over strings in each client's own memory (callgrind
/// with a 1 MiB last-level cache at 2,000 clients: ~3 of ~41 cache misses per transaction), and an
/// idle client holds no copy of its settings.
#[derive(Debug, Default)]
pub struct SettingLists(std::sync::Mutex<SettingListsInner>);

#[derive(Debug, Default)]
struct SettingListsInner {
    lists: std::collections::HashSet<SettingList>,
    /// How many lists were in use after the last sweep of unused ones.
    swept_at: usize,
}

impl SettingLists {
    /// The shared list equal to `settings`.
    pub fn intern(&self, settings: Vec<(String, String)>) -> SettingList {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = inner.lists.get(settings.as_slice()) {
            return list.clone();
        }
        // Lists no client or connection holds any more go once the set has doubled since the
        // last sweep: memory stays within twice what is in use, at a sweep cost per insert of O(1)
        // amortised.
        if inner.lists.len() >= 2 * inner.swept_at + 64 {
            inner.lists.retain(|l| Arc::strong_count(l) > 1);
            inner.swept_at = inner.lists.len();
        }
        let list: SettingList = settings.into();
        inner.lists.insert(list.clone());
        list
    }
}

/// Whether autocommit query texts are provably read-only SELECTs, cached by a hash of the text.
#[derive(Debug, Default)]
pub struct SelectVerdicts(std::sync::Mutex<std::collections::HashMap<u64, bool>>);

impl SelectVerdicts {
    /// The cached verdict on `sql`, else `classify(sql)`, remembered (at most 10 000 of them).
    pub fn get_or(&self, sql: &[u8], classify: impl FnOnce(&[u8]) -> bool) -> bool {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let key = BuildHasherDefault::<DefaultHasher>::default().hash_one(sql);
        if let Some(v) = self.0.lock().ok().and_then(|m| m.get(&key).copied()) {
            return v;
        }
        let verdict = classify(sql);
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= 10_000 {
                m.clear();
            }
            m.insert(key, verdict);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    /// Lists held (in use or not yet swept).
    fn held(lists: &SettingLists) -> usize {
        lists.0.lock().unwrap().lists.len()
    }

    #[test]
    fn equal_setting_lists_are_one_shared_list_and_unused_ones_are_swept() {
        let lists = SettingLists::default();
        let a = lists.intern(list(&[("application_name", "app"), ("timezone", "UTC")]));
        let b = lists.intern(list(&[("application_name", "app"), ("timezone", "UTC")]));
        assert!(Arc::ptr_eq(&a, &b), "equal lists are shared");
        let c = lists.intern(list(&[("application_name", "other")]));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(&c[..], &list(&[("application_name", "other")])[..]);
        let empty = lists.intern(Vec::new());
        assert!(empty.is_empty());
        assert_eq!(held(&lists), 3);
        // Lists nobody holds go once the set has grown enough; held ones stay, still shared.
        drop((b, c));
        for i in 0..200 {
            drop(lists.intern(list(&[("application_name", &format!("client {i}"))])));
        }
        assert!(held(&lists) < 200, "unused lists swept: {}", held(&lists));
        let again = lists.intern(list(&[("application_name", "app"), ("timezone", "UTC")]));
        assert!(Arc::ptr_eq(&a, &again), "a list in use is kept");
        assert!(Arc::ptr_eq(&empty, &lists.intern(Vec::new())));
    }
}
