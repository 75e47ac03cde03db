//! Word expansion as BuildKit's shell lexer (`frontend/dockerfile/shell/lex.go`)
//! does it: quotes, escapes, `$VAR`, `${VAR}` and its modifiers.

use super::error::ExpandProblem;
use crate::glob::{Glob, Steps, REPLACE_BUDGET};

/// The deepest nesting of `${...}` inside `${...}` expanded.
pub const MAX_DEPTH: usize = 32;
/// The longest result of one expansion, in bytes.
pub const MAX_EXPANDED: usize = 1 << 20;

/// Expands one word: removes quotes and escapes, substitutes variables from
/// `lookup` (an unset variable expands to nothing). `escape` is the file's
/// escape character. Its pattern substitutions may take
/// [`REPLACE_BUDGET`] automaton steps in all.
pub fn expand_word(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandProblem> {
    run(word, escape, lookup, false, &Steps::new(REPLACE_BUDGET))
}

/// Expands the body of a COPY or ADD heredoc as BuildKit does: variables
/// are substituted, quotes and escape characters are kept as written (and
/// text in single quotes is not expanded).
pub fn expand_heredoc(
    body: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandProblem> {
    run(body, escape, lookup, true, &Steps::new(REPLACE_BUDGET))
}

/// Expands `text` as [`expand_word`] (or, `raw`, [`expand_heredoc`]), its
/// pattern substitutions taking their steps from `steps`.
pub(crate) fn run(
    text: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
    raw: bool,
    steps: &Steps,
) -> Result<String, ExpandProblem> {
    let mut lx = Lexer {
        chars: text.chars().collect(),
        at: 0,
        escape,
        lookup,
        depth: 0,
        raw,
        steps,
    };
    lx.until(None, raw)
}

struct Lexer<'a> {
    chars: Vec<char>,
    at: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    depth: usize,
    /// Keep quotes and escapes (heredoc bodies).
    raw: bool,
    /// What pattern substitutions may still take.
    steps: &'a Steps,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.at += 1;
        }
        c
    }

    fn push(out: &mut String, s: &str) -> Result<(), ExpandProblem> {
        if out.len() + s.len() > MAX_EXPANDED {
            return Err(ExpandProblem::TooLong(MAX_EXPANDED));
        }
        out.push_str(s);
        Ok(())
    }

    /// Reads up to `stop` (consumed) or the end; `raw_escapes` keeps escape
    /// characters (for patterns).
    fn until(&mut self, stop: Option<&[char]>, raw_escapes: bool) -> Result<String, ExpandProblem> {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if stop.is_some_and(|s| s.contains(&c)) {
                self.at += 1;
                return Ok(out);
            }
            match c {
                '\'' => {
                    let s = self.single()?;
                    Self::push(&mut out, &s)?;
                }
                '"' => {
                    let s = self.double()?;
                    Self::push(&mut out, &s)?;
                }
                '$' => {
                    let s = self.dollar()?;
                    Self::push(&mut out, &s)?;
                }
                _ => {
                    self.at += 1;
                    let mut buf = [0u8; 4];
                    if c == self.escape {
                        if raw_escapes {
                            Self::push(&mut out, c.encode_utf8(&mut buf))?;
                        }
                        match self.next() {
                            Some(n) => Self::push(&mut out, n.encode_utf8(&mut buf))?,
                            None => break,
                        }
                    } else {
                        Self::push(&mut out, c.encode_utf8(&mut buf))?;
                    }
                }
            }
        }
        if stop.is_some() {
            return Err(ExpandProblem::MissingBrace);
        }
        Ok(out)
    }

    fn single(&mut self) -> Result<String, ExpandProblem> {
        self.at += 1;
        let mut out = String::new();
        if self.raw {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => return Err(ExpandProblem::SingleQuote),
                Some('\'') => {
                    if self.raw {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double(&mut self) -> Result<String, ExpandProblem> {
        self.at += 1;
        let mut out = String::new();
        if self.raw {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => return Err(ExpandProblem::DoubleQuote),
                Some('"') => {
                    self.at += 1;
                    if self.raw {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let s = self.dollar()?;
                    Self::push(&mut out, &s)?;
                }
                Some(c) => {
                    self.at += 1;
                    if c == self.escape {
                        if self.raw {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.at += 1;
                                out.push(n);
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.at += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.at += 1;
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            self.at += 1;
            name.push(c);
        }
        name
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    fn dollar(&mut self) -> Result<String, ExpandProblem> {
        self.at += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.get(&name).unwrap_or_default());
        }
        self.at += 1;
        match self.peek() {
            None => return Err(ExpandProblem::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandProblem::BadSubstitution),
            _ => {}
        }
        if self.depth >= MAX_DEPTH {
            return Err(ExpandProblem::TooDeep(MAX_DEPTH));
        }
        self.depth += 1;
        let r = self.brace();
        self.depth -= 1;
        r
    }

    fn brace(&mut self) -> Result<String, ExpandProblem> {
        let name = self.name();
        let Some(ch) = self.next() else {
            return Err(ExpandProblem::MissingBrace);
        };
        let value = self.get(&name);
        match ch {
            '}' => Ok(value.unwrap_or_default()),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let (null_is_unset, modifier) = if ch == ':' {
                    match self.next() {
                        Some(m) => (true, m),
                        None => return Err(ExpandProblem::MissingBrace),
                    }
                } else {
                    (false, ch)
                };
                let pattern_op = modifier == '#' || modifier == '%';
                if null_is_unset && !matches!(modifier, '+' | '-' | '?') {
                    return Err(ExpandProblem::Modifier(format!(":{modifier}")));
                }
                let word = self.until(Some(&['}']), pattern_op)?;
                let unset = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
                match modifier {
                    '-' => Ok(if unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if unset { String::new() } else { word }),
                    '?' => match value {
                        Some(v) if !unset => Ok(v),
                        v => {
                            let message = if !word.is_empty() {
                                word
                            } else if v.is_none() {
                                "is not allowed to be unset".to_string()
                            } else {
                                "is not allowed to be empty".to_string()
                            };
                            Err(ExpandProblem::Required { name, message })
                        }
                    },
                    _ => {
                        let value = value.unwrap_or_default();
                        let (longest, pat) = match word.strip_prefix(modifier) {
                            Some(p) => (true, p),
                            None => (false, word.as_str()),
                        };
                        let v: Vec<char> = value.chars().collect();
                        let pat = Glob::shell(pat);
                        let complex = || ExpandProblem::TooComplex(self.steps.limit());
                        Ok(if modifier == '#' {
                            match pat.prefix(&v, longest, self.steps).ok_or_else(complex)? {
                                Some(n) => v[n..].iter().collect(),
                                None => value,
                            }
                        } else {
                            let rv: Vec<char> = v.iter().rev().copied().collect();
                            match pat
                                .reversed()
                                .prefix(&rv, longest, self.steps)
                                .ok_or_else(complex)?
                            {
                                Some(n) => v[..v.len() - n].iter().collect(),
                                None => value,
                            }
                        })
                    }
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.at += 1;
                }
                let pat = self.until_pattern()?;
                let rep = self.until(Some(&['}']), true)?;
                let value: Vec<char> = value.unwrap_or_default().chars().collect();
                Glob::shell(&pat)
                    .replace(&value, &rep, all, self.steps)
                    .ok_or(ExpandProblem::TooComplex(self.steps.limit()))
            }
            other => Err(ExpandProblem::Modifier(other.to_string())),
        }
    }

    /// The pattern of `${VAR/pattern/replacement}`: up to `/`, or up to `}`
    /// (which is then left for the replacement to stop at).
    fn until_pattern(&mut self) -> Result<String, ExpandProblem> {
        let start = self.at;
        let p = self.until(Some(&['/', '}']), true)?;
        if self.chars.get(self.at - 1) == Some(&'}') && self.at > start {
            self.at -= 1;
        }
        Ok(p)
    }
}
