//! The untyped, line-annotated YAML tree that validation walks, and the one call into
//! serde-saphyr that produces it.
//!
//! Deserializing straight into typed structs would stop at the first error and lose the key path,
//! so the whole document is read into [`Node`]s (a value plus its source location) first.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{NonFiniteFloatPolicy, SnippetMode, Spanned};

use super::Problem;

/// A YAML value with the location it was written at (`referenced`) and, for aliases, the location
/// of the anchored definition (`defined`).
pub(super) type Node = Spanned<Value>;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// `~`, `null` or nothing at all.
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// A string that `${VAR}` expansion changed; unlike `Str` it may also stand for a number.
    Env(String),
    Seq(Vec<Node>),
    /// Entries in document order (duplicate keys are rejected by the parser).
    Map(Vec<(Node, Node)>),
    /// A value that already produced a problem (failed expansion); readers skip it silently.
    Invalid,
}

impl Value {
    /// What kind of value this is, for "expected X, found Y" messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) | Value::Env(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Invalid => "an invalid value",
        }
    }

    /// This value used as a mapping key, as it appears in problem paths.
    pub(super) fn key_name(&self) -> String {
        match self {
            Value::Str(text) | Value::Env(text) => text.clone(),
            Value::Int(n) => n.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => "~".to_owned(),
            Value::Seq(_) | Value::Map(_) | Value::Invalid => "?".to_owned(),
        }
    }
}

/// The 1-based line a node was written at, if known.
pub(super) fn line_of(node: &Node) -> Option<usize> {
    match node.referenced.line() {
        0 => None,
        line => usize::try_from(line).ok(),
    }
}

/// Parses `text` into a tree; broken YAML syntax becomes a single problem at its line.
pub(super) fn parse(text: &str) -> Result<Node, Problem> {
    let options = serde_saphyr::options! {
        // Only `true`/`false` are booleans, so `password: yes` or a key `y` stay strings.
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        non_finite_float_policy: NonFiniteFloatPolicy::AsString,
        with_snippet: false,
    };
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|err| {
        let line = err.location().and_then(|loc| usize::try_from(loc.line()).ok());
        let rendered = err.render_with_options(serde_saphyr::render_options! {
            snippets: SnippetMode::Off,
        });
        Problem {
            path: String::new(),
            line: line.filter(|&line| line > 0),
            message: format!("invalid YAML: {rendered}"),
        }
    })
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Value::deserialize(deserializer)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v).map(Value::Int).map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(node: &Node) -> &[(Node, Node)] {
        match &node.value {
            Value::Map(entries) => entries,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn keeps_lines_and_scalar_types() {
        let tree = parse("a: 1\nb:\n  - x\n  - 2.5\nc: yes\nd: ~\n").expect("valid YAML");
        let map = entries(&tree);
        assert_eq!(map[0].1.value, Value::Int(1));
        assert_eq!(line_of(&map[1].0), Some(2));
        let Value::Seq(items) = &map[1].1.value else { panic!("b is a list") };
        assert_eq!(items[0].value, Value::Str("x".into()));
        assert_eq!(line_of(&items[1]), Some(4));
        assert_eq!(items[1].value, Value::Float(2.5));
        assert_eq!(map[2].1.value, Value::Str("yes".into()));
        assert_eq!(map[3].1.value, Value::Null);
    }

    #[test]
    fn syntax_error_is_one_problem_with_a_line() {
        let problem = parse("a: 1\nb: [1,\n").expect_err("unclosed bracket");
        assert!(problem.line.is_some(), "{problem:?}");
        assert!(problem.message.starts_with("invalid YAML"), "{problem:?}");
    }

    #[test]
    fn duplicate_key_is_rejected_at_its_line() {
        let problem = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate key");
        assert_eq!(problem.line, Some(3));
        assert!(problem.message.contains("duplicate"), "{problem:?}");
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("").expect("empty is valid").value, Value::Null);
        assert_eq!(parse("# only a comment\n").expect("valid").value, Value::Null);
    }
}
