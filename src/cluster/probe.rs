//! The prober: one task that asks every server, every `health.interval`, for its role, WAL position
//! and replay delay over a connection of its own, and feeds the answers to the topology.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::topology::Probe;
use crate::backend::{BackendConn, LoginParams};

/// Role, WAL position in bytes (current on a primary, replayed on a replica), and on a replica the
/// last received position.
const PROBE_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() \
      ELSE pg_catalog.pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint, \
     (pg_catalog.pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint";

/// Probes until `stop` is cancelled.
pub async fn run(cluster: Arc<Cluster>, login: LoginParams, interval: Duration, stop: CancellationToken) {
    let servers = cluster.servers.clone();
    let mut conns: Vec<Option<BackendConn>> = servers.iter().map(|_| None).collect();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let round = cluster.start_probe_round();
        for (server, conn) in servers.iter().zip(conns.iter_mut()) {
            let result = tokio::time::timeout(interval.max(Duration::from_secs(1)), probe(server, conn, &login)).await;
            let probe = match result {
                Ok(Ok(p)) => Some(p),
                Ok(Err(e)) => {
                    tracing::debug!(server = %server, error = %e, "probe failed");
                    *conn = None;
                    None
                }
                Err(_) => {
                    tracing::debug!(server = %server, "probe timed out");
                    *conn = None;
                    None
                }
            };
            cluster.record_probe(server, round, probe, std::time::Instant::now());
        }
    }
}

async fn probe(server: &Arc<str>, conn: &mut Option<BackendConn>, login: &LoginParams) -> Result<Probe, String> {
    if conn.is_none() {
        *conn = Some(BackendConn::connect(server.clone(), login).await.map_err(|e| e.to_string())?);
    }
    let c = conn.as_mut().expect("just set");
    let rows = c.query_rows(PROBE_SQL).await.map_err(|e| e.to_string())?;
    let row = rows.first().ok_or("probe returned no row")?;
    let col = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok(Probe { in_recovery: col(0) == "t", lsn: col(1).parse().unwrap_or(0), received: col(2).parse().ok() })
}
