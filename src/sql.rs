//! SQL text as pgmux reads it: one lexer (`lexer`) that every classifier builds on.

pub mod lexer;

pub use lexer::{Lexer, Token, plain_words, statement_texts, statements};
