//! `auth.query`: looks a user up on the primary over a connection of its own, logged in as
//! `auth.user`. Never a pooled connection: a client of that user could have left its settings on
//! one (a `search_path` putting its own `pg_authid` first, PgBouncer's CVE-2025-12819).

use std::sync::Arc;
use std::time::Instant;

use super::{Cluster, ClusterError};
use crate::backend::{BackendConn, BackendError};
use crate::pool::PoolError;

/// Where the lookup connection logs in; a change (another primary, a reload) opens a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    server: Arc<str>,
    user: String,
    database: String,
}

/// The lookup connection, kept between lookups.
#[derive(Debug, Default)]
pub(super) struct LookupConn(Option<(Target, BackendConn)>);

/// Set once on every lookup connection: only the catalog, and temporary objects last (by default
/// `pg_temp` is searched first), whatever `auth.user`'s role settings say.
const PIN_SEARCH_PATH: &str = "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)";

/// Who looks users up, and how (`auth.user`, `auth.database`, `auth.query`).
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    pub user: &'a str,
    pub database: &'a str,
    pub query: &'a str,
}

impl Cluster {
    /// Runs `auth.query` for `name` on the primary (waiting for one until `deadline`); returns the
    /// stored password of the first row (its second column; the first must be `name`), None for no
    /// row or NULL. One lookup
    /// at a time: a storm of unknown names costs the servers one connection, not one each.
    pub async fn look_up(
        &self,
        lookup: Lookup<'_>,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<String>, ClusterError> {
        let mut slot = self.lookup.lock().await;
        let server = match self.primary() {
            Some(p) => p,
            None => self.wait_for_primary(lookup.database, lookup.user, deadline).await?,
        };
        let target = Target { server, user: lookup.user.to_string(), database: lookup.database.to_string() };
        if slot.0.as_ref().is_some_and(|(t, _)| *t != target) {
            slot.0 = None;
        }
        // Taken out while in use: a lookup abandoned midway (its login timed out) drops the
        // connection, so no later lookup can read the replies meant for this one.
        let kept = slot.0.take().map(|(_, conn)| conn);
        let reused = kept.is_some();
        let mut conn = match kept {
            Some(conn) => conn,
            None => self.lookup_conn(lookup, &target.server).await?,
        };
        // An error (even the query's own) drops the connection. A kept one may have been closed
        // while idle (a server restart): then once more over a fresh one.
        let rows = match conn.query_rows_with(lookup.query, &[name]).await {
            Err(e) if reused && !matches!(e, BackendError::Server { .. }) => {
                conn = self.lookup_conn(lookup, &target.server).await?;
                conn.query_rows_with(lookup.query, &[name]).await
            }
            other => other,
        }
        .map_err(PoolError::Connect)?;
        slot.0 = Some((target, conn));
        Ok(stored_password(rows, name))
    }

    /// A new lookup connection to `server`, its `search_path` pinned.
    async fn lookup_conn(&self, lookup: Lookup<'_>, server: &Arc<str>) -> Result<BackendConn, ClusterError> {
        let mut login = self.login(lookup.database, lookup.user)?;
        login.init_query.clear();
        let mut conn = BackendConn::connect(server.clone(), &login).await.map_err(PoolError::Connect)?;
        conn.query_rows(PIN_SEARCH_PATH).await.map_err(PoolError::Connect)?;
        Ok(conn)
    }
}

/// The second column of the first row, if the first names `name` (a query answering for another
/// name is not believed).
fn stored_password(rows: Vec<Vec<Option<String>>>, name: &str) -> Option<String> {
    let mut row = rows.into_iter().next()?.into_iter();
    match (row.next().flatten(), row.next().flatten()) {
        (Some(found), stored) if found == name => stored,
        (found, _) => {
            tracing::warn!(event = "auth_query_failed", user = name, found = ?found, "auth.query answered for another name; ignored");
            None
        }
    }
}

/// Whether a lookup failure is the query's own (a mistake in `auth.query`, a missing privilege).
pub fn is_query_error(e: &ClusterError) -> bool {
    matches!(e, ClusterError::Pool(PoolError::Connect(BackendError::Server { .. })))
}

#[cfg(test)]
mod tests {
    use super::stored_password;

    #[test]
    fn only_an_answer_for_the_name_asked_is_believed() {
        let row = |a: Option<&str>, b: Option<&str>| vec![vec![a.map(String::from), b.map(String::from)]];
        assert_eq!(stored_password(row(Some("u"), Some("v")), "u").as_deref(), Some("v"));
        assert_eq!(stored_password(row(Some("u"), None), "u"), None);
        assert_eq!(stored_password(row(Some("other"), Some("v")), "u"), None);
        assert_eq!(stored_password(row(None, Some("v")), "u"), None);
        assert_eq!(stored_password(Vec::new(), "u"), None);
    }
}
