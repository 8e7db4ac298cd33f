//! Discovery: clients waiting for a primary ask the servers themselves now and then (besides the
//! prober), logged in as the prober is, falling back to the client's own login when the servers
//! refuse the prober's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::probe::{self, ProbeError};
use super::topology::Probe;
use super::{Cluster, ClusterError, server_unavailable};
use crate::backend::{BackendError, LoginParams};
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

/// What discovery makes of one server's answer.
#[derive(Debug)]
enum Verdict {
    /// The server answered: recorded as a probe of the prober's is.
    Answered(Probe),
    /// No answer (unreachable, timed out, starting, the connection broke): a failed probe.
    NoAnswer(ProbeError),
    /// The servers refuse the prober's login: discovery uses the clients' own from now on.
    ProberRefused(BackendError),
    /// The servers refuse the client's own login: that is the client's error.
    ClientRefused(BackendError),
}

/// Judges one server's answer to discovery, which logged in as the prober (`as_prober`) or as the
/// client. A refused login says nothing about the server's health.
fn judge(result: Result<Probe, ProbeError>, as_prober: bool) -> Verdict {
    match result {
        Ok(p) => Verdict::Answered(p),
        Err(ProbeError::Refused(e)) if !server_unavailable(&e) && as_prober => Verdict::ProberRefused(e),
        Err(ProbeError::Refused(e)) if !server_unavailable(&e) => Verdict::ClientRefused(e),
        Err(e) => Verdict::NoAnswer(e),
    }
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
                (server, r.unwrap_or_else(|_| Err(ProbeError::Timeout)))
            }
        });
        let results = futures_util::future::join_all(probes).await;
        let mut problems = Vec::new();
        for (server, result) in results {
            match judge(result, as_prober) {
                Verdict::Answered(p) => self.record_probe(server, round, Some(p), Instant::now()),
                Verdict::ProberRefused(e) => {
                    tracing::warn!(server = %server, error = %e, "the servers refuse the prober's login; discovery uses the clients' own");
                    self.discovery().login = None;
                    problems.push(format!("{server}: {e}"));
                }
                Verdict::ClientRefused(e) => return Err(PoolError::Connect(e).into()),
                Verdict::NoAnswer(e) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One server's answer, in short.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        Probed,
        /// Connecting failed: unreachable.
        Unreachable,
        /// Connecting timed out.
        ConnectTimeout,
        /// The login was refused (here by pgmux's own checks: no server's health is in question).
        LoginRefused,
        /// The connection broke after login.
        Lost,
        /// No answer in time.
        Timeout,
    }

    fn answer(a: Answer) -> Result<Probe, ProbeError> {
        let server: Arc<str> = "p:1".into();
        match a {
            Answer::Probed => Ok(Probe {
                in_recovery: false,
                lsn: 1,
                written: None,
                received: None,
                timeline: Some(1),
                system_id: Some(7),
            }),
            Answer::Unreachable => Err(ProbeError::Refused(BackendError::Io {
                server,
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            })),
            Answer::ConnectTimeout => Err(ProbeError::Refused(BackendError::Timeout { server })),
            Answer::LoginRefused => {
                Err(ProbeError::Refused(BackendError::Protocol { server, detail: "no such method".into() }))
            }
            Answer::Lost => Err(ProbeError::Lost("connection reset".into())),
            Answer::Timeout => Err(ProbeError::Timeout),
        }
    }

    /// Each row: an answer, whether discovery logged in as the prober, and the verdict's name.
    #[test]
    fn verdicts_table() {
        use Answer::*;
        #[rustfmt::skip]
        let rows: &[(Answer, bool, &str)] = &[
            (Probed,         true,  "Answered"),
            (Probed,         false, "Answered"),
            (Unreachable,    true,  "NoAnswer"),
            (Unreachable,    false, "NoAnswer"),
            (ConnectTimeout, true,  "NoAnswer"),
            (Lost,           false, "NoAnswer"),
            (Timeout,        true,  "NoAnswer"),
            // A refused login: the prober's is dropped for the client's; the client's is its error.
            (LoginRefused,   true,  "ProberRefused"),
            (LoginRefused,   false, "ClientRefused"),
        ];
        for (a, as_prober, want) in rows {
            let got = match judge(answer(*a), *as_prober) {
                Verdict::Answered(_) => "Answered",
                Verdict::NoAnswer(_) => "NoAnswer",
                Verdict::ProberRefused(_) => "ProberRefused",
                Verdict::ClientRefused(_) => "ClientRefused",
            };
            assert_eq!(got, *want, "{a:?}, as prober: {as_prober}");
        }
    }
}
