//! `${VAR}` environment expansion: one pass over every string value of the parsed tree.
//!
//! Expanding after parsing (not on the raw text) means a substituted value can never change the
//! YAML structure (a password containing `: ` or `#`) and line numbers stay those of the file.
//! `$$` is a literal `$`; a `$` followed by anything else is kept as is.

use super::Problem;
use super::raw::{Node, Value, line_of};

/// Expands all string values in place; each value that fails becomes [`Value::Invalid`] so that
/// later steps do not report it a second time.
pub(super) fn expand_tree(tree: &mut Node, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    walk(tree, "", env, &mut problems);
    problems
}

fn walk(node: &mut Node, path: &str, env: &dyn Fn(&str) -> Option<String>, out: &mut Vec<Problem>) {
    let line = line_of(node);
    match &mut node.value {
        Value::Str(text) => match expand_str(text, env) {
            Ok(Expanded { text, substituted: true }) => node.value = Value::Env(text),
            Ok(Expanded { text, substituted: false }) => node.value = Value::Str(text),
            Err(messages) => {
                out.extend(messages.into_iter().map(|message| Problem { path: path.to_owned(), line, message }));
                node.value = Value::Invalid;
            }
        },
        Value::Seq(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                walk(item, &format!("{path}[{index}]"), env, out);
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                let name = key.value.key_name();
                let child = if path.is_empty() { name } else { format!("{path}.{name}") };
                walk(value, &child, env, out);
            }
        }
        _ => {}
    }
}

/// The result of expanding one string.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Expanded {
    pub(super) text: String,
    /// Whether at least one `${VAR}` was substituted.
    pub(super) substituted: bool,
}

/// Expands `${VAR}` and `$$` in `text`; on failure returns one message per bad reference.
pub(super) fn expand_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut substituted = false;
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                // The value itself is never shown: it may be a password.
                errors.push("unterminated `${` (the value is not shown)".to_string());
                break;
            };
            match lookup(&body[..close], env) {
                Ok(value) => out.push_str(&value),
                Err(message) => errors.push(message),
            }
            substituted = true;
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(Expanded { text: out, substituted }) } else { Err(errors) }
}

fn lookup(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !is_var_name(name) {
        // Not echoed: in a password, what follows `${` is part of the secret.
        return Err("a `${…}` is not a valid variable reference (use letters, digits and `_`)".to_string());
    }
    env(name).ok_or_else(|| format!("environment variable `{name}` is not set"))
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "PORT" => Some("5432".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn ok(text: &str) -> (String, bool) {
        let expanded = expand_str(text, &env).expect("expands");
        (expanded.text, expanded.substituted)
    }

    #[test]
    fn expansion_table() {
        assert_eq!(ok("plain"), ("plain".into(), false));
        assert_eq!(ok("${HOST}:${PORT}"), ("db.internal:5432".into(), true));
        assert_eq!(ok("x${EMPTY}y"), ("xy".into(), true));
        assert_eq!(ok("cost $$5"), ("cost $5".into(), false));
        assert_eq!(ok("$$${PORT}"), ("$5432".into(), true));
        assert_eq!(ok("a$b $"), ("a$b $".into(), false));
        assert_eq!(ok("pa$$w{rd}"), ("pa$w{rd}".into(), false));
    }

    #[test]
    fn every_unset_variable_is_named() {
        let errors = expand_str("${NOPE}:${PORT}:${ALSO_NOPE}", &env).expect_err("unset");
        assert_eq!(errors.len(), 2);
        assert!(errors[0].contains("`NOPE`"), "{errors:?}");
        assert!(errors[1].contains("`ALSO_NOPE`"), "{errors:?}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(expand_str("${HOST", &env).is_err());
        assert!(expand_str("${}", &env).is_err());
        assert!(expand_str("${1X}", &env).is_err());
        assert!(expand_str("${A-B}", &env).is_err());
    }
}
