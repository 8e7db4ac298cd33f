//! Whose secret a login is checked against: a configured user's, else (with `auth.user` set) the
//! verifier `auth.query` finds on the servers, kept `auth.cache_ttl`.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{UserSecret, is_scram_verifier};
use crate::cluster::lookup::{Lookup, is_query_error};
use crate::state::ProxyState;

/// The secret `user` logs in with; None: unknown (the login runs against the decoy).
pub(super) async fn user_secret(ctx: &ProxyState, user: &str) -> Option<Arc<UserSecret>> {
    let users = ctx.users.load_full();
    if users.is_configured(user) {
        return users.get(user);
    }
    let config = ctx.config.load_full();
    let auth = &config.auth;
    let auth_user = auth.user.as_deref()?;
    if let Some(answer) = users.found_recently(user, auth.cache_ttl) {
        return answer;
    }
    let lookup = Lookup { user: auth_user, database: &auth.database, query: &auth.query };
    // The login's own deadline (clients.startup_timeout) bounds this too.
    let deadline = Instant::now() + ctx.settings.load().borrow_timeout;
    match ctx.cluster.look_up(lookup, user, deadline).await {
        Ok(stored) => {
            if stored.as_deref().is_some_and(|s| !is_scram_verifier(s)) {
                tracing::warn!(
                    event = "auth_query_unusable",
                    user,
                    "auth.query found the user, but its stored password is no SCRAM verifier (an MD5 hash?): it cannot log in through pgmux"
                );
            }
            let found = users.record_found(user, stored.as_deref());
            ctx.cluster.follow_user(user);
            found
        }
        Err(e) => {
            let what = if is_query_error(&e) { "auth.query failed" } else { "cannot reach a server for auth.query" };
            tracing::warn!(event = "auth_query_failed", user, error = %e, "{what}");
            // What was found before serves while the servers cannot be asked.
            users.get(user)
        }
    }
}
