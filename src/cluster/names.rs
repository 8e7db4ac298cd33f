//! Server entries that are host names: resolved again now and then (managed databases move their
//! names on failover), each address a member of its own. A member is named `host@address`, so
//! status output says where it came from and TLS still checks the host name.

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Turns a host name and port into addresses. Production uses the system's resolver; tests that
/// start pgmux as a library can hand in their own (a name service they control, without touching
/// the machine's).
pub trait Resolve: Send + Sync + std::fmt::Debug {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

pub use crate::net::{member_addr as connect_addr, member_host as host_name};

/// The configured entries and what their names resolved to last.
#[derive(Debug)]
pub struct Names {
    /// `(host, port, members)`: members start as the entry itself (connects resolve it as they
    /// go) until a resolution succeeds; a failed one keeps the last answer.
    entries: Vec<(String, u16, Vec<Arc<str>>)>,
    pub min_interval: Duration,
    last: Option<Instant>,
}

impl Names {
    /// `servers` as `host:port` strings.
    pub fn new(servers: &[String], min_interval: Duration) -> Names {
        let mut names = Names { entries: Vec::new(), min_interval, last: None };
        names.set(servers);
        names
    }

    /// Follows a new server list; entries still listed keep their last resolution.
    pub fn set(&mut self, servers: &[String]) {
        // A new list is resolved at the next chance.
        self.last = None;
        let old = std::mem::take(&mut self.entries);
        self.entries = servers
            .iter()
            .map(|s| {
                let (host, port) = split_host_port(s);
                match old.iter().find(|(h, p, _)| *h == host && *p == port) {
                    Some(known) => known.clone(),
                    None => (host, port, vec![Arc::from(s.as_str())]),
                }
            })
            .collect();
    }

    /// Every member, in the order of the entries (duplicates dropped).
    pub fn members(&self) -> Vec<Arc<str>> {
        let mut seen = HashSet::new();
        self.entries.iter().flat_map(|(_, _, m)| m.iter()).filter(|m| seen.insert(Arc::clone(m))).cloned().collect()
    }

    /// Whether any entry is a host name.
    pub fn has_names(&self) -> bool {
        self.entries.iter().any(|(h, _, _)| h.parse::<IpAddr>().is_err())
    }

    /// Whether a resolution is due (`min_interval` since the last one began); if so, marks one begun.
    pub fn start_if_due(&mut self, now: Instant) -> bool {
        if !self.has_names() || self.last.is_some_and(|t| now.saturating_duration_since(t) < self.min_interval) {
            return false;
        }
        self.last = Some(now);
        true
    }

    /// The host names to resolve: `(host, port)`.
    pub fn to_resolve(&self) -> Vec<(String, u16)> {
        self.entries.iter().filter(|(h, _, _)| h.parse::<IpAddr>().is_err()).map(|(h, p, _)| (h.clone(), *p)).collect()
    }

    /// Records what `host:port` resolved to (an empty or failed answer keeps the last one).
    pub fn resolved(&mut self, host: &str, port: u16, addrs: &[SocketAddr]) {
        if addrs.is_empty() {
            return;
        }
        let mut members: Vec<Arc<str>> = Vec::new();
        for a in addrs {
            let m: Arc<str> = Arc::from(format!("{host}@{a}"));
            if !members.contains(&m) {
                members.push(m);
            }
        }
        for (_, _, m) in self.entries.iter_mut().filter(|(h, p, _)| h == host && *p == port) {
            *m = members.clone();
        }
    }
}

/// `host:port`, `[v6]:port`; a missing or bad port reads as 5432.
fn split_host_port(s: &str) -> (String, u16) {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((h, p)) = rest.split_once(']')
    {
        return (h.to_string(), p.trim_start_matches(':').parse().unwrap_or(5432));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().unwrap_or(5432)),
        _ => (s.to_string(), 5432),
    }
}

/// Resolves every name of `names` with `resolver`, each within `timeout`; returns the answers.
pub async fn resolve_all(
    resolver: &dyn Resolve,
    names: Vec<(String, u16)>,
    timeout: Duration,
) -> Vec<(String, u16, Vec<SocketAddr>)> {
    let lookups = names.into_iter().map(|(host, port)| async move {
        let r = tokio::time::timeout(timeout, resolver.lookup(&host, port)).await;
        let addrs = match r {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                tracing::warn!(host = %host, error = %e, "cannot resolve a server's host name; keeping its last addresses");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(host = %host, "resolving a server's host name timed out; keeping its last addresses");
                Vec::new()
            }
        };
        (host, port, addrs)
    });
    futures_util::future::join_all(lookups).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_become_one_member_per_address_and_keep_the_last_answer() {
        let mut n =
            Names::new(&["10.0.0.1:5432".into(), "writer.db:5432".into(), "[::1]:6432".into()], Duration::from_secs(1));
        let members = |n: &Names| n.members().iter().map(|m| m.to_string()).collect::<Vec<_>>();
        assert_eq!(members(&n), ["10.0.0.1:5432", "writer.db:5432", "[::1]:6432"], "unresolved: as configured");
        assert_eq!(n.to_resolve(), [("writer.db".to_string(), 5432)]);
        let t0 = Instant::now();
        assert!(n.start_if_due(t0));
        assert!(!n.start_if_due(t0 + Duration::from_millis(999)), "minimum interval");
        assert!(n.start_if_due(t0 + Duration::from_secs(1)));
        n.resolved("writer.db", 5432, &[a("10.0.0.7:5432"), a("10.0.0.8:5432"), a("10.0.0.7:5432")]);
        assert_eq!(members(&n), ["10.0.0.1:5432", "writer.db@10.0.0.7:5432", "writer.db@10.0.0.8:5432", "[::1]:6432"]);
        n.resolved("writer.db", 5432, &[]);
        assert_eq!(members(&n).len(), 4, "a failed answer keeps the last one");
        n.set(&["writer.db:5432".into()]);
        assert_eq!(members(&n), ["writer.db@10.0.0.7:5432", "writer.db@10.0.0.8:5432"], "reload keeps it");
        assert_eq!(connect_addr("writer.db@10.0.0.7:5432"), "10.0.0.7:5432");
        assert_eq!(host_name("writer.db@10.0.0.7:5432"), Some("writer.db"));
        assert_eq!((connect_addr("10.0.0.1:5432"), host_name("10.0.0.1:5432")), ("10.0.0.1:5432", None));
        let only_ips = Names::new(&["10.0.0.1:5432".into()], Duration::ZERO);
        assert!(!only_ips.has_names());
    }
}
