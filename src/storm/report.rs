//! The end-of-storm report: totals, latency percentiles, failures grouped by SQLSTATE and message,
//! the per-second timeline and the backend connection count; as text for people, JSON (serde) for
//! machines.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::{Phase, Recorder};
use super::shape::{Plan, ShapeKind};

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        Latency {
            count: h.len(),
            mean: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// Clients that failed the same way.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorGroup {
    pub phase: Phase,
    pub sqlstate: Option<String>,
    pub message: String,
    pub count: u64,
}

/// The backend connection count over time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backends {
    /// `server` (pg_stat_activity) or `admin` (pgmux's /metrics).
    pub source: String,
    pub max: u64,
    /// (seconds from the start, count), every 100 ms.
    pub samples: Vec<(f64, u64)>,
}

/// One second of the storm.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SecondReport {
    pub second: u64,
    pub connects: u64,
    pub errors: u64,
    pub connect_p50_ms: Option<f64>,
    pub connect_p90_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    pub backends: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub target: String,
    pub plan: Plan,
    pub query: String,
    pub elapsed_s: f64,
    pub attempts: u64,
    pub successes: u64,
    pub failures: u64,
    /// Successful connects, and their rate from the start until the last one completed.
    pub connects: u64,
    pub connects_per_s: f64,
    pub connect_ms: Latency,
    pub query_ms: Latency,
    /// Most frequent first.
    pub errors: Vec<ErrorGroup>,
    pub backends: Option<Backends>,
    pub timeline: Vec<SecondReport>,
}

impl Report {
    /// `backend_source` names where backend samples came from, if anything sampled them.
    pub fn build(
        target: String,
        plan: Plan,
        query: String,
        attempts: u64,
        elapsed: Duration,
        rec: &Recorder,
        backend_source: Option<&str>,
    ) -> Report {
        let mut errors: Vec<ErrorGroup> = rec
            .errors
            .iter()
            .map(|(k, &count)| ErrorGroup {
                phase: k.phase,
                sqlstate: k.sqlstate.clone(),
                message: k.message.clone(),
                count,
            })
            .collect();
        // Stable: equal counts keep the key order (phase, SQLSTATE, message).
        errors.sort_by_key(|e| std::cmp::Reverse(e.count));
        let secs = rec.last_connect.as_secs_f64();
        let connects_per_s = if secs > 0.0 { (rec.connects as f64 / secs * 10.0).round() / 10.0 } else { 0.0 };
        let pct = |h: &Histogram<u64>, q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
        let timeline = rec
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| SecondReport {
                second: i as u64,
                connects: s.connects,
                errors: s.errors,
                connect_p50_ms: pct(&s.connect, 0.50),
                connect_p90_ms: pct(&s.connect, 0.90),
                connect_p99_ms: pct(&s.connect, 0.99),
                backends: s.backends,
            })
            .collect();
        let backends = backend_source.map(|source| Backends {
            source: source.to_string(),
            max: rec.backends.iter().map(|b| b.1).max().unwrap_or(0),
            samples: rec.backends.iter().map(|&(at, n)| ((at.as_secs_f64() * 1000.0).round() / 1000.0, n)).collect(),
        });
        Report {
            target,
            plan,
            query,
            elapsed_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            attempts,
            successes: rec.successes,
            failures: attempts.saturating_sub(rec.successes),
            connects: rec.connects,
            connects_per_s,
            connect_ms: Latency::of(&rec.connect),
            query_ms: Latency::of(&rec.query),
            errors,
            backends,
            timeline,
        }
    }

    /// Every attempt connected and ran its queries.
    pub fn clean(&self) -> bool {
        self.attempts > 0 && self.failures == 0
    }

    /// What the storm was, in one line.
    pub fn headline(&self) -> String {
        let p = &self.plan;
        let what = match p.shape {
            ShapeKind::Burst => format!("burst of {} clients", p.clients),
            ShapeKind::Rate => format!("{}/s new clients for {} s ({} clients)", p.rate, p.duration, p.clients),
            ShapeKind::Ramp => format!("ramp to {}/s over {} s ({} clients)", p.rate, p.duration, p.clients),
            ShapeKind::Hold => format!("hold {} clients for {} s at {} queries/s", p.clients, p.duration, p.rate),
        };
        format!("pgmux storm: {what}, {} × `{}` each, against {}", p.queries, self.query, self.target)
    }

    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let lat = |l: &Latency| {
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (mean {:.3}, n={})",
                l.p50, l.p90, l.p99, l.max, l.mean, l.count
            )
        };
        let _ = writeln!(t, "{}", self.headline());
        let _ = writeln!(t, "elapsed            {:.3} s", self.elapsed_s);
        let _ = writeln!(t, "attempts           {}", self.attempts);
        let _ = writeln!(t, "succeeded          {}", self.successes);
        let _ = writeln!(t, "failed             {}", self.failures);
        let _ = writeln!(t, "connects           {} ({:.1}/s)", self.connects, self.connects_per_s);
        let _ = writeln!(t, "connect latency ms {}", lat(&self.connect_ms));
        let _ = writeln!(t, "query latency ms   {}", lat(&self.query_ms));
        if let Some(b) = &self.backends {
            let _ = writeln!(t, "backend conns      max {} ({} samples from {})", b.max, b.samples.len(), b.source);
        }
        if !self.errors.is_empty() {
            let _ = writeln!(t, "failures by SQLSTATE and message:");
            for e in &self.errors {
                let phase = match e.phase {
                    Phase::Connect => "connect",
                    Phase::Query => "query",
                };
                let _ = writeln!(
                    t,
                    "  {:>8}  {:<7}  {:<5}  {}",
                    e.count,
                    phase,
                    e.sqlstate.as_deref().unwrap_or("-"),
                    e.message
                );
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storm::record::{ErrorKey, Event};

    fn plan() -> Plan {
        Plan::new(ShapeKind::Burst, Some(1000), None, None, 1).unwrap()
    }

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap(); // 1..1000 ms
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50 - 500.0).abs() <= 0.5, "{l:?}");
        assert!((l.p90 - 900.0).abs() <= 0.9, "{l:?}");
        assert!((l.p99 - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() <= 1.0, "{l:?}");
        assert!((l.mean - 500.5).abs() <= 0.5, "{l:?}");
        assert_eq!(Latency::of(&Histogram::<u64>::new(3).unwrap()), Latency::default());
    }

    #[test]
    fn failures_are_grouped_by_sqlstate_and_message_most_frequent_first() {
        let mut rec = Recorder::default();
        let at = Duration::from_millis(1500);
        let fail = |code: Option<&str>, msg: &str| Event::Failed {
            at,
            error: ErrorKey { phase: Phase::Connect, sqlstate: code.map(String::from), message: msg.into() },
        };
        for _ in 0..3 {
            rec.record(fail(Some("28P01"), "FATAL: password authentication failed for user \"app\""));
        }
        rec.record(fail(Some("53300"), "FATAL: sorry, too many clients already"));
        for _ in 0..2 {
            rec.record(fail(None, "error connecting to server: Connection refused (os error 111)"));
        }
        for _ in 0..4 {
            rec.record(Event::Connected { at: Duration::from_secs(2), latency: Duration::from_millis(10) });
            rec.record(Event::Succeeded);
        }
        let r = Report::build("t".into(), plan(), "SELECT 1".into(), 10, Duration::from_secs(3), &rec, None);
        assert_eq!((r.attempts, r.successes, r.failures, r.connects), (10, 4, 6, 4));
        assert_eq!(r.connects_per_s, 2.0);
        let groups: Vec<_> = r.errors.iter().map(|e| (e.sqlstate.as_deref(), e.count)).collect();
        assert_eq!(groups, [(Some("28P01"), 3), (None, 2), (Some("53300"), 1)]);
        assert_eq!(r.timeline[1].errors, 6);
        assert_eq!(r.timeline[2].connects, 4);
        assert!(!r.clean());
        let text = r.to_text();
        assert!(text.contains("28P01") && text.contains("Connection refused") && text.contains("failed             6"));
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["errors"][0]["sqlstate"], "28P01");
        assert_eq!(json["errors"][1]["sqlstate"], serde_json::Value::Null);
        assert_eq!(json["plan"]["shape"], "burst");
    }

    #[test]
    fn backend_max_comes_from_the_samples() {
        let mut rec = Recorder::default();
        for (ms, n) in [(100, 3), (200, 20), (300, 12)] {
            rec.record(Event::Backends { at: Duration::from_millis(ms), count: n });
        }
        let r = Report::build("t".into(), plan(), "q".into(), 0, Duration::from_secs(1), &rec, Some("server"));
        let b = r.backends.as_ref().unwrap();
        assert_eq!((b.max, b.samples.len(), b.samples[1]), (20, 3, (0.2, 20)));
        assert_eq!(r.timeline[0].backends, Some(20));
        assert!(!r.clean(), "no attempt is not a clean run");
    }
}
