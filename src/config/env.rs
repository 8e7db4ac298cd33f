//! `PGMUX_*` environment variables laid over the parsed file (or over an empty document when there
//! is no file), as one explicit step before `${VAR}` expansion and validation: a value from the
//! environment is validated exactly like one written in the file, and its problems name the
//! variable.
//!
//! Names: `PGMUX_<KEY>` for a top-level key (`PGMUX_LISTEN`, `PGMUX_SHUTDOWN_TIMEOUT`) and
//! `PGMUX_<SECTION>_<KEY>` for a key of a section (`PGMUX_POOL_SIZE` is `pool.size`,
//! `PGMUX_SERVER_TLS_CA_FILE` is `server_tls.ca_file`). `PGMUX_SERVERS`, `PGMUX_ADMIN_USERS` and
//! `PGMUX_POOL_SERVER_AUTH` are comma-separated lists; `PGMUX_USERS` lists `name=env:VARIABLE` (`password_env`) or
//! `name=file:PATH` (`password_file`) entries, so no password is ever written in a variable
//! pgmux reads as a setting (what they hold, a password or a SCRAM verifier, is read as in the file). A set variable replaces the file's value (lists replace whole lists);
//! an empty one removes it (its default applies). Values are taken literally (no `${VAR}`).
//! A `PGMUX_*` name that is no setting is a problem, unless a `password_env` or `${VAR}` names it.

use std::collections::BTreeMap;

use serde_saphyr::{Location, Spanned};

use super::Problem;
use super::raw::{Node, Value};

/// The process environment (or a test's stand-in), by name.
pub type Vars = BTreeMap<String, String>;

const PREFIX: &str = "PGMUX_";

/// `PGMUX_*` variables that are not settings: the config file and log filter pgmux reads, and the
/// names this repository's build, tests and benchmarks use (the commit baked in at build time,
/// the PostgreSQL and pgmux binaries to run, test seeds and sizes), so that inheriting them is no
/// error. A new knob with this prefix belongs here.
const NOT_SETTINGS: &[&str] = &[
    "PGMUX_CONFIG",
    "PGMUX_LOG",
    "PGMUX_COMMIT",
    "PGMUX_PG_BIN",
    "PGMUX_BIN",
    "PGMUX_VERSION",
    "PGMUX_TEST_SEED",
    "PGMUX_ISOLATION_SEED",
    "PGMUX_ISOLATION_STEPS",
    "PGMUX_COPY_REPS",
    "PGMUX_TEST_CORES",
];

/// Top-level keys that hold one value or a list.
const TOP_KEYS: &[&str] = &[
    "listen",
    "reader_listen",
    "admin_listen",
    "admin_token_file",
    "servers",
    "users",
    "admin_users",
    "shutdown_timeout",
    "log_format",
    "workers",
    "listen_backlog",
];

/// Sections (mappings) whose keys can be set one by one; longest first, so `server_tls_…` is not
/// read as `server` + `tls_…`.
const SECTIONS: &[&str] = &["server_tls", "routing", "clients", "health", "pool", "tls", "auth"];

/// Keys whose variable is a comma-separated list.
const LIST_KEYS: &[&str] = &["servers", "admin_users", "pool.server_auth"];

/// The variable that sets the key at `path` (`pool.size` → `PGMUX_POOL_SIZE`).
pub(super) fn var_for(path: &str) -> String {
    format!("{PREFIX}{}", path.replace('.', "_").to_ascii_uppercase())
}

/// One variable applied: the key path it set and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Applied {
    pub(super) path: String,
    pub(super) var: String,
}

/// Lays every `PGMUX_*` setting in `vars` over `tree`. Returns what was applied (to name the
/// variable in later problems) and the problems found here (unknown names, malformed lists).
pub(super) fn overlay(tree: &mut Node, vars: &Vars) -> (Vec<Applied>, Vec<Problem>) {
    let referenced = referenced_names(tree, vars);
    let mut applied = Vec::new();
    let mut problems = Vec::new();
    for (var, value) in vars.range(PREFIX.to_owned()..).take_while(|(name, _)| name.starts_with(PREFIX)) {
        if NOT_SETTINGS.contains(&var.as_str()) || referenced.contains(var) || is_service_link(var) {
            continue;
        }
        let Some(path) = path_of(var) else {
            let message = format!("`{var}` is not a pgmux setting (see README, Configuration from the environment)");
            problems.push(Problem { path: var.clone(), line: None, message });
            continue;
        };
        let node = match value_node(&path, value) {
            Ok(node) => node,
            Err(message) => {
                problems.push(Problem { path: format!("{path} ({var})"), line: None, message });
                continue;
            }
        };
        set(tree, &path, node);
        applied.push(Applied { path, var: var.clone() });
    }
    (applied, problems)
}

/// Names each problem about a value that came from the environment after its key path, and says
/// which variable can supply a required top-level key.
pub(super) fn annotate(problems: &mut [Problem], applied: &[Applied]) {
    for problem in problems.iter_mut().filter(|p| p.line.is_none()) {
        let from = applied.iter().find(|a| {
            problem.path == a.path
                || problem.path.strip_prefix(&a.path).is_some_and(|rest| rest.starts_with(['.', '[']))
        });
        if let Some(a) = from {
            problem.path = format!("{} ({})", problem.path, a.var);
        } else if problem.message == "is required" && TOP_KEYS.contains(&problem.path.as_str()) {
            problem.message = format!("is required (in the file, or set {})", var_for(&problem.path));
        }
    }
}

/// Kubernetes gives every pod `<SERVICE>_SERVICE_HOST`, `<SERVICE>_SERVICE_PORT[_<NAME>]`,
/// `<SERVICE>_PORT` and `<SERVICE>_PORT_<n>_<PROTO>[_PROTO|_PORT|_ADDR]` for each Service in its
/// namespace (service links): a Service called `pgmux` (or `pgmux-pool`) must not stop pgmux.
/// No setting ends in `_PORT` or has these shapes.
fn is_service_link(var: &str) -> bool {
    if var.ends_with("_SERVICE_HOST") || var.ends_with("_SERVICE_PORT") || var.contains("_SERVICE_PORT_") {
        return true;
    }
    if var.ends_with("_PORT") {
        return true;
    }
    var.split("_PORT_").skip(1).any(|rest| {
        let mut parts = rest.split('_');
        let number = parts.next().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        number && matches!(parts.next(), Some("TCP" | "UDP" | "SCTP"))
    })
}

/// The key path a variable sets, if it names a setting.
fn path_of(var: &str) -> Option<String> {
    let name = var.strip_prefix(PREFIX)?.to_ascii_lowercase();
    if TOP_KEYS.contains(&name.as_str()) {
        return Some(name);
    }
    SECTIONS.iter().find_map(|section| {
        let key = name.strip_prefix(section)?.strip_prefix('_')?;
        (!key.is_empty()).then(|| format!("{section}.{key}"))
    })
}

fn node(value: Value) -> Node {
    Spanned { value, referenced: Location::UNKNOWN, defined: Location::UNKNOWN }
}

fn text(s: &str) -> Node {
    node(Value::Env(s.to_owned()))
}

fn key(s: &str) -> Node {
    node(Value::Str(s.to_owned()))
}

/// The tree value for `path` written as `value` in a variable; an empty value is `~` (unset).
fn value_node(path: &str, value: &str) -> Result<Node, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(node(Value::Null));
    }
    let items = || value.split(',').map(str::trim).filter(|item| !item.is_empty());
    if path == "users" {
        return items().map(user_node).collect::<Result<Vec<_>, _>>().map(|users| node(Value::Seq(users)));
    }
    if LIST_KEYS.contains(&path) {
        return Ok(node(Value::Seq(items().map(text).collect())));
    }
    Ok(text(value))
}

/// `name=env:VARIABLE` or `name=file:PATH`.
fn user_node(entry: &str) -> Result<Node, String> {
    let bad = || format!("`{entry}`: write each user as `name=env:VARIABLE` or `name=file:PATH`");
    let (name, source) = entry.split_once('=').ok_or_else(bad)?;
    let (secret_key, secret) = match source.trim().split_once(':') {
        Some(("env", var)) => ("password_env", var),
        Some(("file", path)) => ("password_file", path),
        _ => return Err(bad()),
    };
    if name.trim().is_empty() || secret.trim().is_empty() {
        return Err(bad());
    }
    let entries = vec![(key("name"), text(name.trim())), (key(secret_key), text(secret.trim()))];
    Ok(node(Value::Map(entries)))
}

/// Sets `path` (`key` or `section.key`) in the document, making the root or section a mapping if
/// it was empty. A section written as something else is left alone: validation reports it.
fn set(tree: &mut Node, path: &str, value: Node) {
    if tree.value == Value::Null {
        tree.value = Value::Map(Vec::new());
    }
    let mut target = tree;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Map(entries) = &mut target.value else { return };
        let index = match entries.iter().position(|(k, _)| k.value.key_name() == part) {
            Some(index) => index,
            None => {
                entries.push((key(part), node(Value::Null)));
                entries.len() - 1
            }
        };
        let slot = &mut entries[index].1;
        if parts.peek().is_none() {
            *slot = value;
            return;
        }
        if slot.value == Value::Null {
            slot.value = Value::Map(Vec::new());
        }
        target = slot;
    }
}

/// Variables named by a `password_env` (in the file or in `PGMUX_USERS`) or a `${VAR}` in the file:
/// they hold values, not settings.
fn referenced_names(tree: &Node, vars: &Vars) -> Vec<String> {
    let mut names = Vec::new();
    collect_references(tree, &mut names);
    if let Some(users) = vars.get("PGMUX_USERS") {
        let env_refs = users.split(',').filter_map(|entry| entry.split_once("=env:")).map(|(_, v)| v.trim());
        names.extend(env_refs.map(str::to_owned));
    }
    names
}

fn collect_references(node: &Node, out: &mut Vec<String>) {
    match &node.value {
        Value::Str(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                let Some(len) = rest[start + 2..].find('}') else { break };
                out.push(rest[start + 2..start + 2 + len].to_owned());
                rest = &rest[start + 2 + len..];
            }
        }
        Value::Seq(items) => items.iter().for_each(|item| collect_references(item, out)),
        Value::Map(entries) => {
            for (k, v) in entries {
                match (&k.value, &v.value) {
                    (Value::Str(k), Value::Str(name)) if k == "password_env" => out.push(name.clone()),
                    _ => collect_references(v, out),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_key_paths() {
        let table = [
            ("PGMUX_LISTEN", Some("listen")),
            ("PGMUX_ADMIN_LISTEN", Some("admin_listen")),
            ("PGMUX_ADMIN_USERS", Some("admin_users")),
            ("PGMUX_SHUTDOWN_TIMEOUT", Some("shutdown_timeout")),
            ("PGMUX_POOL_SIZE", Some("pool.size")),
            ("PGMUX_POOL_BORROW_TIMEOUT", Some("pool.borrow_timeout")),
            ("PGMUX_POOL_SERVER_AUTH", Some("pool.server_auth")),
            ("PGMUX_CLIENTS_MAX_CONNECTIONS", Some("clients.max_connections")),
            ("PGMUX_TLS_CERT_FILE", Some("tls.cert_file")),
            ("PGMUX_SERVER_TLS_CA_FILE", Some("server_tls.ca_file")),
            ("PGMUX_SERVER_TLS_MODE", Some("server_tls.mode")),
            ("PGMUX_HEALTH_USER", Some("health.user")),
            ("PGMUX_AUTH_QUERY", Some("auth.query")),
            ("PGMUX_AUTH_CACHE_TTL", Some("auth.cache_ttl")),
            ("PGMUX_POOL", None),
            ("PGMUX_POOL_", None),
            ("PGMUX_LISTENER", None),
            ("PGMUX_SERVER", None),
        ];
        for (var, path) in table {
            assert_eq!(path_of(var).as_deref(), path, "{var}");
            if let Some(path) = path {
                assert_eq!(var_for(path), var);
            }
        }
    }

    /// Every key the config reports belongs to a top-level key or a section the environment can set.
    #[test]
    fn every_setting_is_reachable_from_the_environment() {
        let config = crate::config::Config::from_yaml_with_env(
            "listen: 127.0.0.1:1\nservers: [a]\nusers: [{name: a, password: a}]\n",
            &|_| None,
        )
        .expect("valid");
        for (path, _) in config.effective() {
            let head = path.split(['.', '[']).next().unwrap_or_default();
            assert!(TOP_KEYS.contains(&head) || SECTIONS.contains(&head), "{path} cannot be set from PGMUX_*");
        }
    }

    #[test]
    fn kubernetes_service_links_are_not_settings() {
        for var in [
            "PGMUX_SERVICE_HOST",
            "PGMUX_SERVICE_PORT",
            "PGMUX_SERVICE_PORT_ADMIN",
            "PGMUX_PORT",
            "PGMUX_PORT_6432_TCP",
            "PGMUX_PORT_6432_TCP_ADDR",
            "PGMUX_POOL_PORT_9930_TCP_PROTO",
            "PGMUX_POOL_SERVICE_HOST",
        ] {
            assert!(is_service_link(var), "{var}");
        }
        for var in ["PGMUX_POOL_SIZE", "PGMUX_LISTEN", "PGMUX_PORTS", "PGMUX_PORT_X_TCP", "PGMUX_SERVERS"] {
            assert!(!is_service_link(var), "{var}");
        }
        let vars: Vars = [("PGMUX_PORT", "tcp://10.0.0.1:6432"), ("PGMUX_SERVICE_HOST", "10.0.0.1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut tree = node(Value::Null);
        let (applied, problems) = overlay(&mut tree, &vars);
        assert!(applied.is_empty() && problems.is_empty(), "{applied:?} {problems:?}");
    }

    #[test]
    fn users_entries() {
        let users = value_node("users", "app=env:APP_PASSWORD, batch = file:/run/secrets/batch").expect("valid");
        let Value::Seq(users) = users.value else { panic!("a list") };
        assert_eq!(users.len(), 2);
        for bad in ["app", "app=APP_PASSWORD", "app=password:x", "=env:X", "app=env:"] {
            assert!(value_node("users", bad).is_err(), "{bad:?} should be refused");
        }
    }
}
