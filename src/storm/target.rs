//! The endpoint a storm targets: a libpq DSN (`key=value` pairs or a `postgres://` URL) turned
//! into a tokio-postgres config plus the rustls connector its `sslmode` asks for.
//!
//! tokio-postgres parses both DSN forms but knows only `disable`/`prefer`/`require` and no
//! `sslrootcert`, so those two keys are taken out first and mapped onto pgmux's own server-side
//! TLS modes (`tls::Connector`): `require` accepts any certificate as libpq does (checking the
//! chain when a root certificate is given), `verify-ca` checks the chain, `verify-full` the name too.

use std::path::PathBuf;

use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::{Connector, ServerMode, TlsError};

/// Why a DSN cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid DSN: {0}")]
    Dsn(String),
    #[error("sslmode={0}: unknown (disable, allow, prefer, require, verify-ca, verify-full)")]
    SslMode(String),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// A parsed endpoint, cheap to connect to many times.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    /// Used only when the mode is not `disable` (tokio-postgres never calls it then).
    pub tls: MakeRustlsConnect,
    pub mode: ServerMode,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Target {
    /// Parses `dsn`; a missing password is taken from `PGPASSWORD`, as libpq does.
    pub fn parse(dsn: &str) -> Result<Target, TargetError> {
        Self::parse_with(dsn, std::env::var("PGPASSWORD").ok())
    }

    fn parse_with(dsn: &str, env_password: Option<String>) -> Result<Target, TargetError> {
        let (rest, sslmode, rootcert) = split_tls_keys(dsn)?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| TargetError::Dsn(format!("{e}")))?;
        if config.get_hosts().is_empty() {
            return Err(TargetError::Dsn("no host= (or URL host) given".into()));
        }
        if config.get_user().is_none() {
            return Err(TargetError::Dsn("no user= given".into()));
        }
        if config.get_password().is_none()
            && let Some(p) = env_password
        {
            config.password(p);
        }
        let mode = match sslmode.as_deref() {
            None | Some("disable") => ServerMode::Disable,
            Some("allow" | "prefer") => ServerMode::Prefer,
            Some("require") => ServerMode::Require,
            Some("verify-ca") => ServerMode::VerifyCa,
            Some("verify-full") => ServerMode::VerifyFull,
            Some(other) => return Err(TargetError::SslMode(other.into())),
        };
        config.ssl_mode(match mode {
            ServerMode::Disable => SslMode::Disable,
            ServerMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        });
        // For `disable` a connector is still built (never used) so every target has one type.
        let connector =
            Connector::new(if mode == ServerMode::Disable { ServerMode::Prefer } else { mode }, rootcert.as_deref())?;
        let client_config = connector.client_config().ok_or_else(|| TargetError::Dsn("TLS config missing".into()))?;
        Ok(Target { config, tls: MakeRustlsConnect::new((*client_config).clone()), mode })
    }

    pub fn user(&self) -> &str {
        self.config.get_user().unwrap_or_default()
    }

    /// The database: `dbname`, else the user name (libpq's default).
    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or_else(|| self.user())
    }

    /// `user@host:port/db` (no password), for reports.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{}@{host}:{port}/{} (sslmode {})", self.user(), self.dbname(), self.mode.name())
    }
}

/// Splits `sslmode` and `sslrootcert` off a DSN; returns the rest (still a DSN of the same form).
fn split_tls_keys(dsn: &str) -> Result<(String, Option<String>, Option<PathBuf>), TargetError> {
    let dsn = dsn.trim();
    let (mut sslmode, mut rootcert) = (None, None);
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        let Some((base, query)) = dsn.split_once('?') else { return Ok((dsn.to_string(), None, None)) };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => sslmode = Some(percent_decode(v)),
                "sslrootcert" => rootcert = Some(PathBuf::from(percent_decode(v))),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return Ok((rest, sslmode, rootcert));
    }
    let mut kept = String::new();
    for (k, v) in key_values(dsn)? {
        match k.as_str() {
            "sslmode" => sslmode = Some(v),
            "sslrootcert" => rootcert = Some(PathBuf::from(v)),
            _ => {
                let quoted = v.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push_str(&format!("{k}='{quoted}' "));
            }
        }
    }
    Ok((kept.trim_end().to_string(), sslmode, rootcert))
}

/// libpq `key = value` pairs; values may be single-quoted with backslash escapes.
fn key_values(dsn: &str) -> Result<Vec<(String, String)>, TargetError> {
    let mut out = Vec::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(TargetError::Dsn(format!("`{key}` has no `=value`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(TargetError::Dsn(format!("unterminated quote in `{key}`"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// `%XX` escapes of a URL query value.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(dsn: &str) -> Result<Target, TargetError> {
        Target::parse_with(dsn, None)
    }

    #[test]
    fn key_value_and_url_forms_parse() {
        let t = parse("host=127.0.0.1 port=6432 user=app password='a b\\'c' dbname=shop sslmode=disable").unwrap();
        assert_eq!((t.user(), t.dbname(), t.mode), ("app", "shop", ServerMode::Disable));
        assert_eq!(t.config.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(t.config.get_ports(), &[6432]);
        let t = parse("postgres://app:secret@localhost:5433/shop?sslmode=require&application_name=x").unwrap();
        assert_eq!((t.user(), t.dbname(), t.mode), ("app", "shop", ServerMode::Require));
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(parse("host=h user=u").unwrap().dbname(), "u");
        assert!(parse("host=h user=u").unwrap().describe().contains("u@h:5432/u"));
    }

    #[test]
    fn bad_dsns_are_refused() {
        for dsn in ["host=h user=u sslmode=sometimes", "host=h user", "user=u", "host=h", "host=h user='u", "nonsense"]
        {
            assert!(parse(dsn).is_err(), "{dsn} should be refused");
        }
        // verify-ca needs a root certificate.
        assert!(matches!(parse("host=h user=u sslmode=verify-ca"), Err(TargetError::Tls(_))));
        let err = parse("host=h user=u sslmode=verify-full sslrootcert=/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn pgpassword_fills_a_missing_password() {
        let t = Target::parse_with("host=h user=u", Some("pw".into())).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
        let t = Target::parse_with("host=h user=u password=mine", Some("pw".into())).unwrap();
        assert_eq!(t.config.get_password(), Some(&b"mine"[..]));
    }
}
