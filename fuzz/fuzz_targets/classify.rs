//! The SQL lexer and every classifier built on it, on arbitrary text: the lexer's tokens lie in
//! the text in order and end (an unterminated one last); splitting into statements agrees with
//! the token stream; the classifiers (and the admin console's command parser) never panic and
//! agree where their rules overlap.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgmux::admin::commands;
use pgmux::client::aborted::{Aborted, Step, ends_transaction};
use pgmux::client::classify::{begins_read_only, classify, command_tag_is_plain, is_on, select_is_read_only};
use pgmux::client::statements::{ClientStatements, StatementDef, reserved_name_used, statement_command};
use pgmux::error::ErrorCounts;
use pgmux::protocol::messages::Parse;
use pgmux::sql::{Lexer, Token, statement_texts, statements};

/// Where `part` starts in `text`, asserting it is a slice of it.
fn offset(text: &[u8], part: &[u8]) -> usize {
    let at = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    assert!(at <= text.len() && part.len() <= text.len() - at, "token outside the text");
    at
}

fn token_text<'a>(token: &Token<'a>) -> Option<&'a [u8]> {
    match *token {
        Token::Word(t) | Token::QuotedIdent(t) | Token::Dollar(t) | Token::Str { text: t, .. } => Some(t),
        _ => None,
    }
}

/// The lexer's tokens, checked: each borrowed slice lies after the previous one, `peek` agrees
/// with `next`, every token consumes input (so the lexer ends), and `Unterminated` is last.
fn lex(sql: &[u8]) -> Vec<Token<'_>> {
    let text = &sql[..sql.iter().position(|&b| b == 0).unwrap_or(sql.len())];
    let mut lexer = Lexer::new(sql);
    let mut tokens = Vec::new();
    let mut end = 0;
    loop {
        let peeked = lexer.peek();
        let Some(token) = lexer.next() else { break };
        assert_eq!(peeked, Some(token));
        assert!(tokens.len() < text.len(), "more tokens than bytes");
        assert!(tokens.last() != Some(&Token::Unterminated), "a token after Unterminated");
        if let Some(t) = token_text(&token) {
            let at = offset(text, t);
            assert!(at >= end && !t.is_empty(), "tokens overlap or go backwards");
            end = at + t.len();
        }
        match token {
            Token::Word(w) => assert!(w[0].is_ascii_alphabetic() || w[0] == b'_' || w[0] >= 0x80),
            Token::Dollar(d) => assert!(d.len() >= 2 && d[0] == b'$' && d[d.len() - 1] == b'$'),
            Token::QuotedIdent(q) => assert_eq!(q.last(), Some(&b'"')),
            Token::Str { text: s, .. } => assert_eq!(s.last(), Some(&b'\'')),
            _ => {}
        }
        tokens.push(token);
    }
    assert_eq!(lexer.next(), None, "the lexer restarted after its end");
    tokens
}

/// `statements` is the token stream cut at `;`, and `statement_texts` the same statements'
/// text: lexing each text alone gives that statement's tokens.
fn check_statements(sql: &[u8], tokens: &[Token<'_>]) {
    let stmts: Vec<Vec<Token>> = statements(sql).collect();
    assert!(stmts.iter().all(|s| !s.is_empty()));
    let flat: Vec<Token> = stmts.iter().flatten().copied().collect();
    let no_semicolons: Vec<Token> = tokens.iter().copied().filter(|t| *t != Token::Semicolon).collect();
    assert_eq!(flat, no_semicolons);
    let texts = statement_texts(sql);
    assert_eq!(texts.len(), stmts.len(), "statement_texts and statements disagree");
    let mut end = 0;
    for (text, stmt) in texts.iter().zip(&stmts) {
        let at = offset(sql, text);
        assert!(at >= end, "statement texts overlap");
        end = at + text.len();
        assert_eq!(&Lexer::new(text).collect::<Vec<_>>(), stmt, "a statement's text lexes differently alone");
        // The admin console runs each statement text as a command.
        let _ = commands::parse(&String::from_utf8_lossy(text));
    }
}

fn frame(tag: u8, body: &[&[u8]]) -> Vec<u8> {
    let body = body.concat();
    let mut v = vec![tag];
    v.extend_from_slice(&u32::try_from(body.len() + 4).unwrap_or(u32::MAX).to_be_bytes());
    v.extend_from_slice(&body);
    v
}

/// The aborted-transaction stand-in on a Query of the text, then an extended batch preparing it.
fn check_aborted(sql: &[u8]) {
    let text = &sql[..sql.iter().position(|&b| b == 0).unwrap_or(sql.len())];
    let errors = Arc::new(ErrorCounts::default());
    let mut out = BytesMut::new();
    let mut aborted = Aborted::in_transaction(None, false, errors.clone());
    let step = aborted.on_frame(&frame(b'Q', &[text, b"\0"]), &mut out).expect("a Query is well-formed");
    assert_eq!(step == Step::Done, ends_transaction(text), "a Query ends the block exactly when its text does");

    let mut stmts = ClientStatements::default();
    let mut aborted = Aborted::in_transaction(None, false, errors);
    let batch = [
        frame(b'P', &[b"s\0", text, b"\0\0\0"]),
        frame(b'B', &[b"\0s\0", &[0, 0, 0, 0, 0, 0]]),
        frame(b'E', &[b"\0", &[0, 0, 0, 0]]),
        frame(b'S', &[]),
    ];
    for f in &batch {
        aborted.on_frame_with_statements(f, &mut stmts, &mut out).expect("the batch is well-formed");
    }
}

fuzz_target!(|data: &[u8]| {
    let tokens = lex(data);
    check_statements(data, &tokens);

    let effects = classify(data);
    if ends_transaction(data) {
        assert!(!effects.any(), "COMMIT/ROLLBACK classified as changing the session");
    }
    let _ = begins_read_only(data);
    let _ = select_is_read_only(data);
    let _ = command_tag_is_plain(data);
    let _ = statement_command(data);
    if let Some(name) = reserved_name_used(data) {
        assert!(name.len() >= 6 && name.as_bytes()[..6].eq_ignore_ascii_case(b"pgmux_"));
    }
    let _ = is_on(&String::from_utf8_lossy(data));

    // As the query of a Parse (the text up to its NUL).
    let text = &data[..data.iter().position(|&b| b == 0).unwrap_or(data.len())];
    let body = [b"s\0", text, b"\0\0\0"].concat();
    let parse = Parse::parse(&body).expect("a Parse of the text is well-formed");
    assert_eq!(parse.query, text);
    let def = StatementDef::new(&parse);
    assert_eq!((def.effects, def.read_only), (classify(text), select_is_read_only(text)));
    check_aborted(data);
});
