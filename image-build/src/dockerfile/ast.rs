//! The typed syntax tree of a Dockerfile, as the parser produces it (before
//! expansion: words keep their quotes and `$` references).

use serde::Serialize;

/// A place in the Dockerfile: 1-based line and column (columns count
/// characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pos {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
}

/// The parser directives read from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// `# syntax=`: recorded, not acted on (there is no frontend to load).
    pub syntax: Option<String>,
    /// `# escape=`: the escape and line continuation character, `\` or `` ` ``.
    pub escape: char,
    /// `# check=`: the build-check configuration, recorded as written.
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// A parsed Dockerfile: its directives, the ARGs before the first FROM and
/// its stages in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The parser directives.
    pub directives: Directives,
    /// The ARG instructions before the first FROM, in order.
    pub global_args: Vec<Instruction>,
    /// The build stages, at least one.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// Every instruction in file order (each stage's FROM included), without
    /// positions: what the printer must keep.
    pub fn commands(&self) -> Vec<Command> {
        let mut out: Vec<Command> = self.global_args.iter().map(|i| i.command.clone()).collect();
        for s in &self.stages {
            out.push(Command::From(s.from.clone()));
            out.extend(s.instructions.iter().map(|i| i.command.clone()));
        }
        out
    }
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// The stage's position among the stages, from 0 (`COPY --from=0`).
    pub index: usize,
    /// Where its FROM is.
    pub pos: Pos,
    /// Its FROM (the name is `from.alias`, lower-cased).
    pub from: From,
    /// The instructions after the FROM.
    pub instructions: Vec<Instruction>,
}

impl Stage {
    /// The stage's name (`FROM x AS name`), if it has one.
    pub fn name(&self) -> Option<&str> {
        self.from.alias.as_deref()
    }
}

/// One instruction with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// Where the instruction's keyword is.
    pub pos: Pos,
    /// The last line of the instruction (continuations and heredocs included).
    pub end_line: usize,
    /// What it says.
    pub command: Command,
}

/// An instruction and its typed arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// `FROM [--platform=p] image [AS name]`.
    From(From),
    /// `RUN [--mount=..] [--network=..] [--security=..] command`.
    Run(Run),
    /// `CMD command`.
    Cmd(CommandLine),
    /// `ENTRYPOINT command`.
    Entrypoint(CommandLine),
    /// `COPY [flags] src... dest`.
    Copy(Copy),
    /// `ADD [flags] src... dest`.
    Add(Add),
    /// `ENV k=v ...` or `ENV k v`.
    Env(Vec<KeyValue>),
    /// `ARG name[=default] ...`.
    Arg(Vec<ArgDecl>),
    /// `LABEL k=v ...`.
    Label(Vec<KeyValue>),
    /// `EXPOSE port[/proto] ...`.
    Expose(Vec<String>),
    /// `USER user[:group]`.
    User(String),
    /// `WORKDIR path`.
    Workdir(String),
    /// `VOLUME ["a", "b"]` or `VOLUME a b`.
    Volume(PathList),
    /// `SHELL ["exe", "arg"]` (JSON form only).
    Shell(Vec<String>),
    /// `STOPSIGNAL signal`.
    Stopsignal(String),
    /// `HEALTHCHECK [options] CMD command` or `HEALTHCHECK NONE`.
    Healthcheck(Healthcheck),
    /// `ONBUILD instruction`: a trigger stored in the image config.
    Onbuild(Box<Command>),
    /// `MAINTAINER name` (deprecated, still accepted).
    Maintainer(String),
}

impl Command {
    /// The instruction keyword, upper-case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Env(_) => "ENV",
            Command::Arg(_) => "ARG",
            Command::Label(_) => "LABEL",
            Command::Expose(_) => "EXPOSE",
            Command::User(_) => "USER",
            Command::Workdir(_) => "WORKDIR",
            Command::Volume(_) => "VOLUME",
            Command::Shell(_) => "SHELL",
            Command::Stopsignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Onbuild(_) => "ONBUILD",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// `FROM`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// The image, stage name or `scratch`.
    pub image: String,
    /// `AS name`, lower-cased.
    pub alias: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
}

/// A command in exec (JSON) or shell form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandLine {
    /// `["exe", "arg"]`: run as is, no shell.
    Exec(Vec<String>),
    /// Anything else: run through the stage's SHELL, not expanded by the builder.
    Shell(String),
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// The heredocs named on the line, in order.
    pub heredocs: Vec<Heredoc>,
    /// `--mount=...`, each as written (typed in part 2).
    pub mounts: Vec<String>,
    /// `--network=default|none|host`.
    pub network: Option<String>,
    /// `--security=insecure|sandbox`.
    pub security: Option<String>,
}

/// A here-document: the lines after an instruction up to its delimiter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter, quotes removed.
    pub name: String,
    /// The body as written, each line with its newline; with `chomp`, the
    /// leading tabs are still there ([`Heredoc::body`] strips them).
    pub content: String,
    /// False when any part of the delimiter was quoted: no expansion.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from each line.
    pub chomp: bool,
    /// The file descriptor before `<<` (`3<<EOF`), 0 when none.
    pub fd: u32,
}

impl Heredoc {
    /// The body with `<<-` tab stripping applied.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// The sources (words as written; heredoc sources are `<<NAME`).
    pub sources: Vec<String>,
    /// The destination.
    pub dest: String,
    /// True when written in JSON form.
    pub json: bool,
    /// Heredoc sources, in order.
    pub heredocs: Vec<Heredoc>,
    /// `--from=stage|index|image`.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--exclude=pattern`, repeatable.
    pub exclude: Vec<String>,
    /// `--parents`.
    pub parents: bool,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    /// The sources (paths, URLs, git references, `<<NAME` heredocs).
    pub sources: Vec<String>,
    /// The destination.
    pub dest: String,
    /// True when written in JSON form.
    pub json: bool,
    /// Heredoc sources, in order.
    pub heredocs: Vec<Heredoc>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--exclude=pattern`, repeatable.
    pub exclude: Vec<String>,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum=digest`.
    pub checksum: Option<String>,
}

/// A `key=value` pair of ENV or LABEL, as written (quotes kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// One name of an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The name.
    pub name: String,
    /// The default, when `name=default`.
    pub default: Option<String>,
}

/// A list of paths in JSON or whitespace-separated form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathList {
    /// The paths.
    pub paths: Vec<String>,
    /// True when written in JSON form.
    pub json: bool,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [options] CMD command`.
    Cmd {
        /// The test command.
        command: CommandLine,
        /// `--interval`, as written (a Go duration).
        interval: Option<String>,
        /// `--timeout`.
        timeout: Option<String>,
        /// `--start-period`.
        start_period: Option<String>,
        /// `--start-interval`.
        start_interval: Option<String>,
        /// `--retries`.
        retries: Option<u32>,
    },
}
