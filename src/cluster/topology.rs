//! What pgmux believes about each server: up or down (with hysteresis), primary or replica, how far
//! behind. Pure bookkeeping fed by the prober and by failed connects; routing reads it.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// One probe's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub in_recovery: bool,
    /// Current WAL position (primary: inserted, which a commit has reached even with
    /// `synchronous_commit = off`) or last replayed position (replica), in bytes.
    pub lsn: u64,
    /// A primary's written position (`pg_current_wal_lsn()`): what can have reached a replica.
    /// Lag is measured against it; None: take `lsn`.
    pub written: Option<u64>,
    /// A replica's last received WAL position (None on a primary, or before streaming starts).
    pub received: Option<u64>,
    /// A primary's current timeline (None on a replica).
    pub timeline: Option<u32>,
    /// The cluster's `system_identifier` (from `pg_control_system()`): a primary and its replicas
    /// share it; a cluster made anew (initdb) gets another. None: unreadable.
    pub system_id: Option<u64>,
}

/// The primary's WAL positions as one probe round measured them.
#[derive(Debug, Clone, Copy)]
struct PrimaryAt {
    /// Inserted: a client's commit ends at or before it (the read-your-writes floor).
    inserted: u64,
    /// Written: a replica that replayed this far is not behind.
    written: u64,
    round: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Health {
    up: bool,
    ok_streak: usize,
    fail_streak: usize,
    last: Option<Probe>,
    /// When this replica was last seen with nothing left to replay; its lag is the time since.
    caught_up_at: Option<Instant>,
    lag: Duration,
    /// Results of probe rounds before this one are stale: a later round was recorded, or a
    /// connection found the server in recovery after they started.
    min_round: u64,
}

/// A server as the status call shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerView {
    pub server: Arc<str>,
    pub up: bool,
    pub role: &'static str,
    pub lag_bytes: Option<u64>,
    pub lag: Option<Duration>,
    /// A primary's timeline, from its last probe.
    pub timeline: Option<u32>,
}

#[derive(Debug)]
pub struct Topology {
    servers: Vec<(Arc<str>, Health)>,
    down_after: usize,
    up_after: usize,
    /// Probe rounds started so far.
    round: u64,
    /// The primary's WAL positions, as the latest round that measured them found them.
    primary_at: Option<PrimaryAt>,
    /// The measurement before that one, from an earlier round: what a replica answering in the
    /// same round as the primary is compared with.
    primary_earlier: Option<PrimaryAt>,
    /// The cluster (system identifier, None: unknown) and newest timeline pgmux has followed a
    /// primary on: an older timeline of that cluster is never followed again.
    followed: Followed,
}

/// The cluster and timeline followed last.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Followed {
    system_id: Option<u64>,
    timeline: u32,
}

/// What an election found.
#[derive(Debug, Clone, PartialEq)]
pub struct Election {
    /// The server to follow as primary (None: no server qualifies).
    pub primary: Option<Arc<str>>,
    /// Servers that claim to be primary besides the one chosen, with their timelines (split brain).
    pub rivals: Vec<(Arc<str>, u32)>,
    /// The primary chosen belongs to another cluster than the one followed so far (re-provisioned
    /// or restored at the same addresses): `(old, new)` system identifiers. Reported once.
    pub replaced: Option<(u64, u64)>,
}

impl Topology {
    pub fn new(servers: &[Arc<str>], down_after: usize, up_after: usize) -> Topology {
        let fresh = Health {
            up: true,
            ok_streak: 0,
            fail_streak: 0,
            last: None,
            caught_up_at: None,
            lag: Duration::ZERO,
            min_round: 0,
        };
        Topology {
            servers: servers.iter().map(|s| (s.clone(), fresh.clone())).collect(),
            down_after: down_after.max(1),
            up_after: up_after.max(1),
            round: 0,
            primary_at: None,
            primary_earlier: None,
            followed: Followed::default(),
        }
    }

    /// Follows a reloaded server list and thresholds: servers still listed keep what is known of
    /// them, new ones start fresh (up, unprobed), removed ones are forgotten.
    pub fn reconfigure(&mut self, servers: &[Arc<str>], down_after: usize, up_after: usize) {
        let fresh = Topology::new(servers, down_after, up_after);
        let mut old = std::mem::take(&mut self.servers);
        self.servers = fresh
            .servers
            .into_iter()
            .map(|(s, h)| match old.iter().position(|(o, _)| *o == s) {
                Some(i) => old.swap_remove(i),
                None => (s, h),
            })
            .collect();
        self.down_after = fresh.down_after;
        self.up_after = fresh.up_after;
    }

    /// Follows a new member list with the same thresholds (see `reconfigure`).
    pub fn set_servers(&mut self, servers: &[Arc<str>]) {
        self.reconfigure(servers, self.down_after, self.up_after);
    }

    /// A probe round begins; returns its number.
    pub fn start_round(&mut self) -> u64 {
        self.round += 1;
        self.round
    }

    /// The number of the latest round started: a write finished now is covered by later rounds.
    pub fn round(&self) -> u64 {
        self.round
    }

    fn health(&mut self, server: &str) -> Option<&mut Health> {
        self.servers.iter_mut().find(|(s, _)| &**s == server).map(|(_, h)| h)
    }

    /// Records one probe (in round `round`, taken at `now`); returns Some(up) when the server's
    /// health flipped. A replica is behind while it has received WAL it has not replayed, or has
    /// not replayed up to the primary's position of an earlier round; its lag is the time since it
    /// was last not behind.
    /// A result from a round older than one already recorded (or than a standby sighting) is
    /// stale and ignored: discovery and the prober run side by side, and a slow probe must not
    /// overwrite what a later one found.
    pub fn record(&mut self, server: &str, round: u64, result: Option<Probe>, now: Instant) -> Option<bool> {
        if self.health(server).is_none_or(|h| round < h.min_round) {
            return None;
        }
        let (down_after, up_after) = (self.down_after, self.up_after);
        // The primary's newest position measured in an earlier round (in whichever order the
        // answers of this round arrive).
        let primary_before =
            [self.primary_at, self.primary_earlier].into_iter().flatten().find(|a| a.round < round).map(|a| a.written);
        if let Some(p) = result.as_ref().filter(|p| !p.in_recovery)
            && self.primary_at.is_none_or(|a| a.round <= round)
        {
            if let Some(old) = self.primary_at.filter(|a| a.round < round) {
                self.primary_earlier = Some(old);
            }
            self.primary_at = Some(PrimaryAt { inserted: p.lsn, written: p.written.unwrap_or(p.lsn), round });
        }
        let h = self.health(server)?;
        h.min_round = round;
        let was = h.up;
        match result {
            Some(p) => {
                if p.in_recovery {
                    let behind = p.received.is_some_and(|r| r > p.lsn) || primary_before.is_some_and(|l| p.lsn < l);
                    if !behind {
                        h.caught_up_at = Some(now);
                    }
                    h.lag = match h.caught_up_at {
                        Some(t) if behind => now.saturating_duration_since(t),
                        Some(_) => Duration::ZERO,
                        // Behind ever since pgmux has watched it: as far behind as pgmux can tell.
                        None => Duration::MAX,
                    };
                }
                h.ok_streak += 1;
                h.fail_streak = 0;
                h.last = Some(p);
                if !h.up && h.ok_streak >= up_after {
                    h.up = true;
                }
            }
            None => {
                h.fail_streak += 1;
                h.ok_streak = 0;
                if h.up && h.fail_streak >= down_after {
                    h.up = false;
                }
            }
        }
        (h.up != was).then_some(h.up)
    }

    /// A connection attempt failed: that is no slow probe, the server is down now.
    pub fn mark_down(&mut self, server: &str) -> bool {
        let down_after = self.down_after;
        let Some(h) = self.health(server) else { return false };
        let was = h.up;
        h.up = false;
        h.ok_streak = 0;
        h.fail_streak = h.fail_streak.max(down_after);
        was
    }

    /// A connection to `server` found it in recovery: it is a replica until a probe round started
    /// after now says otherwise (probes already under way may have asked before it changed).
    pub fn saw_standby(&mut self, server: &str) {
        let next = self.round + 1;
        let Some(h) = self.health(server) else { return };
        h.min_round = h.min_round.max(next);
        h.ok_streak = 0;
        match &mut h.last {
            Some(p) => {
                p.in_recovery = true;
                p.timeline = None;
            }
            None => {
                h.last = Some(Probe {
                    in_recovery: true,
                    lsn: 0,
                    written: None,
                    received: None,
                    timeline: None,
                    system_id: None,
                })
            }
        }
        // Never seen caught up as a replica: not readable until a probe measures it.
        h.caught_up_at = None;
        h.lag = Duration::MAX;
    }

    /// Chooses the primary to follow, `current` being the one followed now: among servers that are
    /// up and whose latest probe found them not in recovery, one on the newest timeline of the
    /// cluster followed, never on a timeline older than one already followed there (an old primary
    /// restarted without rejoining). Only when no server of that cluster qualifies does a primary
    /// of another cluster (another system identifier: the cluster was re-provisioned or restored
    /// at the same addresses) win, its timelines counted afresh. `current` keeps its place among
    /// equals, so the choice never flips back and forth.
    pub fn elect(&mut self, current: Option<&str>) -> Election {
        let claimants: Vec<(Arc<str>, u32, Option<u64>)> = self
            .servers
            .iter()
            .filter(|(_, h)| h.up)
            .filter_map(|(s, h)| {
                h.last.as_ref().filter(|p| !p.in_recovery).map(|p| (s.clone(), p.timeline.unwrap_or(0), p.system_id))
            })
            .collect();
        let followed = self.followed;
        // An unknown identifier on either side cannot tell clusters apart: treated as the same.
        let same = |id: Option<u64>| followed.system_id.is_none() || id.is_none() || id == followed.system_id;
        let newest_of = |pick: &dyn Fn(Option<u64>) -> bool| {
            claimants.iter().filter(|(_, _, id)| pick(*id)).max_by_key(|(_, t, _)| *t).map(|(_, t, id)| (*t, *id))
        };
        let ours = newest_of(&same).filter(|(t, _)| *t >= followed.timeline);
        let (newest, system_id, replaced) = match ours {
            Some((t, id)) => (t, id.or(followed.system_id), None),
            None => match newest_of(&|id| !same(id)) {
                Some((t, id)) => (t, id, followed.system_id.zip(id)),
                None => {
                    let rivals = claimants.into_iter().map(|(s, t, _)| (s, t)).collect();
                    return Election { primary: None, rivals, replaced: None };
                }
            },
        };
        let eligible = |(_, t, id): &&(Arc<str>, u32, Option<u64>)| {
            *t == newest && (id.is_none() || system_id.is_none() || *id == system_id)
        };
        let chosen = claimants
            .iter()
            .filter(eligible)
            .find(|(s, _, _)| Some(&**s) == current)
            .or_else(|| claimants.iter().find(eligible))
            .map(|(s, _, _)| s.clone());
        self.followed = Followed { system_id, timeline: newest };
        let rivals =
            claimants.into_iter().filter(|(s, _, _)| Some(s) != chosen.as_ref()).map(|(s, t, _)| (s, t)).collect();
        Election { primary: chosen, rivals, replaced }
    }

    /// Whether `server`'s latest probe found it in recovery (None: never probed successfully).
    pub fn in_recovery(&self, server: &str) -> Option<bool> {
        self.servers.iter().find(|(s, _)| &**s == server).and_then(|(_, h)| h.last.as_ref()).map(|p| p.in_recovery)
    }

    /// Replicas fit for a read: up, in recovery, no further behind than `max_lag`, and — for a
    /// client that wrote in probe round `wrote_in` — past the primary's position measured after it.
    pub fn readable_replicas(&self, max_lag: Duration, wrote_in: Option<u64>) -> Vec<Arc<str>> {
        let floor = match wrote_in {
            None => None,
            Some(w) => match self.primary_at {
                Some(a) if a.round > w => Some(a.inserted),
                // No measurement of the primary since the write yet: only the primary is safe.
                _ => return Vec::new(),
            },
        };
        self.servers
            .iter()
            .filter(|(_, h)| h.up)
            .filter_map(|(s, h)| h.last.as_ref().map(|p| (s, p)))
            .filter(|(s, p)| p.in_recovery && self.lag_of(s) <= max_lag && floor.is_none_or(|f| p.lsn >= f))
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn lag_of(&self, server: &str) -> Duration {
        self.servers.iter().find(|(s, _)| &**s == server).map(|(_, h)| h.lag).unwrap_or(Duration::MAX)
    }

    pub fn view(&self) -> Vec<ServerView> {
        let primary_written = self.primary_at.map(|a| a.written);
        self.servers
            .iter()
            .map(|(s, h)| {
                let p = h.last.as_ref();
                let role = match p {
                    None => "unknown",
                    Some(p) if p.in_recovery => "replica",
                    Some(_) => "primary",
                };
                let replica = p.filter(|p| p.in_recovery);
                ServerView {
                    server: s.clone(),
                    up: h.up,
                    role,
                    lag_bytes: replica.and_then(|p| primary_written.map(|l| l.saturating_sub(p.lsn))),
                    lag: replica.map(|_| h.lag),
                    timeline: p.and_then(|p| p.timeline),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(in_recovery: bool, lsn: u64, received: u64) -> Option<Probe> {
        Some(Probe {
            in_recovery,
            lsn,
            written: None,
            received: in_recovery.then_some(received),
            timeline: (!in_recovery).then_some(1),
            system_id: Some(7),
        })
    }

    fn primary_on(timeline: u32) -> Option<Probe> {
        Some(Probe {
            in_recovery: false,
            lsn: 0,
            written: None,
            received: None,
            timeline: Some(timeline),
            system_id: Some(7),
        })
    }

    /// What a probe of one server found: a primary `P(system, timeline)`, a replica `R(system)`,
    /// or no answer.
    #[derive(Clone, Copy)]
    enum Seen {
        P(u64, u32),
        R(u64),
        Down,
    }

    fn seen(s: Seen) -> Option<Probe> {
        match s {
            Seen::P(id, t) => Some(Probe {
                in_recovery: false,
                lsn: 0,
                written: None,
                received: None,
                timeline: Some(t),
                system_id: Some(id),
            }),
            Seen::R(id) => Some(Probe {
                in_recovery: true,
                lsn: 0,
                written: None,
                received: Some(0),
                timeline: None,
                system_id: Some(id),
            }),
            Seen::Down => None,
        }
    }

    /// Each row: what the three servers answer in one round (repeated until health settles), the
    /// election's choice, and whether it reports a replaced cluster. Rows run in order on one
    /// topology: what was followed before matters.
    #[test]
    fn election_table_tells_an_old_primary_from_a_new_cluster() {
        use Seen::*;
        #[rustfmt::skip]
        let rows: &[(&str, [Seen; 3], Option<&str>, bool)] = &[
            ("cluster 1 on timeline 1",                     [P(1, 1), R(1), R(1)], Some("p:1"), false),
            ("primary crashed: nobody",                     [Down, R(1), R(1)],    None,        false),
            ("replica promoted to timeline 2",              [Down, P(1, 2), R(1)], Some("r1:1"), false),
            ("old primary back alone on timeline 1",        [P(1, 1), P(1, 2), R(1)], Some("r1:1"), false),
            ("new primary gone; old still refused",         [P(1, 1), Down, R(1)], None,        false),
            ("cluster torn down",                           [Down, Down, Down],    None,        false),
            ("rebuilt (new initdb): timeline 1 of system 2", [P(2, 1), R(2), Down], Some("p:1"), true),
            ("same again: no second replacement",           [P(2, 1), R(2), R(2)], Some("p:1"), false),
            ("a stray primary of system 1 is a rival only", [P(2, 1), R(2), P(1, 9)], Some("p:1"), false),
            ("system 2 fails over to timeline 2",           [Down, P(2, 2), R(2)], Some("r1:1"), false),
            ("system 2's old primary back: refused",        [P(2, 1), P(2, 2), R(2)], Some("r1:1"), false),
        ];
        let mut t = topo();
        let names = ["p:1", "r1:1", "r2:1"];
        let mut current: Option<Arc<str>> = None;
        for (what, answers, want, replaced) in rows {
            // up_after = 2 and down_after = 3: three rounds settle health.
            let mut reports = 0;
            for _ in 0..3 {
                let r = t.start_round();
                for (n, a) in names.iter().zip(answers) {
                    t.record(n, r, seen(*a), Instant::now());
                }
                let e = t.elect(current.as_deref());
                reports += usize::from(e.replaced.is_some());
                current = e.primary;
            }
            assert_eq!(current.as_deref(), *want, "{what}");
            assert_eq!(reports, usize::from(*replaced), "{what}: cluster_replaced reports");
        }
    }

    #[test]
    fn a_standby_sighting_holds_until_a_later_probe_round() {
        let mut t = topo();
        let now = Instant::now();
        let r1 = t.start_round();
        t.record("p:1", r1, seen(Seen::P(1, 1)), now);
        assert_eq!(t.elect(None).primary.as_deref(), Some("p:1"));
        // A probe round is under way when a fresh connection finds p:1 in recovery.
        let r2 = t.start_round();
        t.saw_standby("p:1");
        assert_eq!(t.in_recovery("p:1"), Some(true));
        assert_eq!(t.elect(Some("p:1")).primary, None, "never elected while its latest news is 'in recovery'");
        // That round's (stale) answer says primary: ignored.
        t.record("p:1", r2, seen(Seen::P(1, 1)), now);
        assert_eq!(t.elect(None).primary, None, "a probe started before the sighting cannot undo it");
        assert!(t.readable_replicas(Duration::from_secs(10), None).is_empty(), "not measured as a replica yet");
        // A later round decides, either way.
        let r3 = t.start_round();
        t.record("p:1", r3, seen(Seen::R(1)), now);
        assert_eq!(t.elect(None).primary, None);
        let r4 = t.start_round();
        t.record("p:1", r4, seen(Seen::P(1, 1)), now);
        assert_eq!(t.elect(None).primary.as_deref(), Some("p:1"));
        // Results arriving out of order: the older round's answer is dropped.
        t.record("p:1", r3, seen(Seen::R(1)), now);
        assert_eq!(t.in_recovery("p:1"), Some(false));
    }

    #[test]
    fn election_follows_the_newest_timeline_and_never_flips_back() {
        let mut t = topo();
        let now = Instant::now();
        let r = t.start_round();
        t.record("p:1", r, primary_on(1), now);
        t.record("r1:1", r, probe(true, 0, 0), now);
        let e = t.elect(None);
        assert_eq!(e.primary.as_deref(), Some("p:1"));
        assert!(e.rivals.is_empty());
        // The primary dies; nobody qualifies until a replica is promoted.
        t.mark_down("p:1");
        assert_eq!(t.elect(Some("p:1")).primary, None);
        t.record("r1:1", r, primary_on(2), now);
        assert_eq!(t.elect(None).primary.as_deref(), Some("r1:1"));
        // The old primary comes back claiming primary on its old timeline: ignored, and reported.
        for _ in 0..2 {
            t.record("p:1", r, primary_on(1), now);
        }
        let e = t.elect(Some("r1:1"));
        assert_eq!(e.primary.as_deref(), Some("r1:1"));
        assert_eq!(e.rivals, vec![(Arc::<str>::from("p:1"), 1)]);
        // Even with the new primary gone, the old timeline is never followed again.
        t.mark_down("r1:1");
        assert_eq!(t.elect(Some("r1:1")).primary, None);
        // Two claimants on one timeline: the current one keeps its place.
        let mut t = topo();
        t.record("p:1", r, primary_on(3), now);
        t.record("r2:1", r, primary_on(3), now);
        assert_eq!(t.elect(Some("r2:1")).primary.as_deref(), Some("r2:1"));
        assert_eq!(t.elect(None).primary.as_deref(), Some("p:1"));
        // A newer timeline wins over the current primary (a replica was promoted while it lived).
        t.record("r1:1", r, primary_on(4), now);
        assert_eq!(t.elect(Some("p:1")).primary.as_deref(), Some("r1:1"));
    }

    fn topo() -> Topology {
        Topology::new(&["p:1".into(), "r1:1".into(), "r2:1".into()], 3, 2)
    }

    #[test]
    fn health_flips_only_after_consecutive_results() {
        let mut t = topo();
        let r = t.start_round();
        assert_eq!(t.record("r1:1", r, None, Instant::now()), None);
        assert_eq!(t.record("r1:1", r, None, Instant::now()), None);
        assert_eq!(t.record("r1:1", r, probe(true, 0, 0), Instant::now()), None, "one good probe resets the streak");
        for _ in 0..2 {
            assert_eq!(t.record("r1:1", r, None, Instant::now()), None);
        }
        assert_eq!(t.record("r1:1", r, None, Instant::now()), Some(false));
        assert_eq!(t.record("r1:1", r, probe(true, 0, 0), Instant::now()), None);
        assert_eq!(t.record("r1:1", r, probe(true, 0, 0), Instant::now()), Some(true));
        assert!(t.mark_down("r1:1"));
        assert!(!t.view()[1].up);
    }

    #[test]
    fn lagging_down_and_unprobed_replicas_are_not_readable() {
        let mut t = topo();
        let t0 = Instant::now();
        let max = Duration::from_secs(10);
        let r = t.start_round();
        t.record("p:1", r, probe(false, 1000, 0), t0);
        t.record("r1:1", r, probe(true, 1000, 1000), t0);
        assert_eq!(t.readable_replicas(max, None), vec![Arc::<str>::from("r1:1")]);
        // Replay stalls behind what it received: lag grows from the last time it was caught up.
        let r = t.start_round();
        t.record("r1:1", r, probe(true, 1000, 1500), t0 + Duration::from_secs(5));
        assert_eq!(t.readable_replicas(max, None).len(), 1, "5 s behind is within 10 s");
        t.record("r1:1", r, probe(true, 1000, 1500), t0 + Duration::from_secs(11));
        assert!(t.readable_replicas(max, None).is_empty());
        assert_eq!(t.view()[1].lag, Some(Duration::from_secs(11)));
        t.record("r1:1", r, probe(true, 1500, 1500), t0 + Duration::from_secs(12));
        assert_eq!(t.readable_replicas(max, None).len(), 1, "caught up again");
        // Behind the primary's earlier position, even if it replayed all it received.
        let r2 = t.start_round();
        t.record("p:1", r2, probe(false, 3000, 0), t0 + Duration::from_secs(13));
        let r3 = t.start_round();
        t.record("r1:1", r3, probe(true, 1500, 1500), t0 + Duration::from_secs(30));
        assert!(t.readable_replicas(max, None).is_empty());
        assert_eq!(t.view()[1].lag_bytes, Some(1500));
        // Also when the primary answered first in the replica's round.
        t.record("r1:1", r3, probe(true, 3000, 3000), t0 + Duration::from_secs(31));
        assert_eq!(t.readable_replicas(max, None).len(), 1, "caught up again");
        t.record("p:1", r3, probe(false, 5000, 0), t0 + Duration::from_secs(32));
        let r4 = t.start_round();
        t.record("p:1", r4, probe(false, 5000, 0), t0 + Duration::from_secs(33));
        t.record("r1:1", r4, probe(true, 3000, 3000), t0 + Duration::from_secs(50));
        assert!(t.readable_replicas(max, None).is_empty(), "behind the primary's position of round 3");
        // Inserted but not yet written WAL (a commit with synchronous_commit = off) cannot have
        // reached a replica: no lag for a replica at the written position, but a client that
        // wrote before that round reads from it only once it replayed the inserted position.
        let r5 = t.start_round();
        let ahead = Probe { lsn: 9000, written: Some(8000), ..probe(false, 0, 0).unwrap() };
        t.record("p:1", r5, Some(ahead), t0 + Duration::from_secs(51));
        t.record("r1:1", r5, probe(true, 8000, 8000), t0 + Duration::from_secs(51));
        let r6 = t.start_round();
        t.record("r1:1", r6, probe(true, 8000, 8000), t0 + Duration::from_secs(52));
        assert_eq!(t.readable_replicas(max, None).len(), 1, "at the written position: not behind");
        assert_eq!(t.view()[1].lag_bytes, Some(0));
        assert!(t.readable_replicas(max, Some(r5 - 1)).is_empty(), "short of the inserted position");
        t.record("r1:1", r6, probe(true, 9000, 9000), t0 + Duration::from_secs(53));
        assert_eq!(t.readable_replicas(max, Some(r5 - 1)).len(), 1);
        // Never seen caught up: unknown lag is too much lag.
        t.record("r2:1", r3, probe(true, 0, 10), t0);
        assert!(!t.readable_replicas(max, None).contains(&Arc::<str>::from("r2:1")));
        t.mark_down("r1:1");
        assert!(t.readable_replicas(Duration::MAX, None).iter().all(|s| &**s != "r1:1"));
    }

    #[test]
    fn reconfigure_keeps_known_servers_and_adds_fresh_ones() {
        let mut t = topo();
        let r = t.start_round();
        t.record("p:1", r, probe(false, 5, 0), Instant::now());
        t.mark_down("r1:1");
        t.reconfigure(&["p:1".into(), "r1:1".into(), "r3:1".into()], 1, 1);
        let v = t.view();
        assert_eq!(v.iter().map(|s| &*s.server).collect::<Vec<_>>(), ["p:1", "r1:1", "r3:1"]);
        assert_eq!((v[0].role, v[1].up, v[2].up, v[2].role), ("primary", false, true, "unknown"));
        assert!(t.record("r1:1", r, probe(true, 5, 5), Instant::now()) == Some(true), "new threshold: 1 good probe");
    }

    #[test]
    fn read_your_writes_needs_a_later_primary_measurement() {
        let mut t = topo();
        let r1 = t.start_round();
        t.record("p:1", r1, probe(false, 1000, 0), Instant::now());
        t.record("r1:1", r1, probe(true, 1000, 1000), Instant::now());
        let wrote_in = t.round();
        assert!(t.readable_replicas(Duration::from_secs(10), Some(wrote_in)).is_empty(), "primary not re-measured yet");
        let r2 = t.start_round();
        t.record("p:1", r2, probe(false, 1500, 0), Instant::now());
        t.record("r1:1", r2, probe(true, 1200, 1200), Instant::now());
        assert!(t.readable_replicas(Duration::from_secs(10), Some(wrote_in)).is_empty(), "replica behind the write");
        t.record("r1:1", r2, probe(true, 1500, 1500), Instant::now());
        assert_eq!(t.readable_replicas(Duration::from_secs(10), Some(wrote_in)).len(), 1);
        assert_eq!(t.readable_replicas(Duration::from_secs(10), None).len(), 1);
    }
}
