//! Every pool of the process, found by key.

use std::sync::{Arc, Mutex};

use super::cores::Cores;
use super::{Pool, PoolKey};

/// Every pool, found by key and created on first use.
#[derive(Debug, Default)]
pub struct Pools {
    map: Mutex<foldhash::HashMap<PoolKey, Arc<Pool>>>,
    /// The cores clients run on: every pool gets a shard per core.
    cores: Cores,
}

impl Pools {
    pub fn on_cores(cores: Cores) -> Pools {
        Pools { map: Mutex::default(), cores }
    }

    pub fn cores(&self) -> &Cores {
        &self.cores
    }

    pub fn get_or_create(&self, key: PoolKey, make: impl FnOnce(&PoolKey) -> Arc<Pool>) -> Arc<Pool> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(&key) {
            return p.clone();
        }
        let pool = make(&key);
        map.insert(key, pool.clone());
        pool
    }

    pub fn get(&self, key: &PoolKey) -> Option<Arc<Pool>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Forgets a pool that has nothing open and nothing lent (e.g. an unknown database).
    pub fn remove_if_unused(&self, key: &PoolKey) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.get(key)
            && p.borrowed_count() == 0
            && p.idle_count() == 0
            && Arc::strong_count(p) == 1
        {
            map.remove(key);
        }
    }
}
