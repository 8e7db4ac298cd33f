//! MD5 password authentication (`AuthenticationMD5Password`), offered when `clients.auth_method: md5`.

/// The response a client must send for `user`/`password` and the 4-byte `salt`.
pub fn expected_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt)
}

/// Checks a client's `md5…` response in constant time.
pub fn verify(user: &str, password: &str, salt: [u8; 4], response: &[u8]) -> bool {
    super::ct_eq(expected_response(user, password, salt).as_bytes(), response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_libpq_style_response() {
        let salt = [1, 2, 3, 4];
        let good = expected_response("app", "secret", salt);
        assert!(good.starts_with("md5") && good.len() == 35);
        assert!(verify("app", "secret", salt, good.as_bytes()));
        assert!(!verify("app", "wrong", salt, good.as_bytes()));
        assert!(!verify("app", "secret", [0; 4], good.as_bytes()));
    }
}
