//! pgmux: a PostgreSQL connection-pooling proxy.
//!
//! Modules, lowest layer first (each uses only modules above it: `tests/layers.rs` checks):
//! - `timer`: a timer kept armed across waits, polled only when it may have fired.
//! - `auth`: SCRAM-SHA-256 and MD5 verification of clients against the configured users.
//! - `protocol`: wire framing, startup packets, the messages pgmux builds or inspects.
//! - `secret_files`: secret files (passwords, TLS keys) others can read, warned about at load.
//! - `net`: the byte streams connections run on (TCP, or TLS over TCP relayed in the same task).
//! - `tls`: certificates and modes towards clients and servers (reloadable), the handshakes.
//! - `config`: the YAML configuration, validated as a whole.
//! - `sql`: the one SQL lexer the classifiers are built on.
//! - `error`: the one mapping from pgmux failures to SQLSTATEs.
//! - `metrics`: the Prometheus registry, hot-path handles and scrape-time family helpers.
//! - `backend`: one logged-in connection to a PostgreSQL server.
//! - `pool`: per (server, database, user) pools of backend connections, a shard per worker.
//! - `cluster`: the servers, which one is the primary, and their pools.
//! - `log_limit`: rate limits for log events that can come in storms.
//! - `state`: what clients, listeners and the operator's interfaces share: the settings in force,
//!   the client registry, the pause gate, per-address limits, metrics, the cluster.
//! - `listener`: accepting clients (each served by what the caller hands it), and shutdown.
//! - `client`: one client connection: handshake, session state machine, relay.
//! - `reload`: re-reading the configuration file and applying it to the running proxy.
//! - `admin`: the operator's interfaces: HTTP (/healthz, /readyz, /metrics, /status) and the SQL
//!   admin console.
//! - `localpg`: throwaway local PostgreSQL clusters for `pgmux demo` and the tests.
//! - `app`: wiring a config into a running proxy: the state, the listeners, what serves a client,
//!   and the runtimes (one single-threaded runtime per worker).
//! - `demo`: `pgmux demo`, a local primary + replica with pgmux in front.
//! - `storm`: `pgmux storm`, a connection-storm benchmark for any PostgreSQL endpoint.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod listener;
pub mod localpg;
pub mod log_limit;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod secret_files;
pub mod sql;
pub mod state;
pub mod storm;
pub mod timer;
pub mod tls;
