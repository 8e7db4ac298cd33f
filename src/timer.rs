//! A timer kept armed across waits and polled only when it may have fired.
//!
//! Polling a tokio `Sleep` writes its waker slot, a line of memory apart from its owner's (with
//! thousands of clients, a likely cache miss per poll). `KeptSleep` keeps, beside its owner, the
//! deadline the sleep is armed for and the waker it was last polled with; while the waker is the
//! same and the deadline has not passed, the sleep cannot have fired and is not polled.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct KeptSleep {
    sleep: Pin<Box<Sleep>>,
    /// The deadline `sleep` is armed for.
    armed: Instant,
    /// The waker `sleep` was last polled with (its data pointer, as an address); 0: none.
    registered: usize,
}

impl KeptSleep {
    pub fn new(deadline: Instant) -> KeptSleep {
        KeptSleep { sleep: Box::pin(tokio::time::sleep_until(deadline)), armed: deadline, registered: 0 }
    }

    /// The deadline it is armed for.
    pub fn armed(&self) -> Instant {
        self.armed
    }

    /// Arms it for `deadline` (polled again at the next poll).
    pub fn reset(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
        self.armed = deadline;
        self.registered = 0;
    }

    /// Ready once it fired (then `reset` it to wait again). `now`: a clock reading the caller took
    /// for this poll, if it has one; else the clock is read only when the waker is unchanged.
    pub fn poll_fired(&mut self, cx: &mut Context<'_>, now: Option<Instant>) -> Poll<()> {
        let waker = cx.waker().data() as usize;
        if self.registered == waker && now.unwrap_or_else(Instant::now) < self.armed {
            return Poll::Pending;
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.registered = 0;
            return Poll::Ready(());
        }
        self.registered = waker;
        Poll::Pending
    }
}
