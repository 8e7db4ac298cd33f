//! The session-state check run after a transaction that may have changed session state: its
//! query, and what its rows say (pin reasons are read with `PinReasons::from_counts`, the rest
//! here).

/// Run after a transaction that may have changed session state: the session's settings, then one
/// row counting each kind of pinning state the connection holds, then who the session runs as
/// (`role` and `session_authorization` are not in pg_settings) and how many protocol-level
/// statements it has (pgmux's own, to compare with what pgmux believes).
///
/// Every function, operator and relation is schema-qualified: a client's search_path may put
/// look-alike objects (an `=` that is never true, a `count` that says 0) before pg_catalog.
pub const CHECK_SQL: &str = "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings \
     WHERE source OPERATOR(pg_catalog.=) 'session' AND NOT name OPERATOR(pg_catalog.=) ANY \
     ('{transaction_read_only,transaction_isolation,transaction_deferrable}'::pg_catalog.text[]) ORDER BY name; \
     SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class \
     WHERE relnamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks WHERE locktype OPERATOR(pg_catalog.=) 'advisory' \
     AND pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels()), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors WHERE is_holdable), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql), \
     pg_catalog.current_setting('session_authorization'), pg_catalog.current_setting('role'), \
     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements WHERE NOT from_sql)";

/// What the check's second result row says beyond pin counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `session_authorization`, if not the login user.
    pub session_authorization: Option<String>,
    /// `role`, if one is set.
    pub role: Option<String>,
    /// Protocol-level prepared statements on the connection.
    pub statements: Option<usize>,
}

impl Identity {
    /// Reads columns 5.. of the check's counts row; `login` is the user pgmux logged in as.
    pub fn from_row(row: &[Option<String>], login: &str) -> Identity {
        let col = |i: usize| row.get(i).and_then(|v| v.clone());
        Identity {
            session_authorization: col(5).filter(|v| v != login),
            role: col(6).filter(|v| v != "none"),
            statements: col(7).and_then(|v| v.parse().ok()),
        }
    }

    /// The identity settings to carry with the client's other settings.
    pub fn settings(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let sa = self.session_authorization.iter().map(|v| ("session_authorization".to_string(), v.clone()));
        sa.chain(self.role.iter().map(|v| ("role".to_string(), v.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_the_counts_row() {
        let row = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        let id = Identity::from_row(&row(&["0", "0", "0", "0", "0", "app", "none", "3"]), "app");
        assert_eq!((id.session_authorization.clone(), id.role.clone(), id.statements), (None, None, Some(3)));
        assert_eq!(id.settings().count(), 0);
        let id = Identity::from_row(&row(&["0", "0", "0", "0", "0", "other", "low", "0"]), "app");
        let got: Vec<_> = id.settings().collect();
        assert_eq!(got, vec![("session_authorization".into(), "other".into()), ("role".into(), "low".into())]);
    }

    #[test]
    fn check_sql_names_everything_by_schema() {
        // Every call and comparison goes through pg_catalog; a bare `count(`, `=` or `<>` would let
        // a client's search_path answer in pg_catalog's place.
        let unqualified_call = CHECK_SQL.match_indices("count(").any(|(i, _)| !CHECK_SQL[..i].ends_with("pg_catalog."));
        assert!(!unqualified_call);
        let bare_eq = CHECK_SQL.match_indices('=').any(|(i, _)| !CHECK_SQL[..i].ends_with("OPERATOR(pg_catalog."));
        assert!(!bare_eq);
        assert!(!CHECK_SQL.contains("<>") && !CHECK_SQL.contains(" IN ("));
    }
}
