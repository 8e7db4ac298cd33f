//! Proxy configuration: the typed settings tree, its defaults, and loading it from YAML with every
//! problem reported (key path + line) rather than just the first.
//!
//! Loading runs in explicit steps: `raw` parses the text into a line-annotated YAML tree, `expand`
//! substitutes `${VAR}` in string values, `build` reads the tree field by field into [`Config`]
//! (collecting problems instead of stopping), and `users` resolves each user's secret. When pgmux
//! loads its configuration (`source`), `env` lays `PGMUX_*` variables over the parsed file (or over
//! nothing, without a file) before expansion, so both are validated in one pass.

mod address;
mod build;
mod duration;
mod env;
mod expand;
mod raw;
mod reader;
mod show;
mod size;
mod source;
mod tls;
mod users;

#[cfg(test)]
mod env_tests;
#[cfg(test)]
mod error_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use address::{AddrError, ServerAddr};
pub use duration::parse_duration;
pub use env::Vars;
pub use source::{Source, process_vars};

/// Everything pgmux needs to start; produced only by a load that found no problems.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Read/write endpoint, `host:port`.
    pub listen: String,
    /// Optional endpoint whose transactions are routed to replicas.
    pub reader_listen: Option<String>,
    /// Optional HTTP admin endpoint (metrics, health, status).
    pub admin_listen: Option<String>,
    /// The bearer token /status and /metrics require (read from `admin_token_file`).
    pub admin_token: Option<Secret>,
    /// Every cluster member; which one is primary is discovered at runtime.
    pub servers: Vec<ServerAddr>,
    pub pool: PoolConfig,
    pub clients: ClientsConfig,
    pub users: Vec<UserConfig>,
    /// Users (each one of `users`) who may open the admin console (database `pgmux`).
    pub admin_users: Vec<String>,
    /// How long SIGTERM waits for running transactions before closing.
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    /// Connections the kernel queues before pgmux accepts them (clamped to
    /// /proc/sys/net/core/somaxconn).
    pub listen_backlog: u32,
    /// Threads serving clients; 0 means one per CPU.
    pub workers: usize,
    pub health: HealthConfig,
    /// `auth_query`: users not in `users` looked up on the servers.
    pub auth: AuthQueryConfig,
    pub routing: RoutingConfig,
    /// TLS towards clients.
    pub tls: TlsConfig,
    /// TLS towards the servers.
    pub server_tls: ServerTlsConfig,
}

/// When a backend connection returns to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// After each transaction (and only when the session holds no pin).
    #[default]
    Transaction,
    /// When the client disconnects.
    Session,
}

/// Backend pool settings, applied to each (database, user) pool on each server.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub mode: PoolMode,
    /// Maximum backend connections per (database, user) on each server; at least 1.
    pub size: usize,
    /// How long a transaction waits for a free backend before failing.
    pub borrow_timeout: Duration,
    /// SQL run once on every new backend connection; empty means none.
    pub init_query: String,
    /// TCP connect + startup + authentication timeout towards a server.
    pub connect_timeout: Duration,
    /// Backend connections idle longer than this are closed.
    pub idle_timeout: Duration,
    /// What happens to a client whose pinned session state died with its server.
    pub lost_session_state: LostSessionState,
    /// How a server may ask pgmux to prove who it is (libpq's `require_auth`).
    pub server_auth: ServerAuth,
}

/// A way a server may ask pgmux to authenticate, by libpq's `require_auth` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAuthMethod {
    /// The server lets pgmux in without asking (`trust`).
    None,
    /// Cleartext password: whoever answers at the server's address reads it.
    Password,
    Md5,
    ScramSha256,
}

impl ServerAuthMethod {
    pub const NAMES: &[(&str, ServerAuthMethod)] = &[
        ("scram-sha-256", ServerAuthMethod::ScramSha256),
        ("md5", ServerAuthMethod::Md5),
        ("password", ServerAuthMethod::Password),
        ("none", ServerAuthMethod::None),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES.iter().find(|(_, m)| *m == self).map_or("?", |(n, _)| n)
    }
}

/// The methods pgmux answers a server with (`pool.server_auth`); any other request fails the login.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ServerAuth {
    /// Not set: scram-sha-256, md5 and none, and a cleartext password only over TLS (a server, or
    /// whoever sits at its address, cannot downgrade pgmux to sending the password in clear).
    #[default]
    Default,
    /// Exactly these methods, over TLS or not.
    Only(Vec<ServerAuthMethod>),
}

impl ServerAuth {
    /// Whether pgmux answers `method` on a connection that is (or is not) TLS.
    pub fn allows(&self, method: ServerAuthMethod, over_tls: bool) -> bool {
        match self {
            ServerAuth::Default => method != ServerAuthMethod::Password || over_tls,
            ServerAuth::Only(methods) => methods.contains(&method),
        }
    }

    /// For SHOW CONFIG and error messages.
    pub fn describe(&self) -> String {
        match self {
            ServerAuth::Default => "scram-sha-256, md5, none (password over TLS only)".into(),
            ServerAuth::Only(methods) => methods.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
        }
    }
}

/// A client pinned to a server connection (or in session mode) whose server went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LostSessionState {
    /// One error says what was lost; the client then carries on, unpinned, on another connection.
    #[default]
    Continue,
    /// FATAL, and the client's connection closes (as if it had been connected to the server).
    Close,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::Transaction,
            size: 20,
            borrow_timeout: Duration::from_secs(120),
            init_query: String::new(),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10 * 60),
            lost_session_state: LostSessionState::Continue,
            server_auth: ServerAuth::Default,
        }
    }
}

/// Handshakes at once by default: enough to keep every core busy with TLS and SCRAM, few enough
/// that a connection storm cannot starve running clients.
pub const DEFAULT_MAX_HANDSHAKES: usize = 100;
/// The listen backlog by default (Linux's somaxconn default since 5.4).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;

/// Limits and authentication for client connections.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientsConfig {
    /// Maximum concurrent client connections; at least 1.
    pub max_connections: usize,
    /// Clients idle (outside a transaction) longer than this are disconnected.
    pub idle_timeout: Duration,
    /// A client must finish startup and authentication within this, counted from its admission
    /// (time spent queued or waiting for a server connection is not its own); PgBouncer's
    /// client_login_timeout.
    pub startup_timeout: Duration,
    pub auth_method: ClientAuthMethod,
    /// Clients in their TLS + startup + authentication at once; more wait their turn (queued, not
    /// refused, and the wait is not counted against `startup_timeout`).
    pub max_handshakes: usize,
    /// Largest Query, Parse, Bind, FunctionCall or CopyData message a client may send (bytes);
    /// every other message type is held to PostgreSQL's small limit.
    pub max_message_size: usize,
    /// Named prepared statements one client may hold (transaction mode).
    pub max_prepared_statements: usize,
    /// A client that holds a server connection inside a transaction and sends nothing for this
    /// long is disconnected (FATAL 25P03) and its transaction rolled back; `None`: never.
    pub idle_transaction_timeout: Option<Duration>,
    /// Clients from one source address in their handshake at once; more from that address queue
    /// (up to `startup_timeout`) without taking `max_handshakes` places.
    pub max_handshakes_per_address: usize,
    /// Failed logins from one address (each within `login_throttle_window` of the previous) after
    /// which its further login attempts are delayed; 0: never.
    pub login_throttle_after: u32,
    pub login_throttle_window: Duration,
    /// The first delay; doubled for each further failure, up to `login_throttle_max_delay`.
    pub login_throttle_delay: Duration,
    pub login_throttle_max_delay: Duration,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        ClientsConfig {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(30 * 60),
            startup_timeout: Duration::from_secs(60),
            auth_method: ClientAuthMethod::ScramSha256,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_message_size: 64 * 1024 * 1024,
            max_prepared_statements: 5_000,
            idle_transaction_timeout: None,
            max_handshakes_per_address: 20,
            login_throttle_after: 5,
            login_throttle_window: Duration::from_secs(60),
            login_throttle_delay: Duration::from_millis(100),
            login_throttle_max_delay: Duration::from_secs(10),
        }
    }
}

/// How pgmux watches the servers.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Time between probes of each server.
    pub interval: Duration,
    /// Consecutive failed probes before a server counts as down.
    pub down_after: usize,
    /// Consecutive good probes before a down server counts as up again.
    pub up_after: usize,
    /// Least time between two resolutions of the servers' host names (they are resolved again
    /// at each probe round and each new server connection, but not more often than this).
    pub resolve_interval: Duration,
    /// Who probes: a configured user (default: the first) on this database.
    pub user: Option<String>,
    pub database: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(1),
            down_after: 3,
            up_after: 2,
            resolve_interval: Duration::from_secs(1),
            user: None,
            database: "postgres".into(),
        }
    }
}

/// The default `auth.query`: schema-qualified, so no `search_path` can put another `pg_authid`
/// in its way (PgBouncer's CVE-2025-12819).
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1";

/// Users who are not in `users` looked up on the servers (PgBouncer's `auth_user` / `auth_query`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthQueryConfig {
    /// Who runs the query: one of `users`, with a password. Not set: no lookups.
    pub user: Option<String>,
    pub database: String,
    /// Takes the user name as `$1`; returns (name, the verifier PostgreSQL stores) or no row.
    pub query: String,
    /// How long an answer (found or not) is used before the server is asked again.
    pub cache_ttl: Duration,
}

impl Default for AuthQueryConfig {
    fn default() -> Self {
        AuthQueryConfig {
            user: None,
            database: "postgres".into(),
            query: DEFAULT_AUTH_QUERY.into(),
            cache_ttl: Duration::from_secs(60),
        }
    }
}

/// Where read-only work may go.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    /// Replicas further behind than this get no new transactions.
    pub max_replica_lag: Duration,
    /// With no replica fit to serve, read-only work runs on the primary (else it waits / fails).
    pub fallback_to_primary: bool,
    /// After a client's write, its reads only go to replicas that have replayed it.
    pub read_your_writes: bool,
    /// Single autocommit SELECTs proven read-only go to replicas (`autocommit_reads: replica`).
    pub autocommit_reads_to_replica: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            max_replica_lag: Duration::from_secs(10),
            fallback_to_primary: true,
            read_your_writes: true,
            autocommit_reads_to_replica: false,
        }
    }
}

/// Client-facing TLS (`tls:`). TLS is offered only with a certificate and a mode other than `disable`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM certificate chain, leaf first; required with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the leaf certificate.
    pub key_file: Option<PathBuf>,
}

/// When clients may or must use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Never: SSLRequest is answered `N`.
    Disable,
    /// TLS offered when a certificate is configured; plaintext accepted too.
    Allow,
    /// Same as `allow` for pgmux (the default).
    #[default]
    Prefer,
    /// Plaintext clients are refused (FATAL 28000).
    Require,
}

/// Server-facing TLS (`server_tls:`), with libpq's `sslmode` meanings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerTlsConfig {
    pub mode: ServerTlsMode,
    /// PEM CA certificate(s) that server certificates must chain to (verify-ca, verify-full).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerTlsMode {
    /// Plaintext only (the default: what pgmux did before TLS).
    #[default]
    Disable,
    /// TLS when the server accepts it, unverified; plaintext otherwise.
    Prefer,
    /// TLS or fail; the certificate is not verified.
    Require,
    /// TLS, certificate chain checked against `ca_file`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host of the server address.
    VerifyFull,
}

/// How clients authenticate to pgmux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuthMethod {
    #[default]
    ScramSha256,
    Md5,
}

/// A secret value read from the config: never printed (Debug shows `<redacted>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user allowed through pgmux; the same credentials are used towards the servers.
#[derive(Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    /// The resolved secret (from `password`, `password_env` or `password_file`).
    pub password: String,
}

// Hand-written so that logging a Config never prints a password.
impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig").field("name", &self.name).field("password", &"<redacted>").finish()
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join_lines(.problems))]
pub struct ConfigErrors {
    pub problems: Vec<Problem>,
}

/// One problem: where it is (dotted key path, 1-based line) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path such as `pool.borrow_timeout` or `users[1].password`; empty for whole-file
    /// problems (unreadable file, broken YAML syntax).
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

fn join_lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

impl ConfigErrors {
    fn single(path: &str, line: Option<usize>, message: String) -> Self {
        let problem = Problem { path: path.to_owned(), line, message };
        ConfigErrors { problems: vec![problem] }
    }
}

impl Config {
    /// Parses and validates `text`, expanding `${VAR}` from the process environment.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
        Self::from_yaml_with_env(text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates `text`, looking up `${VAR}` and `password_env` through `env`.
    pub fn from_yaml_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let tree = raw::parse(text).map_err(|problem| ConfigErrors { problems: vec![problem] })?;
        Self::validate(tree, text, env, Vec::new())
    }

    /// The file's text (if there is a file) with the `PGMUX_*` settings of `vars` laid over it;
    /// `${VAR}` and `password_env` are looked up in `vars` too. Problems with values from the
    /// environment name the variable.
    pub fn from_sources(text: Option<&str>, vars: &Vars) -> Result<Config, ConfigErrors> {
        let text = text.unwrap_or("");
        let mut tree = raw::parse(text).map_err(|problem| ConfigErrors { problems: vec![problem] })?;
        let (applied, problems) = env::overlay(&mut tree, vars);
        let lookup = |name: &str| vars.get(name).cloned();
        let mut result = Self::validate(tree, text, &lookup, problems);
        if let Err(errors) = &mut result {
            env::annotate(&mut errors.problems, &applied);
        }
        result
    }

    /// Expansion, then the typed build; `problems` holds any found before.
    fn validate(
        mut tree: raw::Node,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        mut problems: Vec<Problem>,
    ) -> Result<Config, ConfigErrors> {
        problems.extend(expand::expand_tree(&mut tree, env));
        let (config, more) = build::build(&tree, text, env);
        problems.extend(more);
        if problems.is_empty() {
            return Ok(config);
        }
        // Report in file order; problems without a line (missing top-level keys, the
        // environment's) come first.
        problems.sort_by_key(|problem| problem.line);
        Err(ConfigErrors { problems })
    }

    /// Reads `path` and loads it with the process's `PGMUX_*` settings laid over it (see
    /// [`Source`]). Relative `password_file` paths are resolved against the current directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Source::File(path.to_owned()).load(&process_vars())
    }

    /// The configured user called `name`, if any.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|user| user.name == name)
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The shipped example must always load, and must show the documented defaults.
    #[test]
    fn shipped_proxy_yaml_loads() {
        let config = Config::from_yaml_with_env(include_str!("../proxy.yaml"), &|_| None)
            .unwrap_or_else(|errors| panic!("proxy.yaml is invalid:\n{errors}"));
        assert_eq!(config.listen, "127.0.0.1:6432");
        let servers: Vec<String> = config.servers.iter().map(ServerAddr::to_string).collect();
        assert_eq!(servers, ["127.0.0.1:5432", "127.0.0.1:5433"]);
        assert_eq!(config.user("app").map(|u| u.password.as_str()), Some("app"));
        assert_eq!(config.admin_users, ["app"]);
        assert_eq!(config.pool, PoolConfig::default());
        assert_eq!(config.clients, ClientsConfig::default());
    }
}
