//! A deliberately coarse look at SQL text: could this statement change session state that pgmux
//! must carry (settings, roles) or that pins the client to its server connection (temp objects,
//! session advisory locks, LISTEN, cursors WITH HOLD, SQL-level PREPARE, LOAD)? A yes only costs one
//! verification query against the server after the transaction; the server's answer decides.
//!
//! The text is one of three witnesses: the command tags the server reports (`command_tag_is_plain`)
//! and any ParameterStatus it sends mid-transaction catch what the text hides (a SET after a
//! comment, a DO block, a CALL). What only the text shows is a function call: any call but a short
//! list of side-effect-free built-ins may run user code that does anything (set_config, CREATE
//! TEMP TABLE, dynamic SQL), so it asks for the check too.

/// What a statement might do to the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// Might have changed settings, roles or pinning state: ask the server after the transaction.
    pub check: bool,
    /// LOAD: a library stays loaded for the connection's life; it can never be unpinned.
    pub load: bool,
}

impl Effects {
    pub const CHECK: Effects = Effects { check: true, load: false };

    pub fn any(self) -> bool {
        self.check || self.load
    }

    pub fn merge(&mut self, other: Effects) {
        self.check |= other.check;
        self.load |= other.load;
    }
}

/// Statements that leave the session as they found it (unless they call functions, which the
/// lexer sees): transaction control, DML, reads, cursor movement, COPY.
const PLAIN_STARTS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "with",
    "values",
    "table",
    "begin",
    "start",
    "commit",
    "end",
    "rollback",
    "abort",
    "savepoint",
    "release",
    "fetch",
    "move",
    "copy",
    "show",
    "lock",
    "truncate",
    "explain",
];

/// Words that make even a plain statement session-changing: temp objects (also through the
/// `pg_temp` schema) and WITH HOLD cursors.
const STATE_WORDS: &[&str] = &["temp", "temporary", "pg_temp", "hold"];

/// Classifies SQL text (one or more statements). Case-insensitive, over-approximating: string
/// literals, quoted identifiers, dollar quotes and comments are skipped so that nothing after them
/// is misread, and anything the lexer cannot place asks for the check.
pub fn classify(sql: &[u8]) -> Effects {
    let mut fx = Effects::default();
    let mut at_statement_start = true;
    // The previous word, lowercased (types and table names before '(' are not calls).
    let mut prev: &[u8] = b"";
    let mut prev_was_cast = false;
    let n = sql.len();
    let mut i = 0;
    while i < n {
        let b = sql[i];
        match b {
            b'\'' => {
                // Where a literal with a backslash ends depends on E'…' and standard_conforming_strings:
                // rather than guess, ask the server.
                let end = skip_quoted(sql, i, b'\'');
                fx.check |= sql[i..end].contains(&b'\\');
                i = end;
                at_statement_start = false;
            }
            b'"' => {
                let end = skip_quoted(sql, i, b'"');
                // A quoted name called like a function: nobody knows what it is.
                fx.check |= next_is_paren(sql, end) && !prev_was_cast;
                i = end;
                at_statement_start = false;
                prev = b"";
            }
            b'$' if i + 1 < n && sql[i + 1].is_ascii_digit() => {
                i += 1;
                while i < n && sql[i].is_ascii_digit() {
                    i += 1;
                }
            }
            b'$' => match dollar_tag_end(sql, i) {
                Some(tag_end) => {
                    let tag = &sql[i..tag_end];
                    i = find(sql, tag_end, tag).map(|p| p + tag.len()).unwrap_or(n);
                    at_statement_start = false;
                }
                None => i += 1,
            },
            b'-' if i + 1 < n && sql[i + 1] == b'-' => {
                while i < n && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if i + 1 < n && sql[i + 1] == b'*' => {
                let mut depth = 0usize;
                while i < n {
                    if sql[i] == b'/' && i + 1 < n && sql[i + 1] == b'*' {
                        depth += 1;
                        i += 2;
                    } else if sql[i] == b'*' && i + 1 < n && sql[i + 1] == b'/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b';' => {
                at_statement_start = true;
                prev = b"";
                i += 1;
            }
            b':' if i + 1 < n && sql[i + 1] == b':' => {
                prev_was_cast = true;
                i += 2;
                continue;
            }
            _ if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {
                let start = i;
                while i < n && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] == b'$' || sql[i] >= 0x80) {
                    i += 1;
                }
                let word = &sql[start..i];
                let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
                if at_statement_start {
                    fx.check |= !PLAIN_STARTS.iter().any(|w| is(w));
                    fx.load |= is("load");
                    at_statement_start = false;
                }
                fx.check |= STATE_WORDS.iter().any(|w| is(w));
                let qualified = i < n && sql[i] == b'.';
                let qualifier_ok = prev_qualifier_ok(sql, start);
                if !qualified && next_is_paren(sql, i) {
                    let lower = word.to_ascii_lowercase();
                    let lower = std::str::from_utf8(&lower).unwrap_or("");
                    let known = qualifier_ok
                        && (SAFE_FUNCTIONS.contains(&lower)
                            || SESSION_NEUTRAL_FUNCTIONS.contains(&lower)
                            || is_keyword_before_paren(lower)
                            || is_type_name(lower));
                    // `INSERT INTO t (…)`, `::numeric(10, 2)`, `AS t(a, b)` name tables and types.
                    let not_a_call = prev_was_cast
                        || prev.eq_ignore_ascii_case(b"into")
                        || prev.eq_ignore_ascii_case(b"as")
                        || prev.eq_ignore_ascii_case(b"table");
                    fx.check |= !known && !not_a_call;
                }
                prev = word;
                prev_was_cast = false;
                continue;
            }
            _ => i += 1,
        }
        if !b.is_ascii_whitespace() {
            prev_was_cast = false;
        }
    }
    fx
}

/// Skips a quoted literal or identifier starting at `start`; returns the index after it.
fn skip_quoted(sql: &[u8], start: usize, quote: u8) -> usize {
    let n = sql.len();
    let mut i = start + 1;
    while i < n {
        if sql[i] == quote {
            if i + 1 < n && sql[i + 1] == quote {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    n
}

/// `$tag$` opening a dollar-quoted string at `i`: the index after its closing `$`.
fn dollar_tag_end(sql: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < sql.len() && (sql[j].is_ascii_alphanumeric() || sql[j] == b'_' || sql[j] >= 0x80) {
        j += 1;
    }
    (j < sql.len() && sql[j] == b'$').then_some(j + 1)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn next_is_paren(sql: &[u8], mut i: usize) -> bool {
    while i < sql.len() && sql[i].is_ascii_whitespace() {
        i += 1;
    }
    i < sql.len() && sql[i] == b'('
}

/// A call's schema, if written, must be pg_catalog for a safe built-in to be what it says.
fn prev_qualifier_ok(sql: &[u8], word_start: usize) -> bool {
    if word_start == 0 || sql[word_start - 1] != b'.' {
        return true;
    }
    sql[..word_start - 1].to_ascii_lowercase().ends_with(b"pg_catalog")
}

/// Built-ins that may write or be volatile (so not in `SAFE_FUNCTIONS`, which routes to replicas)
/// but change nothing the session-state check could find: calling them needs no check.
const SESSION_NEUTRAL_FUNCTIONS: &[&str] = &[
    "nextval",
    "currval",
    "setval",
    "lastval",
    "pg_backend_pid",
    "txid_current",
    "pg_current_xact_id",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "random",
    "gen_random_uuid",
    "pg_sleep",
    "generate_series",
    "unnest",
    "array_to_string",
    "string_to_array",
    "array_append",
    "array_remove",
    "to_json",
    "to_jsonb",
    "row_to_json",
    "jsonb_set",
    "encode",
    "decode",
    "regexp_replace",
    "regexp_matches",
    "initcap",
    "repeat",
    "reverse",
    "char_length",
    "octet_length",
    "pg_typeof",
    "current_database",
    "current_schema",
    "pg_current_wal_lsn",
    "pg_last_wal_replay_lsn",
    "age",
    "make_date",
    "make_interval",
    "quote_ident",
    "quote_literal",
    "pg_column_size",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_size_pretty",
];

/// Type names written with a modifier in parentheses.
fn is_type_name(w: &str) -> bool {
    matches!(
        w,
        "varchar"
            | "char"
            | "character"
            | "varying"
            | "numeric"
            | "decimal"
            | "float"
            | "bit"
            | "timestamp"
            | "time"
            | "timestamptz"
            | "timetz"
    )
}

/// Whether a CommandComplete tag names a statement that leaves the session as it found it, apart
/// from what the functions it called did (the text tells those). Anything else — SET, RESET,
/// DISCARD, CREATE, DO, CALL, LISTEN, PREPARE, DEALLOCATE, DECLARE CURSOR, CLOSE, LOAD, … — asks for
/// the check. `tag` is the message body (NUL-terminated).
pub fn command_tag_is_plain(tag: &[u8]) -> bool {
    let word_end = tag.iter().position(|&b| b == b' ' || b == 0).unwrap_or(tag.len());
    matches!(
        &tag[..word_end],
        b"SELECT"
            | b"INSERT"
            | b"UPDATE"
            | b"DELETE"
            | b"MERGE"
            | b"BEGIN"
            | b"START"
            | b"COMMIT"
            | b"ROLLBACK"
            | b"SAVEPOINT"
            | b"RELEASE"
            | b"FETCH"
            | b"MOVE"
            | b"COPY"
            | b"SHOW"
            | b"LOCK"
            | b"TRUNCATE"
            | b"EXPLAIN"
    )
}

/// Whether `sql` starts with a transaction that is declared read-only: `BEGIN READ ONLY`,
/// `START TRANSACTION ISOLATION LEVEL … READ ONLY`, or `BEGIN; SET TRANSACTION READ ONLY` sent
/// together. Anything else (including READ WRITE) is not.
pub fn begins_read_only(sql: &[u8]) -> bool {
    let sql = sql.strip_suffix(b"\0").unwrap_or(sql);
    // Cheap exit for the common case (runs on every borrow): only BEGIN / START can qualify.
    let start = sql.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(sql.len());
    let head = &sql[start..(start + 5).min(sql.len())];
    if !head.eq_ignore_ascii_case(b"begin") && !head.eq_ignore_ascii_case(b"start") {
        return false;
    }
    let text = String::from_utf8_lossy(sql).to_ascii_lowercase();
    let mut statements = text.split(';').map(|s| s.split_whitespace().collect::<Vec<_>>());
    let Some(first) = statements.next() else { return false };
    let starts_tx = matches!(first.as_slice(), ["begin", ..] | ["start", "transaction", ..]);
    if !starts_tx {
        return false;
    }
    let read_only = |words: &[&str]| words.windows(2).any(|w| w == ["read", "only"]);
    if read_only(&first) {
        return true;
    }
    // `BEGIN; SET TRANSACTION READ ONLY` in the same message.
    first.len() == 1 && statements.next().is_some_and(|w| w.starts_with(&["set", "transaction"]) && read_only(&w))
}

/// Functions a read-only SELECT may call and still be safe on a replica (stable or immutable, no
/// side effects). Anything else — user functions above all, whose volatility no parser can see —
/// keeps the statement on the primary.
const SAFE_FUNCTIONS: &[&str] = &[
    "abs",
    "array_agg",
    "array_length",
    "avg",
    "bool_and",
    "bool_or",
    "cast",
    "ceil",
    "coalesce",
    "concat",
    "concat_ws",
    "count",
    "current_date",
    "current_setting",
    "date_part",
    "date_trunc",
    "exists",
    "extract",
    "floor",
    "format",
    "greatest",
    "in",
    "inet_server_port",
    "json_agg",
    "json_build_object",
    "jsonb_agg",
    "jsonb_build_object",
    "least",
    "left",
    "length",
    "lower",
    "lpad",
    "ltrim",
    "max",
    "md5",
    "min",
    "mod",
    "now",
    "nullif",
    "pg_is_in_recovery",
    "position",
    "power",
    "rank",
    "replace",
    "right",
    "round",
    "row_number",
    "rpad",
    "rtrim",
    "split_part",
    "sqrt",
    "string_agg",
    "strpos",
    "substr",
    "substring",
    "sum",
    "to_char",
    "to_date",
    "to_number",
    "to_timestamp",
    "trim",
    "trunc",
    "upper",
    "values",
    "version",
    "any",
    "all",
];

/// Words that make a SELECT more than a read: locking clauses, SELECT INTO, data-modifying CTEs.
const WRITE_WORDS: &[&str] =
    &["into", "for", "insert", "update", "delete", "merge", "lock", "nextval", "setval", "call", "do", "copy"];

/// Conservative: is `sql` a single SELECT (or VALUES / read-only WITH) that provably only reads?
/// Unknown means no: string literals, quoted identifiers and comments are skipped, any function
/// call outside `SAFE_FUNCTIONS`, any locking clause or write keyword, or a second statement
/// sends it to the primary.
pub fn select_is_read_only(sql: &[u8]) -> bool {
    let mut words: Vec<(String, bool)> = Vec::new(); // (lowercase word, followed by '(')
    let mut i = 0;
    let n = sql.len();
    let mut saw_semicolon = false;
    while i < n {
        let b = sql[i];
        match b {
            b'\'' | b'"' => {
                // Literal or quoted identifier: skip to the closing quote ('' / "" escape it).
                i += 1;
                while i < n {
                    if sql[i] == b {
                        if i + 1 < n && sql[i + 1] == b {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            // $1 is a parameter; anything else is dollar quoting: not worth the risk.
            b'$' if i + 1 < n && sql[i + 1].is_ascii_digit() => {
                i += 1;
                while i < n && sql[i].is_ascii_digit() {
                    i += 1;
                }
            }
            b'$' => return false,
            b'-' if i + 1 < n && sql[i + 1] == b'-' => {
                while i < n && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if i + 1 < n && sql[i + 1] == b'*' => return false,
            b';' => {
                saw_semicolon = true;
                i += 1;
            }
            b'\0' => i += 1,
            _ if b.is_ascii_alphabetic() || b == b'_' => {
                if saw_semicolon {
                    return false;
                }
                let start = i;
                while i < n && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] == b'.') {
                    i += 1;
                }
                let word = String::from_utf8_lossy(&sql[start..i]).to_ascii_lowercase();
                let mut j = i;
                while j < n && sql[j].is_ascii_whitespace() {
                    j += 1;
                }
                words.push((word, j < n && sql[j] == b'('));
            }
            _ => i += 1,
        }
    }
    let Some((first, _)) = words.first() else { return false };
    if !matches!(first.as_str(), "select" | "values" | "with" | "table") {
        return false;
    }
    words.iter().all(|(w, call)| {
        let base = w.rsplit('.').next().unwrap_or(w);
        !WRITE_WORDS.contains(&base) && (!call || SAFE_FUNCTIONS.contains(&base) || is_keyword_before_paren(base))
    })
}

/// Keywords that are followed by a parenthesis without being function calls.
fn is_keyword_before_paren(w: &str) -> bool {
    matches!(
        w,
        "select"
            | "from"
            | "where"
            | "and"
            | "or"
            | "not"
            | "as"
            | "on"
            | "join"
            | "using"
            | "over"
            | "filter"
            | "within"
            | "group"
            | "by"
            | "partition"
            | "order"
            | "having"
            | "union"
            | "intersect"
            | "except"
            | "with"
            | "lateral"
            | "case"
            | "when"
            | "then"
            | "else"
            | "is"
            | "between"
            | "like"
            | "ilike"
            | "distinct"
            | "array"
            | "row"
            | "interval"
            | "set"
            | "limit"
            | "offset"
            | "returning"
            | "conflict"
            | "values"
            | "in"
            | "some"
            | "table"
            | "if"
            | "nulls"
            | "rollup"
            | "cube"
            | "sets"
            | "grouping"
            | "similar"
            | "escape"
            | "at"
            | "zone"
    )
}

/// PostgreSQL's spellings of a true boolean setting.
pub fn is_on(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1" | "t" | "y")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_selects() {
        for sql in [
            "select 1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0",
            "select count(*), max(x) from t where s = 'insert into; nextval(' group by y",
            "with a as (select 1 as x) select x from a",
            "select \"for\" from t -- for update\n",
            "values (1), (2)",
        ] {
            assert!(select_is_read_only(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "select * from t for update",
            "select nextval('s')",
            "select my_func(1)",
            "select 1; delete from t",
            "with d as (delete from t returning *) select * from d",
            "select * into t2 from t",
            "insert into t select 1",
            "select pg_advisory_lock(1)",
            "select set_config('a', 'b', false)",
            "select /* x */ 1",
            "select $$x$$",
            "",
        ] {
            assert!(!select_is_read_only(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn read_only_transactions() {
        for sql in [
            "BEGIN READ ONLY",
            "begin transaction read only; select 1",
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            "begin; set transaction read only; select 1",
            "begin read only\0",
        ] {
            assert!(begins_read_only(sql.as_bytes()), "{sql}");
        }
        for sql in
            ["begin", "begin read write", "select 1; begin read only", "begin; select 1", "insert into t values (1)"]
        {
            assert!(!begins_read_only(sql.as_bytes()), "{sql}");
        }
    }

    fn fx(s: &str) -> (bool, bool) {
        let e = classify(s.as_bytes());
        (e.check, e.load)
    }

    #[test]
    fn classification_table() {
        let cases = [
            ("select 1", (false, false)),
            ("SELECT abalance FROM pgbench_accounts WHERE aid = $1", (false, false)),
            ("UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", (false, false)),
            (
                "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
                (false, false),
            ),
            (
                "select count(*), lower(x), $1::varchar(10), cast(y as numeric(10, 2)) from t where z in (1, 2)",
                (false, false),
            ),
            ("begin; select 1; commit", (false, false)),
            ("select 'set_config(', \"x\" from t -- my_func(\n", (false, false)),
            ("select E'\\'', my_func()", (true, false)),
            ("select 'a\\', 1", (true, false)),
            ("select $$ ; set x $$, my_func()", (true, false)),
            ("select /* /* nested */ my_func( */ 1", (false, false)),
            ("SET search_path = a", (true, false)),
            ("-- comment\nset work_mem = 1", (true, false)),
            ("begin; set local work_mem = '1MB'", (true, false)),
            ("select set_config('a.b', 'c', false)", (true, false)),
            ("select pg_catalog.set_config('a.b', 'c', false)", (true, false)),
            ("select myschema.lower('x')", (true, false)),
            ("select pg_catalog.lower('x')", (false, false)),
            ("select \"lower\"('x')", (true, false)),
            ("select my_func(1)", (true, false)),
            ("select pg_backend_pid(), nextval('s')", (false, false)),
            ("reset all", (true, false)),
            ("create temp table t(x int)", (true, false)),
            ("select 1 into pg_temp.t", (true, false)),
            ("CREATE TEMPORARY VIEW v AS SELECT 1", (true, false)),
            ("select pg_advisory_lock(1)", (true, false)),
            ("listen chan", (true, false)),
            ("declare c cursor with hold for select 1", (true, false)),
            ("prepare p as select 1", (true, false)),
            ("execute p", (true, false)),
            ("do $$begin perform 1; end$$", (true, false)),
            ("call p()", (true, false)),
            ("discard all", (true, false)),
            ("load 'auto_explain'", (true, true)),
            ("select 'offset' from settings", (false, false)),
            ("insert into t values (1); close all", (true, false)),
        ];
        for (sql, want) in cases {
            assert_eq!(fx(sql), want, "{sql}");
        }
    }

    #[test]
    fn command_tags() {
        for tag in ["SELECT 1", "INSERT 0 1", "UPDATE 3", "COMMIT", "BEGIN", "FETCH 2", "COPY 5", "SHOW"] {
            assert!(command_tag_is_plain(format!("{tag}\0").as_bytes()), "{tag}");
        }
        for tag in [
            "SET",
            "RESET",
            "DISCARD ALL",
            "CREATE TABLE",
            "DO",
            "CALL",
            "LISTEN",
            "DECLARE CURSOR",
            "PREPARE",
            "DEALLOCATE",
            "CLOSE CURSOR ALL",
            "LOAD",
            "SELECTX",
        ] {
            assert!(!command_tag_is_plain(format!("{tag}\0").as_bytes()), "{tag}");
        }
    }
}
