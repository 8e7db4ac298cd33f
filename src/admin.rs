//! The operator's interfaces: the HTTP endpoint (`admin_listen`: GET /healthz (the process is
//! alive), GET /readyz (it can serve: accepting clients, a primary known), GET /metrics (Prometheus
//! text format), GET /status as JSON) here, and the SQL admin console (`console`, database `pgmux`).
//! /status and the console report one [`snapshot`]; `healthcheck` is the `pgmux health` command's
//! client side.
//!
//! Exposure: /status names every client's user, database, address and cancel key pid, /metrics
//! names users and databases. With `admin_token_file` set both require `Authorization: Bearer
//! <token>`; /healthz and /readyz stay open for load balancers and orchestrators. Without it,
//! the endpoint is as open as its `admin_listen` address: bind it to a private interface.

pub mod commands;
pub mod console;
pub mod healthcheck;
pub mod snapshot;
pub mod tables;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::ProxyState;

/// Serves until `stop` is cancelled.
pub async fn run(listener: TcpListener, ctx: Arc<ProxyState>, stop: CancellationToken) {
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

async fn readyz(State(ctx): State<Arc<ProxyState>>) -> impl IntoResponse {
    let (ready, body) = readiness(&ctx);
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body))
}

/// Whether pgmux can serve clients now, and if not, why: its config is loaded (it would not run
/// otherwise), the main listener accepts clients (not starting, not draining), and a primary is known.
pub fn readiness(ctx: &ProxyState) -> (bool, Value) {
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

/// Whether the request may read /status or /metrics: no token configured, or it carries it.
/// Compared as SHA-256 digests in constant time (neither the content nor the length leaks).
fn authorized(ctx: &ProxyState, headers: &HeaderMap) -> bool {
    use sha2::{Digest, Sha256};
    let config = ctx.config.load();
    let Some(token) = &config.admin_token else { return true };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| crate::auth::ct_eq(&Sha256::digest(g.trim()), &Sha256::digest(&token.0)))
}

fn unauthorized() -> axum::response::Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "admin token required\n").into_response()
}

async fn metrics(State(ctx): State<Arc<ProxyState>>, headers: HeaderMap) -> axum::response::Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], ctx.metrics.render()).into_response()
}

async fn status(State(ctx): State<Arc<ProxyState>>, headers: HeaderMap) -> axum::response::Response {
    if !authorized(&ctx, &headers) {
        return unauthorized();
    }
    axum::Json(status_json(&ctx)).into_response()
}

/// Everything GET /status reports.
pub fn status_json(ctx: &ProxyState) -> Value {
    snapshot::snapshot(ctx).to_json()
}
