//! The parser: lines and continuations, directives, heredocs, then one typed
//! instruction per logical line, then the stages.
//!
//! It follows BuildKit's Dockerfile frontend (`frontend/dockerfile/parser`
//! and `instructions`): what it accepts and how it splits words.

use super::ast::*;
use super::error::{DockerfileError, Problem};

/// The largest Dockerfile accepted, in bytes.
pub const MAX_BYTES: usize = 8 << 20;
/// The most instructions accepted in one Dockerfile.
pub const MAX_INSTRUCTIONS: usize = 100_000;
/// The most heredocs on one instruction line.
pub const MAX_HEREDOCS: usize = 64;

/// Parses `text`, a Dockerfile named `file` (the name is only used in errors).
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, DockerfileError> {
    let err = |pos: Pos, problem| DockerfileError {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        problem,
    };
    if text.len() > MAX_BYTES {
        return Err(err(
            Pos { line: 1, column: 1 },
            Problem::TooLarge {
                what: "the Dockerfile's size in bytes",
                limit: MAX_BYTES,
            },
        ));
    }
    let (directives, instructions) = parse_instructions(text).map_err(|(p, e)| err(p, e))?;
    stages(directives, instructions).map_err(|(p, e)| err(p, e))
}

type Located<T> = Result<T, (Pos, Problem)>;

/// One logical line split into keyword, flags and the rest.
struct Split<'a> {
    keyword: String,
    flags: Vec<String>,
    rest: &'a str,
}

fn parse_instructions(text: &str) -> Located<(Directives, Vec<Instruction>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut directives = Directives::default();
    let mut seen_directives: Vec<String> = Vec::new();
    let mut directives_done = false;
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = trim_newline(lines[i]);
        i += 1;
        let lineno = i;
        if !directives_done {
            match directive(raw) {
                Some((key, value)) => {
                    let at = Pos {
                        line: lineno,
                        column: 1,
                    };
                    if seen_directives.contains(&key) {
                        return Err((
                            at,
                            Problem::Directive(format!("{key} given more than once")),
                        ));
                    }
                    match key.as_str() {
                        "escape" => {
                            directives.escape = match value.as_str() {
                                "\\" => '\\',
                                "`" => '`',
                                _ => {
                                    return Err((
                                        at,
                                        Problem::Directive(format!(
                                            "escape: expected ` or \\, found {value:?}"
                                        )),
                                    ))
                                }
                            }
                        }
                        "syntax" => directives.syntax = Some(value),
                        _ => directives.check = Some(value),
                    }
                    seen_directives.push(key);
                }
                None => directives_done = true,
            }
        }
        let stripped = raw.trim_start();
        if stripped.starts_with('#') {
            continue;
        }
        let column = raw[..raw.len() - stripped.len()].chars().count() + 1;
        let pos = Pos {
            line: lineno,
            column,
        };
        let esc = directives.escape;
        let (first, mut end) = trim_continuation(stripped, esc);
        if end && first.trim().is_empty() {
            continue;
        }
        let mut line = first.to_string();
        while !end && i < lines.len() {
            let next = trim_newline(lines[i]);
            i += 1;
            let t = next.trim_start();
            if t.starts_with('#') || t.is_empty() {
                continue;
            }
            let (part, e) = trim_continuation(next, esc);
            line.push_str(part);
            end = e;
        }
        if line.trim().is_empty() {
            continue;
        }
        if out.len() >= MAX_INSTRUCTIONS {
            return Err((
                pos,
                Problem::TooLarge {
                    what: "the number of instructions",
                    limit: MAX_INSTRUCTIONS,
                },
            ));
        }
        let split = split_line(&line).map_err(|e| (pos, e))?;
        let specs = heredoc_specs(&split, &line).map_err(|e| (pos, e))?;
        let mut heredocs = Vec::with_capacity(specs.len());
        for spec in specs {
            let mut content = String::new();
            let mut terminated = false;
            while i < lines.len() {
                let body = lines[i];
                i += 1;
                let mut candidate = trim_newline(body);
                if spec.chomp {
                    candidate = candidate.trim_start_matches('\t');
                }
                if candidate == spec.name {
                    terminated = true;
                    break;
                }
                content.push_str(body);
            }
            if !terminated {
                return Err((pos, Problem::UnterminatedHeredoc(spec.name)));
            }
            heredocs.push(Heredoc { content, ..spec });
        }
        let command =
            command_in(&split, heredocs, esc, false).map_err(|e| (flag_pos(&e, raw, pos), e))?;
        out.push(Instruction {
            pos,
            end_line: i,
            command,
        });
    }
    Ok((directives, out))
}

/// Where a flag named in a problem is on the instruction's first line (the
/// instruction's place when it is on a continuation line).
fn flag_pos(problem: &Problem, first_line: &str, at: Pos) -> Pos {
    let flag = match problem {
        Problem::UnknownFlag { flag, .. }
        | Problem::DuplicateFlag(flag)
        | Problem::FlagValue(flag)
        | Problem::FlagBool { flag, .. } => flag,
        _ => return at,
    };
    let needle = format!("--{flag}");
    let places: Vec<usize> = first_line
        .match_indices(&needle)
        .map(|(i, _)| i)
        .filter(|&i| {
            let after = first_line[i + needle.len()..].chars().next();
            !after.is_some_and(|c| c.is_alphanumeric() || c == '-')
        })
        .collect();
    // A duplicate is reported where it is given the second time.
    let nth = usize::from(matches!(problem, Problem::DuplicateFlag(_)));
    match places.get(nth) {
        Some(&i) => Pos {
            line: at.line,
            column: first_line[..i].chars().count() + 1,
        },
        None => at,
    }
}

fn trim_newline(s: &str) -> &str {
    let s = s.strip_suffix('\n').unwrap_or(s);
    s.strip_suffix('\r').unwrap_or(s)
}

/// `# key = value` at the top of the file, for the keys BuildKit knows.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix('#')?.trim_start();
    let key_len = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(rest.len(), |(i, _)| i);
    if key_len == 0 {
        return None;
    }
    let key = rest[..key_len].to_ascii_lowercase();
    let value = rest[key_len..].trim_start().strip_prefix('=')?.trim();
    if value.is_empty() || !matches!(key.as_str(), "syntax" | "escape" | "check") {
        return None;
    }
    Some((key, value.to_string()))
}

/// Strips an escape character (and blanks after it) at the end of a line:
/// the line continues. Returns the text and whether the line ended.
fn trim_continuation(line: &str, esc: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(esc) {
        Some(s) => (s, false),
        None => (line, true),
    }
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0b' | '\x0c' | '\r')
}

fn split_line(line: &str) -> Result<Split<'_>, Problem> {
    let t = line.trim();
    let (keyword, rest) = match t.find(is_ws) {
        Some(i) => (&t[..i], t[i..].trim_start_matches(is_ws)),
        None => (t, ""),
    };
    let (flags, rest) = extract_flags(rest);
    Ok(Split {
        keyword: keyword.to_ascii_lowercase(),
        flags,
        rest,
    })
}

/// The `--flag` words at the start of `line` (quotes removed, `\` escapes
/// applied) and the rest of the line.
fn extract_flags(line: &str) -> (Vec<String>, &str) {
    let mut words = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches(char::is_whitespace);
        if !rest.starts_with("--") {
            return (words, rest);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match quote {
                None if c.is_whitespace() => {
                    end = i;
                    break;
                }
                None if c == '"' || c == '\'' => quote = Some(c),
                Some(q) if c == q => quote = None,
                _ if c == '\\' => {
                    if let Some((_, n)) = chars.next() {
                        word.push(n);
                    }
                }
                _ => word.push(c),
            }
        }
        rest = &rest[end..];
        if word == "--" {
            return (words, rest.trim_start_matches(char::is_whitespace));
        }
        words.push(word);
    }
}

/// The heredocs named on an instruction line that can have them (RUN, COPY,
/// ADD, also as ONBUILD triggers, not in JSON form), bodies still empty.
fn heredoc_specs(split: &Split<'_>, line: &str) -> Result<Vec<Heredoc>, Problem> {
    let keyword = if split.keyword == "onbuild" {
        split_line(split.rest)?.keyword
    } else {
        split.keyword.clone()
    };
    if !matches!(keyword.as_str(), "run" | "copy" | "add") || !line.contains("<<") {
        return Ok(Vec::new());
    }
    let rest = if split.keyword == "onbuild" {
        split_line(split.rest)?.rest.to_string()
    } else {
        split.rest.to_string()
    };
    if json_array(&rest).is_some() {
        return Ok(Vec::new());
    }
    let mut docs = Vec::new();
    for word in raw_words(line) {
        if let Some(doc) = heredoc_word(&word) {
            if docs.len() == MAX_HEREDOCS {
                return Err(Problem::TooLarge {
                    what: "the number of heredocs on a line",
                    limit: MAX_HEREDOCS,
                });
            }
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Shell words of a line, quotes and escapes kept as written.
fn raw_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                continue;
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            Some(q) if c == q => quote = None,
            Some('\'') => {}
            _ if c == '\\' => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
                continue;
            }
            _ => {}
        }
        word.push(c);
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// `[fd]<<[-]NAME` as one raw word.
pub(crate) fn heredoc_word(word: &str) -> Option<Heredoc> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let fd = if digits == 0 {
        0
    } else {
        word[..digits].parse().ok()?
    };
    let name = unquote(rest)?;
    if name.is_empty() {
        return None;
    }
    let expand = name == rest;
    Some(Heredoc {
        name,
        content: String::new(),
        expand,
        chomp,
        fd,
    })
}

/// Removes shell quotes and backslash escapes from one word; None when the
/// word is not one word (an unterminated quote).
fn unquote(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match quote {
            None if c == '"' || c == '\'' => quote = Some(c),
            Some(q) if c == q => quote = None,
            Some('\'') => out.push(c),
            _ if c == '\\' => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
    quote.is_none().then_some(out)
}

/// A JSON array of strings, as `parseJSON` accepts it.
pub(crate) fn json_array(rest: &str) -> Option<Vec<String>> {
    let t = rest.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str(t).ok()
}

/// Words split at whitespace, quotes and escapes kept (BuildKit's `parseWords`).
pub(crate) fn words(rest: &str, esc: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut blank_ok = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            if c == esc && q != '\'' {
                match chars.next() {
                    None => {
                        quote = None;
                        continue;
                    }
                    Some(n) => {
                        word.push(c);
                        word.push(n);
                        continue;
                    }
                }
            }
            word.push(c);
            continue;
        }
        if c.is_whitespace() {
            if in_word && (blank_ok || !word.is_empty()) {
                out.push(std::mem::take(&mut word));
            }
            word.clear();
            in_word = false;
            blank_ok = false;
            continue;
        }
        in_word = true;
        if c == '\'' || c == '"' {
            quote = Some(c);
            blank_ok = true;
        }
        if c == esc {
            match chars.next() {
                None => continue,
                Some(n) => {
                    word.push(c);
                    word.push(n);
                    continue;
                }
            }
        }
        word.push(c);
    }
    if in_word && (blank_ok || !word.is_empty()) {
        out.push(word);
    }
    out
}

fn fields(rest: &str) -> Vec<String> {
    rest.split(is_ws)
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// How a flag takes its value.
#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Str,
    Bool,
    List,
}

/// Parsed flags of one instruction.
#[derive(Default)]
struct Flags {
    values: Vec<(&'static str, String)>,
}

impl Flags {
    fn parse(
        instruction: &'static str,
        words: &[String],
        spec: &[(&'static str, FlagKind)],
    ) -> Result<Flags, Problem> {
        let mut flags = Flags::default();
        for w in words {
            let body = &w[2..];
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(name, kind)) = spec.iter().find(|(n, _)| *n == name) else {
                return Err(Problem::UnknownFlag {
                    instruction,
                    flag: name.to_string(),
                });
            };
            if kind != FlagKind::List && flags.values.iter().any(|(n, _)| *n == name) {
                return Err(Problem::DuplicateFlag(name.to_string()));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    _ => {
                        return Err(Problem::FlagBool {
                            flag: name.to_string(),
                            value: v.to_string(),
                        })
                    }
                },
                (_, None) => return Err(Problem::FlagValue(name.to_string())),
                (_, Some(v)) => v.to_string(),
            };
            flags.values.push((name, value));
        }
        Ok(flags)
    }

    fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn bool(&self, name: &str) -> bool {
        self.string(name).is_some_and(|v| v == "true")
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

const FROM_FLAGS: &[(&str, FlagKind)] = &[("platform", FlagKind::Str)];
const RUN_FLAGS: &[(&str, FlagKind)] = &[
    ("mount", FlagKind::List),
    ("network", FlagKind::Str),
    ("security", FlagKind::Str),
];
const COPY_FLAGS: &[(&str, FlagKind)] = &[
    ("from", FlagKind::Str),
    ("chown", FlagKind::Str),
    ("chmod", FlagKind::Str),
    ("link", FlagKind::Bool),
    ("parents", FlagKind::Bool),
    ("exclude", FlagKind::List),
];
const ADD_FLAGS: &[(&str, FlagKind)] = &[
    ("chown", FlagKind::Str),
    ("chmod", FlagKind::Str),
    ("link", FlagKind::Bool),
    ("keep-git-dir", FlagKind::Bool),
    ("checksum", FlagKind::Str),
    ("exclude", FlagKind::List),
];
const HEALTHCHECK_FLAGS: &[(&str, FlagKind)] = &[
    ("interval", FlagKind::Str),
    ("timeout", FlagKind::Str),
    ("start-period", FlagKind::Str),
    ("start-interval", FlagKind::Str),
    ("retries", FlagKind::Str),
];

fn keyword(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "from" => "FROM",
        "run" => "RUN",
        "cmd" => "CMD",
        "entrypoint" => "ENTRYPOINT",
        "copy" => "COPY",
        "add" => "ADD",
        "env" => "ENV",
        "arg" => "ARG",
        "label" => "LABEL",
        "expose" => "EXPOSE",
        "user" => "USER",
        "workdir" => "WORKDIR",
        "volume" => "VOLUME",
        "shell" => "SHELL",
        "stopsignal" => "STOPSIGNAL",
        "healthcheck" => "HEALTHCHECK",
        "onbuild" => "ONBUILD",
        "maintainer" => "MAINTAINER",
        _ => return None,
    })
}

fn command_in(
    split: &Split<'_>,
    heredocs: Vec<Heredoc>,
    esc: char,
    trigger: bool,
) -> Result<Command, Problem> {
    let Some(kw) = keyword(&split.keyword) else {
        return Err(Problem::UnknownInstruction(split.keyword.to_uppercase()));
    };
    let rest = split.rest;
    let args = |expected| Problem::Arguments {
        instruction: kw,
        expected,
    };
    let no_flags = || Flags::parse(kw, &split.flags, &[]);
    Ok(match kw {
        "FROM" => {
            let flags = Flags::parse(kw, &split.flags, FROM_FLAGS)?;
            let w = fields(rest);
            let alias = match w.len() {
                1 => None,
                3 if w[1].eq_ignore_ascii_case("as") => {
                    let name = w[2].to_ascii_lowercase();
                    if !valid_stage_name(&name) {
                        return Err(Problem::StageName(w[2].clone()));
                    }
                    Some(name)
                }
                _ => return Err(args("an image and optionally AS name")),
            };
            Command::From(From {
                image: w[0].clone(),
                alias,
                platform: flags.string("platform"),
            })
        }
        "RUN" => {
            let flags = Flags::parse(kw, &split.flags, RUN_FLAGS)?;
            for value in flags.list("mount") {
                // A value with variables is checked once expanded.
                if !value.contains('$') {
                    if let Err(source) = crate::mounts::MountSpec::parse(&value, "/") {
                        return Err(Problem::Mount { value, source });
                    }
                }
            }
            Command::Run(Run {
                command: command_line(rest).ok_or_else(|| args("a command"))?,
                heredocs,
                mounts: flags.list("mount"),
                network: flags.string("network"),
                security: flags.string("security"),
            })
        }
        "CMD" | "ENTRYPOINT" => {
            no_flags()?;
            let c = command_line(rest).ok_or_else(|| args("a command"))?;
            if kw == "CMD" {
                Command::Cmd(c)
            } else {
                Command::Entrypoint(c)
            }
        }
        "COPY" | "ADD" => {
            let spec = if kw == "COPY" { COPY_FLAGS } else { ADD_FLAGS };
            let flags = Flags::parse(kw, &split.flags, spec)?;
            let (mut list, json) = match json_array(rest) {
                Some(l) => (l, true),
                None => (fields(rest), false),
            };
            if list.len() < 2 {
                return Err(args("at least one source and a destination"));
            }
            let dest = list.pop().unwrap_or_default();
            if kw == "COPY" {
                Command::Copy(Copy {
                    sources: list,
                    dest,
                    json,
                    heredocs,
                    from: flags.string("from"),
                    chown: flags.string("chown"),
                    chmod: flags.string("chmod"),
                    link: flags.bool("link"),
                    exclude: flags.list("exclude"),
                    parents: flags.bool("parents"),
                })
            } else {
                Command::Add(Add {
                    sources: list,
                    dest,
                    json,
                    heredocs,
                    chown: flags.string("chown"),
                    chmod: flags.string("chmod"),
                    link: flags.bool("link"),
                    exclude: flags.list("exclude"),
                    keep_git_dir: flags.bool("keep-git-dir"),
                    checksum: flags.string("checksum"),
                })
            }
        }
        "ENV" | "LABEL" => {
            no_flags()?;
            let pairs = name_values(kw, rest, esc)?;
            if kw == "ENV" {
                Command::Env(pairs)
            } else {
                Command::Label(pairs)
            }
        }
        "ARG" => {
            no_flags()?;
            let w = words(rest, esc);
            if w.is_empty() {
                return Err(args("at least one name"));
            }
            let mut decls = Vec::with_capacity(w.len());
            for word in w {
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (word, None),
                };
                if name.is_empty() {
                    return Err(args("a name before '='"));
                }
                decls.push(ArgDecl { name, default });
            }
            Command::Arg(decls)
        }
        "EXPOSE" => {
            no_flags()?;
            let w = fields(rest);
            if w.is_empty() {
                return Err(args("at least one port"));
            }
            Command::Expose(w)
        }
        "USER" | "WORKDIR" | "STOPSIGNAL" | "MAINTAINER" => {
            no_flags()?;
            if rest.is_empty() {
                return Err(args("one argument"));
            }
            let s = rest.to_string();
            match kw {
                "USER" => Command::User(s),
                "WORKDIR" => Command::Workdir(s),
                "STOPSIGNAL" => Command::Stopsignal(s),
                _ => Command::Maintainer(s),
            }
        }
        "VOLUME" => {
            no_flags()?;
            let (paths, json) = match json_array(rest) {
                Some(l) => (l, true),
                None => (fields(rest), false),
            };
            if paths.is_empty() {
                return Err(args("at least one path"));
            }
            if paths.iter().any(|p| p.trim().is_empty()) {
                return Err(args("non-empty paths"));
            }
            Command::Volume(PathList { paths, json })
        }
        "SHELL" => {
            no_flags()?;
            match json_array(rest) {
                Some(l) if !l.is_empty() => Command::Shell(l),
                _ => return Err(args("a JSON array of at least one string")),
            }
        }
        "HEALTHCHECK" => {
            let flags = Flags::parse(kw, &split.flags, HEALTHCHECK_FLAGS)?;
            let (kind, tail) = match rest.find(is_ws) {
                Some(i) => (&rest[..i], rest[i..].trim_start_matches(is_ws)),
                None => (rest, ""),
            };
            match kind.to_ascii_uppercase().as_str() {
                "NONE" if tail.is_empty() && split.flags.is_empty() => {
                    Command::Healthcheck(Healthcheck::None)
                }
                "NONE" => return Err(args("nothing after NONE")),
                "CMD" => {
                    let command = command_line(tail).ok_or_else(|| args("a command after CMD"))?;
                    let duration = |flag: &'static str| -> Result<Option<String>, Problem> {
                        match flags.string(flag) {
                            Some(v) if !go_duration(&v) => Err(Problem::HealthcheckValue {
                                flag,
                                expected: "a duration such as 30s or 1m30s",
                                value: v,
                            }),
                            v => Ok(v),
                        }
                    };
                    let retries = match flags.string("retries") {
                        None => None,
                        Some(v) => {
                            Some(v.parse::<u32>().map_err(|_| Problem::HealthcheckValue {
                                flag: "retries",
                                expected: "a number of retries",
                                value: v.clone(),
                            })?)
                        }
                    };
                    Command::Healthcheck(Healthcheck::Cmd {
                        command,
                        interval: duration("interval")?,
                        timeout: duration("timeout")?,
                        start_period: duration("start-period")?,
                        start_interval: duration("start-interval")?,
                        retries,
                    })
                }
                _ => return Err(args("CMD or NONE")),
            }
        }
        "ONBUILD" => {
            no_flags()?;
            if trigger {
                return Err(Problem::OnbuildTrigger("ONBUILD"));
            }
            if rest.is_empty() {
                return Err(args("an instruction"));
            }
            let inner = split_line(rest)?;
            if let Some(k @ ("ONBUILD" | "FROM" | "MAINTAINER")) = keyword(&inner.keyword) {
                return Err(Problem::OnbuildTrigger(k));
            }
            Command::Onbuild(Box::new(command_in(&inner, heredocs, esc, true)?))
        }
        _ => unreachable!("every keyword is matched above"),
    })
}

fn command_line(rest: &str) -> Option<CommandLine> {
    if let Some(l) = json_array(rest) {
        return Some(CommandLine::Exec(l));
    }
    let t = rest.trim();
    (!t.is_empty()).then(|| CommandLine::Shell(t.to_string()))
}

pub(crate) fn name_values(
    kw: &'static str,
    rest: &str,
    esc: char,
) -> Result<Vec<KeyValue>, Problem> {
    let w = words(rest, esc);
    let two = Problem::Arguments {
        instruction: kw,
        expected: "a name and a value",
    };
    let Some(first) = w.first() else {
        return Err(two);
    };
    if !first.contains('=') {
        let t = rest.trim();
        let Some(i) = t.find(is_ws) else {
            return Err(two);
        };
        return Ok(vec![KeyValue {
            key: t[..i].to_string(),
            value: t[i..].trim_start_matches(is_ws).to_string(),
        }]);
    }
    let mut out = Vec::with_capacity(w.len());
    for word in w {
        let Some((k, v)) = word.split_once('=') else {
            return Err(Problem::MissingEquals {
                instruction: kw,
                word,
            });
        };
        if k.is_empty() {
            return Err(Problem::Arguments {
                instruction: kw,
                expected: "a name before '='",
            });
        }
        out.push(KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        });
    }
    Ok(out)
}

fn valid_stage_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Go's `time.ParseDuration` syntax: `0` or `[-+]?(\d*(\.\d*)?unit)+`.
fn go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let int = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut n = int;
        let mut frac = 0;
        if rest[n..].starts_with('.') {
            n += 1;
            frac = rest[n..].bytes().take_while(u8::is_ascii_digit).count();
            n += frac;
        }
        if int + frac == 0 {
            return false;
        }
        rest = &rest[n..];
        let unit = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(**u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

fn stages(directives: Directives, instructions: Vec<Instruction>) -> Located<Dockerfile> {
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for ins in instructions {
        match (&ins.command, stages.last_mut()) {
            (Command::From(from), _) => {
                if let Some(name) = &from.alias {
                    if !names.insert(name.clone()) {
                        return Err((ins.pos, Problem::DuplicateStage(name.clone())));
                    }
                }
                stages.push(Stage {
                    index: stages.len(),
                    pos: ins.pos,
                    from: from.clone(),
                    instructions: Vec::new(),
                });
            }
            (_, Some(stage)) => stage.instructions.push(ins),
            (Command::Arg(_), None) => global_args.push(ins),
            (c, None) => return Err((ins.pos, Problem::NoStage(c.keyword()))),
        }
    }
    if stages.is_empty() {
        return Err((Pos { line: 1, column: 1 }, Problem::NoFrom));
    }
    Ok(Dockerfile {
        directives,
        global_args,
        stages,
    })
}
