//! The drain signal (SIGTERM, or SHUTDOWN on the admin console): running transactions finish,
//! then their clients leave.
//!
//! Every client asks "draining?" at least once per transaction. A `CancellationToken` answers under
//! its mutex, a write to one line that every session on every worker shares; `Drain` answers from a
//! flag that only changes once, so the line stays shared in every core's cache. The flag is set
//! before the token fires, so a task the token wakes always sees it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture, WaitForCancellationFutureOwned};

#[derive(Debug, Clone, Default)]
pub struct Drain {
    flag: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Drain {
    /// Starts draining (idempotent).
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether draining has started: one load, no lock.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Completes once draining starts.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// As `cancelled`, owning its handle on the token.
    pub fn cancelled_owned(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_flag_is_set_before_waiters_wake() {
        let drain = Drain::default();
        assert!(!drain.is_cancelled());
        let waiter = drain.clone();
        let task = tokio::spawn(async move {
            waiter.cancelled().await;
            waiter.is_cancelled()
        });
        tokio::task::yield_now().await;
        drain.clone().cancel();
        assert!(task.await.unwrap(), "a woken waiter sees the flag");
        assert!(drain.is_cancelled());
        // Already drained: completes at once.
        drain.cancelled_owned().await;
    }
}
