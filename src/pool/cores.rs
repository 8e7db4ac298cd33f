//! The runtimes client sessions run on — one single-threaded tokio runtime per core — and which of
//! them the calling task is on. A pool keeps a shard per core (see `Pool`), so a session borrows
//! connections its own core opened and drives: no wake-up or socket crosses to another thread.

use std::sync::Arc;

use tokio::runtime::{Handle, Id};

/// The per-core runtimes, in core order. Empty (the default): one runtime, whichever the caller
/// runs on (tests, a library user's runtime, `workers: 1`).
#[derive(Debug, Clone, Default)]
pub struct Cores {
    handles: Arc<[Handle]>,
    ids: Arc<[Id]>,
}

impl Cores {
    pub fn new(handles: Vec<Handle>) -> Cores {
        let ids = handles.iter().map(Handle::id).collect();
        Cores { handles: handles.into(), ids }
    }

    /// How many cores: shards per pool, accept loops per listener.
    pub fn count(&self) -> usize {
        self.handles.len().max(1)
    }

    /// The core the calling task runs on: 0 off them (a task on another runtime borrows as core 0).
    pub fn current(&self) -> usize {
        if self.ids.len() < 2 {
            return 0;
        }
        let Ok(h) = Handle::try_current() else {
            return 0;
        };
        let id = h.id();
        self.ids.iter().position(|i| *i == id).unwrap_or(0)
    }

    /// Core `i`'s runtime (None with a single, unnamed runtime).
    pub fn handle(&self, i: usize) -> Option<&Handle> {
        self.handles.get(i)
    }
}

/// Core `i`'s part of `total` split over `n` cores: as even as can be, the first cores taking the
/// remainder (a pool of 1 on two cores: 1 and 0).
pub fn share(total: usize, n: usize, i: usize) -> usize {
    let n = n.max(1);
    total / n + usize::from(i < total % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for total in 0..50 {
            for n in 1..6 {
                let parts: Vec<usize> = (0..n).map(|i| share(total, n, i)).collect();
                assert_eq!(parts.iter().sum::<usize>(), total, "{total} over {n}");
                assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!((0..2).map(|i| share(1, 2, i)).collect::<Vec<_>>(), [1, 0]);
    }

    #[test]
    fn current_names_the_runtime_a_task_runs_on() {
        let rts: Vec<_> = (0..2).map(|_| tokio::runtime::Builder::new_current_thread().build().unwrap()).collect();
        let cores = Cores::new(rts.iter().map(|r| r.handle().clone()).collect());
        assert_eq!(cores.count(), 2);
        for (i, rt) in rts.iter().enumerate() {
            let c = cores.clone();
            assert_eq!(rt.block_on(async move { c.current() }), i);
        }
        // Off the cores (no runtime, or another one): core 0.
        assert_eq!(cores.current(), 0);
        let other = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(other.block_on(async { cores.current() }), 0);
        assert_eq!(Cores::default().count(), 1);
    }
}
