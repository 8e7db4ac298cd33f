//! Client authentication against the configured users: SCRAM-SHA-256 (default) and MD5 verification.
//!
//! Pure state machines: the client module moves the messages, this module decides.

pub mod md5;
pub mod scram;

use std::collections::HashMap;

/// What pgmux keeps for each configured user: the password (to log in to servers) and its SCRAM verifier.
#[derive(Clone)]
pub struct UserSecret {
    pub name: String,
    pub password: String,
    pub scram: scram::Verifier,
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSecret").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The configured users, with verifiers computed once (4096 PBKDF2 rounds each) at load, and the
/// per-process key their salts (and unknown users' decoy salts) are derived from.
#[derive(Debug, Clone)]
pub struct UserDirectory {
    users: HashMap<String, UserSecret>,
    key: scram::SaltKey,
}

impl Default for UserDirectory {
    fn default() -> Self {
        UserDirectory { users: HashMap::new(), key: scram::SaltKey::random() }
    }
}

impl UserDirectory {
    /// A directory with a fresh salt key (a new process).
    pub fn new<'a>(users: impl IntoIterator<Item = (&'a str, &'a str)>) -> UserDirectory {
        UserDirectory::default().rebuilt(users)
    }

    /// The same process's directory with other users (a reload): the salt key is kept, so every
    /// name keeps its salt and a reload does not set real users apart from unknown ones.
    pub fn rebuilt<'a>(&self, users: impl IntoIterator<Item = (&'a str, &'a str)>) -> UserDirectory {
        let users = users
            .into_iter()
            .map(|(name, password)| {
                let secret = UserSecret {
                    name: name.to_string(),
                    password: password.to_string(),
                    scram: scram::Verifier::for_user(&self.key, name, password),
                };
                (name.to_string(), secret)
            })
            .collect();
        UserDirectory { users, key: self.key.clone() }
    }

    pub fn get(&self, name: &str) -> Option<&UserSecret> {
        self.users.get(name)
    }

    /// What an unknown user is checked against: a SCRAM verifier shaped like a real one with a
    /// salt stable per name, and an MD5 password no client knows (so both paths cost the same).
    pub fn decoy(&self, name: &str) -> (scram::Verifier, String) {
        (scram::Verifier::decoy(&self.key, name), self.key.decoy_password(name))
    }
}

/// Constant-time comparison, so a wrong proof leaks nothing through timing.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
