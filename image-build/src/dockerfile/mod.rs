//! The Dockerfile language: parse into a typed tree, print it back, expand
//! its words per step.
//!
//! The parser follows BuildKit's Dockerfile frontend: parser directives,
//! comments and continuations where it allows them, every instruction and
//! flag it knows, JSON forms with the fallback to shell form, heredocs.
//! Expansion is a separate pass ([`Expander`]) so that a builder expands
//! each step in the scope it has reached.
//!
//! # Security
//! The input is hostile: its size ([`MAX_BYTES`]), instruction count
//! ([`MAX_INSTRUCTIONS`]), heredocs per line ([`MAX_HEREDOCS`]), nesting of
//! substitutions ([`MAX_DEPTH`]), expanded length ([`MAX_EXPANDED`]), what
//! the ARGs and ENVs of a scope hold together ([`MAX_SCOPE_BYTES`]) and the
//! work of pattern substitutions (a word's alone: [`REPLACE_BUDGET`]; a
//! whole Dockerfile's: [`MAX_PATTERN_STEPS`]) are bounded; every failure
//! is a [`DockerfileError`] with a place.

mod ast;
mod error;
mod expand;
mod lex;
mod parse;
mod print;

pub use crate::glob::REPLACE_BUDGET;
pub use ast::*;
pub use error::{DockerfileError, ExpandProblem, Problem};
pub use expand::{BuildInputs, Expander, Scope, MAX_PATTERN_STEPS, MAX_SCOPE_BYTES, PROXY_ARGS};
pub use lex::{expand_heredoc, expand_word, MAX_DEPTH, MAX_EXPANDED};
#[cfg(feature = "runtime")]
pub(crate) use parse::heredoc_word;
pub use parse::{parse, MAX_BYTES, MAX_HEREDOCS, MAX_INSTRUCTIONS};
pub use print::{print, print_command};
