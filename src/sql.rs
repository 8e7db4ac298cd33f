//! SQL text as pgmux reads it: one lexer (`lexer`) that every classifier builds on.

pub mod lexer;

pub use lexer::{Lexer, Token, statement_texts, statements};
