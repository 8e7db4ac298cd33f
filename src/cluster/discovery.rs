//! Discovery: clients waiting for a primary ask the servers themselves now and then (besides the
//! prober), logged in as the prober is, falling back to the client's own login when the servers
//! refuse the prober's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Cluster, ClusterError, probe, server_unavailable};
use crate::backend::LoginParams;
use crate::pool::PoolError;

/// How often clients waiting for a primary may ask the servers themselves (besides the prober).
const DISCOVERY_EVERY: Duration = Duration::from_millis(100);

/// What discovery keeps between rounds.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    /// Why the last attempt to reach a primary failed (discovery, or a client's connect).
    pub problems: String,
    /// The prober's login, which discovery uses too: a client's own login would add a connection
    /// the server counts against that user beyond `pool.size`. None: no prober, or the servers
    /// refused its login (discovery uses the clients' own from then on).
    pub login: Option<LoginParams>,
}

impl Cluster {
    fn discovery(&self) -> std::sync::MutexGuard<'_, Discovery> {
        self.discovery.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the last attempt to reach a primary failed.
    pub(super) fn problems(&self) -> String {
        self.discovery().problems.clone()
    }

    pub(super) fn set_problems(&self, problems: String) {
        self.discovery().problems = problems;
    }

    /// Discovery logs in as the prober does (`login`) from now on.
    pub(super) fn discover_as(&self, login: LoginParams) {
        self.discovery().login = Some(login);
    }

    /// Waits until a primary is known or `deadline` passes, asking the servers now and then.
    pub(super) async fn wait_for_primary(
        &self,
        database: &str,
        user: &str,
        deadline: Instant,
    ) -> Result<Arc<str>, ClusterError> {
        let mut watch = self.primary.subscribe();
        loop {
            if let Some(p) = watch.borrow_and_update().clone() {
                return Ok(p);
            }
            // This client's own discovery waits for every server's answer (one that accepts but
            // answers slowly holds it up to its connect timeout): a primary found meanwhile, by
            // the prober or another client, ends the wait at once.
            tokio::select! {
                _ = watch.changed() => continue,
                found = self.discover(database, user) => found?,
            }
            if let Some(p) = self.primary() {
                return Ok(p);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClusterError::NoPrimary(self.problems()));
            }
            let _ = tokio::time::timeout_at((now + DISCOVERY_EVERY).min(deadline).into(), watch.changed()).await;
        }
    }

    /// Probes every server and follows the election. One at a time, at most every
    /// DISCOVERY_EVERY. It logs in as the prober does (a client's own login would be one more
    /// connection the server counts against that user); if the servers refuse the prober's login,
    /// discovery uses the client's from then on (so a broken prober login cannot hide the primary),
    /// and a login the servers refuse is then the client's error.
    async fn discover(&self, database: &str, user: &str) -> Result<(), ClusterError> {
        let Ok(mut last) = self.discovering.try_lock() else {
            return Ok(());
        };
        if last.is_some_and(|t| t.elapsed() < DISCOVERY_EVERY) {
            return Ok(());
        }
        *last = Some(Instant::now());
        self.refresh_names().await;
        let probe_login = self.discovery().login.clone();
        let as_prober = probe_login.is_some();
        let mut login = match probe_login {
            Some(l) => l,
            None => self.login(database, user)?,
        };
        login.connect_timeout = login.connect_timeout.min(Duration::from_secs(2));
        login.init_query.clear();
        let round = self.start_probe_round();
        let servers = self.servers();
        let probes = servers.iter().map(|server| {
            let login = &login;
            async move {
                let mut conn = None;
                let r = tokio::time::timeout(login.connect_timeout, probe::probe(server, &mut conn, login)).await;
                (server, r.unwrap_or_else(|_| Err(probe::ProbeError::Timeout)))
            }
        });
        let results = futures_util::future::join_all(probes).await;
        let mut problems = Vec::new();
        for (server, result) in results {
            match result {
                Ok(p) => self.record_probe(server, round, Some(p), Instant::now()),
                Err(probe::ProbeError::Refused(e)) if !server_unavailable(&e) && as_prober => {
                    tracing::warn!(server = %server, error = %e, "the servers refuse the prober's login; discovery uses the clients' own");
                    self.discovery().login = None;
                    problems.push(format!("{server}: {e}"));
                }
                Err(probe::ProbeError::Refused(e)) if !server_unavailable(&e) => {
                    return Err(PoolError::Connect(e).into());
                }
                Err(e) => {
                    problems.push(format!("{server}: {e}"));
                    self.record_probe(server, round, None, Instant::now());
                }
            }
        }
        if self.primary().is_none() {
            problems.push("no server reports being a primary".into());
        }
        self.set_problems(problems.join("; "));
        Ok(())
    }
}
