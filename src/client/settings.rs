//! A client's startup settings (application_name, TimeZone, `options=-c …`, …): which ones pgmux
//! carries, and the SQL that makes a server connection match them.

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

/// SQL that turns a connection carrying `current` settings into one carrying `wanted`, or `None` if
/// they already match. One simple query, so it answers with exactly one ReadyForQuery.
pub fn sql_to_apply(current: &[(String, String)], wanted: &[(String, String)]) -> Option<String> {
    if current == wanted {
        return None;
    }
    let sets: Vec<String> = wanted
        .iter()
        .filter(|w| !current.contains(w))
        .map(|(n, v)| format!("pg_catalog.set_config({}, {}, false)", quote_literal(n), quote_literal(v)))
        .collect();
    let resets: Vec<String> = current
        .iter()
        .filter(|(n, _)| !wanted.iter().any(|(w, _)| w == n))
        .map(|(n, _)| format!("RESET \"{n}\""))
        .collect();
    let mut stmts = Vec::new();
    if !sets.is_empty() {
        stmts.push(format!("SELECT {}", sets.join(", ")));
    }
    stmts.extend(resets);
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
}
