//! The effective configuration as (key path, value) rows, defaults included, for the admin
//! console's SHOW CONFIG. Secrets are never part of it: a user shows only its name.

use super::duration::format_duration;
use super::{ClientAuthMethod, Config, LogFormat, LostSessionState, PoolMode, ServerTlsMode, TlsMode};

impl Config {
    /// Every key with the value in force, in the order proxy.yaml documents them. Users appear as
    /// `users[i].name` only; their passwords (and where they came from) are left out.
    pub fn effective(&self) -> Vec<(String, String)> {
        let d = format_duration;
        let optional = |v: &Option<String>| v.clone().unwrap_or_default();
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let servers = self.servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let autocommit_reads = if self.routing.autocommit_reads_to_replica { "replica" } else { "primary" };
        let head = [
            ("listen", self.listen.clone()),
            ("reader_listen", optional(&self.reader_listen)),
            ("admin_listen", optional(&self.admin_listen)),
            // Whether a token is set; never the token or its file.
            ("admin_token_file", if self.admin_token.is_some() { "(set)" } else { "" }.into()),
            ("servers", servers),
            ("pool.mode", pool_mode(self.pool.mode).into()),
            ("pool.size", self.pool.size.to_string()),
            ("pool.borrow_timeout", d(self.pool.borrow_timeout)),
            ("pool.init_query", self.pool.init_query.clone()),
            ("pool.connect_timeout", d(self.pool.connect_timeout)),
            ("pool.idle_timeout", d(self.pool.idle_timeout)),
            ("pool.lost_session_state", lost_session_state(self.pool.lost_session_state).into()),
            ("pool.server_auth", self.pool.server_auth.describe()),
            ("clients.max_connections", self.clients.max_connections.to_string()),
            ("clients.idle_timeout", d(self.clients.idle_timeout)),
            ("clients.startup_timeout", d(self.clients.startup_timeout)),
            ("clients.auth_method", auth_method(self.clients.auth_method).into()),
            ("clients.max_handshakes", self.clients.max_handshakes.to_string()),
            ("clients.max_handshakes_per_address", self.clients.max_handshakes_per_address.to_string()),
            ("clients.login_throttle_after", self.clients.login_throttle_after.to_string()),
            ("clients.login_throttle_window", d(self.clients.login_throttle_window)),
            ("clients.login_throttle_delay", d(self.clients.login_throttle_delay)),
            ("clients.login_throttle_max_delay", d(self.clients.login_throttle_max_delay)),
            ("clients.max_message_size", super::size::format_size(self.clients.max_message_size)),
            ("clients.max_prepared_statements", self.clients.max_prepared_statements.to_string()),
            (
                "clients.idle_transaction_timeout",
                self.clients.idle_transaction_timeout.map(d).unwrap_or_else(|| "off".into()),
            ),
        ];
        let users = self.users.iter().enumerate().map(|(i, u)| (format!("users[{i}].name"), u.name.clone()));
        let tail = [
            ("admin_users", self.admin_users.join(", ")),
            ("shutdown_timeout", d(self.shutdown_timeout)),
            ("log_format", log_format(self.log_format).into()),
            ("workers", self.workers.to_string()),
            ("listen_backlog", self.listen_backlog.to_string()),
            ("health.interval", d(self.health.interval)),
            ("health.down_after", self.health.down_after.to_string()),
            ("health.up_after", self.health.up_after.to_string()),
            ("health.resolve_interval", d(self.health.resolve_interval)),
            ("health.user", optional(&self.health.user)),
            ("health.database", self.health.database.clone()),
            ("auth.user", optional(&self.auth.user)),
            ("auth.database", self.auth.database.clone()),
            ("auth.query", self.auth.query.clone()),
            ("auth.cache_ttl", d(self.auth.cache_ttl)),
            ("routing.max_replica_lag", d(self.routing.max_replica_lag)),
            ("routing.fallback_to_primary", self.routing.fallback_to_primary.to_string()),
            ("routing.read_your_writes", self.routing.read_your_writes.to_string()),
            ("routing.autocommit_reads", autocommit_reads.into()),
            ("tls.mode", tls_mode(self.tls.mode).into()),
            ("tls.cert_file", path(&self.tls.cert_file)),
            ("tls.key_file", path(&self.tls.key_file)),
            ("server_tls.mode", server_tls_mode(self.server_tls.mode).into()),
            ("server_tls.ca_file", path(&self.server_tls.ca_file)),
        ];
        let owned = |(key, value): (&str, String)| (key.to_owned(), value);
        head.into_iter().map(owned).chain(users).chain(tail.into_iter().map(owned)).collect()
    }
}

fn pool_mode(mode: PoolMode) -> &'static str {
    match mode {
        PoolMode::Transaction => "transaction",
        PoolMode::Session => "session",
    }
}

fn lost_session_state(what: LostSessionState) -> &'static str {
    match what {
        LostSessionState::Continue => "continue",
        LostSessionState::Close => "close",
    }
}

fn auth_method(method: ClientAuthMethod) -> &'static str {
    match method {
        ClientAuthMethod::ScramSha256 => "scram-sha-256",
        ClientAuthMethod::Md5 => "md5",
    }
}

fn tls_mode(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Disable => "disable",
        TlsMode::Allow => "allow",
        TlsMode::Prefer => "prefer",
        TlsMode::Require => "require",
    }
}

fn server_tls_mode(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Disable => "disable",
        ServerTlsMode::Prefer => "prefer",
        ServerTlsMode::Require => "require",
        ServerTlsMode::VerifyCa => "verify-ca",
        ServerTlsMode::VerifyFull => "verify-full",
    }
}

fn log_format(format: LogFormat) -> &'static str {
    match format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    const YAML: &str = "\
listen: 127.0.0.1:6432
servers: [db1, 'db2:6543']
pool:
  borrow_timeout: 1h30m
users:
  - name: app
    password: s3cret-app
  - name: ops
    password_env: OPS_PASSWORD
admin_users: [ops]
";

    fn rows() -> Vec<(String, String)> {
        let env = |name: &str| (name == "OPS_PASSWORD").then(|| "s3cret-ops".to_owned());
        Config::from_yaml_with_env(YAML, &env).unwrap_or_else(|e| panic!("{e}")).effective()
    }

    fn value<'a>(rows: &'a [(String, String)], key: &str) -> Option<&'a str> {
        rows.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn shows_values_in_force_with_defaults() {
        let rows = rows();
        assert_eq!(value(&rows, "servers"), Some("db1:5432, db2:6543"));
        assert_eq!(value(&rows, "pool.borrow_timeout"), Some("1h30m"));
        assert_eq!(value(&rows, "pool.size"), Some("20"));
        assert_eq!(value(&rows, "pool.mode"), Some("transaction"));
        assert_eq!(value(&rows, "clients.idle_timeout"), Some("30m"));
        assert_eq!(value(&rows, "reader_listen"), Some(""));
        assert_eq!(value(&rows, "users[1].name"), Some("ops"));
        assert_eq!(value(&rows, "admin_users"), Some("ops"));
        assert_eq!(value(&rows, "routing.autocommit_reads"), Some("primary"));
        assert_eq!(value(&rows, "tls.mode"), Some("prefer"));
        assert_eq!(value(&rows, "tls.cert_file"), Some(""));
        assert_eq!(value(&rows, "server_tls.mode"), Some("disable"));
    }

    #[test]
    fn never_shows_a_secret() {
        for (key, value) in rows() {
            assert!(!key.contains("password"), "{key}");
            assert!(!value.contains("s3cret"), "{key} = {value}");
        }
    }

    /// Every key the shipped example sets is shown (so a new key cannot be forgotten here).
    #[test]
    fn covers_every_key_of_the_example() {
        let example = include_str!("../../proxy.yaml");
        let config = Config::from_yaml_with_env(example, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let shown: Vec<String> = config.effective().into_iter().map(|(k, _)| k).collect();
        let mut section = String::new();
        for line in example.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()) {
            let Some((key, _)) = line.split_once(':') else { continue };
            if key.trim_start().starts_with('-') {
                continue;
            }
            let nested = line.starts_with(' ');
            let key = key.trim();
            if !nested {
                section = key.to_owned();
            }
            let path = if nested { format!("{section}.{key}") } else { key.to_owned() };
            if path == "users" || (nested && section == "users") || !nested && line.trim_end().ends_with(':') {
                continue;
            }
            assert!(shown.contains(&path), "SHOW CONFIG lacks `{path}`");
        }
    }
}
