//! Tests for configuration from `PGMUX_*` variables: alone, over a file, and their problems.

use std::io::Write;
use std::time::Duration;

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vars {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn problems(text: Option<&str>, pairs: &[(&str, &str)]) -> Vec<String> {
    let errors = Config::from_sources(text, &vars(pairs)).expect_err("should be refused");
    errors.problems.iter().map(Problem::to_string).collect()
}

const FILE: &str = "\
listen: 127.0.0.1:6432
admin_listen: 127.0.0.1:9930
servers: [db1]
pool:
  size: 5
users:
  - name: app
    password: app
";

#[test]
fn environment_alone_gives_a_whole_config() {
    let mut secret = tempfile::NamedTempFile::new().expect("temp file");
    secret.write_all(b"batchpw\n").expect("write");
    let file_entry = format!("batch=file:{}", secret.path().display());
    let users = format!("app=env:APP_PASSWORD, {file_entry}");
    let env = vars(&[
        ("PGMUX_LISTEN", "0.0.0.0:6432"),
        ("PGMUX_READER_LISTEN", "0.0.0.0:6433"),
        ("PGMUX_ADMIN_LISTEN", "0.0.0.0:9930"),
        ("PGMUX_SERVERS", "db1:5432, db2"),
        ("PGMUX_USERS", &users),
        ("APP_PASSWORD", "s3cret"),
        ("PGMUX_ADMIN_USERS", "app"),
        ("PGMUX_POOL_SIZE", "7"),
        ("PGMUX_POOL_MODE", "session"),
        ("PGMUX_POOL_BORROW_TIMEOUT", "2s"),
        ("PGMUX_CLIENTS_MAX_CONNECTIONS", "300"),
        ("PGMUX_CLIENTS_MAX_MESSAGE_SIZE", "64MB"),
        ("PGMUX_CLIENTS_IDLE_TRANSACTION_TIMEOUT", "1m"),
        ("PGMUX_SHUTDOWN_TIMEOUT", "20s"),
        ("PGMUX_LOG_FORMAT", "json"),
        ("PGMUX_WORKERS", "2"),
        ("PGMUX_LISTEN_BACKLOG", "512"),
        ("PGMUX_CLIENTS_MAX_HANDSHAKES", "9"),
        ("PGMUX_ROUTING_FALLBACK_TO_PRIMARY", "false"),
        ("PGMUX_SERVER_TLS_MODE", "prefer"),
        // Not settings: the log filter, the build's commit.
        ("PGMUX_LOG", "debug"),
        ("PGMUX_COMMIT", "abc1234"),
    ]);
    let config = Config::from_sources(None, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, "0.0.0.0:6432");
    assert_eq!(config.reader_listen.as_deref(), Some("0.0.0.0:6433"));
    assert_eq!(config.admin_listen.as_deref(), Some("0.0.0.0:9930"));
    let servers: Vec<String> = config.servers.iter().map(ToString::to_string).collect();
    assert_eq!(servers, ["db1:5432", "db2:5432"]);
    assert_eq!(config.user("app").map(|u| u.password.as_str()), Some("s3cret"));
    assert_eq!(config.user("batch").map(|u| u.password.as_str()), Some("batchpw"));
    assert_eq!(config.admin_users, ["app"]);
    assert_eq!((config.pool.size, config.pool.mode), (7, PoolMode::Session));
    assert_eq!(config.pool.borrow_timeout, Duration::from_secs(2));
    assert_eq!(config.clients.max_connections, 300);
    assert_eq!(config.clients.max_message_size, 64 << 20);
    assert_eq!(config.clients.idle_transaction_timeout, Some(Duration::from_secs(60)));
    assert_eq!(config.shutdown_timeout, Duration::from_secs(20));
    assert_eq!((config.log_format, config.workers), (LogFormat::Json, 2));
    assert_eq!((config.listen_backlog, config.clients.max_handshakes), (512, 9));
    assert!(!config.routing.fallback_to_primary);
    assert_eq!(config.server_tls.mode, ServerTlsMode::Prefer);
}

#[test]
fn environment_overrides_the_file_and_empty_removes() {
    let env = vars(&[("PGMUX_POOL_SIZE", "9"), ("PGMUX_ADMIN_LISTEN", ""), ("PGMUX_SERVERS", "db7,db8")]);
    let config = Config::from_sources(Some(FILE), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.pool.size, 9);
    assert_eq!(config.admin_listen, None);
    assert_eq!(config.servers.len(), 2);
    assert_eq!(config.listen, "127.0.0.1:6432", "kept from the file");
    assert_eq!(config.user("app").map(|u| u.password.as_str()), Some("app"), "kept from the file");
    // Without variables, the file as written.
    assert_eq!(Config::from_sources(Some(FILE), &Vars::new()), Config::from_yaml_with_env(FILE, &|_| None));
}

#[test]
fn problems_name_the_variable() {
    let found = problems(
        Some(FILE),
        &[
            ("PGMUX_POOL_SIZE", "0"),
            ("PGMUX_POOL_SIZ", "3"),
            ("PGMUX_NOPE", "1"),
            ("PGMUX_SHUTDOWN_TIMEOUT", "30"),
            ("PGMUX_SERVERS", "db1,db1"),
        ],
    );
    let expect = [
        "pool.size (PGMUX_POOL_SIZE): `0`: must be a whole number >= 1",
        "pool.siz (PGMUX_POOL_SIZ): unknown key `siz`; did you mean `size`?",
        "PGMUX_NOPE: `PGMUX_NOPE` is not a pgmux setting",
        "shutdown_timeout (PGMUX_SHUTDOWN_TIMEOUT):",
        "servers[1] (PGMUX_SERVERS): `db1:5432` duplicates servers[0]",
    ];
    for needle in expect {
        assert!(found.iter().any(|p| p.starts_with(needle)), "no {needle:?} in {found:#?}");
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn users_problems_name_the_variable() {
    let found =
        problems(None, &[("PGMUX_LISTEN", "0.0.0.0:1"), ("PGMUX_SERVERS", "db"), ("PGMUX_USERS", "app=MISSING")]);
    assert!(found.iter().any(|p| p.starts_with("users (PGMUX_USERS): `app=MISSING`")), "{found:#?}");
    let found =
        problems(None, &[("PGMUX_LISTEN", "0.0.0.0:1"), ("PGMUX_SERVERS", "db"), ("PGMUX_USERS", "app=env:MISSING")]);
    assert_eq!(found, ["users[0].password_env (PGMUX_USERS): environment variable `MISSING` is not set"]);
}

#[test]
fn required_keys_say_which_variable_gives_them() {
    let found = problems(None, &[]);
    assert_eq!(
        found,
        [
            "listen: is required (in the file, or set PGMUX_LISTEN)",
            "servers: is required (in the file, or set PGMUX_SERVERS)",
            "users: is required (in the file, or set PGMUX_USERS)",
        ]
    );
}

#[test]
fn variables_holding_secrets_are_not_settings() {
    let file = FILE.replace("password: app", "password_env: PGMUX_APP_PASSWORD");
    let env =
        vars(&[("PGMUX_APP_PASSWORD", "pw"), ("PGMUX_USERS", "b=env:PGMUX_B_PASSWORD"), ("PGMUX_B_PASSWORD", "bpw")]);
    let config = Config::from_sources(Some(&file), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.user("b").map(|u| u.password.as_str()), Some("bpw"));
    let file = FILE.replace("password: app", "password: ${PGMUX_APP_PASSWORD}");
    let config = Config::from_sources(Some(&file), &vars(&[("PGMUX_APP_PASSWORD", "pw")])).expect("valid");
    assert_eq!(config.user("app").map(|u| u.password.as_str()), Some("pw"));
}

#[test]
fn users_from_the_environment_may_be_given_by_their_scram_verifier() {
    let verifier = postgres_protocol::password::scram_sha_256(b"pw");
    let env = vars(&[
        ("PGMUX_USERS", "app=env:APP_SECRET,b=env:B_VERIFIER"),
        ("APP_SECRET", "pw"),
        ("B_VERIFIER", &verifier),
    ]);
    let config = Config::from_sources(Some(FILE), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.user("b").map(|u| u.password.as_str()), Some(verifier.as_str()));
    // A mangled one is named by its variable, its value not shown.
    let bad = verifier.replace('$', "%");
    let bad = format!("SCRAM-SHA-256${}", &bad[14..]);
    let env =
        vars(&[("PGMUX_USERS", "app=env:APP_SECRET,b=env:B_VERIFIER"), ("APP_SECRET", "pw"), ("B_VERIFIER", &bad)]);
    let e = Config::from_sources(Some(FILE), &env).unwrap_err().to_string();
    assert!(e.contains("not a valid SCRAM verifier"), "{e}");
    assert!(!e.contains(&bad[14..]), "{e}");
}

#[test]
fn values_are_taken_literally() {
    let env = vars(&[("PGMUX_POOL_INIT_QUERY", "select '${X}'"), ("PGMUX_SERVERS", "db")]);
    let config = Config::from_sources(Some(FILE), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.pool.init_query, "select '${X}'");
}

/// The image's built-in file: all interfaces, no admin user, no password; alone it lacks exactly
/// the servers and the users.
#[test]
fn container_defaults() {
    let text = include_str!("../../deploy/container/proxy.yaml");
    let found = problems(Some(text), &[]);
    assert_eq!(
        found,
        [
            "servers: is required (in the file, or set PGMUX_SERVERS)",
            "users: is required (in the file, or set PGMUX_USERS)",
        ]
    );
    let env = vars(&[("PGMUX_SERVERS", "db"), ("PGMUX_USERS", "app=env:APP_PASSWORD"), ("APP_PASSWORD", "pw")]);
    let config = Config::from_sources(Some(text), &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.listen, "0.0.0.0:6432");
    assert_eq!(config.admin_listen.as_deref(), Some("0.0.0.0:9930"));
    assert!(config.admin_users.is_empty());
    assert_eq!(config.log_format, LogFormat::Json);
}

#[test]
fn source_choice() {
    assert_eq!(Source::choose(Some("x.yaml".into())), Source::File("x.yaml".into()));
    assert_eq!(Source::choose(Some("".into())), Source::Environment);
    let missing = Source::File("/nonexistent/pgmux.yaml".into()).load(&Vars::new()).expect_err("missing");
    assert!(missing.to_string().contains("cannot read config file"), "{missing}");
}

#[test]
fn server_auth_is_a_comma_separated_list() {
    let vars: Vars = [
        ("PGMUX_LISTEN", "127.0.0.1:1"),
        ("PGMUX_SERVERS", "a"),
        ("PGMUX_USERS", "a=env:A_PW"),
        ("A_PW", "x"),
        ("PGMUX_POOL_SERVER_AUTH", "scram-sha-256, password"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = Config::from_sources(None, &vars).expect("valid");
    assert_eq!(
        config.pool.server_auth,
        ServerAuth::Only(vec![ServerAuthMethod::ScramSha256, ServerAuthMethod::Password])
    );
    assert!(config.pool.server_auth.allows(ServerAuthMethod::Password, false));
    assert!(!ServerAuth::Default.allows(ServerAuthMethod::Password, false));
    assert!(ServerAuth::Default.allows(ServerAuthMethod::Password, true));
    assert!(ServerAuth::Default.allows(ServerAuthMethod::Md5, false));
}
