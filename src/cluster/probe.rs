//! The prober: one task that asks every server, every `health.interval` (and at once when a server
//! connection to the primary breaks), for its role, WAL position, replay state and timeline, over a
//! connection of its own, and feeds the answers to the topology. Servers are asked concurrently, so
//! one that hangs does not delay news of the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use tracing::Instrument;

use super::Cluster;
use super::topology::Probe;
use crate::backend::{BackendConn, BackendError, LoginParams};

/// Role, WAL position in bytes (inserted on a primary: with `synchronous_commit = off` a commit
/// returns before its record is written, so the write position can lag behind a client's write,
/// and read-your-writes would take a replica that has not seen it; replayed on a replica), on a
/// replica the last received position, and on a primary its timeline (from the name of the current
/// WAL file: the checkpoint's timeline lags behind a promotion), the cluster's system identifier
/// (which tells a re-provisioned cluster at the same address from an old primary come back), on a
/// primary its written position (what replicas can have: their lag is measured against it), and
/// the WAL page and segment sizes that [`record_end`] needs.
const PROBE_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() \
      ELSE pg_catalog.pg_current_wal_insert_lsn() END - '0/0'::pg_lsn)::bigint, \
     (pg_catalog.pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint, \
     CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE ('x' || pg_catalog.substr( \
      pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
     (SELECT system_identifier FROM pg_catalog.pg_control_system()), \
     CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL \
      ELSE (pg_catalog.pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint END, \
     pg_catalog.current_setting('wal_block_size'), \
     pg_catalog.pg_size_bytes(pg_catalog.current_setting('wal_segment_size'))";

/// The insert position as the end of the last record. When the last record ended on a page
/// boundary, `pg_current_wal_insert_lsn()` points past the next page's header (24 bytes, 40 at a
/// segment's start: the long header), where no record can end — a replica that replayed all of it
/// reports the boundary, and would look behind for as long as the primary stays idle.
pub fn record_end(insert: u64, block: u64, segment: u64) -> u64 {
    const SHORT_HEADER: u64 = 24;
    const LONG_HEADER: u64 = 40;
    if segment > 0 && insert % segment == LONG_HEADER {
        insert - LONG_HEADER
    } else if block > 0 && insert % block == SHORT_HEADER {
        insert - SHORT_HEADER
    } else {
        insert
    }
}

/// Why a probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Connecting or logging in failed.
    #[error(transparent)]
    Refused(BackendError),
    /// The connection failed after login.
    #[error("{0}")]
    Lost(String),
    #[error("timed out")]
    Timeout,
}

impl Cluster {
    /// Starts the prober, logging in as `user` to `database`. One prober at a time: a new one
    /// (after a reload) replaces the old. Discovery logs in as it does.
    pub fn spawn_prober(self: &Arc<Self>, user: &str, database: &str, interval: Duration, stop: CancellationToken) {
        match self.login(database, user) {
            Ok(login) => {
                self.discover_as(login.clone());
                let mine = stop.child_token();
                if let Some(old) = self.prober.lock().unwrap_or_else(|e| e.into_inner()).replace(mine.clone()) {
                    old.cancel();
                }
                let span = tracing::info_span!("prober");
                tokio::spawn(run(self.clone(), login, interval, mine).instrument(span));
            }
            Err(e) => tracing::error!(error = %e, "no prober: cannot log in to the servers"),
        }
    }
}

/// Probes until `stop` is cancelled.
pub async fn run(cluster: Arc<Cluster>, login: LoginParams, interval: Duration, stop: CancellationToken) {
    // Each member's kept connection; the members change with reloads and with names that move.
    let mut conns: Vec<(Arc<str>, Option<BackendConn>)> = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = interval.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cluster.probe_now.notified() => {}
            _ = stop.cancelled() => return,
        }
        cluster.refresh_names().await;
        let servers = cluster.servers();
        let mut kept = std::mem::take(&mut conns);
        conns = servers
            .iter()
            .map(|s| {
                let conn = kept.iter_mut().find(|(k, _)| k == s).and_then(|(_, c)| c.take());
                (s.clone(), conn)
            })
            .collect();
        drop(kept);
        let round = cluster.start_probe_round();
        let mut pending: FuturesUnordered<_> = conns
            .iter_mut()
            .map(|(server, conn)| {
                let login = &login;
                async move {
                    let r = tokio::time::timeout(limit, probe_again(server, conn, login)).await;
                    (server, conn, r.unwrap_or(Err(ProbeError::Timeout)))
                }
            })
            .collect();
        while let Some((server, conn, result)) = pending.next().await {
            let probe = match result {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::debug!(server = %server, error = %e, "probe failed");
                    *conn = None;
                    None
                }
            };
            cluster.record_probe(server, round, probe, Instant::now());
        }
    }
}

/// Probes over the kept connection; if that one fails, once more over a fresh one (the kept one
/// may have been closed for reasons of its own: a terminated backend, an idle timeout).
async fn probe_again(
    server: &Arc<str>,
    conn: &mut Option<BackendConn>,
    login: &LoginParams,
) -> Result<Probe, ProbeError> {
    let kept = conn.is_some();
    match probe(server, conn, login).await {
        Err(ProbeError::Lost(_)) if kept => {
            *conn = None;
            probe(server, conn, login).await
        }
        other => other,
    }
}

/// One probe over `conn` (connecting first if it is None).
pub async fn probe(
    server: &Arc<str>,
    conn: &mut Option<BackendConn>,
    login: &LoginParams,
) -> Result<Probe, ProbeError> {
    if conn.is_none() {
        *conn = Some(BackendConn::connect(server.clone(), login).await.map_err(ProbeError::Refused)?);
    }
    let c = conn.as_mut().expect("just set");
    let rows = c.query_rows(PROBE_SQL).await.map_err(|e| ProbeError::Lost(e.to_string()))?;
    let row = rows.first().ok_or_else(|| ProbeError::Lost("probe returned no row".into()))?;
    let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let in_recovery = col(0) == "t";
    let lsn = col(1).parse().unwrap_or(0);
    let sizes = (col(6).parse().unwrap_or(0), col(7).parse().unwrap_or(0));
    Ok(Probe {
        in_recovery,
        lsn: if in_recovery { lsn } else { record_end(lsn, sizes.0, sizes.1) },
        written: col(5).parse().ok(),
        received: col(2).parse().ok(),
        timeline: col(3).parse().ok(),
        // A bigint: an identifier past i64::MAX reads negative.
        system_id: col(4).parse::<i64>().ok().map(|id| id as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::record_end;

    const BLOCK: u64 = 8192;
    const SEGMENT: u64 = 16 << 20;

    #[test]
    fn an_insert_position_past_a_page_header_is_the_boundary() {
        assert_eq!(record_end(5 * BLOCK + 24, BLOCK, SEGMENT), 5 * BLOCK);
        assert_eq!(record_end(3 * SEGMENT + 40, BLOCK, SEGMENT), 3 * SEGMENT);
        // 40 bytes into a page that starts no segment is a record's end (short header + 16 bytes).
        assert_eq!(record_end(5 * BLOCK + 40, BLOCK, SEGMENT), 5 * BLOCK + 40);
        assert_eq!(record_end(5 * BLOCK + 1000, BLOCK, SEGMENT), 5 * BLOCK + 1000);
        // Sizes unknown: the position as it is.
        assert_eq!(record_end(5 * BLOCK + 24, 0, 0), 5 * BLOCK + 24);
    }
}
