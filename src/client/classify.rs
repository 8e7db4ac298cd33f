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
/// lexer sees): transaction control, DML, reads, cursor movement, COPY. Any case.
fn is_plain_start(w: &[u8]) -> bool {
    let candidates: &[&[u8]] = match w.len() {
        3 => &[b"end"],
        4 => &[b"with", b"move", b"copy", b"show", b"lock"],
        5 => &[b"merge", b"table", b"begin", b"start", b"abort", b"fetch"],
        6 => &[b"select", b"insert", b"update", b"delete", b"values", b"commit"],
        7 => &[b"release", b"explain"],
        8 => &[b"rollback", b"truncate"],
        9 => &[b"savepoint"],
        _ => &[],
    };
    candidates.iter().any(|c| w.eq_ignore_ascii_case(c))
}

/// Words that make even a plain statement session-changing: temp objects (also through the
/// `pg_temp` schema) and WITH HOLD cursors. Any case.
fn is_state_word(w: &[u8]) -> bool {
    let candidates: &[&[u8]] = match w.len() {
        4 => &[b"temp", b"hold"],
        7 => &[b"pg_temp"],
        9 => &[b"temporary"],
        _ => &[],
    };
    candidates.iter().any(|c| w.eq_ignore_ascii_case(c))
}

/// The longest word the keyword and function lists are compared with (longer ones match none).
const LONGEST_LISTED: usize = 64;

/// `word` in ASCII lowercase, in `buf`, as text for the keyword, function and type lists; "" (no
/// match) when it is longer than any listed word or not UTF-8.
fn lowercase<'b>(word: &[u8], buf: &'b mut [u8; LONGEST_LISTED]) -> &'b str {
    let Some(out) = buf.get_mut(..word.len()) else { return "" };
    for (o, b) in out.iter_mut().zip(word) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).unwrap_or("")
}

use crate::sql::{Lexer, Token, plain_words, statements};

/// Classifies SQL text (one or more statements). Case-insensitive, over-approximating: on the
/// lexer's tokens (literals, quoted identifiers, dollar quotes and comments are never misread as
/// words), and anything it cannot place asks for the check.
pub fn classify(sql: &[u8]) -> Effects {
    if let Some(fx) = classify_plain(sql) {
        return fx;
    }
    let mut fx = Effects::default();
    let mut at_statement_start = true;
    // Peeking at a Peekable costs nothing; peeking at the lexer would scan the next token twice.
    let mut lexer = Lexer::new(sql).peekable();
    // The two tokens before this one: types and table names before '(' are not calls, and a call's
    // schema is read from them.
    let (mut prev, mut prev2): (Option<Token>, Option<Token>) = (None, None);
    while let Some(token) = lexer.next() {
        match token {
            // Where a literal with a backslash ends depends on E'…' and standard_conforming_strings:
            // rather than guess, ask the server.
            Token::Str { backslash, .. } => fx.check |= backslash,
            Token::Unterminated => fx.check = true,
            // A quoted name called like a function: nobody knows what it is.
            Token::QuotedIdent(_) => fx.check |= lexer.peek() == Some(&Token::OpenParen) && prev != Some(Token::Cast),
            Token::Word(word) => {
                note_word(&mut fx, word, at_statement_start);
                if lexer.peek() == Some(&Token::OpenParen) {
                    fx.check |= is_unknown_call(word, prev, prev2);
                }
            }
            _ => {}
        }
        match token {
            Token::Semicolon => at_statement_start = true,
            Token::Word(_) | Token::Str { .. } | Token::QuotedIdent(_) | Token::Dollar(_) => at_statement_start = false,
            _ => {}
        }
        (prev2, prev) = (prev, Some(token));
    }
    fx
}

/// What `classify` concludes, for text of words, numbers and operators only (most queries), in one
/// pass over its bytes and without tokens: ~4x fewer instructions than lexing them. None: the
/// text needs the lexer.
fn classify_plain(sql: &[u8]) -> Option<Effects> {
    let mut fx = Effects::default();
    let plain = plain_words(sql, |word, starts_statement| note_word(&mut fx, word, starts_statement));
    plain.then_some(fx)
}

/// What one word tells, on either path: a statement that does not start plainly, LOAD, a state word.
fn note_word(fx: &mut Effects, word: &[u8], starts_statement: bool) {
    if starts_statement {
        fx.check |= !is_plain_start(word);
        fx.load |= word.eq_ignore_ascii_case(b"load");
    }
    fx.check |= is_state_word(word);
}

/// Whether `word`, followed by `(`, calls something that may change the session. `prev`, `prev2`:
/// the tokens before it.
fn is_unknown_call(word: &[u8], prev: Option<Token>, prev2: Option<Token>) -> bool {
    // `INSERT INTO t (…)`, `::numeric(10, 2)`, `AS t(a, b)` name tables and types.
    let not_a_call =
        prev == Some(Token::Cast) || prev.is_some_and(|t| t.is_word("into") || t.is_word("as") || t.is_word("table"));
    if not_a_call {
        return false;
    }
    // A call's schema, if written, must be pg_catalog for a safe built-in to be what it says.
    let qualifier_ok = prev != Some(Token::Dot) || prev2.is_some_and(|t| t.is_word("pg_catalog"));
    if !qualifier_ok {
        return true;
    }
    let mut buf = [0; LONGEST_LISTED];
    let lower = lowercase(word, &mut buf);
    let known = is_keyword_before_paren(lower)
        || is_type_name(lower)
        || listed(SAFE_FUNCTIONS, lower)
        || listed(SESSION_NEUTRAL_FUNCTIONS, lower);
    !known
}

/// Built-ins that may write or be volatile (so not in `SAFE_FUNCTIONS`, which routes to replicas)
/// but change nothing the session-state check could find: calling them needs no check. Sorted.
const SESSION_NEUTRAL_FUNCTIONS: &[&str] = &[
    "age",
    "array_append",
    "array_remove",
    "array_to_string",
    "char_length",
    "clock_timestamp",
    "current_database",
    "current_schema",
    "currval",
    "decode",
    "encode",
    "gen_random_uuid",
    "generate_series",
    "initcap",
    "jsonb_set",
    "lastval",
    "make_date",
    "make_interval",
    "nextval",
    "octet_length",
    "pg_backend_pid",
    "pg_column_size",
    "pg_current_wal_lsn",
    "pg_current_xact_id",
    "pg_last_wal_replay_lsn",
    "pg_relation_size",
    "pg_size_pretty",
    "pg_sleep",
    "pg_total_relation_size",
    "pg_typeof",
    "quote_ident",
    "quote_literal",
    "random",
    "regexp_matches",
    "regexp_replace",
    "repeat",
    "reverse",
    "row_to_json",
    "setval",
    "statement_timestamp",
    "string_to_array",
    "to_json",
    "to_jsonb",
    "transaction_timestamp",
    "txid_current",
    "unnest",
];

/// Whether `w` is in `list` (sorted).
fn listed(list: &[&str], w: &str) -> bool {
    list.binary_search(&w).is_ok()
}

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
    // Cheap exit for the common case (runs on every borrow): only BEGIN / START can qualify.
    let start = sql.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(sql.len());
    let head = &sql[start..(start + 5).min(sql.len())];
    if !head.eq_ignore_ascii_case(b"begin") && !head.eq_ignore_ascii_case(b"start") {
        return false;
    }
    let mut statements =
        statements(sql).map(|stmt| stmt.into_iter().filter(|t| matches!(t, Token::Word(_))).collect::<Vec<_>>());
    let Some(first) = statements.next() else { return false };
    let starts_tx = match first.as_slice() {
        [b, ..] if b.is_word("begin") => true,
        [s, t, ..] => s.is_word("start") && t.is_word("transaction"),
        _ => false,
    };
    if !starts_tx {
        return false;
    }
    let read_only = |words: &[Token]| words.windows(2).any(|w| w[0].is_word("read") && w[1].is_word("only"));
    if read_only(&first) {
        return true;
    }
    // `BEGIN; SET TRANSACTION READ ONLY` in the same message.
    first.len() == 1
        && statements
            .next()
            .is_some_and(|w| w.len() >= 2 && w[0].is_word("set") && w[1].is_word("transaction") && read_only(&w))
}

/// Functions a read-only SELECT may call and still be safe on a replica (stable or immutable, no
/// side effects). Anything else — user functions above all, whose volatility no parser can see —
/// keeps the statement on the primary. Sorted (binary-searched: `listed`).
const SAFE_FUNCTIONS: &[&str] = &[
    "abs",
    "all",
    "any",
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
];

/// Words that make a SELECT more than a read: locking clauses, SELECT INTO, data-modifying CTEs.
const WRITE_WORDS: &[&str] =
    &["into", "for", "insert", "update", "delete", "merge", "lock", "nextval", "setval", "call", "do", "copy"];

/// Conservative: is `sql` a single SELECT (or VALUES / read-only WITH) that provably only reads?
/// Unknown means no: any function call outside `SAFE_FUNCTIONS` (a quoted name called included),
/// any locking clause or write keyword, a dollar-quoted string, a literal whose end depends on
/// `standard_conforming_strings`, or a second statement sends it to the primary.
pub fn select_is_read_only(sql: &[u8]) -> bool {
    let mut lexer = Lexer::new(sql).peekable();
    let mut first = true;
    let mut saw_semicolon = false;
    while let Some(token) = lexer.next() {
        match token {
            Token::Semicolon => saw_semicolon = true,
            _ if saw_semicolon => return false,
            Token::Dollar(_) | Token::Unterminated | Token::Str { backslash: true, .. } => return false,
            Token::QuotedIdent(_) if lexer.peek() == Some(&Token::OpenParen) => return false,
            Token::Word(word) => {
                let mut buf = [0; LONGEST_LISTED];
                let w = lowercase(word, &mut buf);
                if std::mem::take(&mut first) && !matches!(w, "select" | "values" | "with" | "table") {
                    return false;
                }
                // A qualifier (`schema.` / `table.`) is not what runs.
                let next = lexer.peek();
                if next == Some(&Token::Dot) {
                    continue;
                }
                let call = next == Some(&Token::OpenParen);
                if WRITE_WORDS.contains(&w) || (call && !listed(SAFE_FUNCTIONS, w) && !is_keyword_before_paren(w)) {
                    return false;
                }
            }
            _ => {}
        }
    }
    !first
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
    fn function_lists_are_sorted_for_binary_search() {
        for list in [SAFE_FUNCTIONS, SESSION_NEUTRAL_FUNCTIONS] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
    }

    /// What `classify` concludes by the lexer alone: a literal statement in front sends the text
    /// down the lexer path and changes nothing (a literal is no word and ends at its `;`).
    fn classify_lexed(sql: &[u8]) -> Effects {
        let mut forced = b"'x';".to_vec();
        forced.extend_from_slice(sql);
        classify(&forced)
    }

    /// Pieces random text is made of: the bytes and words that decide either path.
    const WORDS: &[&[u8]] = &[
        b"select",
        b"SET",
        b"temp",
        b"Temporary",
        b"pg_temp",
        b"hold",
        b"load",
        b"begin",
        b"insert",
        b"into",
        b"t",
        b"a1",
        b"x_y",
        b"1",
        b"12",
        b"e5",
        b"1.5",
        b".5",
        b"1e5",
        b"0x1f",
        b";",
        b" ",
        b"\n",
        b"=",
        b"-",
        b"/",
        b"*",
        b"+",
        b",",
        b".",
        b"::",
        b"\0",
        b"\"x\"",
        b"'s'",
        b"(",
        b"$1",
        b"--c\n",
        b"/*c*/",
        b"\xc3\xa9",
        b"discard",
        b"listen",
        b"commit",
        b"U&\"x\"",
        b"u&'x'",
        b"\"a\"\"b\"",
        b"\"",
        b"$",
        b"&",
        b"$12a",
    ];

    /// The one-pass path for plain text says what the lexer path says where the number rules and
    /// the quoting decide what is a word.
    #[test]
    fn plain_text_edges_agree_with_the_lexer() {
        let edges: &[&[u8]] = &[
            b"1.e5",
            b"1.e5 begin",
            b"1e5",
            b"0x1f",
            b"0xtemp",
            b"1_000",
            b"1temp",
            b"12.5 temp",
            b".5e1 select",
            b"\"x\" begin",
            b"select 1;temp",
            b"a.b::temp",
            b"select 1\0 set x",
            b"load 'x'",
            b"LOAD x",
            b"U&\"x\" temp",
            b"\"a\"\"b\" set",
            b"\"a\0\" begin",
            b"\"unterminated",
            b"$1set",
            b"$1 $2 set",
            b"select \"t\".\"c\" from \"t\" where \"t\".\"id\" = $1 limit $2",
        ];
        for text in edges {
            assert_eq!(classify(text), classify_lexed(text), "{:?}", String::from_utf8_lossy(text));
        }
    }

    /// The one-pass path for plain text says what the lexer path says, on random text drawn from
    /// the bytes that decide either (both over-approximate the same way, so they must agree).
    #[test]
    fn plain_text_path_agrees_with_the_lexer() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let words = WORDS;
        let mut plain_seen = 0;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50_000 {
            let mut text = Vec::new();
            for _ in 0..next() % 9 {
                let r = next();
                text.extend_from_slice(words[(r % words.len() as u64) as usize]);
                if r % 3 == 0 {
                    text.push(b' ');
                }
            }
            if let Some(fast) = classify_plain(&text) {
                plain_seen += 1;
                assert_eq!(fast, classify_lexed(&text), "{:?}", String::from_utf8_lossy(&text));
            }
        }
        assert!(plain_seen > 5_000, "{plain_seen}");
    }

    #[test]
    fn read_only_selects() {
        for sql in [
            "select 1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1;\0",
            "select count(*), max(x) from t where s = 'insert into; nextval(' group by y",
            "with a as (select 1 as x) select x from a",
            "select \"for\" from t -- for update\n",
            "values (1), (2)",
            "select /* for update; */ 1",
            "select 1;",
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
            "select \"my_func\"(1)",
            "select 'a\\'",
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
            "begin /* ; */ read only",
        ] {
            assert!(begins_read_only(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "begin",
            "begin read write",
            "select 1; begin read only",
            "begin; select 1",
            "insert into t values (1)",
            "begin; select ';set transaction read only'",
        ] {
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
            // What the lexer sees differently from a word filter.
            ("select ';' ; set x = 1", (true, false)),
            ("select $q$ $$ ; $q$, 1; listen c", (true, false)),
            ("select 1 /* unterminated", (true, false)),
            ("select 'unterminated", (true, false)),
            ("select x::\"my type\"(1)", (false, false)),
            ("(select 1)", (false, false)),
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
