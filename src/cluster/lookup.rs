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
    /// stored password of the first row (its second column), None for no row or NULL. One lookup
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
        if slot.0.is_none() {
            let mut login = self.login(lookup.database, lookup.user)?;
            login.init_query.clear();
            let mut conn = BackendConn::connect(target.server.clone(), &login).await.map_err(PoolError::Connect)?;
            conn.query_rows(PIN_SEARCH_PATH).await.map_err(PoolError::Connect)?;
            slot.0 = Some((target, conn));
        }
        let (_, conn) = slot.0.as_mut().expect("just set");
        match conn.query_rows_with(lookup.query, &[name]).await {
            Ok(rows) => Ok(rows.into_iter().next().and_then(|row| row.into_iter().nth(1).flatten())),
            Err(e) => {
                // An error from the query leaves the connection usable, anything else not; the
                // next lookup starts afresh either way.
                slot.0 = None;
                Err(PoolError::Connect(e).into())
            }
        }
    }
}

/// Whether a lookup failure is the query's own (a mistake in `auth.query`, a missing privilege).
pub fn is_query_error(e: &ClusterError) -> bool {
    matches!(e, ClusterError::Pool(PoolError::Connect(BackendError::Server { .. })))
}
