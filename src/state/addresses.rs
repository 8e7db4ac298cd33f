//! Per-source-address limits before authentication: how many clients from one address may be in
//! their handshake at once (`clients.max_handshakes_per_address`), and an escalating delay for an
//! address whose logins keep failing (`clients.login_throttle_*`).
//!
//! Both are about unauthenticated work, so they act before a client takes one of the global
//! handshake places (`clients.max_handshakes`): an address opening connections that never finish,
//! or guessing passwords, waits in its own queue and cannot take the places other addresses need.
//! Clients over the per-address limit queue (up to `startup_timeout`), they are not dropped, so a
//! legitimate storm from one host (an application server restarting its pool) still gets in.
//!
//! IPv6 sources are keyed by their /64 (one host usually holds a whole /64), IPv4 by address. The
//! table is bounded (`MAX_ADDRESSES`): entries nobody is using and with no recent failures go first;
//! past that, the least recently seen goes (its limits then start afresh).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Source addresses tracked at once.
pub const MAX_ADDRESSES: usize = 10_000;

/// The per-address settings (from `clients:`; a reload applies to addresses not connecting now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressLimits {
    /// Clients from one address in their handshake at once (at least 1).
    pub max_handshakes: usize,
    /// Failed logins within `window` before further attempts are delayed (0: never delayed).
    pub throttle_after: u32,
    /// A failure older than this (since the address's last one) starts the count again.
    pub window: Duration,
    /// The first delay; each further failure doubles it, up to `max_delay`.
    pub delay: Duration,
    pub max_delay: Duration,
}

impl Default for AddressLimits {
    fn default() -> Self {
        AddressLimits {
            max_handshakes: 20,
            throttle_after: 5,
            window: Duration::from_secs(60),
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// Handshake places of this address (permits held by its clients in their handshake).
    places: Arc<Semaphore>,
    /// Failed logins counted, and when the last one was.
    failures: u32,
    last_failure: Option<Instant>,
    last_seen: Instant,
}

impl Entry {
    fn new(limit: usize, now: Instant) -> Entry {
        Entry { places: Arc::new(Semaphore::new(limit.max(1))), failures: 0, last_failure: None, last_seen: now }
    }

    /// Failures that still count at `now`.
    fn recent_failures(&self, now: Instant, window: Duration) -> u32 {
        match self.last_failure {
            Some(t) if now.saturating_duration_since(t) < window => self.failures,
            _ => 0,
        }
    }

    /// Nobody holds or waits for a place, and nothing recent is remembered.
    fn unused(&self, now: Instant, window: Duration) -> bool {
        Arc::strong_count(&self.places) == 1 && self.recent_failures(now, window) == 0
    }
}

/// Every source address with clients connecting or recent failed logins.
#[derive(Debug, Default)]
pub struct Addresses {
    table: Mutex<HashMap<IpAddr, Entry>>,
}

/// The key an address is tracked under.
fn key_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Addresses {
    /// Runs `f` on `ip`'s entry, made if missing (evicting to stay within `MAX_ADDRESSES`).
    fn with_entry<T>(&self, ip: IpAddr, limits: &AddressLimits, f: impl FnOnce(&mut Entry, Instant) -> T) -> T {
        let now = Instant::now();
        let key = key_of(ip);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !table.contains_key(&key) && table.len() >= MAX_ADDRESSES {
            table.retain(|_, e| !e.unused(now, limits.window));
            if table.len() >= MAX_ADDRESSES
                && let Some(oldest) = table.iter().min_by_key(|(_, e)| e.last_seen).map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        let entry = table.entry(key).or_insert_with(|| Entry::new(limits.max_handshakes, now));
        entry.last_seen = now;
        f(entry, now)
    }

    /// Waits for a handshake place of `ip` (the caller bounds the wait).
    pub async fn enter(&self, ip: IpAddr, limits: &AddressLimits) -> Option<OwnedSemaphorePermit> {
        let places = self.with_entry(ip, limits, |e, _| e.places.clone());
        places.acquire_owned().await.ok()
    }

    /// How long to hold back a login attempt from `ip` (None: not at all), and the failures behind it.
    pub fn delay_for(&self, ip: IpAddr, limits: &AddressLimits) -> Option<(Duration, u32)> {
        if limits.throttle_after == 0 {
            return None;
        }
        let key = key_of(ip);
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let failures = table.get(&key)?.recent_failures(Instant::now(), limits.window);
        let over = failures.checked_sub(limits.throttle_after)?;
        let delay = limits.delay.saturating_mul(1u32 << over.min(20)).min(limits.max_delay);
        Some((delay, failures))
    }

    /// Notes a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, limits: &AddressLimits) {
        self.with_entry(ip, limits, |e, now| {
            e.failures = e.recent_failures(now, limits.window).saturating_add(1);
            e.last_failure = Some(now);
        });
    }

    /// Addresses tracked now.
    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn places_are_per_address() {
        let a = Addresses::default();
        let limits = AddressLimits { max_handshakes: 2, ..AddressLimits::default() };
        let p1 = a.enter(ip("10.0.0.1"), &limits).await.unwrap();
        let _p2 = a.enter(ip("10.0.0.1"), &limits).await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(20), a.enter(ip("10.0.0.1"), &limits)).await;
        assert!(third.is_err(), "a third place from one address waits");
        let other = tokio::time::timeout(Duration::from_millis(20), a.enter(ip("10.0.0.2"), &limits)).await;
        assert!(other.is_ok(), "another address is not held up");
        drop(p1);
        assert!(a.enter(ip("10.0.0.1"), &limits).await.is_some());
        // One IPv6 /64 is one address; an IPv4-mapped address is its IPv4 one.
        assert_eq!(key_of(ip("2001:db8::1")), key_of(ip("2001:db8::ffff:1")));
        assert_ne!(key_of(ip("2001:db8::1")), key_of(ip("2001:db8:0:1::1")));
        assert_eq!(key_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn delays_double_after_the_threshold_up_to_the_cap_and_only_for_that_address() {
        let a = Addresses::default();
        let limits = AddressLimits {
            throttle_after: 2,
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            ..AddressLimits::default()
        };
        let bad = ip("10.0.0.9");
        let mut delays = Vec::new();
        for _ in 0..5 {
            delays.push(a.delay_for(bad, &limits).map(|(d, _)| d.as_millis()));
            a.failed(bad, &limits);
        }
        assert_eq!(delays, [None, None, Some(100), Some(200), Some(350)]);
        assert_eq!(a.delay_for(ip("10.0.0.10"), &limits), None);
        let off = AddressLimits { throttle_after: 0, ..limits.clone() };
        assert_eq!(a.delay_for(bad, &off), None);
        // Forgotten once the window has passed since the last failure.
        let short = AddressLimits { window: Duration::ZERO, ..limits };
        assert_eq!(a.delay_for(bad, &short), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let a = Addresses::default();
        let limits = AddressLimits::default();
        for i in 0..(MAX_ADDRESSES as u32 + 500) {
            a.failed(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)), &limits);
        }
        assert!(a.len() <= MAX_ADDRESSES, "{}", a.len());
    }
}
