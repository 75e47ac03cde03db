//! The patterns of word expansion (`${VAR#pattern}`, shell rules: `*` and
//! `?` match any character) and of `.dockerignore` (path rules: `*` and `?`
//! stop at `/`, `**` crosses directories), compiled to one small automaton
//! and matched by simulating it: linear in the text times the pattern's
//! length, never backtracking.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The most automaton steps the pattern substitutions (`${VAR#pattern}`,
/// `${VAR%pattern}`, `${VAR/pattern/replacement}`) of one word expanded
/// on its own (`dockerfile::expand_word`) may take.
pub const REPLACE_BUDGET: usize = 50_000_000;

/// A budget of automaton steps, shared by the pattern substitutions of
/// every word expanded against it (from any thread).
#[derive(Debug)]
pub(crate) struct Steps {
    left: AtomicUsize,
    limit: usize,
}

impl Steps {
    /// `limit` steps.
    pub(crate) fn new(limit: usize) -> Steps {
        Steps {
            left: AtomicUsize::new(limit),
            limit,
        }
    }

    /// The steps it started with.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes `n` steps; false (and none left after) when fewer are left.
    fn take(&self, n: usize) -> bool {
        let took = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(n))
            .is_ok();
        if !took {
            self.left.store(0, Ordering::Relaxed);
        }
        took
    }
}

/// The characters read between two takes from a [`Steps`].
const STEPS_CHUNK: usize = 4096;

/// One element of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Tok {
    /// `*`.
    Star,
    /// `?`.
    One,
    /// A literal character (`\x` is `x`).
    Char(char),
    /// `[...]`: negated or not, inclusive ranges.
    Class(bool, Vec<(char, char)>),
    /// Path rules: `**` at the end, anything.
    AnyTail,
    /// Path rules: `**/` or `**` before more pattern: nothing, or anything
    /// ending in `/`.
    AnyDirs,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Glob {
    toks: Vec<Tok>,
    /// Path rules: `*` and `?` do not match `/`.
    path: bool,
}

impl Glob {
    /// Shell rules; an unterminated `[` is a literal.
    pub(crate) fn shell(p: &str) -> Glob {
        Glob {
            toks: tokens(p, false).unwrap_or_default(),
            path: false,
        }
    }

    /// `.dockerignore` rules; None for an unterminated `[`.
    pub(crate) fn path(p: &str) -> Option<Glob> {
        Some(Glob {
            toks: tokens(p, true)?,
            path: true,
        })
    }

    /// The pattern read backwards (to match suffixes on reversed text).
    pub(crate) fn reversed(&self) -> Glob {
        Glob {
            toks: self.toks.iter().rev().cloned().collect(),
            path: self.path,
        }
    }

    fn start(&self) -> Vec<bool> {
        // States 0..=n: before token i; n+1+i: inside the `.*` of AnyDirs i.
        let mut s = vec![false; 2 * (self.toks.len() + 1)];
        s[0] = true;
        self.closure(&mut s);
        s
    }

    fn closure(&self, states: &mut [bool]) {
        for (i, t) in self.toks.iter().enumerate() {
            if states[i] && matches!(t, Tok::Star | Tok::AnyTail | Tok::AnyDirs) {
                states[i + 1] = true;
            }
        }
    }

    /// Writes into `next` the states after reading `c`; false when none is
    /// left.
    fn step_into(&self, cur: &[bool], c: char, next: &mut [bool]) -> bool {
        let n = self.toks.len();
        let free = !self.path || c != '/';
        next.fill(false);
        for (i, t) in self.toks.iter().enumerate() {
            if cur[i] {
                match t {
                    Tok::Star => next[i] |= free,
                    Tok::One => next[i + 1] |= free,
                    Tok::Char(x) => next[i + 1] |= *x == c,
                    Tok::Class(neg, r) => {
                        next[i + 1] |= r.iter().any(|&(a, b)| a <= c && c <= b) != *neg
                    }
                    Tok::AnyTail => next[i] = true,
                    Tok::AnyDirs => {
                        next[n + 1 + i] = true;
                        next[i + 1] |= c == '/';
                    }
                }
            }
            if cur[n + 1 + i] {
                next[n + 1 + i] = true;
                next[i + 1] |= c == '/';
            }
        }
        self.closure(next);
        next.iter().any(|&s| s)
    }

    /// True when the pattern matches the whole of `text`, or (with
    /// `parents`) one of its prefixes that ends before a `/`. Two state
    /// vectors are reused for the whole text.
    pub(crate) fn matches(&self, text: &str, parents: bool) -> bool {
        let n = self.toks.len();
        let mut cur = self.start();
        let mut next = vec![false; cur.len()];
        let mut prev_sep = true;
        for c in text.chars() {
            if parents && c == '/' && !prev_sep && cur[n] {
                return true;
            }
            prev_sep = c == '/';
            if !self.step_into(&cur, c, &mut next) {
                return false;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        cur[n]
    }

    /// The same pattern with runs that match the same texts as one token
    /// made one: `**/**/` is `**/`, `**/**` is `**`, `**` after `*` is
    /// `**`... (a hostile file repeats them to make each step cost more).
    pub(crate) fn simplified(&self) -> Glob {
        let mut toks: Vec<Tok> = Vec::with_capacity(self.toks.len());
        for t in &self.toks {
            match (toks.last(), t) {
                (Some(Tok::AnyDirs), Tok::AnyDirs) | (Some(Tok::Star), Tok::Star) => {}
                (Some(Tok::AnyDirs), Tok::AnyTail) => {
                    toks.pop();
                    toks.push(Tok::AnyTail);
                }
                _ => toks.push(t.clone()),
            }
        }
        Glob {
            toks,
            path: self.path,
        }
    }

    /// The literal text every match starts with (up to the first token
    /// that is not a plain character).
    pub(crate) fn literal_prefix(&self) -> String {
        self.toks
            .iter()
            .map_while(|t| match t {
                Tok::Char(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Path rules: the first path element of every text the pattern
    /// matches, when the pattern fixes it (its literal prefix holds a `/`,
    /// or the whole pattern is literal).
    pub(crate) fn first_element(&self) -> Option<String> {
        let prefix = self.literal_prefix();
        let whole = prefix.chars().count() == self.toks.len();
        let first = match prefix.split_once('/') {
            Some((first, _)) => first,
            None if whole => prefix.as_str(),
            None => return None,
        };
        (!first.is_empty()).then(|| first.to_owned())
    }

    /// Path rules: the last path element of every text the pattern
    /// matches, when the pattern fixes it: its literal tail holds a `/`,
    /// or follows a `**/` that starts the pattern or a path element, or
    /// the whole pattern is literal.
    pub(crate) fn last_element(&self) -> Option<String> {
        let lit = self
            .toks
            .iter()
            .rev()
            .take_while(|t| matches!(t, Tok::Char(_)))
            .count();
        let start = self.toks.len() - lit;
        let tail: String = self.toks[start..]
            .iter()
            .map(|t| match t {
                Tok::Char(c) => *c,
                _ => unreachable!("the tail holds characters only"),
            })
            .collect();
        let last = match tail.rsplit_once('/') {
            Some((_, last)) => last,
            None if start == 0 => tail.as_str(),
            None => {
                let after_dirs = matches!(self.toks[start - 1], Tok::AnyDirs)
                    && (start == 1 || self.toks[start - 2] == Tok::Char('/'));
                if !after_dirs {
                    return None;
                }
                tail.as_str()
            }
        };
        (!last.is_empty()).then(|| last.to_owned())
    }

    /// The length of the shortest (or longest) prefix of `text` it
    /// matches (`Some(None)`: none), each character read taking one step
    /// per state of the automaton from `steps`: `None` when they run out.
    pub(crate) fn prefix(
        &self,
        text: &[char],
        longest: bool,
        steps: &Steps,
    ) -> Option<Option<usize>> {
        let n = self.toks.len();
        let per_char = 2 * (n + 1);
        let mut cur = self.start();
        let mut next = vec![false; cur.len()];
        let mut best = cur[n].then_some(0);
        let mut unpaid = 1;
        if best.is_none() || longest {
            for (k, &c) in text.iter().enumerate() {
                if unpaid == STEPS_CHUNK {
                    if !steps.take(unpaid * per_char) {
                        return None;
                    }
                    unpaid = 0;
                }
                unpaid += 1;
                if !self.step_into(&cur, c, &mut next) {
                    break;
                }
                std::mem::swap(&mut cur, &mut next);
                if cur[n] {
                    best = Some(k + 1);
                    if !longest {
                        break;
                    }
                }
            }
        }
        steps.take(unpaid * per_char).then_some(best)
    }

    /// Replaces the first (or every) leftmost-longest match in `text`.
    /// Trying each start is quadratic at worst, so the work is taken from
    /// `steps`: None when they run out.
    pub(crate) fn replace(
        &self,
        text: &[char],
        rep: &str,
        all: bool,
        steps: &Steps,
    ) -> Option<String> {
        let mut out = String::new();
        let mut i = 0;
        let mut replaced = false;
        while i <= text.len() {
            if !replaced || all {
                if let Some(n) = self.prefix(&text[i..], true, steps)? {
                    out.push_str(rep);
                    replaced = true;
                    if n > 0 {
                        i += n;
                        continue;
                    }
                }
            }
            if i < text.len() {
                out.push(text[i]);
            }
            i += 1;
        }
        Some(out)
    }
}

fn tokens(p: &str, path: bool) -> Option<Vec<Tok>> {
    let chars: Vec<char> = p.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if path && chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                toks.push(if i == chars.len() {
                    Tok::AnyTail
                } else {
                    Tok::AnyDirs
                });
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::One),
            '\\' if i < chars.len() => {
                toks.push(Tok::Char(chars[i]));
                i += 1;
            }
            '[' => match class(&chars[i..], !path) {
                Some((t, n)) => {
                    toks.push(t);
                    i += n;
                }
                None if path => return None,
                None => toks.push(Tok::Char('[')),
            },
            c => toks.push(Tok::Char(c)),
        }
    }
    Some(toks)
}

/// A class after its `[`, and how many characters it took (the `]`
/// included). `^` negates; `!` too when `bang_negates` (shell rules).
fn class(chars: &[char], bang_negates: bool) -> Option<(Tok, usize)> {
    let mut i = 0;
    let neg = match chars.first() {
        Some('^') => true,
        Some('!') => bang_negates,
        _ => false,
    };
    if neg {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i)?;
        i += 1;
        if c == ']' && !first {
            return Some((Tok::Class(neg, ranges), i));
        }
        first = false;
        if c == '\\' {
            c = *chars.get(i)?;
            i += 1;
        }
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&e| e != ']') {
            ranges.push((c, chars[i + 1]));
            i += 2;
        } else {
            ranges.push((c, c));
        }
    }
}
