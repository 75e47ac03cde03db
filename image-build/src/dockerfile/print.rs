//! The printer: a syntax tree back to Dockerfile text that parses to the
//! same tree (comments and layout are not kept).

use std::fmt::Write as _;

use super::ast::*;

/// Prints a Dockerfile: directives, global ARGs, then each stage.
pub fn print(df: &Dockerfile) -> String {
    let mut out = String::new();
    let d = &df.directives;
    if let Some(s) = &d.syntax {
        let _ = writeln!(out, "# syntax={s}");
    }
    if d.escape != '\\' {
        let _ = writeln!(out, "# escape={}", d.escape);
    }
    if let Some(c) = &d.check {
        let _ = writeln!(out, "# check={c}");
    }
    let esc = d.escape;
    for ins in &df.global_args {
        print_command(&mut out, &ins.command, esc);
    }
    for stage in &df.stages {
        print_command(&mut out, &Command::From(stage.from.clone()), esc);
        for ins in &stage.instructions {
            print_command(&mut out, &ins.command, esc);
        }
    }
    out
}

/// Prints one instruction (with its heredoc bodies), ending in a newline.
pub fn print_command(out: &mut String, cmd: &Command, esc: char) {
    let (mut line, heredocs) = command_line(cmd, esc);
    if line.trim_end_matches([' ', '\t']).ends_with(esc) {
        // A logical line ending in the escape character (possible only at
        // the end of the file): one more keeps it from being a continuation.
        line.push(esc);
    }
    out.push_str(&line);
    out.push('\n');
    for h in heredocs {
        out.push_str(&h.content);
        out.push_str(&h.name);
        out.push('\n');
    }
}

fn flag(flags: &mut Vec<String>, name: &str, value: &str) {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'));
    if plain {
        flags.push(format!("--{name}={value}"));
    } else {
        let mut q = String::from("\"");
        for c in value.chars() {
            if c == '"' || c == '\\' {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        flags.push(format!("--{name}={q}"));
    }
}

fn opt(flags: &mut Vec<String>, name: &str, value: &Option<String>) {
    if let Some(v) = value {
        flag(flags, name, v);
    }
}

fn json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_string())
}

fn cmdline(c: &CommandLine) -> String {
    match c {
        CommandLine::Exec(l) => json(l),
        CommandLine::Shell(s) => s.clone(),
    }
}

fn join(kw: &str, flags: &[String], rest: &str) -> String {
    let mut s = kw.to_string();
    for f in flags {
        s.push(' ');
        s.push_str(f);
    }
    if !rest.is_empty() {
        s.push(' ');
        if rest.starts_with("--") {
            s.push_str("-- ");
        }
        s.push_str(rest);
    }
    s
}

fn pairs(kw: &'static str, kvs: &[KeyValue], esc: char) -> String {
    let new_form = kvs
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect::<Vec<_>>()
        .join(" ");
    if kvs.len() == 1 && super::parse::name_values(kw, &new_form, esc).as_deref() != Ok(kvs) {
        return format!("{} {}", kvs[0].key, kvs[0].value);
    }
    new_form
}

fn command_line(cmd: &Command, esc: char) -> (String, Vec<Heredoc>) {
    let mut flags = Vec::new();
    let kw = cmd.keyword();
    let (rest, heredocs) = match cmd {
        Command::From(f) => {
            opt(&mut flags, "platform", &f.platform);
            let mut r = f.image.clone();
            if let Some(a) = &f.alias {
                r.push_str(" AS ");
                r.push_str(a);
            }
            (r, Vec::new())
        }
        Command::Run(r) => {
            for m in &r.mounts {
                flag(&mut flags, "mount", m);
            }
            opt(&mut flags, "network", &r.network);
            opt(&mut flags, "security", &r.security);
            (cmdline(&r.command), r.heredocs.clone())
        }
        Command::Cmd(c) | Command::Entrypoint(c) => (cmdline(c), Vec::new()),
        Command::Copy(c) => {
            opt(&mut flags, "from", &c.from);
            opt(&mut flags, "chown", &c.chown);
            opt(&mut flags, "chmod", &c.chmod);
            if c.link {
                flags.push("--link".into());
            }
            for e in &c.exclude {
                flag(&mut flags, "exclude", e);
            }
            if c.parents {
                flags.push("--parents".into());
            }
            (paths(&c.sources, &c.dest, c.json), c.heredocs.clone())
        }
        Command::Add(a) => {
            opt(&mut flags, "chown", &a.chown);
            opt(&mut flags, "chmod", &a.chmod);
            if a.link {
                flags.push("--link".into());
            }
            for e in &a.exclude {
                flag(&mut flags, "exclude", e);
            }
            if a.keep_git_dir {
                flags.push("--keep-git-dir".into());
            }
            opt(&mut flags, "checksum", &a.checksum);
            (paths(&a.sources, &a.dest, a.json), a.heredocs.clone())
        }
        Command::Env(kvs) => (pairs("ENV", kvs, esc), Vec::new()),
        Command::Label(kvs) => (pairs("LABEL", kvs, esc), Vec::new()),
        Command::Arg(decls) => {
            let words: Vec<String> = decls
                .iter()
                .map(|d| match &d.default {
                    Some(v) => format!("{}={v}", d.name),
                    None => d.name.clone(),
                })
                .collect();
            (words.join(" "), Vec::new())
        }
        Command::Expose(p) => (p.join(" "), Vec::new()),
        Command::User(s)
        | Command::Workdir(s)
        | Command::Stopsignal(s)
        | Command::Maintainer(s) => (s.clone(), Vec::new()),
        Command::Volume(v) => (
            if v.json {
                json(&v.paths)
            } else {
                v.paths.join(" ")
            },
            Vec::new(),
        ),
        Command::Shell(l) => (json(l), Vec::new()),
        Command::Healthcheck(Healthcheck::None) => ("NONE".into(), Vec::new()),
        Command::Healthcheck(Healthcheck::Cmd {
            command,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        }) => {
            opt(&mut flags, "interval", interval);
            opt(&mut flags, "timeout", timeout);
            opt(&mut flags, "start-period", start_period);
            opt(&mut flags, "start-interval", start_interval);
            opt(&mut flags, "retries", &retries.map(|r| r.to_string()));
            (format!("CMD {}", cmdline(command)), Vec::new())
        }
        Command::Onbuild(inner) => command_line(inner, esc),
    };
    let line = join(kw, &flags, &rest);
    (line, heredocs)
}

fn paths(sources: &[String], dest: &str, as_json: bool) -> String {
    let mut all = sources.to_vec();
    all.push(dest.to_string());
    if as_json {
        json(&all)
    } else {
        all.join(" ")
    }
}
