//! The expansion pass: ARG/ENV scopes and the words Docker expands, one
//! instruction at a time, so a builder expands each step as it reaches it.

use std::collections::BTreeMap;
use std::sync::Arc;

use image_core::Platform;

use super::ast::*;
use super::error::{DockerfileError, ExpandProblem, Problem};
use super::lex::{run, MAX_EXPANDED};
use crate::glob::{Steps, REPLACE_BUDGET};

/// The build arguments that need no ARG to reach RUN's environment.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What a build is given from outside the Dockerfile.
#[derive(Debug, Clone)]
pub struct BuildInputs {
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// The platform the result is for (TARGETPLATFORM and friends).
    pub target: Platform,
    /// The platform the build runs on (BUILDPLATFORM and friends).
    pub build: Platform,
}

impl BuildInputs {
    /// The automatic platform ARGs: TARGETPLATFORM, TARGETOS, TARGETARCH,
    /// TARGETVARIANT, BUILDPLATFORM, BUILDOS, BUILDARCH, BUILDVARIANT.
    pub fn platform_args(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for (prefix, p) in [("TARGET", &self.target), ("BUILD", &self.build)] {
            let variant = p.variant.clone().unwrap_or_default();
            let mut full = format!("{}/{}", p.os, p.architecture);
            if !variant.is_empty() {
                full = format!("{full}/{variant}");
            }
            m.insert(format!("{prefix}PLATFORM"), full);
            m.insert(format!("{prefix}OS"), p.os.clone());
            m.insert(format!("{prefix}ARCH"), p.architecture.clone());
            m.insert(format!("{prefix}VARIANT"), variant);
        }
        m
    }

    /// The proxy build args given, which RUN sees without an ARG.
    pub fn proxy_args(&self) -> BTreeMap<String, String> {
        self.build_args
            .iter()
            .filter(|(k, _)| PROXY_ARGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The most bytes (names and values) the ARG and ENV instructions of one
/// stage, or the global ARGs, may hold in their scope at once. Each
/// instruction's words are bounded alone ([`MAX_EXPANDED`]); this bounds
/// what they add up to, since a few bytes of `ENV C1=$A` copy a value of
/// up to [`MAX_EXPANDED`] under a new name. Twice image-core's bound on a
/// config's `Env` (`MAX_CONFIG_FIELD_BYTES`), so ARGs as large as any Env
/// a container can take fit beside it.
pub const MAX_SCOPE_BYTES: usize = 2 * image_core::config::MAX_CONFIG_FIELD_BYTES;

/// The most automaton steps the pattern substitutions (`${VAR#pattern}`,
/// `${VAR%pattern}`, `${VAR/pattern/replacement}`) of a whole Dockerfile
/// may take, every word of every scope of one [`Expander`] together
/// (`REPLACE_BUDGET` is one word's alone), and in a build for several
/// platforms every platform's together. A substitution costs the
/// value's length times the pattern's, or more (each start of a
/// replacement), for a few bytes of Dockerfile: bounded per word only, an
/// 8 MiB Dockerfile could ask for hours.
pub const MAX_PATTERN_STEPS: usize = 4 * REPLACE_BUDGET;

/// The pattern work a Dockerfile's expansion may still do, shared by the
/// scopes of one [`Expander`]. It is no part of a scope's value: two
/// scopes compare equal whatever it holds.
#[derive(Debug, Clone)]
struct Budget(Arc<Steps>);

impl Default for Budget {
    fn default() -> Self {
        Budget(Arc::new(Steps::new(MAX_PATTERN_STEPS)))
    }
}

impl PartialEq for Budget {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Budget {}

/// The variables visible to one stage at one point: its ENV and the ARGs
/// declared so far (ENV wins over an ARG of the same name, as in Docker).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The escape character of the file.
    pub escape: char,
    /// ENV so far (the base image's first, then the stage's).
    pub env: BTreeMap<String, String>,
    /// ARGs declared so far that have a value.
    pub args: BTreeMap<String, String>,
    /// The bytes of the names and values the scope's own ARG and ENV
    /// instructions set, less those they replaced (what the scope started
    /// with is bounded by where it came from: a base image's config, the
    /// stage before, the caller's build args).
    added: usize,
    /// What its expansions' pattern substitutions may still take
    /// ([`MAX_PATTERN_STEPS`], shared with every scope of its expander).
    steps: Budget,
}

impl Scope {
    /// The value of a variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .or_else(|| self.args.get(name))
            .map(String::as_str)
    }

    /// Sets `name` to `value` among the ENV (`env`) or the ARGs, counting
    /// what the scope holds against [`MAX_SCOPE_BYTES`]: once, not per
    /// instruction, so the check costs the same however much it holds.
    fn set(&mut self, env: bool, name: &str, value: String) -> Result<(), Problem> {
        let map = if env { &mut self.env } else { &mut self.args };
        let adds = name.len() + value.len();
        let old = map
            .insert(name.to_owned(), value)
            .map_or(0, |v| name.len() + v.len());
        self.added = (self.added + adds).saturating_sub(old);
        if self.added > MAX_SCOPE_BYTES {
            return Err(Problem::TooLarge {
                what: "the bytes of the ARG and ENV values in scope",
                limit: MAX_SCOPE_BYTES,
            });
        }
        Ok(())
    }

    /// Expands one word in this scope.
    pub fn expand(&self, word: &str) -> Result<String, ExpandProblem> {
        run(
            word,
            self.escape,
            &|n| self.get(n).map(str::to_string),
            false,
            &self.steps.0,
        )
    }

    /// Expands heredoc bodies whose delimiter was not quoted, after `<<-`
    /// tab stripping (the result has `chomp` cleared).
    fn heredocs(&self, docs: &[Heredoc]) -> Result<Vec<Heredoc>, (String, ExpandProblem)> {
        docs.iter()
            .map(|d| {
                let body = d.body();
                let content = if d.expand {
                    run(
                        &body,
                        self.escape,
                        &|n| self.get(n).map(str::to_string),
                        true,
                        &self.steps.0,
                    )
                    .map_err(|p| (d.name.clone(), p))?
                } else {
                    body
                };
                Ok(Heredoc {
                    content,
                    chomp: false,
                    ..d.clone()
                })
            })
            .collect()
    }
}

/// Expands a parsed Dockerfile for one set of inputs.
#[derive(Debug, Clone)]
pub struct Expander<'a> {
    file: &'a str,
    dockerfile: &'a Dockerfile,
    inputs: &'a BuildInputs,
    global: Scope,
}

impl<'a> Expander<'a> {
    /// Evaluates the global ARGs (before the first FROM) in order, with the
    /// automatic platform ARGs visible. `file` names the Dockerfile in errors.
    pub fn new(
        file: &'a str,
        dockerfile: &'a Dockerfile,
        inputs: &'a BuildInputs,
    ) -> Result<Self, DockerfileError> {
        Self::with_budget(file, dockerfile, inputs, Budget::default())
    }

    /// As [`new`](Self::new), for another platform of the same build: its
    /// pattern substitutions draw on what `other`'s may still take, not on
    /// a [`MAX_PATTERN_STEPS`] of their own, so a build's pattern work is
    /// bounded whatever the number of its platforms.
    #[cfg(feature = "runtime")]
    pub(crate) fn sharing_budget(
        file: &'a str,
        dockerfile: &'a Dockerfile,
        inputs: &'a BuildInputs,
        other: &Expander<'_>,
    ) -> Result<Self, DockerfileError> {
        Self::with_budget(file, dockerfile, inputs, other.global.steps.clone())
    }

    fn with_budget(
        file: &'a str,
        dockerfile: &'a Dockerfile,
        inputs: &'a BuildInputs,
        steps: Budget,
    ) -> Result<Self, DockerfileError> {
        let mut global = Scope {
            escape: dockerfile.directives.escape,
            env: BTreeMap::new(),
            args: inputs.platform_args(),
            added: 0,
            steps,
        };
        for ins in &dockerfile.global_args {
            if let Command::Arg(decls) = &ins.command {
                for d in decls {
                    let value = match (inputs.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => Some(
                            global
                                .expand(def)
                                .map_err(|e| located(file, ins.pos, def, e))?,
                        ),
                        (None, None) => None,
                    };
                    if let Some(v) = value {
                        global
                            .set(false, &d.name, v)
                            .map_err(|p| placed(file, ins.pos, p))?;
                    }
                }
            }
        }
        Ok(Expander {
            file,
            dockerfile,
            inputs,
            global,
        })
    }

    /// The global scope: automatic platform ARGs and the global ARGs.
    pub fn global(&self) -> &Scope {
        &self.global
    }

    /// The FROM of a stage with its image and platform expanded in the
    /// global scope.
    pub fn from(&self, stage: &Stage) -> Result<From, DockerfileError> {
        let e = |w: &str| {
            self.global
                .expand(w)
                .map_err(|p| located(self.file, stage.pos, w, p))
        };
        Ok(From {
            image: e(&stage.from.image)?,
            alias: stage.from.alias.clone(),
            platform: stage.from.platform.as_deref().map(e).transpose()?,
        })
    }

    /// A fresh scope for a stage, starting from its base image's ENV.
    pub fn stage_scope(&self, base_env: BTreeMap<String, String>) -> Scope {
        Scope {
            escape: self.dockerfile.directives.escape,
            env: base_env,
            args: BTreeMap::new(),
            added: 0,
            steps: self.global.steps.clone(),
        }
    }

    /// Expands a whole stage from its base image's ENV: its FROM (in the
    /// global scope), then each instruction in order.
    pub fn stage(
        &self,
        stage: &Stage,
        base_env: BTreeMap<String, String>,
    ) -> Result<Vec<Command>, DockerfileError> {
        let mut out = Vec::with_capacity(stage.instructions.len() + 1);
        out.push(Command::From(self.from(stage)?));
        let mut scope = self.stage_scope(base_env);
        for ins in &stage.instructions {
            out.push(self.step(&mut scope, ins)?);
        }
        Ok(out)
    }

    /// Expands one instruction of a stage in `scope` and applies its ARG or
    /// ENV to `scope`. Returns the instruction with every word Docker
    /// expands expanded (RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and
    /// ONBUILD are returned as written; COPY and ADD heredoc bodies are
    /// expanded unless their delimiter was quoted, keeping quotes).
    ///
    /// # Errors
    /// A word that does not expand, or an instruction whose expanded words
    /// take more than [`MAX_EXPANDED`] bytes in all
    /// ([`ExpandProblem::TooLong`]: one word may grow to that from a few
    /// bytes, and an instruction may have many).
    pub fn step(&self, scope: &mut Scope, ins: &Instruction) -> Result<Command, DockerfileError> {
        let at = ins.pos;
        let file = self.file;
        let total = std::cell::Cell::new(0usize);
        let count = |w: &str, n: usize| {
            total.set(total.get() + n);
            if total.get() > MAX_EXPANDED {
                return Err(located(file, at, w, ExpandProblem::TooLong(MAX_EXPANDED)));
            }
            Ok(())
        };
        let ex = |s: &Scope, w: &str| {
            let out = s.expand(w).map_err(|p| located(file, at, w, p))?;
            count(w, out.len())?;
            Ok(out)
        };
        let list = |s: &Scope, l: &[String]| -> Result<Vec<String>, DockerfileError> {
            l.iter().map(|w| ex(s, w)).collect()
        };
        let opt = |s: &Scope, o: &Option<String>| o.as_deref().map(|w| ex(s, w)).transpose();
        let docs = |s: &Scope, d: &[Heredoc]| {
            let docs = s
                .heredocs(d)
                .map_err(|(name, p)| located(file, at, &format!("<<{name}"), p))?;
            for doc in &docs {
                count(&format!("<<{}", doc.name), doc.content.len())?;
            }
            Ok(docs)
        };
        Ok(match &ins.command {
            Command::Arg(decls) => {
                let mut out = Vec::with_capacity(decls.len());
                for d in decls {
                    let value = match (self.inputs.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => Some(ex(scope, def)?),
                        (None, None) => self.global.args.get(&d.name).cloned(),
                    };
                    if let Some(v) = &value {
                        scope
                            .set(false, &d.name, v.clone())
                            .map_err(|p| placed(file, ins.pos, p))?;
                    }
                    out.push(ArgDecl {
                        name: d.name.clone(),
                        default: value,
                    });
                }
                Command::Arg(out)
            }
            Command::Env(pairs) => {
                // Every pair sees the scope from before the instruction.
                let out = pairs
                    .iter()
                    .map(|kv| {
                        Ok(KeyValue {
                            key: ex(scope, &kv.key)?,
                            value: ex(scope, &kv.value)?,
                        })
                    })
                    .collect::<Result<Vec<_>, DockerfileError>>()?;
                for kv in &out {
                    scope
                        .set(true, &kv.key, kv.value.clone())
                        .map_err(|p| placed(file, ins.pos, p))?;
                }
                Command::Env(out)
            }
            Command::Label(pairs) => Command::Label(
                pairs
                    .iter()
                    .map(|kv| {
                        Ok(KeyValue {
                            key: ex(scope, &kv.key)?,
                            value: ex(scope, &kv.value)?,
                        })
                    })
                    .collect::<Result<_, DockerfileError>>()?,
            ),
            Command::Copy(c) => Command::Copy(Copy {
                sources: list(scope, &c.sources)?,
                dest: ex(scope, &c.dest)?,
                from: opt(scope, &c.from)?,
                chown: opt(scope, &c.chown)?,
                chmod: opt(scope, &c.chmod)?,
                exclude: list(scope, &c.exclude)?,
                heredocs: docs(scope, &c.heredocs)?,
                ..c.clone()
            }),
            Command::Add(a) => Command::Add(Add {
                sources: list(scope, &a.sources)?,
                dest: ex(scope, &a.dest)?,
                chown: opt(scope, &a.chown)?,
                chmod: opt(scope, &a.chmod)?,
                exclude: list(scope, &a.exclude)?,
                checksum: opt(scope, &a.checksum)?,
                heredocs: docs(scope, &a.heredocs)?,
                ..a.clone()
            }),
            Command::Run(r) => Command::Run(Run {
                mounts: list(scope, &r.mounts)?,
                ..r.clone()
            }),
            Command::Expose(ports) => Command::Expose(list(scope, ports)?),
            Command::User(u) => Command::User(ex(scope, u)?),
            Command::Workdir(w) => Command::Workdir(ex(scope, w)?),
            Command::Stopsignal(s) => Command::Stopsignal(ex(scope, s)?),
            Command::Volume(v) => Command::Volume(PathList {
                paths: list(scope, &v.paths)?,
                json: v.json,
            }),
            other => other.clone(),
        })
    }
}

fn located(file: &str, pos: Pos, word: &str, reason: ExpandProblem) -> DockerfileError {
    placed(
        file,
        pos,
        Problem::Expand {
            word: word.to_string(),
            reason,
        },
    )
}

fn placed(file: &str, pos: Pos, problem: Problem) -> DockerfileError {
    DockerfileError {
        file: file.to_string(),
        line: pos.line,
        column: pos.column,
        problem,
    }
}
