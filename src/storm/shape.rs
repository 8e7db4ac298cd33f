//! Storm shapes: how many clients, when each one starts, and what the `hold` phase asks of them.
//! Pure arithmetic over the command-line values, validated as a whole.

use std::time::Duration;

use serde::Serialize;

/// The kind of storm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShapeKind {
    /// `--clients N` connect at once, each runs its queries and leaves.
    Burst,
    /// `--rate R` new connections per second for `--duration T`, each runs its queries and leaves.
    Rate,
    /// `--clients N` connect at once and stay for `--duration T`, running `--rate R` queries per
    /// second between them (0: idle).
    Hold,
    /// The connection rate rises linearly from 0 to `--rate R` over `--duration T`.
    Ramp,
}

/// A validated storm.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub shape: ShapeKind,
    pub clients: u64,
    /// Connections per second (rate, ramp: the final rate) or queries per second (hold).
    pub rate: f64,
    /// Seconds the shape lasts (0 for burst).
    #[serde(rename = "duration_s")]
    pub duration: f64,
    /// Queries each client runs right after connecting.
    pub queries: u32,
}

/// More clients than this is surely a typo.
const MAX_CLIENTS: u64 = 10_000_000;

impl Plan {
    /// Checks that the options given fit the shape; every problem is listed.
    pub fn new(
        shape: ShapeKind,
        clients: Option<u64>,
        rate: Option<f64>,
        duration: Option<Duration>,
        queries: u32,
    ) -> Result<Plan, String> {
        let mut problems = Vec::new();
        let name = format!("{shape:?}").to_lowercase();
        let mut need = |ok: bool, what: &str| {
            if !ok {
                problems.push(format!("{name}: {what}"));
            }
        };
        let secs = duration.map(|d| d.as_secs_f64());
        match shape {
            ShapeKind::Burst => {
                need(clients.is_some_and(|n| n > 0), "--clients N (> 0) is required");
                need(rate.is_none(), "--rate does not apply");
                need(duration.is_none(), "--duration does not apply");
            }
            ShapeKind::Rate | ShapeKind::Ramp => {
                need(rate.is_some_and(|r| r.is_finite() && r > 0.0), "--rate R (connections/s, > 0) is required");
                need(secs.is_some_and(|s| s > 0.0), "--duration T (> 0, e.g. 30s) is required");
                need(clients.is_none(), "--clients does not apply (it follows from --rate and --duration)");
            }
            ShapeKind::Hold => {
                need(clients.is_some_and(|n| n > 0), "--clients N (> 0) is required");
                need(secs.is_some_and(|s| s > 0.0), "--duration T (> 0, e.g. 30s) is required");
                need(rate.is_none_or(|r| r.is_finite() && r >= 0.0), "--rate (queries/s) must be >= 0");
            }
        }
        let (rate, secs) = (rate.unwrap_or(0.0), secs.unwrap_or(0.0));
        let clients = match shape {
            ShapeKind::Burst | ShapeKind::Hold => clients.unwrap_or(0),
            ShapeKind::Rate => (rate * secs).round() as u64,
            // The area under a rate rising linearly from 0 to R over T.
            ShapeKind::Ramp => (rate * secs / 2.0).round() as u64,
        };
        if problems.is_empty() && clients == 0 {
            problems.push(format!("{name}: --rate × --duration gives no client at all"));
        }
        if clients > MAX_CLIENTS {
            problems.push(format!("{name}: {clients} clients is more than {MAX_CLIENTS}"));
        }
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        Ok(Plan { shape, clients, rate, duration: secs, queries })
    }

    /// When client `i` (0-based) starts, from the start of the storm.
    pub fn start_offset(&self, i: u64) -> Duration {
        let secs = match self.shape {
            ShapeKind::Burst | ShapeKind::Hold => 0.0,
            ShapeKind::Rate => i as f64 / self.rate,
            // Clients started by time t: R t² / 2T, so client i starts at sqrt(2 T i / R).
            ShapeKind::Ramp => (2.0 * self.duration * i as f64 / self.rate).sqrt(),
        };
        Duration::from_secs_f64(secs)
    }

    /// For `hold`: how often each client runs a query while holding, and client `i`'s first
    /// query's offset into the hold (spread evenly so the total rate is smooth). None: idle.
    pub fn hold_ticks(&self, i: u64) -> Option<(Duration, Duration)> {
        if self.shape != ShapeKind::Hold || self.rate <= 0.0 {
            return None;
        }
        let every = self.clients as f64 / self.rate;
        let phase = every * (i as f64 / self.clients as f64);
        Some((Duration::from_secs_f64(every), Duration::from_secs_f64(phase)))
    }

    /// The hold phase's length (zero for the other shapes).
    pub fn hold_for(&self) -> Duration {
        match self.shape {
            ShapeKind::Hold => Duration::from_secs_f64(self.duration),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S30: Option<Duration> = Some(Duration::from_secs(30));

    #[test]
    fn each_shape_takes_its_own_options() {
        let p = Plan::new(ShapeKind::Burst, Some(100), None, None, 1).unwrap();
        assert_eq!((p.clients, p.start_offset(99)), (100, Duration::ZERO));
        let p = Plan::new(ShapeKind::Rate, None, Some(500.0), S30, 3).unwrap();
        assert_eq!(p.clients, 15_000);
        assert_eq!(p.start_offset(250), Duration::from_millis(500));
        assert!(p.start_offset(14_999) < Duration::from_secs(30));
        let p = Plan::new(ShapeKind::Ramp, None, Some(100.0), Some(Duration::from_secs(10)), 1).unwrap();
        assert_eq!(p.clients, 500);
        // Half the clients start in the last 29% of the ramp.
        assert!((p.start_offset(250).as_secs_f64() - 10.0 * 0.5f64.sqrt()).abs() < 1e-9);
        assert!(p.start_offset(499) < Duration::from_secs(10));
        let p = Plan::new(ShapeKind::Hold, Some(1000), Some(100.0), S30, 1).unwrap();
        assert_eq!(p.hold_for(), Duration::from_secs(30));
        let (every, phase) = p.hold_ticks(500).unwrap();
        assert_eq!((every, phase), (Duration::from_secs(10), Duration::from_secs(5)));
        assert_eq!(Plan::new(ShapeKind::Hold, Some(10), None, S30, 1).unwrap().hold_ticks(0), None);
    }

    #[test]
    fn options_that_do_not_fit_are_all_reported() {
        let err = Plan::new(ShapeKind::Burst, None, Some(5.0), S30, 1).unwrap_err();
        assert!(err.contains("--clients") && err.contains("--rate") && err.contains("--duration"), "{err}");
        let err = Plan::new(ShapeKind::Rate, Some(5), None, None, 1).unwrap_err();
        assert_eq!(err.lines().count(), 3, "{err}");
        assert!(Plan::new(ShapeKind::Rate, None, Some(-1.0), S30, 1).is_err());
        assert!(Plan::new(ShapeKind::Rate, None, Some(f64::NAN), S30, 1).is_err());
        assert!(Plan::new(ShapeKind::Ramp, None, Some(0.01), Some(Duration::from_secs(1)), 1).is_err());
        assert!(Plan::new(ShapeKind::Hold, Some(10), None, None, 1).is_err());
        assert!(Plan::new(ShapeKind::Burst, Some(0), None, None, 1).is_err());
        assert!(Plan::new(ShapeKind::Burst, Some(u64::MAX), None, None, 1).is_err());
    }
}
