//! PAUSE / RESUME: the gate every borrow of a server connection passes (a transaction's, and a
//! login's greeting). Closed, it holds borrowers until RESUME, their borrow deadline, or shutdown;
//! open, passing costs two atomic operations and no lock.
//!
//! A borrower counts as *passing* from the gate until it holds its connection where the status
//! call sees it (its connection's cancel target names it), so PAUSE, which closes the gate and
//! then waits for `passing() == 0` and no transaction holding a connection, cannot miss one that
//! slipped through just before it closed (both sides use sequentially consistent operations).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::drain::Drain;

/// Why a borrower held at the gate gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Its borrow deadline passed while paused.
    TimedOut,
    /// The proxy started shutting down.
    ShuttingDown,
}

#[derive(Debug)]
pub struct PauseGate {
    /// The fast path's copy of the state; `state` wakes the borrowers held.
    paused: AtomicBool,
    state: watch::Sender<bool>,
    passing: AtomicUsize,
    held: AtomicUsize,
}

impl Default for PauseGate {
    fn default() -> Self {
        PauseGate {
            paused: AtomicBool::new(false),
            state: watch::Sender::new(false),
            passing: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
        }
    }
}

impl PauseGate {
    /// Closes the gate; false if it already was.
    pub fn pause(&self) -> bool {
        let was = self.paused.swap(true, SeqCst);
        self.state.send_replace(true);
        !was
    }

    /// Opens the gate and lets everyone held through; false if it was open.
    pub fn resume(&self) -> bool {
        let was = self.paused.swap(false, SeqCst);
        self.state.send_replace(false);
        was
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(SeqCst)
    }

    /// Borrowers between the gate and holding their connection (see [`PauseGate::leave`]).
    pub fn passing(&self) -> usize {
        self.passing.load(SeqCst)
    }

    /// Borrowers waiting at the closed gate now.
    pub fn held(&self) -> usize {
        self.held.load(SeqCst)
    }

    /// Passes the gate, waiting while it is closed, at most `timeout`; returns what is left of it
    /// (all of it when the gate was open: the clock is read only when waiting). Every `Ok` must be
    /// followed by one [`PauseGate::leave`] once the borrow is visible to the status call (or failed).
    pub async fn enter(&self, timeout: Duration, draining: &Drain) -> Result<Duration, Held> {
        let mut deadline = None;
        loop {
            if self.try_enter() {
                return Ok(deadline.map_or(timeout, |d: Instant| d.saturating_duration_since(Instant::now())));
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            self.wait_open(deadline, draining).await?;
        }
    }

    /// Passes the gate if it is open (then, as after `enter`, [`PauseGate::leave`] must follow);
    /// false if it is closed. No future: the common borrow checks this first.
    pub fn try_enter(&self) -> bool {
        self.passing.fetch_add(1, SeqCst);
        if !self.paused.load(SeqCst) {
            return true;
        }
        self.passing.fetch_sub(1, SeqCst);
        false
    }

    /// The borrower that entered now holds its connection where PAUSE can see it, or gave up.
    pub fn leave(&self) {
        self.passing.fetch_sub(1, SeqCst);
    }

    async fn wait_open(&self, deadline: Instant, draining: &Drain) -> Result<(), Held> {
        let mut state = self.state.subscribe();
        self.held.fetch_add(1, SeqCst);
        let outcome = tokio::select! {
            r = state.wait_for(|paused| !*paused) => r.map(|_| ()).map_err(|_| Held::ShuttingDown),
            _ = tokio::time::sleep_until(deadline) => Err(Held::TimedOut),
            _ = draining.cancelled() => Err(Held::ShuttingDown),
        };
        self.held.fetch_sub(1, SeqCst);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const FAR: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn open_gate_passes_at_once_and_counts_until_leave() {
        let gate = PauseGate::default();
        let draining = Drain::default();
        assert_eq!(gate.enter(FAR, &draining).await, Ok(FAR));
        assert_eq!(gate.passing(), 1);
        gate.leave();
        assert_eq!(gate.passing(), 0);
        assert!(!gate.resume(), "was not paused");
        assert!(gate.pause() && !gate.pause(), "second PAUSE finds it paused");
    }

    #[tokio::test(start_paused = true)]
    async fn closed_gate_holds_until_resume() {
        let gate = Arc::new(PauseGate::default());
        let draining = Drain::default();
        gate.pause();
        let (g, d) = (gate.clone(), draining.clone());
        let waiter = tokio::spawn(async move { g.enter(FAR, &d).await });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished());
        assert_eq!((gate.held(), gate.passing()), (1, 0));
        gate.resume();
        assert_eq!(waiter.await.expect("join"), Ok(FAR - Duration::from_secs(60)));
        assert_eq!((gate.held(), gate.passing()), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn held_borrowers_give_up_at_their_deadline_or_on_shutdown() {
        let gate = PauseGate::default();
        let draining = Drain::default();
        gate.pause();
        assert_eq!(gate.enter(Duration::from_secs(2), &draining).await, Err(Held::TimedOut));
        draining.cancel();
        assert_eq!(gate.enter(FAR, &draining).await, Err(Held::ShuttingDown));
        assert_eq!((gate.held(), gate.passing()), (0, 0));
    }
}
