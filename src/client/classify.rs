//! A deliberately coarse look at SQL text: could this statement change session state that pgmux
//! must carry (settings) or that pins the client to its server connection (temp objects, session
//! advisory locks, LISTEN, cursors WITH HOLD, SQL-level PREPARE, LOAD)? A yes only costs one
//! verification query against the server after the transaction; the server's answer decides.

/// What a statement might do to the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects {
    /// SET / RESET / DISCARD / set_config(): re-read the session's settings.
    pub settings: bool,
    /// Might create or drop pinning state: re-check it.
    pub session_state: bool,
    /// LOAD: a library stays loaded for the connection's life; it can never be unpinned.
    pub load: bool,
}

impl Effects {
    pub fn any(self) -> bool {
        self.settings || self.session_state || self.load
    }

    pub fn merge(&mut self, other: Effects) {
        self.settings |= other.settings;
        self.session_state |= other.session_state;
        self.load |= other.load;
    }
}

const SETTING_STARTS: &[&str] = &["set", "reset", "discard"];
const STATE_STARTS: &[&str] = &["listen", "unlisten", "declare", "prepare", "deallocate", "close", "discard"];
const STATE_WORDS: &[&str] = &[
    "temp",
    "temporary",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
    "hold",
];

/// Classifies SQL text (one or more statements). Case-insensitive, over-approximating.
pub fn classify(sql: &[u8]) -> Effects {
    let mut fx = Effects::default();
    let mut at_statement_start = true;
    let mut i = 0;
    while i < sql.len() {
        let b = sql[i];
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_') {
                i += 1;
            }
            let word = &sql[start..i];
            if at_statement_start {
                fx.settings |= SETTING_STARTS.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()));
                fx.session_state |= STATE_STARTS.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()));
                fx.load |= word.eq_ignore_ascii_case(b"load");
                at_statement_start = false;
            }
            fx.settings |= word.eq_ignore_ascii_case(b"set_config");
            fx.session_state |= STATE_WORDS.iter().any(|w| word.eq_ignore_ascii_case(w.as_bytes()));
            continue;
        }
        if b == b';' {
            at_statement_start = true;
        }
        i += 1;
    }
    fx
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

    fn fx(s: &str) -> (bool, bool, bool) {
        let e = classify(s.as_bytes());
        (e.settings, e.session_state, e.load)
    }

    #[test]
    fn classification_table() {
        let cases = [
            ("select 1", (false, false, false)),
            ("SET search_path = a", (true, false, false)),
            ("begin; set local work_mem = '1MB'", (true, false, false)),
            ("select set_config('a.b', 'c', false)", (true, false, false)),
            ("reset all", (true, false, false)),
            ("create temp table t(x int)", (false, true, false)),
            ("CREATE TEMPORARY VIEW v AS SELECT 1", (false, true, false)),
            ("select pg_advisory_lock(1)", (false, true, false)),
            ("select pg_advisory_xact_lock(1)", (false, false, false)),
            ("listen chan", (false, true, false)),
            ("UNLISTEN *", (false, true, false)),
            ("declare c cursor with hold for select 1", (false, true, false)),
            ("prepare p as select 1", (false, true, false)),
            ("discard all", (true, true, false)),
            ("load 'auto_explain'", (false, false, true)),
            ("select 'offset' from settings", (false, false, false)),
            ("insert into t values (1); close all", (false, true, false)),
        ];
        for (sql, want) in cases {
            assert_eq!(fx(sql), want, "{sql}");
        }
    }
}
