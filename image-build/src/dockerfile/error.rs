//! Errors of parsing and expanding a Dockerfile, each with its place.

use image_core::error::{Classify, ErrorKind};

/// A Dockerfile that cannot be parsed or expanded: where, and what was wrong.
///
/// Its message is the place and the [`Problem`]'s message; its `source()`
/// is the problem's own cause (a `--mount` value's [`MountError`](crate::mounts::MountError)),
/// so a chain printer says each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileError {
    /// The file name given to the parser.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
    /// What was wrong.
    pub problem: Problem,
}

impl std::fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let DockerfileError {
            file,
            line,
            column,
            problem,
        } = self;
        write!(f, "{file}:{line}:{column}: {problem}")
    }
}

// By hand: the problem is part of this message, so the chain goes on with
// the problem's cause, not with the problem (which would say it again).
impl std::error::Error for DockerfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.problem)
    }
}

impl Classify for DockerfileError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// What was wrong with a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// An instruction keyword that does not exist.
    #[error("unknown instruction {0:?}")]
    UnknownInstruction(String),
    /// A `--flag` the instruction does not take.
    #[error("unknown flag --{flag} for {instruction}")]
    UnknownFlag {
        /// The instruction.
        instruction: &'static str,
        /// The flag's name.
        flag: String,
    },
    /// A flag given twice that may be given once.
    #[error("duplicate flag --{0}")]
    DuplicateFlag(String),
    /// A flag that needs a value and has none.
    #[error("expected a value for --{0} (--{0}=value)")]
    FlagValue(String),
    /// A boolean flag with another value than true or false.
    #[error("expected true or false for --{flag}, found {value:?}")]
    FlagBool {
        /// The flag's name.
        flag: String,
        /// Its value.
        value: String,
    },
    /// A `RUN --mount` value that cannot be used (checked when it names no
    /// variable; otherwise when the RUN runs).
    #[error("--mount={value}")]
    Mount {
        /// The value.
        value: String,
        /// Why.
        source: crate::mounts::MountError,
    },
    /// An instruction with the wrong number or shape of arguments.
    #[error("{instruction}: expected {expected}")]
    Arguments {
        /// The instruction.
        instruction: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// A `key=value` word without `=`.
    #[error("{instruction}: expected name=value, found {word:?}")]
    MissingEquals {
        /// The instruction.
        instruction: &'static str,
        /// The word.
        word: String,
    },
    /// An invalid stage name.
    #[error("invalid stage name {0:?}: expected a lower-case letter, then letters, digits, '-', '_' or '.'")]
    StageName(String),
    /// Two stages with one name.
    #[error("duplicate stage name {0:?}")]
    DuplicateStage(String),
    /// An instruction other than ARG before the first FROM.
    #[error("{0} before the first FROM: expected FROM or ARG")]
    NoStage(&'static str),
    /// A file with no FROM.
    #[error("no build stage: expected a FROM instruction")]
    NoFrom,
    /// An instruction not allowed as an ONBUILD trigger.
    #[error("{0} is not allowed as an ONBUILD trigger")]
    OnbuildTrigger(&'static str),
    /// A base image's ONBUILD trigger that is not one instruction other
    /// than FROM (several lines of instructions, a FROM, nothing).
    #[error("an ONBUILD trigger must be a single instruction other than FROM")]
    TriggerNotOneInstruction,
    /// A heredoc whose delimiter never came.
    #[error("unterminated heredoc: expected a line {0:?}")]
    UnterminatedHeredoc(String),
    /// A parser directive given twice or with a bad value.
    #[error("parser directive {0}")]
    Directive(String),
    /// A HEALTHCHECK option with a bad value.
    #[error("HEALTHCHECK --{flag}: expected {expected}, found {value:?}")]
    HealthcheckValue {
        /// The option.
        flag: &'static str,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        value: String,
    },
    /// A size or count beyond the parser's bounds.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A word that the shell lexer cannot expand.
    #[error("expanding {word:?}: {reason}")]
    Expand {
        /// The word as written.
        word: String,
        /// Why.
        reason: ExpandProblem,
    },
}

/// Why a word cannot be expanded (the messages of BuildKit's shell lexer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpandProblem {
    /// An unterminated `'`.
    #[error("unexpected end of statement while looking for matching single-quote")]
    SingleQuote,
    /// An unterminated `"`.
    #[error("unexpected end of statement while looking for matching double-quote")]
    DoubleQuote,
    /// `${` without `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${}` or a modifier that does not exist.
    #[error("unsupported modifier ({0}) in substitution")]
    Modifier(String),
    /// `${}`.
    #[error("bad substitution")]
    BadSubstitution,
    /// `${VAR?msg}` / `${VAR:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message.
        message: String,
    },
    /// Substitutions nested too deep.
    #[error("substitutions nested deeper than {0}")]
    TooDeep(usize),
    /// A `${VAR/pattern/replacement}` that would take more steps than the bound.
    #[error("substitution would take more than {0} pattern steps")]
    TooComplex(usize),
    /// The result grew beyond the bound.
    #[error("result longer than {0} bytes")]
    TooLong(usize),
}
