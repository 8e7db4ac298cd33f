//! Pinning: session state that cannot move between server connections keeps a client on its
//! connection until the state is gone. Each pin has reasons (here, with the proxy's pin counters);
//! they are verified against the server (not guessed from SQL: `client::check`), counted, logged,
//! and visible per client (the client registry).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Why a client is pinned (a set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinReasons(u8);

impl PinReasons {
    pub const TEMP_OBJECT: PinReasons = PinReasons(1);
    pub const ADVISORY_LOCK: PinReasons = PinReasons(2);
    pub const LISTEN: PinReasons = PinReasons(4);
    pub const CURSOR_WITH_HOLD: PinReasons = PinReasons(8);
    pub const SQL_PREPARE: PinReasons = PinReasons(16);
    pub const LOAD: PinReasons = PinReasons(32);
    /// The session-state check failed (a client's statement_timeout, say): what the session holds
    /// is unknown, so it stays with its client until a check succeeds.
    pub const UNVERIFIED: PinReasons = PinReasons(64);

    /// Every reason with its name, in the order of the verification query's columns (LOAD and
    /// UNVERIFIED last: no column).
    pub const ALL: [(PinReasons, &'static str); 7] = [
        (PinReasons::TEMP_OBJECT, "temp_object"),
        (PinReasons::ADVISORY_LOCK, "advisory_lock"),
        (PinReasons::LISTEN, "listen"),
        (PinReasons::CURSOR_WITH_HOLD, "cursor_with_hold"),
        (PinReasons::SQL_PREPARE, "sql_prepare"),
        (PinReasons::LOAD, "load"),
        (PinReasons::UNVERIFIED, "unverified"),
    ];

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> PinReasons {
        PinReasons(bits & 127)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: PinReasons) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: PinReasons) -> PinReasons {
        PinReasons(self.0 | other.0)
    }

    pub fn names(self) -> Vec<&'static str> {
        PinReasons::ALL.iter().filter(|(r, _)| self.contains(*r)).map(|(_, n)| *n).collect()
    }

    /// Reads the counts row of `CHECK_SQL` (one count per reason but LOAD).
    pub fn from_counts(row: &[Option<String>]) -> PinReasons {
        let mut out = PinReasons::default();
        for (i, (reason, _)) in PinReasons::ALL.iter().take(5).enumerate() {
            let n: i64 = row.get(i).and_then(|v| v.as_deref()).and_then(|v| v.parse().ok()).unwrap_or(0);
            if n > 0 {
                out = out.union(*reason);
            }
        }
        out
    }
}

impl std::fmt::Display for PinReasons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// Pin counters for the whole proxy.
#[derive(Debug, Default)]
pub struct PinStats {
    /// Pins begun, by reason (indexed like `PinReasons::ALL`).
    pub by_reason: [AtomicU64; 7],
    /// Clients pinned right now.
    pub pinned_now: AtomicI64,
    /// Pin and unpin log lines (an application may pin on every transaction).
    log: crate::log_limit::Limiter,
}

impl PinStats {
    /// Records a client's pin reasons changing from `old` to `new`, and logs it.
    pub fn record(&self, user: &str, peer: std::net::SocketAddr, old: PinReasons, new: PinReasons) {
        if old == new {
            return;
        }
        for (i, (reason, _)) in PinReasons::ALL.iter().enumerate() {
            if new.contains(*reason) && !old.contains(*reason) {
                self.by_reason[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        match (old.is_empty(), new.is_empty()) {
            (true, false) => self.pinned_now.fetch_add(1, Ordering::Relaxed),
            (false, true) => self.pinned_now.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        let Some(held_back) = self.log.check() else { return };
        match (old.is_empty(), new.is_empty()) {
            (true, false) => {
                tracing::info!(event = "pinned", user, %peer, reasons = %new, held_back, "client pinned to its server connection")
            }
            (false, true) => tracing::info!(event = "unpinned", user, %peer, was = %old, held_back, "client unpinned"),
            _ => {
                tracing::info!(event = "pin_changed", user, %peer, reasons = %new, was = %old, held_back, "client pin reasons changed")
            }
        }
    }

    /// Pins begun for `reason` so far.
    pub fn count(&self, reason: PinReasons) -> u64 {
        PinReasons::ALL
            .iter()
            .position(|(r, _)| *r == reason)
            .map(|i| self.by_reason[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_from_counts_and_names() {
        let row: Vec<Option<String>> = ["1", "0", "2", "0", "0"].iter().map(|s| Some(s.to_string())).collect();
        let r = PinReasons::from_counts(&row);
        assert_eq!(r.names(), vec!["temp_object", "listen"]);
        assert_eq!(r.union(PinReasons::LOAD).to_string(), "temp_object,listen,load");
        assert!(PinReasons::from_counts(&[]).is_empty());
        assert_eq!(PinReasons::UNVERIFIED.to_string(), "unverified");
    }

    #[test]
    fn stats_count_pins_and_pinned_clients() {
        let s = PinStats::default();
        s.record("u", ([127, 0, 0, 1], 5000).into(), PinReasons::default(), PinReasons::LISTEN);
        s.record(
            "u",
            ([127, 0, 0, 1], 5000).into(),
            PinReasons::LISTEN,
            PinReasons::LISTEN.union(PinReasons::TEMP_OBJECT),
        );
        assert_eq!(s.pinned_now.load(Ordering::Relaxed), 1);
        assert_eq!(s.count(PinReasons::TEMP_OBJECT), 1);
        s.record(
            "u",
            ([127, 0, 0, 1], 5000).into(),
            PinReasons::LISTEN.union(PinReasons::TEMP_OBJECT),
            PinReasons::default(),
        );
        assert_eq!(s.pinned_now.load(Ordering::Relaxed), 0);
        assert_eq!(s.count(PinReasons::LISTEN), 1);
    }
}
