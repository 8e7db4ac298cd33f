//! Which server pgmux follows as the primary, as a state machine: each transition takes what was
//! learned (an election over the latest probes, a broken server connection, a probe answered, a
//! member removed) and returns the events it caused. The caller logs them, counts them
//! (`FailoverStats::count`) and acts on them (cuts the old primary's connections, tells waiters);
//! nothing here reads the clock, logs or touches a pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::topology::Election;

/// The primary followed, and the failover in progress.
#[derive(Debug, Default)]
pub struct Failover {
    /// The server followed as primary (None: none known).
    primary: Option<Arc<str>>,
    /// When a sign of trouble with the primary was first seen (a lost server connection).
    suspected_at: Option<Instant>,
    /// When the primary was declared lost; cleared once a primary is followed again.
    lost_at: Option<Instant>,
    /// The server lost as primary last: its pools are cut when another takes over.
    lost: Option<Arc<str>>,
    /// The rival primaries last reported (split brain), so each change is reported once.
    rivals: Vec<(Arc<str>, u32)>,
}

/// A primary followed again after a loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Primary declared lost → a primary followed again.
    pub after: Duration,
    /// The server lost came back (a recovery), rather than another taking over (a failover).
    pub same: bool,
}

/// What a transition caused, for the caller to log (`event=` is the name in snake case), count and
/// act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `server` is no longer followed as the primary (`reason`); new transactions wait for one.
    /// `detect`: from the first sign of trouble (`suspect`) to now (zero without one).
    PrimaryLost { server: Arc<str>, reason: String, detect: Duration },
    /// `server` is followed as the primary. `previous`: the server lost last (after a loss) or
    /// followed until now; when it is another server, its connections are cut. `recovered`: set
    /// when a loss ends.
    PrimaryFound { server: Arc<str>, previous: Option<Arc<str>>, reason: String, recovered: Option<Recovered> },
    /// More than one server claims to be the primary (or the claims changed): `following` is the
    /// one followed, `rivals` the others with their timelines. Reported once per change; an empty
    /// list (the split brain ended) is no event.
    SplitBrain { following: Option<Arc<str>>, rivals: Vec<(Arc<str>, u32)> },
    /// The servers now belong to another cluster (system identifiers `old` → `new`): whatever was
    /// pooled belongs to servers that no longer exist.
    ClusterReplaced { old: u64, new: u64, primary: Option<Arc<str>> },
}

impl Failover {
    /// The server followed as primary.
    pub fn primary(&self) -> Option<&Arc<str>> {
        self.primary.as_ref()
    }

    /// Whether the primary is lost and no other is followed yet.
    pub fn in_progress(&self) -> bool {
        self.lost_at.is_some()
    }

    /// A server connection to `server` failed unexpectedly at `now`. Returns whether it is the
    /// primary (then it should be probed at once; the first failed probe declares it lost).
    pub fn suspect(&mut self, server: &str, now: Instant) -> bool {
        if self.primary.as_deref() != Some(server) {
            return false;
        }
        self.suspected_at.get_or_insert(now);
        true
    }

    /// Whether `server` is the primary and suspected: a failed probe declares it down at once.
    pub fn suspected(&self, server: &str) -> bool {
        self.primary.as_deref() == Some(server) && self.suspected_at.is_some()
    }

    /// A probe of `server` answered: if it is the primary, the suspicion is over.
    pub fn answered(&mut self, server: &str) {
        if self.primary.as_deref() == Some(server) {
            self.suspected_at = None;
        }
    }

    /// Follows an election's outcome at `now`; `why` is the reason logged if it finds no primary.
    pub fn follow(&mut self, election: Election, why: &str, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if self.rivals != election.rivals {
            if !election.rivals.is_empty() {
                events.push(Event::SplitBrain { following: election.primary.clone(), rivals: election.rivals.clone() });
            }
            self.rivals = election.rivals;
        }
        if let Some((old, new)) = election.replaced {
            events.push(Event::ClusterReplaced { old, new, primary: election.primary.clone() });
        }
        if election.primary != self.primary {
            let why = if election.primary.is_some() { "a probe found it" } else { why };
            events.extend(self.set_primary(election.primary, why, now));
        }
        events
    }

    /// The primary is no longer a member (`why`): it is lost, whatever the probes said.
    pub fn drop_primary(&mut self, why: &str, now: Instant) -> Vec<Event> {
        self.set_primary(None, why, now).into_iter().collect()
    }

    fn set_primary(&mut self, server: Option<Arc<str>>, why: &str, now: Instant) -> Option<Event> {
        let previous = std::mem::replace(&mut self.primary, server.clone());
        if previous == server {
            return None;
        }
        match server {
            None => {
                let previous = previous.expect("differs from None");
                let detect = self.suspected_at.take().map(|t| now.saturating_duration_since(t)).unwrap_or_default();
                self.lost_at = Some(now);
                self.lost = Some(previous.clone());
                Some(Event::PrimaryLost { server: previous, reason: why.into(), detect })
            }
            Some(new) => {
                self.suspected_at = None;
                let lost = self.lost.take();
                let (previous, recovered) = match self.lost_at.take() {
                    Some(lost_at) => {
                        let same = lost.as_deref() == Some(&*new);
                        (lost, Some(Recovered { after: now.saturating_duration_since(lost_at), same }))
                    }
                    None => (previous.or(lost), None),
                };
                Some(Event::PrimaryFound { server: new, previous, reason: why.into(), recovered })
            }
        }
    }
}

/// Counts of primary losses and how long they took, for status output and metrics.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct FailoverStats {
    /// Primary lost, then another server followed as primary.
    pub failovers: u64,
    /// Primary lost, then the same server followed again (it came back).
    pub recoveries: u64,
    /// First sign of trouble → primary declared lost, in the last event.
    pub last_detect_ms: Option<u64>,
    /// Primary declared lost → a primary followed again, in the last event.
    pub last_recover_ms: Option<u64>,
    /// The primary is lost and no other is known yet (derived when the stats are read).
    pub in_progress: bool,
    /// Primaries declared lost, and the sums over them of detect and recover times (with
    /// failovers + recoveries as the count of recoveries: averages, as Prometheus sums).
    pub losses: u64,
    /// Primaries followed from another cluster than before (a new system identifier).
    pub clusters_replaced: u64,
    pub detect_ms_total: u64,
    pub recover_ms_total: u64,
}

impl FailoverStats {
    /// Counts one event.
    pub fn count(&mut self, event: &Event) {
        match event {
            Event::PrimaryLost { detect, .. } => {
                let ms = detect.as_millis() as u64;
                self.last_detect_ms = Some(ms);
                self.losses += 1;
                self.detect_ms_total += ms;
            }
            Event::PrimaryFound { recovered: Some(r), .. } => {
                let ms = r.after.as_millis() as u64;
                self.last_recover_ms = Some(ms);
                self.recover_ms_total += ms;
                if r.same {
                    self.recoveries += 1;
                } else {
                    self.failovers += 1;
                }
            }
            Event::PrimaryFound { recovered: None, .. } | Event::SplitBrain { .. } => {}
            Event::ClusterReplaced { .. } => self.clusters_replaced += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a row feeds the state machine.
    #[derive(Clone, Copy)]
    enum Fact {
        /// An election choosing this primary, with these rivals, and a replaced cluster or not.
        Elect(Option<&'static str>, &'static [(&'static str, u32)], Option<(u64, u64)>),
        /// A server connection to this server broke.
        Suspect(&'static str),
        /// A probe of this server answered.
        Answered(&'static str),
        /// The primary is no longer a member.
        Removed,
    }
    use Fact::*;

    fn elect(primary: Option<&str>, rivals: &[(&str, u32)], replaced: Option<(u64, u64)>) -> Election {
        Election {
            primary: primary.map(Arc::from),
            rivals: rivals.iter().map(|(s, t)| (Arc::from(*s), *t)).collect(),
            replaced,
        }
    }

    /// An event in short: `lost p detect=300`, `found r (p) reason`, `found r (p) failover after=200`.
    fn short(e: &Event) -> String {
        let name = |s: &Option<Arc<str>>| s.as_deref().unwrap_or("-").to_string();
        match e {
            Event::PrimaryLost { server, reason, detect } => {
                format!("lost {server} {reason} detect={}", detect.as_millis())
            }
            Event::PrimaryFound { server, previous, recovered: Some(r), .. } => format!(
                "found {server} ({}) {} after={}",
                name(previous),
                if r.same { "recovery" } else { "failover" },
                r.after.as_millis()
            ),
            Event::PrimaryFound { server, previous, reason, recovered: None } => {
                format!("found {server} ({}) {reason}", name(previous))
            }
            Event::SplitBrain { following, rivals } => format!(
                "split_brain {} vs {}",
                name(following),
                rivals.iter().map(|(s, t)| format!("{s}@{t}")).collect::<Vec<_>>().join(",")
            ),
            Event::ClusterReplaced { old, new, primary } => format!("replaced {old}->{new} {}", name(primary)),
        }
    }

    /// Each row: at `ms` after the start, a fact; the events it causes, the primary followed after
    /// it, and whether a failover is in progress. Rows run in order on one state machine.
    /// At ms, a fact; the events, the primary followed after it, a failover in progress.
    type Transition = (u64, Fact, &'static [&'static str], Option<&'static str>, bool);

    #[test]
    fn transitions_table() {
        #[rustfmt::skip]
        let rows: &[Transition] = &[
            // First primary found: no loss ended, nothing to cut.
            (0,    Elect(Some("p"), &[], None),       &["found p (-) a probe found it"], Some("p"), false),
            (10,   Elect(Some("p"), &[], None),       &[],                                Some("p"), false),
            // Trouble is seen at 100, the primary is declared lost at 400: detect = 300.
            (100,  Suspect("p"),                      &[],                                Some("p"), false),
            (150,  Suspect("p"),                      &[],                                Some("p"), false),
            (400,  Elect(None, &[], None),            &["lost p down detect=300"],        None,      true),
            (450,  Elect(None, &[], None),            &[],                                None,      true),
            // Another server takes over 200 ms later: a failover, p's connections are cut.
            (600,  Elect(Some("r"), &[], None),       &["found r (p) failover after=200"], Some("r"), false),
            // A suspicion of a server that is not the primary counts for nothing.
            (650,  Suspect("p"),                      &[],                                Some("r"), false),
            // Suspected, then answered: the suspicion is over, the loss detects from nothing.
            (700,  Suspect("r"),                      &[],                                Some("r"), false),
            (710,  Answered("r"),                     &[],                                Some("r"), false),
            (900,  Elect(None, &[], None),            &["lost r down detect=0"],          None,      true),
            // The same server comes back: a recovery.
            (1000, Elect(Some("r"), &[], None),       &["found r (r) recovery after=100"], Some("r"), false),
            // Old p claims primary on an older timeline: a rival, reported once per change.
            (1100, Elect(Some("r"), &[("p", 1)], None), &["split_brain r vs p@1"],        Some("r"), false),
            (1200, Elect(Some("r"), &[("p", 1)], None), &[],                              Some("r"), false),
            (1300, Elect(Some("r"), &[("p", 1), ("q", 1)], None), &["split_brain r vs p@1,q@1"], Some("r"), false),
            (1400, Elect(Some("r"), &[], None),       &[],                                Some("r"), false),
            // A newer timeline elsewhere wins while r lives: no loss in between, r is cut.
            (1500, Elect(Some("q"), &[], None),       &["found q (r) a probe found it"],  Some("q"), false),
            // Removed from the configuration: lost, whatever the probes say.
            (1600, Removed,                           &["lost q removed detect=0"],       None,      true),
            (1610, Removed,                           &[],                                None,      true),
            // The cluster was rebuilt: reported, and its primary followed after the loss.
            (1700, Elect(Some("p"), &[], Some((1, 2))), &["replaced 1->2 p", "found p (q) failover after=100"], Some("p"), false),
        ];
        let start = Instant::now();
        let mut f = Failover::default();
        for (ms, fact, want, primary, in_progress) in rows {
            let now = start + Duration::from_millis(*ms);
            let events = match *fact {
                Elect(p, rivals, replaced) => f.follow(elect(p, rivals, replaced), "down", now),
                Suspect(s) => {
                    assert_eq!(f.suspect(s, now), f.primary().map(|p| &**p) == Some(s), "{ms}: suspect's answer");
                    assert_eq!(f.suspected(s), f.primary().map(|p| &**p) == Some(s), "{ms}: suspected");
                    Vec::new()
                }
                Answered(s) => {
                    f.answered(s);
                    assert!(!f.suspected(s), "{ms}");
                    Vec::new()
                }
                Removed => f.drop_primary("removed", now),
            };
            assert_eq!(events.iter().map(short).collect::<Vec<_>>(), *want, "{ms}: events");
            assert_eq!(f.primary().map(|p| &**p), *primary, "{ms}: primary");
            assert_eq!(f.in_progress(), *in_progress, "{ms}: in progress");
        }
    }

    /// An event; the counts after it, the last detect and recover times.
    type Counted = (Event, [u64; 6], Option<u64>, Option<u64>);

    #[test]
    fn stats_count_events() {
        let found =
            |recovered| Event::PrimaryFound { server: "r".into(), previous: None, reason: String::new(), recovered };
        let lost =
            |ms| Event::PrimaryLost { server: "p".into(), reason: String::new(), detect: Duration::from_millis(ms) };
        let back = |ms, same| Some(Recovered { after: Duration::from_millis(ms), same });
        #[rustfmt::skip]
        let rows: Vec<Counted> = vec![
            // event: then failovers, recoveries, losses, clusters replaced, detect and recover ms totals; last detect, last recover
            (found(None),                              [0, 0, 0, 0, 0, 0],     None,      None),
            (lost(300),                                [0, 0, 1, 0, 300, 0],   Some(300), None),
            (found(back(200, false)),                  [1, 0, 1, 0, 300, 200], Some(300), Some(200)),
            (lost(0),                                  [1, 0, 2, 0, 300, 200], Some(0),   Some(200)),
            (found(back(100, true)),                   [1, 1, 2, 0, 300, 300], Some(0),   Some(100)),
            (Event::SplitBrain { following: None, rivals: vec![] }, [1, 1, 2, 0, 300, 300], Some(0), Some(100)),
            (Event::ClusterReplaced { old: 1, new: 2, primary: None }, [1, 1, 2, 1, 300, 300], Some(0), Some(100)),
        ];
        let mut s = FailoverStats::default();
        for (i, (event, counts, detect, recover)) in rows.iter().enumerate() {
            s.count(event);
            let got = [s.failovers, s.recoveries, s.losses, s.clusters_replaced, s.detect_ms_total, s.recover_ms_total];
            assert_eq!(got, *counts, "row {i}: {event:?}");
            assert_eq!((s.last_detect_ms, s.last_recover_ms), (*detect, *recover), "row {i}");
            assert!(!s.in_progress, "derived when read, never counted");
        }
    }
}
