//! Secret files (passwords, TLS keys) others can read: warned about at load, as libpq warns
//! about a private key readable by group or others.

use std::path::Path;

/// The permission bits (`0o077` part) through which group or others can read or write `path`,
/// or `None` when only its owner can (or it cannot be inspected: the read reports that).
pub fn exposed_bits(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o077;
    (mode != 0).then_some(mode)
}

/// Logs a warning when group or others can access the secret file `path` (`what`: its field).
pub fn warn_if_exposed(what: &str, path: &Path) {
    if let Some(bits) = exposed_bits(path) {
        tracing::warn!(
            field = what,
            path = %path.display(),
            mode = format!("{bits:#05o}"),
            "secret file is accessible by group or others; restrict it (chmod 600)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_world_access_is_flagged() {
        let file = tempfile::NamedTempFile::new().unwrap();
        for (mode, want) in
            [(0o600, None), (0o400, None), (0o640, Some(0o040)), (0o644, Some(0o044)), (0o606, Some(0o006))]
        {
            std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(exposed_bits(file.path()), want, "mode {mode:o}");
        }
        assert_eq!(exposed_bits(Path::new("/nonexistent/pgmux/secret")), None);
    }
}
