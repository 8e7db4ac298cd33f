//! Rate limits for log events that can come in storms (a flood of refused clients, a dead server
//! under thousands of sessions, an application pinning on every transaction): a few per second per
//! kind; the next one let through says how many were held back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Events of one kind allowed per second before they are held back.
const PER_SECOND: u32 = 10;

/// One kind of event.
#[derive(Debug)]
pub struct Limiter {
    /// Start of the current one-second window, events let through in it, events held back since
    /// the last one let through.
    state: Mutex<(Instant, u32, u64)>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter { state: Mutex::new((Instant::now(), 0, 0)) }
    }
}

impl Limiter {
    /// Whether this event may be logged now; if so, how many were held back before it.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(s.0) >= Duration::from_secs(1) {
            s.0 = now;
            s.1 = 0;
        }
        if s.1 >= PER_SECOND {
            s.2 += 1;
            return None;
        }
        s.1 += 1;
        Some(std::mem::take(&mut s.2))
    }
}

/// The event kinds that can storm.
#[derive(Debug, Default)]
pub struct LogLimits {
    /// A client refused at startup (too many clients, failed authentication, bad input).
    pub client_rejected: Limiter,
    /// A client closed for not finishing its login within `clients.startup_timeout`.
    pub client_timed_out: Limiter,
    /// A transaction that got no server connection (borrow timeout, no primary).
    pub no_server: Limiter,
    /// A server connection lost under a client.
    pub server_lost: Limiter,
    /// A client pinned or unpinned.
    pub pins: Limiter,
    /// A login delayed for its address's failed logins.
    pub login_throttled: Limiter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_few_through_per_second_then_reports_what_it_held_back() {
        let l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..PER_SECOND {
            assert_eq!(l.check_at(t0), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(l.check_at(t0 + Duration::from_millis(500)), None);
        }
        assert_eq!(l.check_at(t0 + Duration::from_millis(1000)), Some(5), "the next one says how many were held");
        assert_eq!(l.check_at(t0 + Duration::from_millis(1001)), Some(0));
    }
}
