//! Accepting client connections: one named task per client, all owned by a tracker so shutdown can
//! drain them (SIGTERM, or SHUTDOWN on the admin console) or drop them (SIGINT).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admin;
use crate::client::{self, ClientCtx, Endpoint};

/// How the process is asked to stop.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// SIGTERM: stop accepting, let running transactions finish (bounded), then return.
    pub drain: CancellationToken,
    /// SIGINT: return now.
    pub abort: CancellationToken,
}

/// Accepts clients on `listener` until shutdown; returns when every client is gone, or when the
/// drain deadline passes, or at once on abort.
pub async fn run(
    ctx: Arc<ClientCtx>,
    listener: TcpListener,
    endpoint: Endpoint,
    shutdown: Shutdown,
    drain_timeout: Duration,
) {
    let tracker = TaskTracker::new();
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, ?endpoint, "accepting clients");
    // Readiness follows the main listener.
    let main = endpoint == Endpoint::Writer;
    if main {
        ctx.set_accepting(true);
    }
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    let span = tracing::info_span!("client", id = next_id, %peer);
                    tracker.spawn(serve(ctx.clone(), stream, peer, endpoint).instrument(span));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.drain.cancelled() => break,
            _ = shutdown.abort.cancelled() => break,
        }
    }
    if main {
        ctx.set_accepting(false);
    }
    if shutdown.abort.is_cancelled() {
        return;
    }
    drop(listener);
    tracker.close();
    tracing::info!(clients = tracker.len(), "draining");
    tokio::select! {
        _ = tracker.wait() => tracing::info!("all clients gone"),
        _ = tokio::time::sleep(drain_timeout) => tracing::warn!(left = tracker.len(), "drain timeout; closing the rest"),
        _ = shutdown.abort.cancelled() => {}
    }
}

/// One client: a session relaying its transactions, or the admin console if it logged in there.
async fn serve(ctx: Arc<ClientCtx>, stream: TcpStream, peer: SocketAddr, endpoint: Endpoint) {
    if let Some(console) = client::serve(ctx.clone(), stream, peer, endpoint).await {
        admin::console::run(ctx, console).await;
    }
}

/// SIGTERM drains, SIGINT aborts (a second SIGTERM too).
pub fn watch_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining");
                shutdown.drain.cancel();
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting");
                shutdown.abort.cancel();
                return;
            }
        }
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        shutdown.abort.cancel();
    });
}
