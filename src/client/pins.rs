//! Pinning: session state that cannot move between server connections keeps a client on its
//! connection until the state is gone. Each pin has reasons; they are verified against the server
//! (not guessed from SQL), counted, logged, and visible per client.

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

/// Run after a transaction that may have changed session state: the session's settings, then one
/// row counting each kind of pinning state the connection holds, then who the session runs as
/// (`role` and `session_authorization` are not in pg_settings) and how many protocol-level
/// statements it has (pgmux's own, to compare with what pgmux believes).
///
/// Every function, operator and relation is schema-qualified: a client's search_path may put
/// look-alike objects (an `=` that is never true, a `count` that says 0) before pg_catalog.
pub const CHECK_SQL: &str = "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings \
     WHERE source OPERATOR(pg_catalog.=) 'session' AND NOT name OPERATOR(pg_catalog.=) ANY \
     ('{transaction_read_only,transaction_isolation,transaction_deferrable}'::pg_catalog.text[]) ORDER BY name; \
     SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class \
     WHERE relnamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks WHERE locktype OPERATOR(pg_catalog.=) 'advisory' \
     AND pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels()), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors WHERE is_holdable), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql), \
     pg_catalog.current_setting('session_authorization'), pg_catalog.current_setting('role'), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements WHERE NOT from_sql)";

/// What the check's second result row says beyond pin counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `session_authorization`, if not the login user.
    pub session_authorization: Option<String>,
    /// `role`, if one is set.
    pub role: Option<String>,
    /// Protocol-level prepared statements on the connection.
    pub statements: Option<usize>,
}

impl Identity {
    /// Reads columns 5.. of the check's counts row; `login` is the user pgmux logged in as.
    pub fn from_row(row: &[Option<String>], login: &str) -> Identity {
        let col = |i: usize| row.get(i).and_then(|v| v.clone());
        Identity {
            session_authorization: col(5).filter(|v| v != login),
            role: col(6).filter(|v| v != "none"),
            statements: col(7).and_then(|v| v.parse().ok()),
        }
    }

    /// The identity settings to carry with the client's other settings.
    pub fn settings(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let sa = self.session_authorization.iter().map(|v| ("session_authorization".to_string(), v.clone()));
        sa.chain(self.role.iter().map(|v| ("role".to_string(), v.clone())))
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
    pub fn record(&self, user: &str, old: PinReasons, new: PinReasons) {
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
                tracing::info!(event = "pinned", user, reasons = %new, held_back, "client pinned to its server connection")
            }
            (false, true) => tracing::info!(event = "unpinned", user, was = %old, held_back, "client unpinned"),
            _ => {
                tracing::info!(event = "pin_changed", user, reasons = %new, was = %old, held_back, "client pin reasons changed")
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
    fn identity_from_the_counts_row() {
        let row = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        let id = Identity::from_row(&row(&["0", "0", "0", "0", "0", "app", "none", "3"]), "app");
        assert_eq!((id.session_authorization.clone(), id.role.clone(), id.statements), (None, None, Some(3)));
        assert_eq!(id.settings().count(), 0);
        let id = Identity::from_row(&row(&["0", "0", "0", "0", "0", "other", "low", "0"]), "app");
        let got: Vec<_> = id.settings().collect();
        assert_eq!(got, vec![("session_authorization".into(), "other".into()), ("role".into(), "low".into())]);
    }

    #[test]
    fn check_sql_names_everything_by_schema() {
        // Every call and comparison goes through pg_catalog; a bare `count(`, `=` or `<>` would let
        // a client's search_path answer in pg_catalog's place.
        let unqualified_call = CHECK_SQL.match_indices("count(").any(|(i, _)| !CHECK_SQL[..i].ends_with("pg_catalog."));
        assert!(!unqualified_call);
        let bare_eq = CHECK_SQL.match_indices('=').any(|(i, _)| !CHECK_SQL[..i].ends_with("OPERATOR(pg_catalog."));
        assert!(!bare_eq);
        assert!(!CHECK_SQL.contains("<>") && !CHECK_SQL.contains(" IN ("));
    }

    #[test]
    fn stats_count_pins_and_pinned_clients() {
        let s = PinStats::default();
        s.record("u", PinReasons::default(), PinReasons::LISTEN);
        s.record("u", PinReasons::LISTEN, PinReasons::LISTEN.union(PinReasons::TEMP_OBJECT));
        assert_eq!(s.pinned_now.load(Ordering::Relaxed), 1);
        assert_eq!(s.count(PinReasons::TEMP_OBJECT), 1);
        s.record("u", PinReasons::LISTEN.union(PinReasons::TEMP_OBJECT), PinReasons::default());
        assert_eq!(s.pinned_now.load(Ordering::Relaxed), 0);
        assert_eq!(s.count(PinReasons::LISTEN), 1);
    }
}
