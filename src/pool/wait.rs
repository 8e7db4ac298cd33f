//! The deadline of a borrower's waits for a connection, on a timer the borrower keeps.

use std::task::{Poll, ready};

use tokio::time::Instant;

use crate::timer::KeptSleep;

/// A borrower's timer for the deadline of its waits, kept from one borrow to the next: a timer
/// armed and disarmed for every wait costs a timer-wheel insert and removal each time (callgrind:
/// ~340 instructions per waiting borrow more than polling one kept armed). This one stays armed; a wait whose deadline is later
/// than the one it is armed for lets it fire early and re-arms it then — with one timeout, at most
/// once per timeout period. Firing while its owner does not wait wakes that task once, for nothing.
///
/// Nor is it polled again by every wait (a `KeptSleep`: callgrind, 2,000 clients, ~1 cache miss
/// per waiting borrow less).
#[derive(Debug, Default)]
pub struct WaitTimer {
    sleep: Option<KeptSleep>,
}

impl WaitTimer {
    /// Completes once `deadline` has passed. `now`: the caller's clock reading as the wait begins
    /// (the first poll compares with it rather than read the clock again).
    pub fn until(&mut self, deadline: Instant, now: Instant) -> impl Future<Output = ()> + '_ {
        match &mut self.sleep {
            Some(sleep) if sleep.armed() <= deadline => {}
            Some(sleep) => sleep.reset(deadline),
            None => self.sleep = Some(KeptSleep::new(deadline)),
        }
        let mut now = Some(now);
        std::future::poll_fn(move |cx| {
            let Some(sleep) = &mut self.sleep else {
                return Poll::Ready(()); // armed above: not reached
            };
            loop {
                ready!(sleep.poll_fired(cx, now.take()));
                // Fired: for this wait, or early (armed for an earlier wait's deadline).
                if Instant::now() >= deadline {
                    return Poll::Ready(());
                }
                sleep.reset(deadline);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::WaitTimer;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_kept_wait_timer_ends_each_wait_at_its_own_deadline() {
        let mut timer = WaitTimer::default();
        let t0 = Instant::now();
        timer.until(t0 + Duration::from_secs(5), Instant::now()).await;
        assert_eq!(Instant::now(), t0 + Duration::from_secs(5));
        // Armed for a deadline a wait ended before: not reset, and it still ends on time.
        let mut timer = WaitTimer::default();
        let t1 = Instant::now();
        let early =
            tokio::time::timeout(Duration::from_secs(1), timer.until(t1 + Duration::from_secs(5), Instant::now()))
                .await;
        assert!(early.is_err(), "no deadline passed yet");
        // A later deadline: the timer fires early (at 5 s), re-arms, and ends at 8 s — not before.
        timer.until(t1 + Duration::from_secs(8), Instant::now()).await;
        assert_eq!(Instant::now(), t1 + Duration::from_secs(8));
        // An earlier deadline than it is armed for: re-armed earlier.
        let t2 = Instant::now();
        let _ =
            tokio::time::timeout(Duration::from_millis(10), timer.until(t2 + Duration::from_secs(60), Instant::now()))
                .await;
        timer.until(t2 + Duration::from_secs(2), Instant::now()).await;
        assert_eq!(Instant::now(), t2 + Duration::from_secs(2));
        // A deadline already passed ends at once.
        timer.until(t2, Instant::now()).await;
        assert_eq!(Instant::now(), t2 + Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_timer_registered_once_still_ends_each_wait_on_time() {
        // A wait that never ends fails here (the test clock jumps to this limit) rather than hangs.
        let waits = async {
            let mut timer = WaitTimer::default();
            let t0 = Instant::now();
            let deadline = t0 + Duration::from_secs(30);
            // Registered by a first wait; the second, same waker, does not poll it again and still
            // ends at its deadline.
            let early = tokio::time::timeout(Duration::from_secs(1), timer.until(deadline, Instant::now())).await;
            assert!(early.is_err());
            timer.until(deadline, Instant::now()).await;
            assert_eq!(Instant::now(), deadline);
            // Armed 10 s ahead, registered, then fired while nobody waited: the next wait sees its
            // deadline passed, polls it and re-arms for its own.
            let t1 = Instant::now();
            let early =
                tokio::time::timeout(Duration::from_secs(1), timer.until(t1 + Duration::from_secs(10), Instant::now()))
                    .await;
            assert!(early.is_err());
            tokio::time::sleep(Duration::from_secs(15)).await;
            let t2 = Instant::now();
            timer.until(t2 + Duration::from_secs(10), t2).await;
            assert_eq!(Instant::now(), t2 + Duration::from_secs(10));
            // Several waits in a row with one waker, each cut short, then one that runs out.
            let t3 = Instant::now();
            for _ in 0..3 {
                let early = tokio::time::timeout(
                    Duration::from_secs(1),
                    timer.until(t3 + Duration::from_secs(10), Instant::now()),
                )
                .await;
                assert!(early.is_err());
            }
            timer.until(t3 + Duration::from_secs(10), Instant::now()).await;
            assert_eq!(Instant::now(), t3 + Duration::from_secs(10));
        };
        tokio::time::timeout(Duration::from_secs(3600), waits).await.expect("every wait ends at its deadline");
    }
}
