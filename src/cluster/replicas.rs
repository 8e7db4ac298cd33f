//! Read-only work on replicas: which replica to try first (a pure ranking, its randomness handed
//! in), and borrowing from them.

use std::sync::Arc;
use std::time::Duration;

use super::{Cluster, ClusterError, server_unavailable};
use crate::backend::BackendError;
use crate::pool::{Pool, PoolError, Pooled, WaitTimer};

/// The order in which to try `candidates` (replicas fit to serve, in the topology's order): least
/// work in flight first; ties go round starting at position `turn` (taken at random in
/// `0..candidates.len()` by the caller), so idle replicas share the load too (a plain rotation
/// lands every client on one replica when each client borrows a fixed number of times, e.g. once
/// to log in and once for its one query).
pub fn rank<T>(candidates: Vec<T>, in_flight: impl Fn(&T) -> usize, turn: usize) -> Vec<T> {
    let n = candidates.len().max(1);
    let mut ranked: Vec<(usize, usize, T)> =
        candidates.into_iter().enumerate().map(|(i, c)| (in_flight(&c), (i + n - turn % n) % n, c)).collect();
    ranked.sort_by_key(|(load, order, _)| (*load, *order));
    ranked.into_iter().map(|(_, _, c)| c).collect()
}

impl Cluster {
    /// Borrows a connection to a replica for (database, user): the one with the least work in
    /// flight among those fit to serve. With none, the primary serves (if `fallback_to_primary`).
    /// `wrote_in`: the probe round in which the client's last write ended (read-your-writes).
    pub async fn checkout_replica(
        &self,
        database: &str,
        user: &str,
        timeout: Duration,
        wrote_in: Option<u64>,
        timer: &mut WaitTimer,
    ) -> Result<Pooled, ClusterError> {
        let mut candidates: Vec<Arc<Pool>> = Vec::new();
        let readable = self.topology().readable_replicas(self.routing.load().max_replica_lag, wrote_in);
        for server in readable {
            candidates.push(self.pool(server, database, user)?);
        }
        let turn = rand::random_range(0..candidates.len().max(1));
        for pool in rank(candidates, |p| p.borrowed_count(), turn) {
            match pool.checkout(timeout, timer).await {
                Ok(conn) if conn.is_standby() == Some(false) => {
                    // Promoted: it leaves the reader set once the prober has seen it (asked now).
                    tracing::warn!(server = %pool.key.server, "replica is no longer in recovery; not used for reads");
                    drop(conn);
                    pool.retire(false);
                    self.probe_now.notify_one();
                }
                Ok(conn) if conn.is_fresh() => {
                    self.refresh_names().await;
                    if self.servers().contains(&pool.key.server) {
                        return Ok(conn);
                    }
                }
                Ok(conn) => return Ok(conn),
                Err(PoolError::Connect(e)) if matches!(e, BackendError::Server { .. }) || !server_unavailable(&e) => {
                    return Err(PoolError::Connect(e).into());
                }
                Err(PoolError::Connect(e)) => {
                    tracing::debug!(error = %e, "replica connect failed");
                    self.topology().mark_down(&pool.key.server);
                    pool.clear_idle();
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !self.routing.load().fallback_to_primary {
            return Err(ClusterError::NoReplica);
        }
        // Boxed: the fallback is the exception, and inline it would size every client's task.
        Box::pin(self.checkout_primary(None, None, database, user, timeout, timer)).await
    }
}

#[cfg(test)]
mod tests {
    use super::rank;

    /// Each row: the candidates as (name, work in flight) in the topology's order, the random
    /// turn, and the order they are tried in.
    /// What, the candidates (name, work in flight), the turn, the order they are tried in.
    type Row = (&'static str, &'static [(&'static str, usize)], usize, &'static [&'static str]);

    #[test]
    fn ranking_table() {
        #[rustfmt::skip]
        let rows: &[Row] = &[
            ("none",                          &[],                               0, &[]),
            ("one",                           &[("a", 3)],                       0, &["a"]),
            ("least in flight first",         &[("a", 2), ("b", 0), ("c", 1)],   0, &["b", "c", "a"]),
            ("the turn does not beat load",   &[("a", 2), ("b", 0), ("c", 1)],   2, &["b", "c", "a"]),
            ("all idle, turn 0",              &[("a", 0), ("b", 0), ("c", 0)],   0, &["a", "b", "c"]),
            ("all idle, turn 1",              &[("a", 0), ("b", 0), ("c", 0)],   1, &["b", "c", "a"]),
            ("all idle, turn 2",              &[("a", 0), ("b", 0), ("c", 0)],   2, &["c", "a", "b"]),
            ("ties rotate among equals only", &[("a", 1), ("b", 0), ("c", 1), ("d", 0)], 3, &["d", "b", "a", "c"]),
            ("tie after the turn's start",    &[("a", 1), ("b", 0), ("c", 1), ("d", 0)], 1, &["b", "d", "c", "a"]),
            ("a turn past the end wraps",     &[("a", 0), ("b", 0)],             3, &["b", "a"]),
        ];
        for (what, candidates, turn, want) in rows {
            let got: Vec<&str> =
                rank(candidates.to_vec(), |(_, load)| *load, *turn).into_iter().map(|(s, _)| s).collect();
            assert_eq!(got, *want, "{what}");
        }
    }

    /// Idle replicas share the work: over every turn, each comes first equally often.
    #[test]
    fn every_idle_replica_comes_first_for_one_turn() {
        let candidates = vec!["a", "b", "c"];
        let mut firsts: Vec<&str> = (0..3).map(|turn| rank(candidates.clone(), |_| 0, turn)[0]).collect();
        firsts.sort();
        assert_eq!(firsts, ["a", "b", "c"]);
    }
}
