//! What happens during a storm, as it happens: events from the clients and the backend sampler,
//! folded by one collector task into counters, latency histograms and per-second buckets.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Where a client failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Connect,
    Query,
}

/// What failures are grouped by: the phase, the SQLSTATE when the server (or proxy) sent one, and
/// the message (a connection error without SQLSTATE is known by its message alone).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ErrorKey {
    pub phase: Phase,
    pub sqlstate: Option<String>,
    pub message: String,
}

impl ErrorKey {
    pub fn from_pg(phase: Phase, e: &tokio_postgres::Error) -> ErrorKey {
        match e.as_db_error() {
            Some(db) => ErrorKey {
                phase,
                sqlstate: Some(db.code().code().to_string()),
                message: format!("{}: {}", db.severity(), db.message()),
            },
            None => ErrorKey { phase, sqlstate: None, message: e.to_string() },
        }
    }

    pub fn other(phase: Phase, message: impl Into<String>) -> ErrorKey {
        ErrorKey { phase, sqlstate: None, message: message.into() }
    }
}

/// One thing that happened; `at` counts from the start of the storm.
#[derive(Debug)]
pub enum Event {
    Connected {
        at: Duration,
        latency: Duration,
    },
    Query {
        latency: Duration,
    },
    /// A client connected and ran everything it was asked to.
    Succeeded,
    /// A client gave up (each client fails at most once).
    Failed {
        at: Duration,
        error: ErrorKey,
    },
    /// The backend connection count, sampled.
    Backends {
        at: Duration,
        count: u64,
    },
}

/// One second of the storm.
#[derive(Debug)]
pub struct Second {
    pub connects: u64,
    pub errors: u64,
    /// Latency of the connects that completed in this second, µs (2 significant digits: small).
    pub connect: Histogram<u64>,
    /// The highest backend count sampled in this second.
    pub backends: Option<u64>,
}

/// Everything recorded so far.
#[derive(Debug)]
pub struct Recorder {
    pub successes: u64,
    pub connects: u64,
    pub errors: BTreeMap<ErrorKey, u64>,
    /// µs, 3 significant digits, resized as needed.
    pub connect: Histogram<u64>,
    pub query: Histogram<u64>,
    /// When the last successful connect completed.
    pub last_connect: Duration,
    pub seconds: Vec<Second>,
    pub backends: Vec<(Duration, u64)>,
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new(sigfig).expect("1..=5 significant digits")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            successes: 0,
            connects: 0,
            errors: BTreeMap::new(),
            connect: histogram(3),
            query: histogram(3),
            last_connect: Duration::ZERO,
            seconds: Vec::new(),
            backends: Vec::new(),
        }
    }
}

impl Recorder {
    fn second(&mut self, at: Duration) -> &mut Second {
        let i = at.as_secs() as usize;
        while self.seconds.len() <= i {
            self.seconds.push(Second { connects: 0, errors: 0, connect: histogram(2), backends: None });
        }
        &mut self.seconds[i]
    }

    pub fn record(&mut self, event: Event) {
        match event {
            Event::Connected { at, latency } => {
                self.connects += 1;
                // Auto-resizing histograms: recording never fails.
                self.connect.record(micros(latency)).ok();
                self.last_connect = self.last_connect.max(at);
                let s = self.second(at);
                s.connects += 1;
                s.connect.record(micros(latency)).ok();
            }
            Event::Query { latency } => {
                self.query.record(micros(latency)).ok();
            }
            Event::Succeeded => self.successes += 1,
            Event::Failed { at, error } => {
                *self.errors.entry(error).or_default() += 1;
                self.second(at).errors += 1;
            }
            Event::Backends { at, count } => {
                self.backends.push((at, count));
                let s = self.second(at);
                s.backends = Some(s.backends.map_or(count, |b| b.max(count)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_land_in_their_second() {
        let mut r = Recorder::default();
        let ms = Duration::from_millis;
        r.record(Event::Connected { at: ms(100), latency: ms(5) });
        r.record(Event::Connected { at: ms(2500), latency: ms(50) });
        r.record(Event::Failed { at: ms(2600), error: ErrorKey::other(Phase::Connect, "timed out") });
        r.record(Event::Backends { at: ms(2100), count: 3 });
        r.record(Event::Backends { at: ms(2200), count: 7 });
        r.record(Event::Backends { at: ms(2300), count: 4 });
        assert_eq!(r.seconds.len(), 3);
        assert_eq!((r.seconds[0].connects, r.seconds[1].connects, r.seconds[2].connects), (1, 0, 1));
        assert_eq!((r.seconds[2].errors, r.seconds[2].backends, r.seconds[1].backends), (1, Some(7), None));
        assert_eq!((r.connects, r.last_connect), (2, ms(2500)));
        assert_eq!(r.connect.max(), r.connect.highest_equivalent(50_000));
    }
}
