//! The client registry: every connected client by its cancel key (the BackendKeyData pgmux gave
//! it), with its slot: the server connection it holds at that moment, its pin reasons, and who it
//! is. Cancel requests are aimed through it (`client::cancel`), and SHOW CLIENTS and /status list
//! it.

use std::sync::{Arc, Mutex};

use rand::RngExt;

use super::pins::PinReasons;
use crate::backend::cancel::CancelPermit;

pub use crate::backend::cancel::CancelTarget;

/// What a client currently holds, updated on every borrow and return, and its pin reasons (for
/// the status call).
#[derive(Debug, Default)]
pub struct CancelSlot {
    target: Mutex<Option<Arc<CancelTarget>>>,
    pins: std::sync::atomic::AtomicU8,
    who: std::sync::OnceLock<(String, String)>,
}

impl CancelSlot {
    pub fn set(&self, target: Option<Arc<CancelTarget>>) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }

    pub fn get(&self) -> Option<Arc<CancelTarget>> {
        self.target.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The connection held now and a permit to cancel on it, taken under the lock the session
    /// takes to let the connection go: the permit is held before the connection can be lent on.
    fn aim(&self) -> Option<(Arc<CancelTarget>, CancelPermit)> {
        let target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        let t = target.as_ref()?;
        Some((t.clone(), t.gate.permit()?))
    }

    pub fn set_pins(&self, pins: PinReasons) {
        self.pins.store(pins.bits(), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn pins(&self) -> PinReasons {
        PinReasons::from_bits(self.pins.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Records the client's (user, database) once, for the status call.
    pub fn set_identity(&self, user: &str, database: &str) {
        let _ = self.who.set((user.to_string(), database.to_string()));
    }
}

/// One connected client as the status call shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStatus {
    pub pid: i32,
    pub user: String,
    pub database: String,
    pub server: Option<String>,
    pub pins: Vec<&'static str>,
}

/// Every connected client's cancel key.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    /// foldhash: the keys are pgmux's own random numbers.
    map: Mutex<foldhash::HashMap<(i32, i32), Arc<CancelSlot>>>,
}

/// A registered key; unregisters itself when dropped.
#[derive(Debug)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
    pub slot: Arc<CancelSlot>,
    registry: Arc<CancelRegistry>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        let mut map = self.registry.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(self.pid, self.secret));
    }
}

impl CancelRegistry {
    /// Issues a fresh random key for a new client.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let mut rng = rand::rng();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let pid = rng.random_range(1..i32::MAX);
            let secret: i32 = rng.random();
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry((pid, secret)) {
                let slot = Arc::new(CancelSlot::default());
                e.insert(slot.clone());
                return CancelKey { pid, secret, slot, registry: self.clone() };
            }
        }
    }

    /// Every connected client: who, on which server connection now, pinned why.
    pub fn status(&self) -> Vec<ClientStatus> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<ClientStatus> = map
            .iter()
            .map(|((pid, _), slot)| {
                let (user, database) = slot.who.get().cloned().unwrap_or_default();
                ClientStatus {
                    pid: *pid,
                    user,
                    database,
                    server: slot.get().map(|t| t.server.to_string()),
                    pins: slot.pins().names(),
                }
            })
            .collect();
        out.sort_by_key(|c| c.pid);
        out
    }

    /// The server connection the client with this key holds now, with the permit to cancel on it.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<(Arc<CancelTarget>, CancelPermit)> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(pid, secret)).and_then(|slot| slot.aim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cancel::CancelGate;

    #[test]
    fn keys_are_unique_and_unregister_on_drop() {
        let reg = Arc::new(CancelRegistry::default());
        let a = reg.register();
        let b = reg.register();
        assert_ne!((a.pid, a.secret), (b.pid, b.secret));
        let t = Arc::new(CancelTarget { server: "x:1".into(), pid: 5, secret: 6, gate: CancelGate::default() });
        a.slot.set(Some(t));
        assert_eq!(reg.lookup(a.pid, a.secret).map(|(t, _)| t.pid), Some(5));
        assert!(reg.lookup(b.pid, b.secret).is_none());
        let (pid, secret) = (a.pid, a.secret);
        drop(a);
        assert!(reg.lookup(pid, secret).is_none());
    }
}
