//! The HTTP admin endpoint (`admin_listen`): GET /healthz and GET /status (JSON: clients with their
//! pin reasons, pin counters, servers with health and lag, pools). Metrics, readiness and the SQL
//! console come with the operations work.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::client::ClientCtx;
use crate::client::pins::PinReasons;

/// Serves until `stop` is cancelled.
pub async fn run(listener: TcpListener, ctx: Arc<ClientCtx>, stop: CancellationToken) {
    let app = Router::new().route("/healthz", get(healthz)).route("/status", get(status)).with_state(ctx);
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

async fn status(State(ctx): State<Arc<ClientCtx>>) -> axum::Json<Value> {
    axum::Json(status_json(&ctx))
}

/// Everything GET /status reports.
pub fn status_json(ctx: &ClientCtx) -> Value {
    let clients: Vec<Value> = ctx
        .cancels
        .status()
        .into_iter()
        .map(|c| json!({ "id": c.pid, "user": c.user, "database": c.database, "server": c.server, "pins": c.pins }))
        .collect();
    let by_reason: serde_json::Map<String, Value> =
        PinReasons::ALL.iter().map(|(r, name)| (name.to_string(), json!(ctx.pin_stats.count(*r)))).collect();
    let servers: Vec<Value> = ctx
        .cluster
        .servers_view()
        .into_iter()
        .map(|s| {
            json!({
                "server": s.server.to_string(),
                "up": s.up,
                "role": s.role,
                "lag_bytes": s.lag_bytes,
                "lag_ms": s.lag.map(|l| l.as_millis().min(u64::MAX as u128) as u64),
            })
        })
        .collect();
    let pools: Vec<Value> = ctx
        .cluster
        .pools
        .all()
        .into_iter()
        .map(|p| {
            json!({
                "server": p.key.server.to_string(),
                "database": p.key.database,
                "user": p.key.user,
                "size": p.size(),
                "borrowed": p.borrowed_count(),
                "idle": p.idle_count(),
            })
        })
        .collect();
    json!({
        "clients": clients,
        "clients_connected": ctx.connected(),
        "pins": { "pinned_now": ctx.pin_stats.pinned_now.load(Ordering::Relaxed), "by_reason": by_reason },
        "primary": ctx.cluster.primary().map(|p| p.to_string()),
        "failover": ctx.cluster.failover_stats(),
        "servers": servers,
        "pools": pools,
    })
}
