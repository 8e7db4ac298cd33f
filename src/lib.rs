//! pgmux: a PostgreSQL connection-pooling proxy.
//!
//! Modules, lowest layer first:
//! - `config`: the YAML configuration, validated as a whole.
//! - `protocol`: wire framing, startup packets, the messages pgmux builds or inspects.
//! - `sql`: the one SQL lexer the classifiers are built on.
//! - `net`: the byte streams connections run on (TCP, or the local end of a TLS pump).
//! - `tls`: certificates and modes towards clients and servers (reloadable), the TLS pump tasks.
//! - `auth`: SCRAM-SHA-256 and MD5 verification of clients against the configured users.
//! - `backend`: one logged-in connection to a PostgreSQL server.
//! - `metrics`: the Prometheus registry, hot-path handles and scrape-time family helpers.
//! - `pool`: per (server, database, user) pools of backend connections.
//! - `cluster`: the servers, which one is the primary, and their pools.
//! - `error`: the one mapping from pgmux failures to SQLSTATEs.
//! - `log_limit`: rate limits for log events that can come in storms.
//! - `client`: a client connection: handshake, session state machine, relay.
//! - `listener`: accepting clients, and shutdown.
//! - `admin`: the operator's interfaces: HTTP (/healthz, /readyz, /metrics, /status) and the SQL
//!   admin console.
//! - `localpg`: throwaway local PostgreSQL clusters for `pgmux demo` and the tests.
//! - `app`: wiring a config into a running proxy.
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
pub mod sql;
pub mod storm;
pub mod tls;
