//! Reading typed values out of the raw tree: every getter either returns a value or records a
//! [`Problem`] with the key path and line, so one pass finds every mistake.
//!
//! A getter that fails returns `None`; callers substitute the default and carry on, since the
//! config is discarded anyway once any problem was recorded.

use std::time::Duration;

use super::Problem;
use super::duration::parse_duration;
use super::raw::{Node, Value, line_of};

/// Collects problems and knows the source text (to recover the spelling of plain scalars).
pub(super) struct Ctx<'a> {
    source: &'a str,
    pub(super) problems: Vec<Problem>,
}

/// A value found in the tree, with its key path.
pub(super) struct Item<'n> {
    pub(super) node: &'n Node,
    pub(super) path: String,
}

impl Item<'_> {
    pub(super) fn line(&self) -> Option<usize> {
        line_of(self.node)
    }
}

impl<'a> Ctx<'a> {
    pub(super) fn new(source: &'a str) -> Self {
        Ctx { source, problems: Vec::new() }
    }

    pub(super) fn report(&mut self, path: &str, line: Option<usize>, message: impl Into<String>) {
        let problem = Problem { path: path.to_owned(), line, message: message.into() };
        self.problems.push(problem);
    }

    pub(super) fn report_at(&mut self, item: &Item<'_>, message: impl Into<String>) {
        self.report(&item.path, item.line(), message);
    }

    /// A string; plain numbers and booleans are taken as written (`password: 0123`).
    pub(super) fn text(&mut self, item: &Item<'_>) -> Option<String> {
        self.scalar_text(item, "a string")
    }

    /// A whole number of at least `min`; a `${VAR}` that expanded to digits also counts.
    pub(super) fn count(&mut self, item: &Item<'_>, min: usize) -> Option<usize> {
        let parsed = match &item.node.value {
            Value::Int(n) => usize::try_from(*n).ok(),
            Value::Env(text) => text.trim().parse().ok(),
            Value::Invalid => return None,
            other => {
                let message = format!("expected a whole number, found {}", other.kind());
                self.report_at(item, message);
                return None;
            }
        };
        match parsed {
            Some(n) if n >= min => Some(n),
            _ => {
                let written = match &item.node.value {
                    Value::Env(text) => text.clone(),
                    _ => self.spelling(item.node),
                };
                self.report_at(item, format!("`{written}`: must be a whole number >= {min}"));
                None
            }
        }
    }

    /// A duration with a unit; zero is refused unless `allow_zero`.
    pub(super) fn duration(&mut self, item: &Item<'_>, allow_zero: bool) -> Option<Duration> {
        let text = self.scalar_text(item, "a duration such as `5s`")?;
        match parse_duration(&text) {
            Ok(duration) if duration.is_zero() && !allow_zero => {
                self.report_at(item, "must be longer than zero");
                None
            }
            Ok(duration) => Some(duration),
            Err(message) => {
                self.report_at(item, message);
                None
            }
        }
    }

    /// A byte size with a unit (`64MB`), within `min..=max`.
    pub(super) fn size(&mut self, item: &Item<'_>, min: usize, max: usize) -> Option<usize> {
        let text = self.scalar_text(item, "a size such as `64MB`")?;
        match super::size::parse_size(&text) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            Ok(_) => {
                let (lo, hi) = (super::size::format_size(min), super::size::format_size(max));
                self.report_at(item, format!("`{text}`: must be between {lo} and {hi}"));
                None
            }
            Err(message) => {
                self.report_at(item, message);
                None
            }
        }
    }

    /// One of a fixed set of words, e.g. `transaction` / `session`.
    pub(super) fn choice<T: Copy>(&mut self, item: &Item<'_>, choices: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let expected = format!("one of: {}", names.join(", "));
        let text = self.scalar_text(item, &expected)?;
        let found = choices.iter().find(|(name, _)| *name == text);
        if found.is_none() {
            self.report_at(item, format!("`{text}` is not {expected}"));
        }
        found.map(|(_, value)| *value)
    }

    /// The elements of a list, each with its indexed path (`servers[2]`).
    pub(super) fn list<'n>(&mut self, item: &Item<'n>) -> Option<Vec<Item<'n>>> {
        match &item.node.value {
            Value::Seq(nodes) => Some(
                nodes
                    .iter()
                    .enumerate()
                    .map(|(index, node)| Item { node, path: format!("{}[{index}]", item.path) })
                    .collect(),
            ),
            Value::Invalid => None,
            other => {
                self.report_at(item, format!("expected a list, found {}", other.kind()));
                None
            }
        }
    }

    /// Opens a mapping for reading its keys; an absent or empty value reads as `{}`.
    pub(super) fn fields<'n>(&mut self, item: Option<&Item<'n>>, path: &str) -> Fields<'n> {
        let mut fields = Fields::empty(path, item.and_then(Item::line));
        match item.map(|item| &item.node.value) {
            None | Some(Value::Null) => {}
            Some(Value::Map(entries)) => fields.entries = entries.iter().map(Entry::new).collect(),
            Some(other) => {
                let message = format!("expected a mapping, found {}", other.kind());
                self.report(path, fields.line, message);
                fields.broken = true;
            }
        }
        fields
    }

    fn scalar_text(&mut self, item: &Item<'_>, expected: &str) -> Option<String> {
        match &item.node.value {
            Value::Str(text) | Value::Env(text) => Some(text.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => Some(self.spelling(item.node)),
            Value::Invalid => None,
            other => {
                self.report_at(item, format!("expected {expected}, found {}", other.kind()));
                None
            }
        }
    }

    /// How a scalar was written in the file, e.g. `1e3` rather than `1000`.
    fn spelling(&self, node: &Node) -> String {
        let span = node.defined.span();
        let written = span.byte_offset().zip(span.byte_len()).and_then(|(start, len)| {
            let start = usize::try_from(start).ok()?;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            self.source.get(start..end)
        });
        written.map_or_else(|| node.value.key_name(), str::to_owned)
    }
}

/// The entries of one mapping, tracking which keys were read so the rest can be reported.
pub(super) struct Fields<'n> {
    path: String,
    line: Option<usize>,
    entries: Vec<Entry<'n>>,
    known: Vec<&'static str>,
    /// The value was not a mapping (already reported): don't also report its keys as missing.
    broken: bool,
}

struct Entry<'n> {
    name: String,
    key: &'n Node,
    value: &'n Node,
    used: bool,
}

impl<'n> Entry<'n> {
    fn new((key, value): &'n (Node, Node)) -> Self {
        Entry { name: key.value.key_name(), key, value, used: false }
    }
}

impl<'n> Fields<'n> {
    fn empty(path: &str, line: Option<usize>) -> Self {
        Fields { path: path.to_owned(), line, entries: Vec::new(), known: Vec::new(), broken: false }
    }

    /// Opens the document root, which must be a mapping.
    pub(super) fn root(ctx: &mut Ctx<'_>, tree: &'n Node) -> Self {
        let item = Item { node: tree, path: String::new() };
        let mut fields = ctx.fields(Some(&item), "");
        fields.line = None;
        fields
    }

    /// Reports something missing from this mapping as a whole (at the mapping's own line).
    pub(super) fn report_missing(&self, ctx: &mut Ctx<'_>, message: &str) {
        if !self.broken {
            ctx.report(&self.path, self.line, message);
        }
    }

    /// The value under `key`; absent and `~` both read as `None`.
    pub(super) fn get(&mut self, key: &'static str) -> Option<Item<'n>> {
        self.known.push(key);
        let path = self.child_path(key);
        let entry = self.entries.iter_mut().find(|entry| entry.name == key)?;
        entry.used = true;
        let node = entry.value;
        (node.value != Value::Null).then_some(Item { node, path })
    }

    /// Like [`Fields::get`], but a missing value is a problem.
    pub(super) fn require(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<Item<'n>> {
        let item = self.get(key);
        if item.is_none() && !self.broken {
            ctx.report(&self.child_path(key), self.line, "is required");
        }
        item
    }

    /// Reports every key that no getter asked for.
    pub(super) fn finish(self, ctx: &mut Ctx<'_>) {
        for entry in self.entries.iter().filter(|entry| !entry.used) {
            let mut message = format!("unknown key `{}`", entry.name);
            if let Some(near) = closest(&entry.name, &self.known) {
                message.push_str(&format!("; did you mean `{near}`?"));
            }
            ctx.report(&self.child_path(&entry.name), line_of(entry.key), message);
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }
}

/// The known key within edit distance 2 of `name`, if any.
fn closest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|&candidate| (edit_distance(name, candidate), candidate))
        .filter(|&(distance, _)| distance <= 2)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}
