//! The operator's interfaces: the HTTP endpoint (`admin_listen`: GET /healthz, GET /status as JSON)
//! here, and the SQL admin console (`console`, database `pgmux`). Both report one [`snapshot`].

pub mod commands;
pub mod console;
pub mod snapshot;
pub mod tables;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::client::ClientCtx;

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
    snapshot::snapshot(ctx).to_json()
}
