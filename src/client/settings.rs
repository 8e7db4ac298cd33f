//! A client's startup settings (application_name, TimeZone, `options=-c …`, …): which ones pgmux
//! carries, and the SQL that makes a server connection match them.

use super::statements::quote_ident;
use crate::error::ClientError;
use crate::protocol::build::quote_literal;
use crate::protocol::startup::parse_options;

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// The settings a client asked for at startup, sorted by name, last value winning.
pub fn from_startup(params: &[(String, String)]) -> Result<Vec<(String, String)>, ClientError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, value: &str| -> Result<(), ClientError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            return Err(ClientError::Protocol(format!("invalid parameter name \"{name}\"")));
        }
        let name = name.to_ascii_lowercase();
        out.retain(|(n, _)| *n != name);
        out.push((name, value.to_string()));
        Ok(())
    };
    for (name, value) in params {
        match name.as_str() {
            "options" => {
                for (n, v) in parse_options(value).map_err(ClientError::Protocol)? {
                    add(&n, &v)?;
                }
            }
            "replication" if !matches!(value.as_str(), "false" | "off" | "no" | "0") => {
                return Err(ClientError::FeatureNotSupported(
                    "replication connections are not supported through pgmux".into(),
                ));
            }
            n if NOT_SETTINGS.contains(&n) => {}
            n => add(n, value)?,
        }
    }
    out.sort();
    Ok(out)
}

/// The settings that are identities, in the order they must be applied (a session authorization
/// change resets the role). They are replayed last, after every setting the login role may need
/// privileges for, and cleared first.
const IDENTITY: [&str; 2] = ["session_authorization", "role"];

/// SQL that turns a connection carrying `current` settings into one carrying `wanted`, or `None` if
/// they already match. One simple query (one implicit transaction: all of it or none), so it
/// answers with exactly one ReadyForQuery.
pub fn sql_to_apply(current: &[(String, String)], wanted: &[(String, String)]) -> Option<String> {
    // The same shared list (`state::SettingLists`), mostly: equal without reading it.
    if std::ptr::eq(current, wanted) || current == wanted {
        return None;
    }
    let is_identity = |n: &str| IDENTITY.contains(&n);
    let mut stmts = Vec::new();
    // Back to the login role first: it is the one whose privileges the rest needs.
    for name in IDENTITY.iter().rev().filter(|n| current.iter().any(|(c, _)| c == *n)) {
        stmts.push(format!("RESET {}", quote_ident(name)));
    }
    let sets: Vec<String> = wanted
        .iter()
        .filter(|w| !is_identity(&w.0) && !current.contains(w))
        .map(|(n, v)| format!("pg_catalog.set_config({}, {}, false)", quote_literal(n), quote_literal(v)))
        .collect();
    if !sets.is_empty() {
        stmts.push(format!("SELECT {}", sets.join(", ")));
    }
    stmts.extend(
        current
            .iter()
            .filter(|(n, _)| !is_identity(n) && !wanted.iter().any(|(w, _)| w == n))
            .map(|(n, _)| format!("RESET {}", quote_ident(n))),
    );
    for name in IDENTITY {
        if let Some((_, v)) = wanted.iter().find(|(n, _)| n == name) {
            stmts.push(format!("SELECT pg_catalog.set_config({}, {}, false)", quote_literal(name), quote_literal(v)));
        }
    }
    Some(stmts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn collects_settings_from_params_and_options() {
        let got = from_startup(&p(&[
            ("user", "app"),
            ("database", "db"),
            ("application_name", "x"),
            ("TimeZone", "UTC"),
            ("options", "-c search_path=a,b -c application_name=y"),
        ]))
        .unwrap();
        assert_eq!(got, p(&[("application_name", "y"), ("search_path", "a,b"), ("timezone", "UTC")]));
    }

    #[test]
    fn rejects_bad_names_and_replication() {
        assert!(from_startup(&p(&[("a;b", "x")])).is_err());
        assert!(matches!(from_startup(&p(&[("replication", "database")])), Err(ClientError::FeatureNotSupported(_))));
        assert!(from_startup(&p(&[("replication", "false")])).unwrap().is_empty());
    }

    #[test]
    fn diff_sets_and_resets() {
        let cur = p(&[("application_name", "a"), ("timezone", "UTC")]);
        assert_eq!(sql_to_apply(&cur, &cur), None);
        let want = p(&[("application_name", "b'c")]);
        assert_eq!(
            sql_to_apply(&cur, &want).unwrap(),
            "SELECT pg_catalog.set_config('application_name', 'b''c', false); RESET \"timezone\""
        );
        assert_eq!(sql_to_apply(&[], &p(&[("x.y", "1")])).unwrap(), "SELECT pg_catalog.set_config('x.y', '1', false)");
    }

    #[test]
    fn reset_quotes_the_name() {
        let cur = p(&[("a\"b", "1")]);
        assert_eq!(sql_to_apply(&cur, &[]).unwrap(), "RESET \"a\"\"b\"");
    }

    #[test]
    fn identities_are_cleared_first_and_replayed_last() {
        let cur = p(&[("role", "r1"), ("session_authorization", "s1"), ("work_mem", "1MB")]);
        let want = p(&[("role", "r2"), ("work_mem", "2MB")]);
        assert_eq!(
            sql_to_apply(&cur, &want).unwrap(),
            "RESET \"role\"; RESET \"session_authorization\"; SELECT pg_catalog.set_config('work_mem', '2MB', false); \
             SELECT pg_catalog.set_config('role', 'r2', false)"
        );
        let want = p(&[("role", "r2"), ("session_authorization", "s2")]);
        assert_eq!(
            sql_to_apply(&[], &want).unwrap(),
            "SELECT pg_catalog.set_config('session_authorization', 's2', false); \
             SELECT pg_catalog.set_config('role', 'r2', false)"
        );
    }
}
