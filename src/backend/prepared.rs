//! Which pgmux-named prepared statements exist on one server connection, least recently used first
//! out when the cache is full.

use std::sync::Arc;

/// Statements kept per server connection before the least recently used are closed.
pub const DEFAULT_CAPACITY: usize = 1000;

#[derive(Debug)]
pub struct ServerStatements {
    /// foldhash: looked up once per Bind (SipHash cost ~250 instructions for these 38-byte names).
    used: foldhash::HashMap<Arc<str>, u64>,
    tick: u64,
    capacity: usize,
    /// The cache may not match the server (a DISCARD/DEALLOCATE ALL whose outcome is unknown, a
    /// "cached plan must not change result type"): run DEALLOCATE ALL before the next borrower.
    pub needs_reset: bool,
}

impl Default for ServerStatements {
    fn default() -> Self {
        ServerStatements::with_capacity(DEFAULT_CAPACITY)
    }
}

impl ServerStatements {
    pub fn with_capacity(capacity: usize) -> ServerStatements {
        ServerStatements { used: Default::default(), tick: 0, capacity: capacity.max(1), needs_reset: false }
    }

    /// Whether `name` exists on the server; marks it used.
    pub fn touch(&mut self, name: &str) -> bool {
        self.tick += 1;
        match self.used.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records `name` as prepared; returns the statements to close to stay within capacity.
    pub fn insert(&mut self, name: Arc<str>) -> Vec<Arc<str>> {
        self.tick += 1;
        self.used.insert(name, self.tick);
        if self.used.len() <= self.capacity {
            return Vec::new();
        }
        // Evict a tenth at once so a full cache does not pay a scan per insert.
        let n = (self.capacity / 10).max(1).min(self.used.len() - 1);
        let mut by_age: Vec<(u64, Arc<str>)> = self.used.iter().map(|(k, t)| (*t, k.clone())).collect();
        by_age.sort_unstable();
        let evicted: Vec<Arc<str>> = by_age.into_iter().take(n).map(|(_, k)| k).collect();
        for k in &evicted {
            self.used.remove(k);
        }
        evicted
    }

    pub fn remove(&mut self, name: &str) {
        self.used.remove(name);
    }

    pub fn clear(&mut self) {
        self.used.clear();
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut s = ServerStatements::with_capacity(10);
        for i in 0..10 {
            assert!(s.insert(format!("s{i}").into()).is_empty());
        }
        assert!(s.touch("s0"));
        let evicted = s.insert("s10".into());
        assert_eq!(evicted, vec![Arc::<str>::from("s1")]);
        assert!(s.touch("s0") && s.touch("s10") && !s.touch("s1"));
        assert_eq!(s.len(), 10);
    }
}
