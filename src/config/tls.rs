//! The `tls` (clients) and `server_tls` (servers) sections. Certificate and key files are loaded
//! here as pgmux will load them, so `pgmux check` also finds a key that does not fit its
//! certificate or a CA file without a certificate.

use std::path::PathBuf;

use super::reader::{Ctx, Item};
use super::{ServerTlsConfig, ServerTlsMode, TlsConfig, TlsMode};
use crate::tls::{Certified, Connector, ServerMode, TlsError};

const TLS_MODES: &[(&str, TlsMode)] = &[
    ("disable", TlsMode::Disable),
    ("allow", TlsMode::Allow),
    ("prefer", TlsMode::Prefer),
    ("require", TlsMode::Require),
];

const SERVER_TLS_MODES: &[(&str, ServerTlsMode)] = &[
    ("disable", ServerTlsMode::Disable),
    ("prefer", ServerTlsMode::Prefer),
    ("require", ServerTlsMode::Require),
    ("verify-ca", ServerTlsMode::VerifyCa),
    ("verify-full", ServerTlsMode::VerifyFull),
];

pub(super) fn read_tls(ctx: &mut Ctx<'_>, item: Option<Item<'_>>) -> TlsConfig {
    let mut f = ctx.fields(item.as_ref(), "tls");
    let mode_item = f.get("mode");
    let cert_item = f.get("cert_file");
    let key_item = f.get("key_file");
    f.finish(ctx);
    let mode = mode_item.as_ref().and_then(|v| ctx.choice(v, TLS_MODES));
    let cert = cert_item.as_ref().and_then(|v| ctx.text(v)).map(PathBuf::from);
    let key = key_item.as_ref().and_then(|v| ctx.text(v)).map(PathBuf::from);
    match (&cert_item, &key_item) {
        (Some(c), None) => ctx.report_at(c, "needs `key_file` too"),
        (None, Some(k)) => ctx.report_at(k, "needs `cert_file` too"),
        _ => {}
    }
    if let (Some(cert), Some(key), Some(cert_item), Some(key_item)) = (&cert, &key, &cert_item, &key_item)
        && let Err(e) = Certified::load(cert, key)
    {
        let at = match &e {
            TlsError::File { what, .. } if what.ends_with("key_file") => key_item,
            _ => cert_item,
        };
        ctx.report_at(at, file_message(e));
    }
    if mode == Some(TlsMode::Require)
        && (cert_item.is_none() || key_item.is_none())
        && let Some(m) = &mode_item
    {
        ctx.report_at(m, "`require` needs `cert_file` and `key_file` (pgmux's certificate)");
    }
    TlsConfig { mode: mode.unwrap_or_default(), cert_file: cert, key_file: key }
}

pub(super) fn read_server_tls(ctx: &mut Ctx<'_>, item: Option<Item<'_>>) -> ServerTlsConfig {
    let mut f = ctx.fields(item.as_ref(), "server_tls");
    let mode_item = f.get("mode");
    let ca_item = f.get("ca_file");
    f.finish(ctx);
    let mode = mode_item.as_ref().and_then(|v| ctx.choice(v, SERVER_TLS_MODES)).unwrap_or_default();
    let ca = ca_item.as_ref().and_then(|v| ctx.text(v)).map(PathBuf::from);
    let verifies = matches!(mode, ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull);
    // `require` takes a CA too (then it checks the chain, as libpq does with a root certificate).
    let takes_ca = verifies || mode == ServerTlsMode::Require;
    match (&ca_item, &mode_item) {
        (None, Some(m)) if verifies => ctx.report_at(m, "`verify-ca` and `verify-full` need `ca_file`"),
        (Some(c), _) if !takes_ca => {
            ctx.report_at(c, "is only used with mode `require`, `verify-ca` or `verify-full`");
        }
        (Some(c), _) => {
            if let Some(path) = &ca
                && let Err(e) = Connector::new(ServerMode::VerifyCa, Some(path))
            {
                ctx.report_at(c, file_message(e));
            }
        }
        _ => {}
    }
    ServerTlsConfig { mode, ca_file: ca }
}

/// The problem text for a file that failed to load (the key path already names the setting).
fn file_message(e: TlsError) -> String {
    match e {
        TlsError::File { path, detail, .. } => format!("`{path}`: {detail}"),
        TlsError::Config(m) => m,
    }
}
