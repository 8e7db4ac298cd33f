//! Tests for configurations that load: defaults, every key set, `${VAR}` expansion and secrets.

use std::io::Write;
use std::time::Duration;

use super::*;

const MINIMAL: &str = "\
listen: 127.0.0.1:6432
servers: [127.0.0.1:5432, 127.0.0.1:5433]
users:
  - name: app
    password: app
";

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(yaml: &str) -> Config {
    Config::from_yaml_with_env(yaml, &no_env).unwrap_or_else(|errors| panic!("{errors}"))
}

fn server(host: &str, port: u16) -> ServerAddr {
    ServerAddr { host: host.into(), port }
}

fn user(name: &str, password: &str) -> UserConfig {
    UserConfig { name: name.into(), password: password.into() }
}

#[test]
fn minimal_config_gets_every_default() {
    let expected = Config {
        listen: "127.0.0.1:6432".into(),
        reader_listen: None,
        admin_listen: None,
        admin_token: None,
        servers: vec![server("127.0.0.1", 5432), server("127.0.0.1", 5433)],
        pool: PoolConfig {
            mode: PoolMode::Transaction,
            size: 20,
            borrow_timeout: Duration::from_secs(120),
            init_query: String::new(),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            lost_session_state: LostSessionState::Continue,
            server_auth: ServerAuth::Default,
        },
        clients: ClientsConfig {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(1800),
            startup_timeout: Duration::from_secs(60),
            auth_method: ClientAuthMethod::ScramSha256,
            max_handshakes: 100,
            max_message_size: 64 << 20,
            max_prepared_statements: 5_000,
            idle_transaction_timeout: None,
            max_handshakes_per_address: 20,
            login_throttle_after: 5,
            login_throttle_window: Duration::from_secs(60),
            login_throttle_delay: Duration::from_millis(100),
            login_throttle_max_delay: Duration::from_secs(10),
        },
        users: vec![user("app", "app")],
        admin_users: vec![],
        shutdown_timeout: Duration::from_secs(30),
        log_format: LogFormat::Text,
        workers: 0,
        listen_backlog: 4096,
        health: HealthConfig::default(),
        auth: AuthQueryConfig::default(),
        routing: RoutingConfig::default(),
        tls: TlsConfig { mode: TlsMode::Prefer, cert_file: None, key_file: None },
        server_tls: ServerTlsConfig { mode: ServerTlsMode::Disable, ca_file: None },
    };
    assert_eq!(load(MINIMAL), expected);
}

#[test]
fn full_config_sets_every_key() {
    let yaml = "\
listen: 0.0.0.0:7432
reader_listen: 0.0.0.0:7433
admin_listen: '[::1]:9000'
servers:
  - db1.internal:5432
  - '[fd00::2]:6543'
  - db3
pool:
  mode: session
  size: 5
  borrow_timeout: 250ms
  init_query: SET statement_timeout = '30s'
  connect_timeout: 2s
  idle_timeout: 1h30m
  lost_session_state: close
  server_auth: [scram-sha-256, password, scram-sha-256]
clients:
  max_connections: 100
  idle_timeout: 1d
  startup_timeout: 10s
  auth_method: md5
  max_handshakes: 7
  max_message_size: 16MB
  max_prepared_statements: 50
  idle_transaction_timeout: 2m
  max_handshakes_per_address: 3
  login_throttle_after: 0
  login_throttle_window: 5m
  login_throttle_delay: 1s
  login_throttle_max_delay: 1m
users:
  - name: app
    password: s3cret
  - name: batch
    password: 0123
admin_users: [batch]
shutdown_timeout: 0s
log_format: json
listen_backlog: 128
";
    let config = load(yaml);
    assert_eq!(config.listen, "0.0.0.0:7432");
    assert_eq!(config.reader_listen.as_deref(), Some("0.0.0.0:7433"));
    assert_eq!(config.admin_listen.as_deref(), Some("[::1]:9000"));
    let expected_servers = [server("db1.internal", 5432), server("fd00::2", 6543), server("db3", 5432)];
    assert_eq!(config.servers, expected_servers);
    let pool = PoolConfig {
        mode: PoolMode::Session,
        size: 5,
        borrow_timeout: Duration::from_millis(250),
        init_query: "SET statement_timeout = '30s'".into(),
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5400),
        lost_session_state: LostSessionState::Close,
        server_auth: ServerAuth::Only(vec![ServerAuthMethod::ScramSha256, ServerAuthMethod::Password]),
    };
    assert_eq!(config.pool, pool);
    let clients = ClientsConfig {
        max_connections: 100,
        idle_timeout: Duration::from_secs(86_400),
        startup_timeout: Duration::from_secs(10),
        auth_method: ClientAuthMethod::Md5,
        max_handshakes: 7,
        max_message_size: 16 << 20,
        max_prepared_statements: 50,
        idle_transaction_timeout: Some(Duration::from_secs(120)),
        max_handshakes_per_address: 3,
        login_throttle_after: 0,
        login_throttle_window: Duration::from_secs(300),
        login_throttle_delay: Duration::from_secs(1),
        login_throttle_max_delay: Duration::from_secs(60),
    };
    assert_eq!(config.clients, clients);
    // A plain scalar that looks like a number is kept as written.
    assert_eq!(config.users, [user("app", "s3cret"), user("batch", "0123")]);
    assert_eq!(config.admin_users, ["batch"]);
    assert_eq!(config.shutdown_timeout, Duration::ZERO);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.listen_backlog, 128);
}

#[test]
fn empty_and_null_optional_values_read_as_defaults() {
    let yaml = format!("{MINIMAL}reader_listen: ~\nadmin_listen:\npool:\nclients: {{}}\n");
    let config = load(&yaml);
    assert_eq!(config.reader_listen, None);
    assert_eq!(config.admin_listen, None);
    assert_eq!(config.pool, PoolConfig::default());
    assert_eq!(config.clients, ClientsConfig::default());
}

#[test]
fn passwords_keep_their_spelling() {
    let yaml = "\
listen: 127.0.0.1:6432
servers: [db]
users:
  - {name: a, password: 1e3}
  - {name: b, password: yes}
  - {name: c, password: 'true'}
  - {name: d, password: true}
  - {name: 42, password: 007}
";
    let config = load(yaml);
    let passwords: Vec<&str> = config.users.iter().map(|u| u.password.as_str()).collect();
    assert_eq!(passwords, ["1e3", "yes", "true", "true", "007"]);
    assert!(config.user("42").is_some());
}

#[test]
fn env_expansion_in_any_string_value() {
    let env = |name: &str| match name {
        "HOST" => Some("10.0.0.1".to_owned()),
        "POOL_SIZE" => Some("7".to_owned()),
        "TIMEOUT" => Some("3s".to_owned()),
        "SECRET" => Some("p@ss: #word".to_owned()),
        _ => None,
    };
    let yaml = "\
listen: ${HOST}:6432
servers: ['${HOST}:5432']
pool:
  size: ${POOL_SIZE}
  borrow_timeout: ${TIMEOUT}
users:
  - name: app
    password: ${SECRET}$$
";
    let config = Config::from_yaml_with_env(yaml, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, "10.0.0.1:6432");
    assert_eq!(config.servers, [server("10.0.0.1", 5432)]);
    assert_eq!(config.pool.size, 7);
    assert_eq!(config.pool.borrow_timeout, Duration::from_secs(3));
    // The substituted text is never parsed as YAML, so `: ` and `#` survive.
    assert_eq!(config.users[0].password, "p@ss: #word$");
}

#[test]
fn password_env_reads_the_variable() {
    let yaml = MINIMAL.replace("password: app", "password_env: APP_PASSWORD");
    let env = |name: &str| (name == "APP_PASSWORD").then(|| "from-env".to_owned());
    let config = Config::from_yaml_with_env(&yaml, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.users[0].password, "from-env");
}

fn secret_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(contents.as_bytes()).expect("write temp file");
    file
}

#[test]
fn password_file_trims_one_trailing_newline() {
    for (contents, expected) in [
        ("filepw\n", "filepw"),
        ("filepw\r\n", "filepw"),
        ("filepw", "filepw"),
        ("filepw\n\n", "filepw\n"),
        (" spaced \n", " spaced "),
    ] {
        let file = secret_file(contents);
        let line = format!("password_file: '{}'", file.path().display());
        let config = load(&MINIMAL.replace("password: app", &line));
        assert_eq!(config.users[0].password, expected, "{contents:?}");
    }
}

#[test]
fn load_reads_a_file() {
    let file = secret_file(MINIMAL);
    let config = Config::load(file.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, "127.0.0.1:6432");
}

#[test]
fn load_reports_an_unreadable_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.yaml");
    let errors = Config::load(&missing).expect_err("no such file");
    assert_eq!(errors.problems.len(), 1);
    assert!(errors.problems[0].message.contains("missing.yaml"), "{errors}");
}

#[test]
fn user_lookup_and_redacted_debug() {
    let config = load(MINIMAL);
    assert_eq!(config.user("app"), Some(&user("app", "app")));
    assert_eq!(config.user("nobody"), None);
    let debug = format!("{config:?}");
    assert!(debug.contains("\"app\"") && debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains("password: \"app\""), "{debug}");
}

#[test]
fn anchors_and_merges_are_resolved() {
    let yaml = "\
listen: 127.0.0.1:6432
servers: [db]
pool: &shared
  size: 3
clients:
  idle_timeout: 1m
users:
  - &u {name: app, password: app}
  - <<: *u
    name: other
";
    let config = load(yaml);
    assert_eq!(config.pool.size, 3);
    assert_eq!(config.users, [user("app", "app"), user("other", "app")]);
}

#[test]
fn tls_sections_name_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = crate::tls::test_certs::write(dir.path(), &["localhost"]);
    let yaml = format!(
        "{MINIMAL}tls:\n  mode: require\n  cert_file: {}\n  key_file: {}\nserver_tls:\n  mode: verify-full\n  ca_file: {}\n",
        files.cert.display(),
        files.key.display(),
        files.ca.display()
    );
    let config = load(&yaml);
    let tls = TlsConfig { mode: TlsMode::Require, cert_file: Some(files.cert), key_file: Some(files.key.clone()) };
    assert_eq!(config.tls, tls);
    assert_eq!(config.server_tls, ServerTlsConfig { mode: ServerTlsMode::VerifyFull, ca_file: Some(files.ca) });
    for (mode, expected) in [("disable", TlsMode::Disable), ("allow", TlsMode::Allow), ("prefer", TlsMode::Prefer)] {
        assert_eq!(load(&format!("{MINIMAL}tls: {{mode: {mode}}}\n")).tls.mode, expected);
    }
    for (mode, expected) in
        [("disable", ServerTlsMode::Disable), ("prefer", ServerTlsMode::Prefer), ("require", ServerTlsMode::Require)]
    {
        assert_eq!(load(&format!("{MINIMAL}server_tls: {{mode: {mode}}}\n")).server_tls.mode, expected);
    }
}
