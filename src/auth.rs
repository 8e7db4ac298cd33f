//! Client authentication against the configured users: SCRAM-SHA-256 (default) and MD5 verification.
//!
//! Pure state machines: the client module moves the messages, this module decides.

pub mod md5;
pub mod scram;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What pgmux keeps for each configured user: its SCRAM verifier (to check clients) and what it
/// logs in to servers with.
#[derive(Clone)]
pub struct UserSecret {
    pub name: String,
    pub scram: scram::Verifier,
    pub server: ServerSecret,
}

/// What pgmux answers a server's authentication request with, for one user.
#[derive(Clone)]
pub enum ServerSecret {
    /// The user's password (configured in plaintext).
    Password(String),
    /// The user was configured by its SCRAM verifier: there is no password, only the key a
    /// client's login reveals (SCRAM pass-through).
    PassThrough(Arc<PassThrough>),
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerSecret::Password(_) => "Password(..)",
            ServerSecret::PassThrough(_) => "PassThrough(..)",
        })
    }
}

impl ServerSecret {
    /// The plaintext password, when there is one.
    pub fn password(&self) -> Option<&str> {
        match self {
            ServerSecret::Password(p) => Some(p),
            ServerSecret::PassThrough(_) => None,
        }
    }
}

/// A user given by its SCRAM verifier (the server's own, from `pg_authid.rolpassword`), and the
/// ClientKey the first client's SCRAM proof revealed: with both, pgmux answers the server's SCRAM
/// as that user would (see [`scram::KeyClient`]). Shared by the user directory (which learns the
/// key) and the pools (which log in with it); a reload that keeps the verifier keeps the key.
#[derive(Debug)]
pub struct PassThrough {
    pub verifier: scram::Verifier,
    client_key: Mutex<Option<scram::ClientKey>>,
}

impl PassThrough {
    pub fn new(verifier: scram::Verifier) -> PassThrough {
        PassThrough { verifier, client_key: Mutex::new(None) }
    }

    /// The key, once a client of this user has logged in with SCRAM.
    pub fn client_key(&self) -> Option<scram::ClientKey> {
        self.client_key.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Remembers the key of a client that just proved itself against `verifier`.
    pub fn remember(&self, key: scram::ClientKey) {
        *self.client_key.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }
}

impl UserSecret {
    /// A user given by `verifier`; `before` is what the user had until now: the same verifier
    /// keeps the key its clients revealed.
    fn pass_through(name: &str, verifier: scram::Verifier, before: Option<&UserSecret>) -> UserSecret {
        let kept = match before.map(|u| &u.server) {
            Some(ServerSecret::PassThrough(p)) if p.verifier == verifier => Some(p.clone()),
            _ => None,
        };
        let shared = kept.unwrap_or_else(|| Arc::new(PassThrough::new(verifier.clone())));
        UserSecret { name: name.to_string(), scram: verifier, server: ServerSecret::PassThrough(shared) }
    }
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSecret").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The configured users, with verifiers computed once (4096 PBKDF2 rounds each) at load, the
/// per-process key their salts (and unknown users' decoy salts) are derived from, and the users
/// `auth.query` found on the servers.
#[derive(Debug, Clone)]
pub struct UserDirectory {
    /// Shared: a login takes a reference, not a copy of the name, verifier and password.
    users: foldhash::HashMap<String, Arc<UserSecret>>,
    key: scram::SaltKey,
    /// Shared by every rebuild: a reload keeps what lookups learnt (keys included).
    found: Arc<Mutex<HashMap<String, Found>>>,
}

/// One `auth.query` answer: the user's secret, or None for a name the servers do not know (or
/// whose stored password pgmux cannot use).
#[derive(Debug, Clone)]
struct Found {
    secret: Option<Arc<UserSecret>>,
    /// When it was found; None once it is to be asked again.
    at: Option<Instant>,
}

/// At most this many answers are kept; past it, names not found are dropped first (a client
/// trying random names must not grow the table without bound).
const MAX_FOUND: usize = 10_000;

impl Default for UserDirectory {
    fn default() -> Self {
        UserDirectory { users: Default::default(), key: scram::SaltKey::random(), found: Default::default() }
    }
}

impl UserDirectory {
    /// A directory with a fresh salt key (a new process). Each user comes with its secret: a
    /// password, or (starting `SCRAM-SHA-256$`) the verifier PostgreSQL stores, already validated
    /// by the config; a malformed one is treated as a password.
    pub fn new<'a>(users: impl IntoIterator<Item = (&'a str, &'a str)>) -> UserDirectory {
        UserDirectory::default().rebuilt(users)
    }

    /// The same process's directory with other users (a reload): the salt key is kept, so every
    /// name keeps its salt and a reload does not set real users apart from unknown ones. A user
    /// whose verifier is unchanged keeps the key its clients revealed.
    pub fn rebuilt<'a>(&self, users: impl IntoIterator<Item = (&'a str, &'a str)>) -> UserDirectory {
        let users = users
            .into_iter()
            .map(|(name, secret)| {
                let secret = match scram::Verifier::parse(secret) {
                    Some(verifier) => UserSecret::pass_through(name, verifier, self.users.get(name).map(|u| &**u)),
                    None => UserSecret {
                        name: name.to_string(),
                        scram: scram::Verifier::for_user(&self.key, name, secret),
                        server: ServerSecret::Password(secret.to_string()),
                    },
                };
                (name.to_string(), Arc::new(secret))
            })
            .collect();
        UserDirectory { users, key: self.key.clone(), found: self.found.clone() }
    }

    /// A configured user, else one `auth.query` found (however long ago: the pools of a user
    /// found keep logging in with what was learnt).
    pub fn get(&self, name: &str) -> Option<Arc<UserSecret>> {
        match self.users.get(name) {
            Some(secret) => Some(secret.clone()),
            None => self.found().get(name).and_then(|f| f.secret.clone()),
        }
    }

    pub fn is_configured(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    fn found(&self) -> std::sync::MutexGuard<'_, HashMap<String, Found>> {
        self.found.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `auth.query` answer for `name` if it is younger than `ttl`: Some(None) means not found.
    pub fn found_recently(&self, name: &str, ttl: Duration) -> Option<Option<Arc<UserSecret>>> {
        self.found().get(name).filter(|f| f.at.is_some_and(|at| at.elapsed() < ttl)).map(|f| f.secret.clone())
    }

    /// Records what `auth.query` returned for `name`: the stored password (None: no row, or NULL).
    /// Only a SCRAM verifier is usable (an MD5 hash cannot check a SCRAM login); the same verifier
    /// as before keeps the key clients revealed.
    pub fn record_found(&self, name: &str, stored: Option<&str>) -> Option<Arc<UserSecret>> {
        let verifier = stored.and_then(scram::Verifier::parse);
        let mut found = self.found();
        let before = found.get(name).and_then(|f| f.secret.as_deref());
        let secret = verifier.map(|verifier| Arc::new(UserSecret::pass_through(name, verifier, before)));
        if found.len() >= MAX_FOUND && !found.contains_key(name) {
            found.retain(|_, f| f.secret.is_some());
        }
        if found.len() < MAX_FOUND || found.contains_key(name) {
            found.insert(name.to_string(), Found { secret: secret.clone(), at: Some(Instant::now()) });
        }
        secret
    }

    /// Marks the answer for `name` stale (a client's proof failed against it, or a server refused
    /// its verifier): the next login asks the servers again. Kept until then: its pools still log
    /// in with it, and the same verifier found again keeps the key.
    pub fn forget_found(&self, name: &str) {
        if let Some(f) = self.found().get_mut(name) {
            f.at = None;
        }
    }

    /// The SCRAM verifier an unknown user `name` is checked against: shaped like a real one, with
    /// a salt stable per name.
    pub fn decoy_verifier(&self, name: &str) -> scram::Verifier {
        scram::Verifier::decoy(&self.key, name)
    }

    /// The password an unknown user `name` is checked against (MD5): stable per name, known to no
    /// client.
    pub fn decoy_password(&self, name: &str) -> String {
        self.key.decoy_password(name)
    }
}

/// Whether a configured secret is a SCRAM verifier rather than a password (as PostgreSQL decides
/// for `CREATE ROLE … PASSWORD`): it has the verifier's prefix.
pub fn is_scram_verifier(secret: &str) -> bool {
    secret.starts_with("SCRAM-SHA-256$")
}

/// Constant-time comparison, so a wrong proof leaks nothing through timing.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_user_has_no_password_and_keeps_its_key_across_reloads() {
        let stored = postgres_protocol::password::scram_sha_256(b"pw");
        let users = UserDirectory::new([("app", "plain"), ("pt", stored.as_str())]);
        assert_eq!(users.get("app").unwrap().server.password(), Some("plain"));
        let ServerSecret::PassThrough(pt) = &users.get("pt").unwrap().server else { panic!("not pass-through") };
        assert_eq!(Some(&pt.verifier), scram::Verifier::parse(&stored).as_ref());
        assert!(pt.client_key().is_none());
        // A key learnt before a reload is still there after it, unless the verifier changed.
        let learnt = Arc::as_ptr(pt);
        let again = users.rebuilt([("pt", stored.as_str())]);
        let ServerSecret::PassThrough(kept) = &again.get("pt").unwrap().server else { panic!() };
        assert_eq!(Arc::as_ptr(kept), learnt);
        let other = postgres_protocol::password::scram_sha_256(b"pw");
        let changed = users.rebuilt([("pt", other.as_str())]);
        let ServerSecret::PassThrough(new) = &changed.get("pt").unwrap().server else { panic!() };
        assert_ne!(Arc::as_ptr(new), learnt);
        assert!(format!("{:?}", users.get("app").unwrap().server).find("plain").is_none());
    }

    #[test]
    fn users_found_by_auth_query_are_cached_and_kept_across_reloads() {
        let users = UserDirectory::new([("app", "plain")]);
        let stored = postgres_protocol::password::scram_sha_256(b"pw");
        let ttl = Duration::from_secs(60);
        assert!(users.found_recently("pt", ttl).is_none());
        assert!(users.record_found("pt", Some(&stored)).is_some());
        assert!(users.record_found("ghost", None).is_none());
        assert!(users.record_found("md5user", Some("md5a3556571e93b0d20722ba62be61e8c2d")).is_none());
        assert!(matches!(users.found_recently("pt", ttl), Some(Some(_))));
        assert!(matches!(users.found_recently("ghost", ttl), Some(None)));
        assert!(users.found_recently("pt", Duration::ZERO).is_none(), "stale");
        let reloaded = users.rebuilt([("app", "plain")]);
        let Some(ServerSecret::PassThrough(before)) = users.get("pt").map(|s| s.server.clone()) else { panic!() };
        let Some(ServerSecret::PassThrough(after)) = reloaded.get("pt").map(|s| s.server.clone()) else { panic!() };
        assert!(Arc::ptr_eq(&before, &after));
        // Found again with the same verifier: the same key holder; forgotten: asked again.
        reloaded.record_found("pt", Some(&stored));
        let Some(ServerSecret::PassThrough(again)) = reloaded.get("pt").map(|s| s.server.clone()) else { panic!() };
        assert!(Arc::ptr_eq(&before, &again));
        reloaded.forget_found("pt");
        assert!(users.found_recently("pt", ttl).is_none(), "asked again");
        assert!(!users.is_configured("pt") && users.is_configured("app"));
        reloaded.record_found("pt", Some(&stored));
        let Some(ServerSecret::PassThrough(refound)) = reloaded.get("pt").map(|s| s.server.clone()) else { panic!() };
        assert!(Arc::ptr_eq(&before, &refound), "the key survives being asked again");
    }
}
