//! The admin console's SHOW results as tables (typed columns, text values), each built from one
//! [`Snapshot`]. The README's "Admin console" section lists the same columns.

use super::snapshot::{PoolView, Snapshot, millis};

/// A column's SQL type, as announced in RowDescription (values are always sent as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    Int,
    Bool,
}

impl Type {
    pub fn oid(self) -> u32 {
        match self {
            Type::Text => 25,
            Type::Int => 20,
            Type::Bool => 16,
        }
    }
}

/// A result set; `None` values are SQL NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<(&'static str, Type)>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    fn new(columns: &[(&'static str, Type)]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// The values of column `name`, for tests and callers that read a table back.
    pub fn column(&self, name: &str) -> Vec<Option<&str>> {
        let Some(i) = self.columns.iter().position(|(n, _)| *n == name) else { return Vec::new() };
        self.rows.iter().map(|row| row[i].as_deref()).collect()
    }
}

use Type::{Bool, Int, Text};

fn text(v: impl Into<String>) -> Option<String> {
    Some(v.into())
}

fn int(v: impl Into<u64>) -> Option<String> {
    Some(v.into().to_string())
}

fn count(v: usize) -> Option<String> {
    Some(v.to_string())
}

fn boolean(v: bool) -> Option<String> {
    Some(if v { "t" } else { "f" }.to_owned())
}

pub fn pools(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("server", Text),
        ("role", Text),
        ("mode", Text),
        ("size", Int),
        ("borrowed", Int),
        ("idle", Int),
        ("waiting", Int),
    ]);
    for p in &s.pools {
        t.rows.push(vec![
            text(&p.database),
            text(&p.user),
            text(&p.server),
            text(p.role),
            text(s.pool_mode),
            count(p.size),
            count(p.borrowed),
            count(p.idle),
            count(p.waiting),
        ]);
    }
    t
}

pub fn clients(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("id", Int),
        ("user", Text),
        ("database", Text),
        ("server", Text),
        ("pinned", Bool),
        ("pin_reasons", Text),
    ]);
    for c in &s.clients {
        t.rows.push(vec![
            Some(c.pid.to_string()),
            text(&c.user),
            text(&c.database),
            c.server.clone(),
            boolean(!c.pins.is_empty()),
            text(c.pins.join(",")),
        ]);
    }
    t
}

pub fn servers(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("server", Text),
        ("role", Text),
        ("up", Bool),
        ("lag_ms", Int),
        ("lag_bytes", Int),
        ("borrowed", Int),
        ("idle", Int),
        ("waiting", Int),
    ]);
    for v in &s.servers {
        let of_server: Vec<&PoolView> = s.pools.iter().filter(|p| *p.server == *v.server).collect();
        let sum = |f: fn(&PoolView) -> usize| count(of_server.iter().map(|p| f(p)).sum());
        t.rows.push(vec![
            text(&*v.server),
            text(v.role),
            boolean(v.up),
            v.lag.map(millis).and_then(int),
            v.lag_bytes.and_then(int),
            sum(|p| p.borrowed),
            sum(|p| p.idle),
            sum(|p| p.waiting),
        ]);
    }
    t
}

/// One row per server; the failover columns are cluster-wide (the same on every row).
pub fn topology(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("server", Text),
        ("role", Text),
        ("up", Bool),
        ("followed", Bool),
        ("timeline", Int),
        ("lag_ms", Int),
        ("lag_bytes", Int),
        ("failovers", Int),
        ("recoveries", Int),
        ("last_detect_ms", Int),
        ("last_recover_ms", Int),
        ("failover_in_progress", Bool),
    ]);
    let f = &s.failover;
    for v in &s.servers {
        t.rows.push(vec![
            text(&*v.server),
            text(v.role),
            boolean(v.up),
            boolean(s.primary.as_deref() == Some(&*v.server)),
            v.timeline.and_then(int),
            v.lag.map(millis).and_then(int),
            v.lag_bytes.and_then(int),
            int(f.failovers),
            int(f.recoveries),
            f.last_detect_ms.and_then(int),
            f.last_recover_ms.and_then(int),
            boolean(f.in_progress),
        ]);
    }
    t
}

/// Per pool counters since start, and the clients pinned to its connections now.
pub fn stats(s: &Snapshot) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("server", Text),
        ("borrows", Int),
        ("opened", Int),
        ("discarded", Int),
        ("timeouts", Int),
        ("pinned", Int),
    ]);
    for p in &s.pools {
        let pinned = s
            .clients
            .iter()
            .filter(|c| !c.pins.is_empty() && c.user == p.user && c.database == p.database)
            .filter(|c| c.server.as_deref() == Some(&*p.server))
            .count();
        t.rows.push(vec![
            text(&p.database),
            text(&p.user),
            text(&p.server),
            int(p.borrows),
            int(p.opened),
            int(p.discarded),
            int(p.timeouts),
            count(pinned),
        ]);
    }
    t
}

/// Per pin reason: clients pinned for it now, and pins begun for it since start.
pub fn pins(s: &Snapshot) -> Table {
    let mut t = Table::new(&[("reason", Text), ("pinned_now", Int), ("pins_total", Int)]);
    for (reason, total) in &s.pins_by_reason {
        let now = s.clients.iter().filter(|c| c.pins.contains(reason)).count();
        t.rows.push(vec![text(*reason), count(now), int(*total)]);
    }
    t
}

/// Proxy-wide state as (key, value) rows.
pub fn state(s: &Snapshot) -> Table {
    let rows = [
        ("paused", (if s.paused { "t" } else { "f" }).to_owned()),
        ("held_by_pause", s.held_by_pause.to_string()),
        ("transactions_running", s.transactions_running().to_string()),
        ("draining", (if s.draining { "t" } else { "f" }).to_owned()),
        ("clients_connected", s.clients_connected.to_string()),
        ("pinned_now", s.pinned_now.to_string()),
        ("primary", s.primary.clone().unwrap_or_default()),
        ("pool_mode", s.pool_mode.to_owned()),
    ];
    key_values(rows.into_iter().map(|(k, v)| (k.to_owned(), v)))
}

/// (key, value) rows, e.g. the effective configuration.
pub fn key_values(rows: impl IntoIterator<Item = (String, String)>) -> Table {
    let mut t = Table::new(&[("key", Text), ("value", Text)]);
    t.rows.extend(rows.into_iter().map(|(k, v)| vec![Some(k), Some(v)]));
    t
}

pub fn version() -> Table {
    let mut t = Table::new(&[("version", Text)]);
    t.rows.push(vec![text(concat!("pgmux ", env!("CARGO_PKG_VERSION")))]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::ServerView;
    use crate::state::registry::ClientStatus;
    use std::time::Duration;

    fn snapshot() -> Snapshot {
        let client = |pid, server: Option<&str>, pins: Vec<&'static str>| ClientStatus {
            pid,
            user: "app".into(),
            database: "app".into(),
            server: server.map(Into::into),
            pins,
        };
        let pool = |server: &str, borrowed| PoolView {
            server: server.into(),
            database: "app".into(),
            user: "app".into(),
            role: "primary",
            size: 5,
            borrowed,
            idle: 1,
            waiting: 0,
            borrows: 10,
            opened: 2,
            discarded: 0,
            timeouts: 1,
        };
        let server = |name: &str, role, lag: Option<u64>, timeline| ServerView {
            server: name.into(),
            up: true,
            role,
            lag_bytes: lag,
            lag: lag.map(Duration::from_millis),
            timeline,
        };
        Snapshot {
            clients: vec![
                client(1, Some("p:1"), vec!["temp_object"]),
                client(2, Some("p:1"), vec![]),
                client(3, None, vec![]),
            ],
            clients_connected: 3,
            pinned_now: 1,
            pins_by_reason: vec![("temp_object", 4), ("listen", 0)],
            primary: Some("p:1".into()),
            failover: Default::default(),
            servers: vec![server("p:1", "primary", None, Some(2)), server("r:2", "replica", Some(30), None)],
            pools: vec![pool("p:1", 2)],
            paused: false,
            held_by_pause: 0,
            passing_pause: 0,
            draining: false,
            pool_mode: "transaction",
        }
    }

    #[test]
    fn clients_show_pins() {
        let t = clients(&snapshot());
        assert_eq!(t.column("pinned"), [Some("t"), Some("f"), Some("f")]);
        assert_eq!(t.column("pin_reasons"), [Some("temp_object"), Some(""), Some("")]);
        assert_eq!(t.column("server"), [Some("p:1"), Some("p:1"), None]);
    }

    #[test]
    fn servers_and_topology_join_pools_and_roles() {
        let s = snapshot();
        let t = servers(&s);
        assert_eq!(t.column("borrowed"), [Some("2"), Some("0")]);
        assert_eq!(t.column("lag_ms"), [None, Some("30")]);
        let t = topology(&s);
        assert_eq!(t.column("followed"), [Some("t"), Some("f")]);
        assert_eq!(t.column("timeline"), [Some("2"), None]);
        assert_eq!(t.column("failovers"), [Some("0"), Some("0")]);
    }

    #[test]
    fn stats_and_pins_count_pinned_clients() {
        let s = snapshot();
        assert_eq!(stats(&s).column("pinned"), [Some("1")]);
        assert_eq!(stats(&s).column("timeouts"), [Some("1")]);
        let p = pins(&s);
        assert_eq!(p.column("reason"), [Some("temp_object"), Some("listen")]);
        assert_eq!(p.column("pinned_now"), [Some("1"), Some("0")]);
        assert_eq!(p.column("pins_total"), [Some("4"), Some("0")]);
    }

    #[test]
    fn state_counts_transactions_but_not_pinned_holders() {
        let t = state(&snapshot());
        let value = |key| t.rows.iter().find(|r| r[0].as_deref() == Some(key)).and_then(|r| r[1].clone());
        assert_eq!(value("transactions_running").as_deref(), Some("1"));
        assert_eq!(value("paused").as_deref(), Some("f"));
        assert_eq!(value("primary").as_deref(), Some("p:1"));
    }

    #[test]
    fn every_row_has_every_column() {
        let s = snapshot();
        for t in [pools(&s), clients(&s), servers(&s), topology(&s), stats(&s), pins(&s), state(&s), version()] {
            assert!(t.rows.iter().all(|r| r.len() == t.columns.len()), "{t:?}");
        }
    }
}
