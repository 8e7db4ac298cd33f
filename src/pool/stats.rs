//! What a pool counts about itself, read by the metrics collector at scrape time.

use std::sync::atomic::AtomicU64;

use crate::metrics::LatencyHistogram;

/// Counters a pool keeps about itself (read by the metrics collector at scrape time).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Connections opened (logged in and ready).
    pub opened: AtomicU64,
    /// Connection attempts, and those that failed.
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub discarded: AtomicU64,
    pub borrows: AtomicU64,
    /// Borrows served from another worker's shard (the borrower's own had none free): that
    /// worker's runtime drives the connection's socket for the transaction.
    pub borrows_other_worker: AtomicU64,
    pub timeouts: AtomicU64,
    /// Client requests (Query, Execute, FunctionCall) relayed over this pool's connections, added
    /// when each connection comes back.
    pub queries: AtomicU64,
    /// Borrow → connection in hand (a borrow served at once counts as 0, without a clock read).
    /// These three are striped by server connection (see `metrics::LatencyHistogram`).
    pub borrow_wait: LatencyHistogram,
    /// Connection in hand → given back (a transaction; a whole session in session mode).
    pub held: LatencyHistogram,
    /// Borrow → given back: `borrow_wait` + `held` of the same borrow.
    pub borrow_to_release: LatencyHistogram,
}
