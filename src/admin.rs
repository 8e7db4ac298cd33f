//! The operator's interfaces: the HTTP endpoint (`admin_listen`: GET /healthz (the process is
//! alive), GET /readyz (it can serve: accepting clients, a primary known), GET /metrics (Prometheus
//! text format), GET /status as JSON) here, and the SQL admin console (`console`, database `pgmux`).
//! /status and the console report one [`snapshot`]; `healthcheck` is the `pgmux health` command's
//! client side.

pub mod commands;
pub mod console;
pub mod healthcheck;
pub mod snapshot;
pub mod tables;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::client::ClientCtx;

/// Serves until `stop` is cancelled.
pub async fn run(listener: TcpListener, ctx: Arc<ClientCtx>, stop: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(ctx);
    let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    if let Err(e) = served {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

async fn readyz(State(ctx): State<Arc<ClientCtx>>) -> impl IntoResponse {
    let (ready, body) = readiness(&ctx);
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body))
}

/// Whether pgmux can serve clients now, and if not, why: its config is loaded (it would not run
/// otherwise), the main listener accepts clients (not starting, not draining), and a primary is known.
pub fn readiness(ctx: &ClientCtx) -> (bool, Value) {
    let mut reasons = Vec::new();
    // Draining is checked first and on its own: the moment SIGTERM (or SHUTDOWN) starts it, load
    // balancers must stop sending new clients, even before the listener has stopped accepting.
    if ctx.draining.is_cancelled() {
        reasons.push("shutting down");
    } else if !ctx.accepting() {
        reasons.push("not accepting clients yet");
    }
    let primary = ctx.cluster.primary();
    if primary.is_none() {
        reasons.push("no primary known");
    }
    let ready = reasons.is_empty();
    let primary = primary.map(|p| p.to_string());
    // PAUSE holds transactions but is no reason to send clients elsewhere: reported, not a reason.
    let paused = ctx.pause.is_paused();
    (
        ready,
        json!({ "ready": ready, "reasons": reasons, "primary": primary, "paused": paused, "clients": ctx.connected() }),
    )
}

async fn metrics(State(ctx): State<Arc<ClientCtx>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], ctx.metrics.render())
}

async fn status(State(ctx): State<Arc<ClientCtx>>) -> axum::Json<Value> {
    axum::Json(status_json(&ctx))
}

/// Everything GET /status reports.
pub fn status_json(ctx: &ClientCtx) -> Value {
    snapshot::snapshot(ctx).to_json()
}
