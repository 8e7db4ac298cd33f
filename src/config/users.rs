//! The `users` list: names, and each user's secret resolved from exactly one of `password`,
//! `password_env` (an environment variable) or `password_file` (a file, trailing newline trimmed).
//! Wherever it comes from, the secret is a password or the SCRAM verifier PostgreSQL stores for it
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as `pg_authid.rolpassword` holds).

use super::UserConfig;
use super::reader::{Ctx, Fields, Item};

const SECRET_KEYS: [&str; 3] = ["password", "password_env", "password_file"];
const SECRET_CHOICE: &str = "needs exactly one of `password`, `password_env` or `password_file`";

/// Reads every user; names must be unique. A missing `users` key was already reported. Also
/// returns every name defined, including users whose secret failed (already reported), so that
/// references to them are not reported a second time.
pub(super) fn read_users(
    ctx: &mut Ctx<'_>,
    item: Option<Item<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
    md5_clients: bool,
) -> (Vec<UserConfig>, Vec<String>) {
    let Some(item) = item else { return (Vec::new(), Vec::new()) };
    let Some(elements) = ctx.list(&item) else {
        return (Vec::new(), Vec::new());
    };
    if elements.is_empty() {
        ctx.report_at(&item, "must list at least one user");
    }
    let mut users = Vec::new();
    let mut names: Vec<(String, String)> = Vec::new();
    for element in &elements {
        let (name, password) = read_user(ctx, element, env, md5_clients);
        // Names are checked for duplicates even when the user's secret failed.
        let Some((name, item)) = name else { continue };
        match names.iter().find(|(seen, _)| *seen == name) {
            Some((_, first)) => {
                let message = format!("duplicate user `{name}` (first defined at {first})");
                ctx.report_at(&item, message);
            }
            None => {
                names.push((name.clone(), item.path));
                users.extend(password.map(|password| UserConfig { name, password }));
            }
        }
    }
    (users, names.into_iter().map(|(name, _)| name).collect())
}

/// `admin_users`: a list of names, each one of `users` (`defined`), without repeats.
pub(super) fn read_admin_users(ctx: &mut Ctx<'_>, item: Option<Item<'_>>, defined: &[String]) -> Vec<String> {
    let Some(elements) = item.as_ref().and_then(|item| ctx.list(item)) else {
        return Vec::new();
    };
    let mut admins: Vec<(String, String)> = Vec::new();
    for element in &elements {
        let Some(name) = ctx.text(element) else { continue };
        if !defined.contains(&name) {
            ctx.report_at(element, format!("`{name}` is not one of the configured users"));
        } else if let Some((_, first)) = admins.iter().find(|(seen, _)| *seen == name) {
            ctx.report_at(element, format!("`{name}` duplicates {first}"));
        } else {
            admins.push((name, element.path.clone()));
        }
    }
    admins.into_iter().map(|(name, _)| name).collect()
}

/// One user's name (with its item, so duplicates can point at it) and secret.
fn read_user<'n>(
    ctx: &mut Ctx<'_>,
    element: &Item<'n>,
    env: &dyn Fn(&str) -> Option<String>,
    md5_clients: bool,
) -> (Option<(String, Item<'n>)>, Option<String>) {
    let mut fields = ctx.fields(Some(element), &element.path);
    let name = fields.require(ctx, "name").and_then(|item| Some((read_name(ctx, &item)?, item)));
    let password = read_secret(ctx, &mut fields, env, md5_clients);
    fields.finish(ctx);
    (name, password)
}

fn read_name(ctx: &mut Ctx<'_>, item: &Item<'_>) -> Option<String> {
    let name = ctx.text(item)?;
    if name.is_empty() || name.contains('\0') {
        ctx.report_at(item, "must be a non-empty name without NUL characters");
        return None;
    }
    Some(name)
}

fn read_secret(
    ctx: &mut Ctx<'_>,
    fields: &mut Fields<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    md5_clients: bool,
) -> Option<String> {
    let mut given: Vec<(&str, Item<'_>)> =
        SECRET_KEYS.into_iter().filter_map(|key| fields.get(key).map(|item| (key, item))).collect();
    // The first one written wins; the later ones are the conflicts.
    given.sort_by_key(|(_, item)| item.line());
    match given.as_slice() {
        [] => {
            fields.report_missing(ctx, SECRET_CHOICE);
            None
        }
        [(key, item)] => {
            let secret = resolve_secret(ctx, key, item, env)?;
            check_verifier(ctx, item, &secret, md5_clients).then_some(secret)
        }
        [(first, _), rest @ ..] => {
            for (_, item) in rest {
                let message = format!("conflicts with `{first}`: give only one of them");
                ctx.report_at(item, message);
            }
            None
        }
    }
}

fn resolve_secret(
    ctx: &mut Ctx<'_>,
    key: &str,
    item: &Item<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let value = ctx.text(item)?;
    let secret = match key {
        "password_env" => env(&value).ok_or(format!("environment variable `{value}` is not set")),
        "password_file" => read_secret_file(&value),
        _ => Ok(value),
    };
    match secret {
        Ok(secret) if secret.is_empty() => {
            ctx.report_at(item, "the password is empty");
            None
        }
        Ok(secret) => Some(secret),
        Err(message) => {
            ctx.report_at(item, message);
            None
        }
    }
}

/// A secret shaped like a SCRAM verifier must be a well-formed one (a typo must not turn it into a
/// password), and clients must authenticate with SCRAM: a verifier cannot check an MD5 response.
/// The value is never echoed.
fn check_verifier(ctx: &mut Ctx<'_>, item: &Item<'_>, secret: &str, md5_clients: bool) -> bool {
    if !crate::auth::is_scram_verifier(secret) {
        return true;
    }
    if crate::auth::scram::Verifier::parse(secret).is_none() {
        let message = "is not a valid SCRAM verifier (expected `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as pg_authid.rolpassword holds it)";
        ctx.report_at(item, message);
        return false;
    }
    if md5_clients {
        let message = "is a SCRAM verifier, which cannot check MD5 logins (clients.auth_method: md5): give the password, or let clients use scram-sha-256";
        ctx.report_at(item, message);
        return false;
    }
    true
}

/// `admin_token_file`: the admin endpoint's bearer token, from a file (trailing newline trimmed).
pub(super) fn read_token_file(ctx: &mut Ctx<'_>, item: &Item<'_>) -> Option<String> {
    let path = ctx.text(item)?;
    match read_secret_file(&path) {
        Ok(token) if token.trim().is_empty() => ctx.report_at(item, "the token file is empty"),
        Ok(token) if token.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            ctx.report_at(item, "the token must not contain whitespace")
        }
        Ok(token) => return Some(token),
        Err(message) => ctx.report_at(item, message),
    }
    None
}

/// Reads a secret file; one trailing newline (as editors and `echo` add) is not part of it.
fn read_secret_file(path: &str) -> Result<String, String> {
    crate::secret_files::warn_if_exposed("secret file", std::path::Path::new(path));
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read `{path}`: {err}"))?;
    let text = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    Ok(text.to_owned())
}
