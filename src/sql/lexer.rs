//! The one SQL lexer: splits query text into the tokens PostgreSQL's own scanner would see —
//! words, quoted identifiers, string literals (`'…'`, `E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'`),
//! dollar-quoted strings, parameters, numbers, punctuation — skipping whitespace, `--` comments and
//! nested `/* */` comments. Every classifier pgmux has is built on it, so a quote, a comment or a
//! `;` inside a literal means the same thing to all of them.
//!
//! It never allocates and never fails: text it cannot place (an unterminated literal or comment)
//! ends in [`Token::Unterminated`], and consumers treat that as "unknown".

/// One token; slices borrow the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A keyword or unquoted identifier, as written (compare with [`Token::is_word`]).
    Word(&'a [u8]),
    /// A `"quoted"` (or `U&"quoted"`) identifier, quotes included.
    QuotedIdent(&'a [u8]),
    /// A string literal, quotes and prefix included. `backslash`: it contains a backslash, so where
    /// it ends depends on `E''` syntax or on `standard_conforming_strings` — the lexer ends a plain
    /// literal as PostgreSQL does with the setting on (its default), consumers that care must not
    /// trust what follows.
    Str {
        text: &'a [u8],
        backslash: bool,
    },
    /// A `$tag$…$tag$` string, delimiters included.
    Dollar(&'a [u8]),
    /// `$1`, `$2`, …
    Param,
    /// A numeric literal.
    Number,
    Semicolon,
    OpenParen,
    CloseParen,
    Comma,
    Dot,
    /// `::`
    Cast,
    /// Any other operator or punctuation character.
    Op(u8),
    /// An unterminated literal, quoted identifier, dollar string or block comment: the rest of the
    /// text. Always the last token.
    Unterminated,
}

impl Token<'_> {
    /// Whether this is the unquoted word `w` (ASCII case-insensitive; `w` is lowercase).
    pub fn is_word(&self, w: &str) -> bool {
        matches!(self, Token::Word(t) if t.eq_ignore_ascii_case(w.as_bytes()))
    }
}

/// Tokens of `sql`, which ends at its first NUL (a Query or Parse body's terminator) if any.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a [u8]) -> Lexer<'a> {
        let end = memchr::memchr(0, sql).unwrap_or(sql.len());
        Lexer { sql: &sql[..end], pos: 0 }
    }

    /// The next token, without consuming it.
    pub fn peek(&self) -> Option<Token<'a>> {
        self.clone().next()
    }

    fn at(&self, i: usize) -> u8 {
        self.sql.get(i).copied().unwrap_or(0)
    }

    /// Skips whitespace and comments; false if a block comment never ends.
    fn skip_blank(&mut self) -> bool {
        loop {
            let b = self.at(self.pos);
            if class(b) & BLANK != 0 {
                self.pos += 1;
                continue;
            }
            match b {
                b'-' if self.at(self.pos + 1) == b'-' => {
                    self.pos = memchr(b'\n', self.sql, self.pos).map_or(self.sql.len(), |p| p + 1);
                }
                b'/' if self.at(self.pos + 1) == b'*' => match block_comment_end(self.sql, self.pos) {
                    Some(end) => self.pos = end,
                    None => return false,
                },
                _ => return true,
            }
        }
    }

    fn unterminated(&mut self) -> Option<Token<'a>> {
        self.pos = self.sql.len();
        Some(Token::Unterminated)
    }

    /// A literal or quoted identifier whose opening quote is at `quote_at` (its prefix, if any,
    /// starts at `start`).
    fn quoted(&mut self, start: usize, quote_at: usize, escapes: bool) -> Option<Token<'a>> {
        let quote = self.sql[quote_at];
        let mut i = quote_at + 1;
        let mut backslash = false;
        loop {
            match self.sql.get(i) {
                None => return self.unterminated(),
                Some(b'\\') if quote == b'\'' => {
                    backslash = true;
                    i += if escapes { 2 } else { 1 };
                }
                Some(&b) if b == quote => {
                    if self.at(i + 1) == quote {
                        i += 2;
                    } else {
                        break;
                    }
                }
                Some(_) => i += 1,
            }
        }
        let text = &self.sql[start..i + 1];
        self.pos = i + 1;
        Some(if quote == b'"' { Token::QuotedIdent(text) } else { Token::Str { text, backslash } })
    }

    fn word(&mut self, start: usize) -> Option<Token<'a>> {
        self.pos = ident_end(self.sql, start);
        Some(Token::Word(&self.sql[start..self.pos]))
    }

    fn number(&mut self, start: usize) -> Option<Token<'a>> {
        let run = |mut i: usize, ok: fn(u8) -> bool| {
            while ok(self.at(i)) || self.at(i) == b'_' {
                i += 1;
            }
            i
        };
        let radix = matches!(self.at(start + 1), b'x' | b'X' | b'o' | b'O' | b'b' | b'B');
        let mut i = if self.at(start) == b'0' && radix && self.at(start + 2).is_ascii_hexdigit() {
            run(start + 2, |b| b.is_ascii_hexdigit())
        } else {
            let mut i = run(start, |b| b.is_ascii_digit());
            if self.at(i) == b'.' && self.at(i + 1) != b'.' {
                i = run(i + 1, |b| b.is_ascii_digit());
            }
            i
        };
        if matches!(self.at(i), b'e' | b'E') {
            let sign = usize::from(matches!(self.at(i + 1), b'+' | b'-'));
            if self.at(i + 1 + sign).is_ascii_digit() {
                i = run(i + 1 + sign, |b| b.is_ascii_digit());
            }
        }
        self.pos = i.max(start + 1);
        Some(Token::Number)
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if !self.skip_blank() {
            return self.unterminated();
        }
        let start = self.pos;
        let b = *self.sql.get(start)?;
        let next = self.at(start + 1);
        match b {
            b'\'' | b'"' => self.quoted(start, start, false),
            // A one-letter prefix glued to a quote is part of the literal (E'…' takes escapes).
            b'e' | b'E' if next == b'\'' => self.quoted(start, start + 1, true),
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if next == b'\'' => self.quoted(start, start + 1, false),
            b'u' | b'U' if next == b'&' && matches!(self.at(start + 2), b'\'' | b'"') => {
                self.quoted(start, start + 2, false)
            }
            _ if is_ident_start(b) => self.word(start),
            b'0'..=b'9' => self.number(start),
            b'.' if next.is_ascii_digit() => self.number(start),
            b'$' if next.is_ascii_digit() => {
                self.pos = digits_end(self.sql, start + 1);
                Some(Token::Param)
            }
            b'$' => {
                // `$tag$`: a tag is an identifier that does not start with a digit, or nothing.
                let mut i = start + 1;
                if is_ident_start(self.at(i)) {
                    while is_ident_char(self.at(i)) && self.at(i) != b'$' {
                        i += 1;
                    }
                }
                if self.at(i) != b'$' {
                    self.pos = start + 1;
                    return Some(Token::Op(b'$'));
                }
                let tag = &self.sql[start..=i];
                match find(self.sql, i + 1, tag) {
                    Some(close) => {
                        self.pos = close + tag.len();
                        Some(Token::Dollar(&self.sql[start..self.pos]))
                    }
                    None => self.unterminated(),
                }
            }
            _ => {
                self.pos = start + 1;
                Some(match b {
                    b';' => Token::Semicolon,
                    b'(' => Token::OpenParen,
                    b')' => Token::CloseParen,
                    b',' => Token::Comma,
                    b'.' => Token::Dot,
                    b':' if next == b':' => {
                        self.pos = start + 2;
                        Token::Cast
                    }
                    other => Token::Op(other),
                })
            }
        }
    }
}

/// Byte classes, looked up once per byte (the lexer runs over every query a client sends).
const BLANK: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CHAR: u8 = 4;

const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        // Letters, `_` and every non-ASCII byte start an identifier (as in PostgreSQL's scanner);
        // digits and `$` continue one.
        let start = c.is_ascii_alphabetic() || c == b'_' || c >= 0x80;
        let cont = start || c.is_ascii_digit() || c == b'$';
        let blank = matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b');
        if blank {
            t[b] = BLANK;
        }
        if start {
            t[b] |= IDENT_START;
        }
        if cont {
            t[b] |= IDENT_CHAR;
        }
        b += 1;
    }
    t
};

fn class(b: u8) -> u8 {
    CLASSES[usize::from(b)]
}

/// The end of the identifier starting at `start` (whose first byte is known to start one).
fn ident_end(sql: &[u8], start: usize) -> usize {
    let rest = &sql[start + 1..];
    start + 1 + rest.iter().position(|&b| class(b) & IDENT_CHAR == 0).unwrap_or(rest.len())
}

/// The end of the run of digits from `from`.
fn digits_end(sql: &[u8], from: usize) -> usize {
    let rest = &sql[from..];
    from + rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len())
}

fn is_ident_start(b: u8) -> bool {
    class(b) & IDENT_START != 0
}

fn is_ident_char(b: u8) -> bool {
    class(b) & IDENT_CHAR != 0
}

fn memchr(needle: u8, hay: &[u8], from: usize) -> Option<usize> {
    memchr::memchr(needle, hay.get(from..)?).map(|p| p + from)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// The index after the block comment opening at `start` (they nest, as in PostgreSQL), or None if
/// it never closes.
fn block_comment_end(sql: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < sql.len() {
        match &sql[i..i + 2] {
            b"/*" => {
                depth += 1;
                i += 2;
            }
            b"*/" => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The text of each statement of `sql` (from its first token to the end of its last, comments
/// around it left out), empty ones left out.
pub fn statement_texts(sql: &[u8]) -> Vec<&[u8]> {
    let mut lexer = Lexer::new(sql);
    let mut out = Vec::new();
    let mut span: Option<(usize, usize)> = None;
    loop {
        let blank = lexer.skip_blank();
        let start = lexer.pos;
        let token = if blank { lexer.next() } else { lexer.unterminated() };
        match token {
            None | Some(Token::Semicolon) => {
                if let Some((a, b)) = span.take() {
                    out.push(&lexer.sql[a..b]);
                }
                if token.is_none() {
                    return out;
                }
            }
            Some(_) => span = Some((span.map_or(start, |(a, _)| a), lexer.pos)),
        }
    }
}

/// The words of `sql` in one pass over its bytes, for text that needs no lexer: nothing but words,
/// quoted names, numbers, parameters, operators and `;` — no literal, dollar quote, comment or
/// parenthesis, and no number glued to a letter or a `.` (where the lexer's number rules decide
/// what is a word). Calls `word(text, starts_statement)` for each word, as the lexer's tokens
/// would give them (`starts_statement`: no word or quoted name before it since the last `;`), and
/// returns true; returns false, at any point, for text that needs the lexer (what `word` was given
/// then means nothing). Most queries an application sends take this path.
pub fn plain_words(sql: &[u8], mut word: impl FnMut(&[u8], bool)) -> bool {
    // Ends at the first NUL, as for the lexer.
    let mut lexer = Lexer::new(sql);
    let sql = lexer.sql;
    let mut at_statement_start = true;
    let mut i = 0;
    while let Some(&b) = sql.get(i) {
        let c = class(b);
        if c & BLANK != 0 {
            i += 1;
            continue;
        }
        if c & IDENT_START != 0 {
            let end = ident_end(sql, i);
            word(&sql[i..end], at_statement_start);
            at_statement_start = false;
            i = end;
            continue;
        }
        let next = || sql.get(i + 1).copied().unwrap_or(0);
        match b {
            b'0'..=b'9' => {
                let end = digits_end(sql, i);
                if let Some(&after) = sql.get(end)
                    && (class(after) & IDENT_START != 0 || after == b'.')
                {
                    return false;
                }
                i = end;
                continue;
            }
            b';' => at_statement_start = true,
            // A quoted name is no word (nor `""` inside it the end).
            b'"' => {
                lexer.pos = i;
                if !matches!(lexer.quoted(i, i, false), Some(Token::QuotedIdent(_))) {
                    return false;
                }
                at_statement_start = false;
                i = lexer.pos;
                continue;
            }
            // `$1`: a parameter, no word (`$` otherwise may open a dollar quote).
            b'$' if next().is_ascii_digit() => {
                i = digits_end(sql, i + 1);
                continue;
            }
            // `U&"…"` / `U&'…'`: the letter belongs to the quote, not a word of its own.
            b'&' if matches!(next(), b'"' | b'\'') => return false,
            b'(' | b'\'' | b'$' | b'\\' => return false,
            b'-' if next() == b'-' => return false,
            b'/' if next() == b'*' => return false,
            _ => {}
        }
        i += 1;
    }
    true
}

/// The statements of `sql`: runs of tokens between `;`, empty ones left out.
pub fn statements(sql: &[u8]) -> impl Iterator<Item = Vec<Token<'_>>> {
    let mut lexer = Lexer::new(sql);
    std::iter::from_fn(move || {
        loop {
            let mut stmt = Vec::new();
            loop {
                match lexer.next() {
                    None if stmt.is_empty() => return None,
                    None => return Some(stmt),
                    Some(Token::Semicolon) => break,
                    Some(t) => stmt.push(t),
                }
            }
            if !stmt.is_empty() {
                return Some(stmt);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::Token::*;
    use super::*;

    fn lex(s: &str) -> Vec<Token<'_>> {
        Lexer::new(s.as_bytes()).collect()
    }

    fn w(s: &str) -> Token<'_> {
        Word(s.as_bytes())
    }

    /// Edge cases of PostgreSQL's scanner (src/backend/parser/scan.l).
    #[test]
    fn token_table() {
        let cases: Vec<(&str, Vec<Token>)> = vec![
            ("select 1", vec![w("select"), Number]),
            ("SELECT a.b::int", vec![w("SELECT"), w("a"), Dot, w("b"), Cast, w("int")]),
            ("f(x, y);", vec![w("f"), OpenParen, w("x"), Comma, w("y"), CloseParen, Semicolon]),
            // '' inside a literal, "" inside an identifier.
            ("'it''s' \"a\"\"b\"", vec![Str { text: b"'it''s'", backslash: false }, QuotedIdent(b"\"a\"\"b\"")]),
            // A backslash in a plain literal: flagged, the literal ends at the next quote.
            ("'a\\' x", vec![Str { text: b"'a\\'", backslash: true }, w("x")]),
            // E'' takes backslash escapes: \' does not end it.
            ("E'a\\'b' x", vec![Str { text: b"E'a\\'b'", backslash: true }, w("x")]),
            ("e'\\\\' x", vec![Str { text: b"e'\\\\'", backslash: true }, w("x")]),
            (
                "B'101' X'ff' N'n'",
                vec![
                    Str { text: b"B'101'", backslash: false },
                    Str { text: b"X'ff'", backslash: false },
                    Str { text: b"N'n'", backslash: false },
                ],
            ),
            ("U&'d\\0061t' U&\"x\"", vec![Str { text: b"U&'d\\0061t'", backslash: true }, QuotedIdent(b"U&\"x\"")]),
            // A longer word glued to a quote is a word, then a literal.
            ("abe'x'", vec![w("abe"), Str { text: b"'x'", backslash: false }]),
            // Dollar quoting: tags, nesting of other tags, $ inside identifiers, parameters.
            ("$$a;b$$ $t$ $$ ; $t$ x", vec![Dollar(b"$$a;b$$"), Dollar(b"$t$ $$ ; $t$"), w("x")]),
            ("a$b $1 $12", vec![w("a$b"), Param, Param]),
            ("$1a", vec![Param, w("a")]),
            // Comments: line, nested block, comment markers inside literals.
            ("a -- b; c\nd", vec![w("a"), w("d")]),
            ("a /* b /* c */ ; */ d", vec![w("a"), w("d")]),
            ("'--' '/*'", vec![Str { text: b"'--'", backslash: false }, Str { text: b"'/*'", backslash: false }]),
            // Numbers: a letter right after one starts a word (PostgreSQL < 15 reads `1into` so).
            ("1into 1.5e-3 .5 0x1F 1_000", vec![Number, w("into"), Number, Number, Number, Number]),
            // Non-ASCII identifiers.
            ("sélect", vec![w("sélect")]),
            // Unterminated things end the text.
            ("a 'b", vec![w("a"), Unterminated]),
            ("a \"b", vec![w("a"), Unterminated]),
            ("a $x$ b", vec![w("a"), Unterminated]),
            ("a /* /* */ b", vec![w("a"), Unterminated]),
            ("a E'\\'", vec![w("a"), Unterminated]),
            // The Query body's NUL ends the text.
            ("a\0b", vec![w("a")]),
            ("a <= b", vec![w("a"), Op(b'<'), Op(b'='), w("b")]),
            ("$ x", vec![Op(b'$'), w("x")]),
        ];
        for (sql, want) in cases {
            assert_eq!(lex(sql), want, "{sql:?}");
        }
    }

    #[test]
    fn splits_statements_outside_literals() {
        let got: Vec<usize> = statements(b"select ';'; ; /* ; */ begin; $$;$$").map(|s| s.len()).collect();
        assert_eq!(got, vec![2, 1, 1]);
    }

    #[test]
    fn statement_texts_leave_out_comments_between() {
        let got = statement_texts(b" show clients ; -- x\n; /* ; */ reload ;; show 'a;b'");
        assert_eq!(got, vec![&b"show clients"[..], b"reload", b"show 'a;b'"]);
    }

    #[test]
    fn never_panics_on_random_bytes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"'\"$-/*;:.()eEuU&0129x\\ \n\0a";
        for _ in 0..20_000 {
            let len = (x % 24) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let n = Lexer::new(&text).take(100).count();
            assert!(n <= text.len(), "{text:?}");
            assert!(statement_texts(&text).len() <= text.len());
        }
    }
}
