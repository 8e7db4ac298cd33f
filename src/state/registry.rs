//! The client registry: every connected client by its cancel key (the BackendKeyData pgmux gave
//! it), with its slot (its pin reasons and who it is), and every server connection a client has
//! held (its `CancelTarget`, which names the client holding it now). Cancel requests are aimed
//! through it (`client::cancel`), and SHOW CLIENTS and /status list it.

use std::sync::{Arc, Mutex, Weak};

use rand::RngExt;

use super::pins::PinReasons;
use crate::backend::BackendConn;
use crate::backend::cancel::{CancelPermit, pack_key};

pub use crate::backend::cancel::CancelTarget;

/// A client's pin reasons and identity, for the status call.
#[derive(Debug, Default)]
pub struct ClientSlot {
    pins: std::sync::atomic::AtomicU8,
    who: std::sync::OnceLock<(String, String)>,
}

impl ClientSlot {
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

/// Every connected client's cancel key, and the server connections clients hold.
#[derive(Debug, Default)]
pub struct CancelRegistry {
    /// foldhash: the keys are pgmux's own random numbers. Locked before `targets` when both are.
    map: Mutex<foldhash::HashMap<(i32, i32), Arc<ClientSlot>>>,
    /// Every server connection lent at least once, while it lives.
    targets: Mutex<Targets>,
}

#[derive(Debug, Default)]
struct Targets {
    list: Vec<Weak<CancelTarget>>,
    /// The list's length after its last sweep of closed connections (swept when it doubles).
    swept: usize,
}

impl Targets {
    fn live(&self) -> impl Iterator<Item = Arc<CancelTarget>> + '_ {
        self.list.iter().filter_map(Weak::upgrade)
    }
}

/// A registered key; unregisters itself when dropped.
#[derive(Debug)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: i32,
    pub slot: Arc<ClientSlot>,
    registry: Arc<CancelRegistry>,
}

impl CancelKey {
    /// The client holds `conn` from now on: the connection's cancel target names it.
    pub fn holds(&self, conn: &mut BackendConn) {
        conn.cancel_target(|t| self.registry.enrol(t)).hold(pack_key(self.pid, self.secret));
    }

    /// `holds` for a bare target.
    #[cfg(test)]
    pub fn holds_target(&self, target: &Arc<CancelTarget>) {
        self.registry.enrol(target);
        target.hold(pack_key(self.pid, self.secret));
    }
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
                let slot = Arc::new(ClientSlot::default());
                e.insert(slot.clone());
                return CancelKey { pid, secret, slot, registry: self.clone() };
            }
        }
    }

    /// A server connection's target, on its first loan.
    fn enrol(&self, target: &Arc<CancelTarget>) {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        if targets.list.len() >= 2 * targets.swept.max(32) {
            targets.list.retain(|t| t.strong_count() > 0);
            targets.swept = targets.list.len();
        }
        targets.list.push(Arc::downgrade(target));
    }

    /// Every connected client: who, on which server connection now, pinned why.
    pub fn status(&self) -> Vec<ClientStatus> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let held: foldhash::HashMap<u64, Arc<str>> = {
            let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
            targets
                .live()
                .filter_map(|t| match t.holder() {
                    0 => None,
                    h => Some((h, t.server.clone())),
                })
                .collect()
        };
        let mut out: Vec<ClientStatus> = map
            .iter()
            .map(|((pid, secret), slot)| {
                let (user, database) = slot.who.get().cloned().unwrap_or_default();
                ClientStatus {
                    pid: *pid,
                    user,
                    database,
                    server: held.get(&pack_key(*pid, *secret)).map(|s| s.to_string()),
                    pins: slot.pins().names(),
                }
            })
            .collect();
        out.sort_by_key(|c| c.pid);
        out
    }

    /// The server connection the client with this key holds now, with the permit to cancel on it.
    /// Cancels are rare: the connections are searched for the one naming the client.
    pub fn lookup(&self, pid: i32, secret: i32) -> Option<(Arc<CancelTarget>, CancelPermit)> {
        if !self.map.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&(pid, secret)) {
            return None;
        }
        let key = pack_key(pid, secret);
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets.live().find_map(|t| t.aim(key).map(|permit| (t, permit)))
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
        // Kept alive: the registry holds targets weakly.
        let t = Arc::new(CancelTarget::new("x:1".into(), 5, 6, CancelGate::default()));
        a.holds_target(&t);
        assert_eq!(reg.lookup(a.pid, a.secret).map(|(t, _)| t.pid), Some(5));
        assert!(reg.lookup(b.pid, b.secret).is_none());
        let (pid, secret) = (a.pid, a.secret);
        drop(a);
        assert!(reg.lookup(pid, secret).is_none());
    }

    #[test]
    fn a_cancel_finds_the_connection_its_client_holds_and_none_once_let_go() {
        let reg = Arc::new(CancelRegistry::default());
        let (a, b) = (reg.register(), reg.register());
        let gates: Vec<CancelGate> = (0..3).map(|_| CancelGate::default()).collect();
        let targets: Vec<_> = (0..3)
            .map(|i| Arc::new(CancelTarget::new(format!("s:{i}").into(), 10 + i, 20 + i, gates[i as usize].clone())))
            .collect();
        for t in &targets {
            reg.enrol(t);
        }
        targets[1].hold(pack_key(a.pid, a.secret));
        targets[2].hold(pack_key(b.pid, b.secret));
        let (t, permit) = reg.lookup(a.pid, a.secret).expect("a holds s:1");
        assert_eq!(&*t.server, "s:1");
        // The permit keeps the connection from being lent on until the cancel is done.
        assert_eq!(gates[1].try_settle(), None);
        drop(permit);
        assert_eq!(gates[1].try_settle(), Some(false), "an unsettled permit marks the connection doubtful");
        let status = reg.status();
        let server_of = |pid| status.iter().find(|c| c.pid == pid).and_then(|c| c.server.clone());
        assert_eq!(server_of(a.pid).as_deref(), Some("s:1"));
        assert_eq!(server_of(b.pid).as_deref(), Some("s:2"));
        targets[2].let_go();
        assert!(reg.lookup(b.pid, b.secret).is_none());
        assert_eq!(gates[2].try_settle(), Some(true), "a cancel that found no holder leaves the gate clean");
        assert_eq!(reg.status().iter().find(|c| c.pid == b.pid).and_then(|c| c.server.clone()), None);
    }

    #[test]
    fn closed_connections_leave_the_list() {
        let reg = Arc::new(CancelRegistry::default());
        let a = reg.register();
        let kept = Arc::new(CancelTarget::new("kept:1".into(), 1, 1, CancelGate::default()));
        reg.enrol(&kept);
        for i in 0..1000 {
            reg.enrol(&Arc::new(CancelTarget::new("gone:1".into(), i, i, CancelGate::default())));
        }
        assert!(reg.targets.lock().unwrap().list.len() <= 64, "the dead are swept as the list grows");
        kept.hold(pack_key(a.pid, a.secret));
        assert_eq!(reg.lookup(a.pid, a.secret).map(|(t, _)| t.server.to_string()).as_deref(), Some("kept:1"));
    }
}
