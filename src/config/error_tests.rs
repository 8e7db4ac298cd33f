//! Tests for configurations that must be refused: each kind of mistake is reported with its key
//! path and line, and several mistakes are all reported together.

use super::*;

fn env(name: &str) -> Option<String> {
    (name == "SET").then(|| "value".to_owned())
}

fn problems(yaml: &str) -> Vec<Problem> {
    match Config::from_yaml_with_env(yaml, &env) {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(errors) => errors.problems,
    }
}

/// Asserts that `yaml` yields exactly one problem, at `path` and `line`, mentioning `words`.
fn assert_one(yaml: &str, path: &str, line: Option<usize>, words: &str) {
    let found = problems(yaml);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_problem(&found[0], path, line, words);
}

fn assert_problem(problem: &Problem, path: &str, line: Option<usize>, words: &str) {
    assert_eq!((problem.path.as_str(), problem.line), (path, line), "{problem:?}");
    assert!(problem.message.contains(words), "{problem:?} should mention {words:?}");
}

/// A valid config of 6 lines; tests append to it (so appended keys start at line 7).
const BASE: &str = "\
listen: 127.0.0.1:6432
servers:
  - 127.0.0.1:5432
users:
  - name: app
    password: app
";

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn unknown_keys_name_the_key_and_suggest_a_fix() {
    assert_one(&with("lissten: x\n"), "lissten", Some(7), "unknown key `lissten`");
    let found = problems(&with("pool:\n  sise: 5\n"));
    assert_problem(&found[0], "pool.sise", Some(8), "did you mean `size`?");
    let yaml = BASE.replace("password: app", "password: app\n    role: admin");
    assert_one(&yaml, "users[0].role", Some(7), "unknown key `role`");
}

#[test]
fn wrong_types_are_reported() {
    assert_one(&with("pool:\n  size: \"20\"\n"), "pool.size", Some(8), "found a string");
    assert_one(&with("pool:\n  size: 2.5\n"), "pool.size", Some(8), "found a float");
    assert_one(&with("pool: 5\n"), "pool", Some(7), "expected a mapping");
    assert_one(&with("pool:\n  mode: [a]\n"), "pool.mode", Some(8), "found a list");
    assert_one(&with("clients:\n  max_connections: -1\n"), "clients.max_connections", Some(8), ">= 1");
    assert_one(&with("clients:\n  max_message_size: 64\n"), "clients.max_message_size", Some(8), "no unit");
    assert_one(&with("clients:\n  max_message_size: 1kB\n"), "clients.max_message_size", Some(8), "between");
    assert_one(&with("clients:\n  max_message_size: 2GB\n"), "clients.max_message_size", Some(8), "between");
    assert_one(&with("clients:\n  max_prepared_statements: 0\n"), "clients.max_prepared_statements", Some(8), ">= 1");
    assert_one(
        &with("clients:\n  idle_transaction_timeout: 5\n"),
        "clients.idle_transaction_timeout",
        Some(8),
        "no unit",
    );
    let yaml = BASE.replace("servers:\n  - 127.0.0.1:5432", "servers: db:5432");
    assert_one(&yaml, "servers", Some(2), "expected a list");
    assert_one(
        "listen: {a: 1}\nservers: [db]\nusers: [{name: a, password: a}]\n",
        "listen",
        Some(1),
        "expected a string",
    );
}

#[test]
fn bad_durations_are_reported() {
    let cases = [
        ("borrow_timeout: 120", "no unit"),
        ("borrow_timeout: 5x", "not a duration"),
        ("connect_timeout: 1.5s", "not a duration"),
        ("idle_timeout: 0s", "longer than zero"),
    ];
    for (line, words) in cases {
        let key = line.split(':').next().unwrap_or_default();
        let yaml = with(&format!("pool:\n  {line}\n"));
        assert_one(&yaml, &format!("pool.{key}"), Some(8), words);
    }
    assert_one(&with("shutdown_timeout: 30\n"), "shutdown_timeout", Some(7), "`30s`");
}

#[test]
fn bad_choices_list_the_accepted_words() {
    assert_one(&with("pool:\n  mode: statement\n"), "pool.mode", Some(8), "transaction, session");
    assert_one(&with("clients:\n  auth_method: trust\n"), "clients.auth_method", Some(8), "md5");
    assert_one(&with("log_format: JSON\n"), "log_format", Some(7), "text, json");
}

#[test]
fn zero_sizes_are_refused() {
    assert_one(&with("pool:\n  size: 0\n"), "pool.size", Some(8), ">= 1");
    assert_one(&with("clients:\n  max_connections: 0\n"), "clients.max_connections", Some(8), ">= 1");
}

#[test]
fn required_keys_and_empty_lists() {
    let found = problems("log_format: text\n");
    let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["listen", "servers", "users"]);
    assert!(found.iter().all(|p| p.line.is_none() && p.message == "is required"));
    let yaml = BASE.replace("servers:\n  - 127.0.0.1:5432", "servers: []");
    assert_one(&yaml, "servers", Some(2), "at least one server");
    let yaml = "listen: 127.0.0.1:6432\nservers: [db]\nusers: []\n";
    assert_one(yaml, "users", Some(3), "at least one user");
    assert_one("listen: ~\nservers: [db]\nusers: [{name: a, password: a}]\n", "listen", None, "is required");
}

#[test]
fn bad_addresses_are_reported() {
    let yaml = BASE.replace("  - 127.0.0.1:5432", "  - 127.0.0.1:5432\n  - db:99999\n  - ::1:x");
    let found = problems(&yaml);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(&found[0], "servers[1]", Some(4), "port `99999`");
    assert_problem(&found[1], "servers[2]", Some(5), "brackets");
    assert_one(&BASE.replace(":6432", ""), "listen", Some(1), "no port");
    assert_one(&with("admin_listen: 'a b:1'\n"), "admin_listen", Some(7), "not a valid host name");
}

#[test]
fn duplicates_are_reported() {
    let yaml = BASE.replace("  - 127.0.0.1:5432", "  - 127.0.0.1:5432\n  - 127.0.0.1");
    assert_one(&yaml, "servers[1]", Some(4), "duplicates servers[0]");
    let yaml = with("  - name: app\n    password: other\n");
    assert_one(&yaml, "users[1].name", Some(7), "duplicate user `app`");
    assert_one(&with("reader_listen: 127.0.0.1:6432\n"), "reader_listen", Some(7), "already used by `listen`");
    assert_one(&with("admin_listen: 0.0.0.0:6432\n"), "admin_listen", Some(7), "already used");
}

#[test]
fn admin_users_must_be_configured_users() {
    assert_one(
        &with("admin_users: [app, root]\n"),
        "admin_users[1]",
        Some(7),
        "`root` is not one of the configured users",
    );
    let found = problems(&with("admin_users:\n  - app\n  - app\n  - [x]\n"));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(&found[0], "admin_users[1]", Some(9), "duplicates admin_users[0]");
    assert_problem(&found[1], "admin_users[2]", Some(10), "expected a string, found a list");
    assert_one(&with("admin_users: app\n"), "admin_users", Some(7), "expected a list");
    // A user whose secret failed is reported once, not again as an unknown admin.
    let yaml = with("admin_users: [app]\n").replace("password: app", "password_env: UNSET_PASSWORD");
    assert_one(&yaml, "users[0].password_env", Some(6), "`UNSET_PASSWORD` is not set");
}

#[test]
fn secrets_need_exactly_one_source() {
    let yaml = BASE.replace("    password: app\n", "");
    assert_one(&yaml, "users[0]", Some(5), "exactly one of `password`");
    let yaml = BASE.replace("password: app", "password: app\n    password_env: SET");
    assert_one(&yaml, "users[0].password_env", Some(7), "conflicts with `password`");
    let yaml = BASE.replace("password: app", "password: ''");
    assert_one(&yaml, "users[0].password", Some(6), "empty");
}

#[test]
fn secret_sources_that_fail_are_reported() {
    let yaml = BASE.replace("password: app", "password_env: UNSET_PASSWORD");
    assert_one(&yaml, "users[0].password_env", Some(6), "`UNSET_PASSWORD` is not set");
    let yaml = BASE.replace("password: app", "password_file: /nonexistent/pgmux/secret");
    assert_one(&yaml, "users[0].password_file", Some(6), "cannot read `/nonexistent/pgmux/secret`");
}

#[test]
fn unset_variables_are_reported_where_used() {
    let yaml = BASE.replace("127.0.0.1:5432", "${DB_HOST}:${DB_PORT}");
    let found = problems(&yaml);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(&found[0], "servers[0]", Some(3), "`DB_HOST` is not set");
    assert_problem(&found[1], "servers[0]", Some(3), "`DB_PORT` is not set");
}

#[test]
fn expanded_values_are_validated_like_written_ones() {
    // `SET` expands to `value`, which is neither a number nor a duration.
    assert_one(&with("pool:\n  size: ${SET}\n"), "pool.size", Some(8), "`value`: must be");
    let yaml = with("clients:\n  idle_timeout: ${SET}\n");
    assert_one(&yaml, "clients.idle_timeout", Some(8), "`value` is not a duration");
}

#[test]
fn broken_yaml_is_one_problem_with_its_line() {
    let found = problems("listen: 127.0.0.1:6432\nservers: [db\nusers: []\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].line.is_some() && found[0].path.is_empty(), "{found:?}");
    assert_one("listen: a\nlisten: b\n", "", Some(2), "duplicate");
    assert_one("- just\n- a list\n", "", Some(1), "expected a mapping");
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let yaml = "\
listen: 127.0.0.1
servers: []
pool:
  size: 0
  borrow_timeout: 120
  colour: blue
clients:
  auth_method: plain
users:
  - name: app
  - name: app
    password_env: NOPE
log_format: ${LOG_FORMAT}
";
    let found = problems(yaml);
    let summary: Vec<(&str, Option<usize>)> = found.iter().map(|p| (p.path.as_str(), p.line)).collect();
    let expected = [
        ("listen", Some(1)),
        ("servers", Some(2)),
        ("pool.size", Some(4)),
        ("pool.borrow_timeout", Some(5)),
        ("pool.colour", Some(6)),
        ("clients.auth_method", Some(8)),
        ("users[0]", Some(10)),
        ("users[1].name", Some(11)),
        ("users[1].password_env", Some(12)),
        ("log_format", Some(13)),
    ];
    assert_eq!(summary, expected, "{found:#?}");
    let rendered = ConfigErrors { problems: found }.to_string();
    assert_eq!(rendered.lines().count(), expected.len(), "{rendered}");
    assert!(rendered.starts_with("line 1: listen: `127.0.0.1` has no port"), "{rendered}");
}

#[test]
fn tls_problems_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let files = crate::tls::test_certs::write(dir.path(), &["localhost"]);
    let other = tempfile::tempdir().unwrap();
    let other = crate::tls::test_certs::write(other.path(), &["localhost"]);
    let (cert, key, ca) = (files.cert.display(), files.key.display(), files.ca.display());
    assert_one(&with(&format!("tls:\n  cert_file: {cert}\n")), "tls.cert_file", Some(8), "needs `key_file`");
    assert_one(&with(&format!("tls:\n  key_file: {key}\n")), "tls.key_file", Some(8), "needs `cert_file`");
    assert_one(&with("tls:\n  mode: require\n"), "tls.mode", Some(8), "`require` needs `cert_file`");
    assert_one(&with("tls:\n  mode: on\n"), "tls.mode", Some(8), "one of: disable, allow, prefer, require");
    let missing = format!("tls:\n  cert_file: /nonexistent/cert.pem\n  key_file: {key}\n");
    assert_one(&with(&missing), "tls.cert_file", Some(8), "/nonexistent/cert.pem");
    let mismatched = format!("tls:\n  cert_file: {cert}\n  key_file: {}\n", other.key.display());
    assert_one(&with(&mismatched), "tls.key_file", Some(9), "does not fit the certificate");
    let not_a_cert = format!("tls:\n  cert_file: {key}\n  key_file: {key}\n");
    assert_one(&with(&not_a_cert), "tls.cert_file", Some(8), "no PEM certificate");
    assert_one(&with("server_tls:\n  mode: verify-full\n"), "server_tls.mode", Some(8), "need `ca_file`");
    let unused = format!("server_tls:\n  mode: prefer\n  ca_file: {ca}\n");
    assert_one(
        &with(&unused),
        "server_tls.ca_file",
        Some(9),
        "only used with mode `require`, `verify-ca` or `verify-full`",
    );
    let bad_ca = format!("server_tls:\n  mode: verify-ca\n  ca_file: {key}\n");
    assert_one(&with(&bad_ca), "server_tls.ca_file", Some(9), "no PEM certificate");
    assert_one(&with("server_tls:\n  mode: verify\n"), "server_tls.mode", Some(8), "verify-ca, verify-full");
    assert_one(&with("server_tls:\n  sslmode: require\n"), "server_tls.sslmode", Some(8), "unknown key");
}

#[test]
fn expansion_errors_never_echo_the_value() {
    for password in ["hunter2${oops", "p${hunter2 x}", "p${hunter2-b}"] {
        let yaml = BASE.replace("password: app", &format!("password: '{password}'"));
        let found = problems(&yaml);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].path, "users[0].password");
        assert!(!found[0].message.contains("hunter2"), "{:?} echoes the secret", found[0].message);
        assert!(!found[0].to_string().contains("hunter2"), "{}", found[0]);
    }
}

#[test]
fn server_auth_names_known_methods_and_at_least_one() {
    assert_one(&with("pool:\n  server_auth: []\n"), "pool.server_auth", Some(8), "at least one method");
    let found = problems(&with("pool:\n  server_auth: [scram-sha-256, kerberos, cleartext]\n"));
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_problem(&found[0], "pool.server_auth[1]", Some(8), "scram-sha-256, md5, password, none");
    assert_problem(&found[1], "pool.server_auth[2]", Some(8), "`cleartext`");
    assert_one(&with("pool:\n  server_auth: md5\n"), "pool.server_auth", Some(8), "expected a list");
}

/// A verifier as PostgreSQL stores it (pg_authid.rolpassword) for the password `pw`.
fn stored_verifier() -> String {
    postgres_protocol::password::scram_sha_256(b"pw")
}

#[test]
fn scram_verifiers_must_be_well_formed_and_need_scram_clients() {
    // A well-formed verifier is a secret like a password (the prober logs in as the first user).
    let verifier = stored_verifier();
    let two_users = format!("{BASE}  - name: pt\n    password: '{verifier}'\nhealth:\n  user: app\n");
    Config::from_yaml_with_env(&two_users, &env).unwrap_or_else(|e| panic!("{e}"));
    // Malformed: reported, never echoed (its keys are as secret as a password).
    let mangled = verifier.replacen(':', ";", 1);
    for bad in [mangled.as_str(), "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA", "SCRAM-SHA-256$x"] {
        let yaml = two_users.replace(&verifier, bad);
        let found = problems(&yaml);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_problem(&found[0], "users[1].password", Some(8), "not a valid SCRAM verifier");
        let tail = &bad[bad.len().saturating_sub(12)..];
        assert!(!found[0].to_string().contains(tail), "{} echoes the secret", found[0]);
    }
    let md5 = format!("{two_users}clients:\n  auth_method: md5\n");
    assert_one(&md5, "users[1].password", Some(8), "cannot check MD5 logins");
}

#[test]
fn the_prober_needs_a_user_with_a_password() {
    let verifier = stored_verifier();
    let first = BASE.replace("password: app", &format!("password: '{verifier}'"));
    assert_one(&first, "health.user", None, "not set: the first user");
    let named = format!("{BASE}  - name: pt\n    password: '{verifier}'\nhealth:\n  user: pt\n");
    assert_one(&named, "health.user", None, "the prober logs in as `pt`, configured by a SCRAM verifier");
    // A verifier in a file or an environment variable is the same secret.
    let from_env = |name: &str| (name == "PT_SECRET").then(|| verifier.clone());
    let env_yaml = format!("{BASE}  - name: pt\n    password_env: PT_SECRET\n");
    let config = Config::from_yaml_with_env(&env_yaml, &from_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.user("pt").map(|u| u.password.as_str()), Some(verifier.as_str()));
}

#[test]
fn the_auth_query_user_is_a_configured_user_with_a_password() {
    assert_one(&with("auth:\n  user: ghost\n"), "auth.user", Some(8), "`ghost` is not one of the configured users");
    let verifier = stored_verifier();
    let yaml = BASE.replace("password: app", &format!("password: '{verifier}'"))
        + "  - name: mon\n    password: mon\nhealth:\n  user: mon\nauth:\n  user: app\n";
    assert_one(&yaml, "auth.user", Some(12), "needs a password");
    let config = Config::from_yaml_with_env(&with("auth:\n  user: app\n  cache_ttl: 5m\n"), &env).unwrap();
    assert_eq!(config.auth.user.as_deref(), Some("app"));
    assert_eq!(config.auth.query, DEFAULT_AUTH_QUERY);
    assert_eq!(config.auth.cache_ttl, Duration::from_secs(300));
    assert_one(&with("auth:\n  cache_ttl: 5\n"), "auth.cache_ttl", Some(8), "unit");
    let md5 = with("clients:\n  auth_method: md5\nauth:\n  user: app\n");
    assert_one(&md5, "auth.user", Some(10), "cannot check MD5 logins");
}
