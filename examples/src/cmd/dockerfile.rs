//! `imagectl dockerfile [-f FILE|-] [--build-arg K=V]... [--target S] [--expand]`
//! and the `--print` of `imagectl build`: a Dockerfile's instructions as
//! JSON, in the fixed, versioned form that docs/dockerfile-json.md
//! documents field by field.
//!
//! Nothing is built and no store is read: a base image's ENV is unknown
//! here, so with `--expand` a reference to it expands as unset (a stage
//! built on an earlier stage sees that stage's ENV).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image_build::dockerfile::{
    self, BuildInputs, Command, Dockerfile, DockerfileError, Expander, Instruction, Problem,
};
use image_core::Platform;
use serde::Serialize;

/// The version of the JSON form; a change that a reader could misread
/// (a field removed, renamed or changing meaning) makes a new version.
pub const VERSION: u32 = 1;

/// Arguments of `imagectl dockerfile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Dockerfile (`-`: standard input).
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: PathBuf,
    /// A build argument, `NAME=VALUE` (`NAME` alone takes the value of the
    /// environment variable NAME, as `docker build` does); repeatable.
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last); the stages it does not
    /// need are marked `"needed": false`.
    #[arg(long)]
    pub target: Option<String>,
    /// Add each instruction's expanded form (`"expanded"`), as a build
    /// with these build arguments would run it.
    #[arg(long)]
    pub expand: bool,
}

/// `imagectl dockerfile`: prints the instruction list of a Dockerfile.
pub fn run(args: Args) -> anyhow::Result<()> {
    print(
        &args.file,
        &args.build_args,
        args.target.as_deref(),
        args.expand,
    )
}

/// Prints the instruction list of the Dockerfile at `file` (`-`: standard
/// input) as the JSON form of docs/dockerfile-json.md: parsed, and with
/// `expand`, expanded with `build_args` (`NAME=VALUE` or `NAME`) for the
/// host's platform; `target` names the stage built (default: the last).
/// This is `imagectl build --print`.
pub fn print(
    file: &Path,
    build_args: &[String],
    target: Option<&str>,
    expand: bool,
) -> anyhow::Result<()> {
    let (name, text) = read(file)?;
    let inputs = BuildInputs {
        build_args: parse_build_args(build_args)?,
        target: Platform::host(),
        build: Platform::host(),
    };
    let doc = outline(&name, &text, &inputs, target, expand)?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// Reads a Dockerfile, at most [`dockerfile::MAX_BYTES`] (and one more, so
/// the parser reports the size). Returns the name errors give it and its text.
fn read(file: &Path) -> anyhow::Result<(String, String)> {
    let limit = dockerfile::MAX_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    let name = if file == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .context("reading the Dockerfile from standard input")?;
        "-".to_owned()
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .with_context(|| format!("reading {}", file.display()))?;
        file.display().to_string()
    };
    let text = if bytes.len() as u64 == limit {
        // Too long: the parser's own error says so, whatever the bytes.
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        String::from_utf8(bytes).with_context(|| format!("{name} is not UTF-8 text"))?
    };
    Ok((name, text))
}

/// `--build-arg` values: `NAME=VALUE`, or `NAME` for the environment's
/// value (left out when the environment has none).
pub fn parse_build_args(args: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        let (k, v) = match a.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (a.as_str(), std::env::var(a).ok()),
        };
        if k.is_empty() {
            bail!("--build-arg {a:?}: expected NAME=VALUE");
        }
        if let Some(v) = v {
            out.insert(k.to_owned(), v);
        }
    }
    Ok(out)
}

/// The whole document (version 1).
#[derive(Debug, Serialize)]
pub struct Outline {
    /// [`VERSION`].
    pub version: u32,
    /// The file as named (`-` for standard input).
    pub file: String,
    /// The parser directives.
    pub directives: dockerfile::Directives,
    /// The build arguments given.
    pub build_args: BTreeMap<String, String>,
    /// The platform of the result (TARGETPLATFORM).
    pub platform: String,
    /// True when each instruction has its `expanded` form.
    pub expanded: bool,
    /// The stage built.
    pub target: Target,
    /// The ARGs before the first FROM.
    pub global_args: Vec<Step>,
    /// The stages in file order.
    pub stages: Vec<StageOutline>,
}

/// The stage a build makes its image of.
#[derive(Debug, Serialize)]
pub struct Target {
    /// Its index.
    pub index: usize,
    /// Its name, if it has one.
    pub name: Option<String>,
}

/// One stage.
#[derive(Debug, Serialize)]
pub struct StageOutline {
    /// Its position from 0 (`COPY --from=0`).
    pub index: usize,
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The line of its FROM.
    pub line: usize,
    /// FROM's image (an image, an earlier stage's name, or `scratch`), as
    /// written, or expanded with `--expand`.
    pub from: String,
    /// FROM's `--platform`, as written or expanded.
    pub platform: Option<String>,
    /// The index of the earlier stage FROM names, if it names one.
    pub base_stage: Option<usize>,
    /// Whether building the target builds this stage.
    pub needed: bool,
    /// The instructions after FROM.
    pub instructions: Vec<Step>,
}

/// One instruction.
#[derive(Debug, Serialize)]
pub struct Step {
    /// The line of its keyword.
    pub line: usize,
    /// Its last line (continuations and heredocs included).
    pub end_line: usize,
    /// The keyword, upper-case.
    pub keyword: &'static str,
    /// The instruction as parsed (image-build's `dockerfile::Command`).
    pub command: Command,
    /// The instruction as a build runs it (with `--expand` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expanded: Option<Command>,
}

impl Step {
    fn new(ins: &Instruction, expanded: Option<Command>) -> Step {
        Step {
            line: ins.pos.line,
            end_line: ins.end_line,
            keyword: ins.command.keyword(),
            command: ins.command.clone(),
            expanded,
        }
    }
}

/// Parses `text` and makes its outline; `name` names the file in errors.
pub fn outline(
    name: &str,
    text: &str,
    inputs: &BuildInputs,
    target: Option<&str>,
    expand: bool,
) -> anyhow::Result<Outline> {
    let df = dockerfile::parse(name, text)?;
    let expander = Expander::new(name, &df, inputs)?;
    let mut budget = Budget {
        file: name,
        left: MAX_EXPANDED_OUTPUT,
    };
    let global_args = global_args(name, &df, &expander, inputs, expand, &mut budget)?;

    // Each stage's FROM (expanded or as written) and the earlier stage it
    // names, looked up by name in one map (the parser lower-cases names
    // and refuses a name given twice).
    let names: HashMap<&str, usize> = df
        .stages
        .iter()
        .filter_map(|s| Some((s.name()?, s.index)))
        .collect();
    let stage_before = |index: usize, word: &str| {
        names
            .get(word.to_ascii_lowercase().as_str())
            .copied()
            .filter(|&i| i < index)
    };
    let mut froms = Vec::with_capacity(df.stages.len());
    let mut bases = Vec::with_capacity(df.stages.len());
    let mut heirs = vec![0usize; df.stages.len()];
    for stage in &df.stages {
        let from = if expand {
            let from = expander.from(stage)?;
            budget.charge(from.image.len() + from.platform.as_ref().map_or(0, String::len))?;
            from
        } else {
            stage.from.clone()
        };
        let base = stage_before(stage.index, &from.image);
        if let Some(b) = base {
            heirs[b] += 1;
        }
        froms.push(from);
        bases.push(base);
    }

    // With --expand, each instruction expanded in the scope it reaches; a
    // stage on a stage starts from that stage's ENV, handed over to its
    // last heir and copied for the others, the copies bounded.
    let mut inherited = Inherited::new(name, heirs);
    let mut stages: Vec<StageOutline> = Vec::with_capacity(df.stages.len());
    for ((stage, from), base_stage) in df.stages.iter().zip(froms).zip(bases) {
        let mut instructions = Vec::with_capacity(stage.instructions.len());
        if expand {
            let mut scope = expander.stage_scope(inherited.take(base_stage)?);
            for ins in &stage.instructions {
                let expanded = expander.step(&mut scope, ins)?;
                budget.charge_command(&expanded)?;
                instructions.push(Step::new(ins, Some(expanded)));
            }
            inherited.keep(stage.index, scope.env);
        } else {
            instructions.extend(stage.instructions.iter().map(|i| Step::new(i, None)));
        }
        stages.push(StageOutline {
            index: stage.index,
            name: stage.name().map(str::to_owned),
            line: stage.pos.line,
            from: from.image,
            platform: from.platform,
            base_stage,
            needed: false,
            instructions,
        });
    }

    let target = match target {
        None => stages.len() - 1,
        Some(t) => *names
            .get(t.to_ascii_lowercase().as_str())
            .with_context(|| format!("--target {t}: no stage of {name} has that name"))?,
    };
    mark_needed(&mut stages, target, stage_before);
    Ok(Outline {
        version: VERSION,
        file: name.to_owned(),
        directives: df.directives.clone(),
        build_args: inputs.build_args.clone(),
        platform: inputs.target.to_string(),
        expanded: expand,
        target: Target {
            index: target,
            name: df.stages[target].name().map(str::to_owned),
        },
        global_args,
        stages,
    })
}

/// The global ARGs; expanded, each shows the values it gives, in the
/// scope reached so far (as `Expander::new` evaluates them).
fn global_args(
    name: &str,
    df: &Dockerfile,
    expander: &Expander<'_>,
    inputs: &BuildInputs,
    expand: bool,
    budget: &mut Budget<'_>,
) -> anyhow::Result<Vec<Step>> {
    let mut scope = expander.stage_scope(BTreeMap::new());
    scope.args = inputs.platform_args();
    let mut out = Vec::with_capacity(df.global_args.len());
    for ins in &df.global_args {
        let expanded = match (&ins.command, expand) {
            (Command::Arg(decls), true) => {
                let mut values = Vec::with_capacity(decls.len());
                for d in decls {
                    let value = match (inputs.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => {
                            Some(scope.expand(def).map_err(|reason| DockerfileError {
                                file: name.to_owned(),
                                line: ins.pos.line,
                                column: ins.pos.column,
                                problem: Problem::Expand {
                                    word: def.clone(),
                                    reason,
                                },
                            })?)
                        }
                        (None, None) => None,
                    };
                    if let Some(v) = &value {
                        scope.args.insert(d.name.clone(), v.clone());
                    }
                    values.push(dockerfile::ArgDecl {
                        name: d.name.clone(),
                        default: value,
                    });
                }
                let expanded = Command::Arg(values);
                budget.charge_command(&expanded)?;
                Some(expanded)
            }
            _ => None,
        };
        out.push(Step::new(ins, expanded));
    }
    Ok(out)
}

/// The most bytes the expanded forms of a Dockerfile may take, in their
/// JSON form, in all: one expansion may be image-build's
/// `dockerfile::MAX_EXPANDED` (1 MiB) from a few bytes of input.
pub const MAX_EXPANDED_OUTPUT: usize = 64 << 20;

/// What the expanded forms may still take of [`MAX_EXPANDED_OUTPUT`].
struct Budget<'a> {
    file: &'a str,
    left: usize,
}

impl Budget<'_> {
    fn charge(&mut self, bytes: usize) -> anyhow::Result<()> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => bail!(
                "{}: the expanded instructions take more than {MAX_EXPANDED_OUTPUT} bytes",
                self.file
            ),
        }
    }

    /// Charges the size of `command`'s JSON form, counted as it is written.
    fn charge_command(&mut self, command: &Command) -> anyhow::Result<()> {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        serde_json::to_writer(&mut count, command)?;
        self.charge(count.0)
    }
}

/// How many ENV entries the stages built on other stages may copy from
/// them in all (a stage's last heir takes its ENV without a copy).
pub const MAX_INHERITED_ENV: usize = 1 << 20;

/// The ENV at the end of each stage that later stages are built on, kept
/// until its last heir takes it.
struct Inherited<'a> {
    file: &'a str,
    /// Per stage, how many later stages are still to take its ENV.
    heirs: Vec<usize>,
    envs: Vec<Option<BTreeMap<String, String>>>,
    copied: usize,
}

impl<'a> Inherited<'a> {
    fn new(file: &'a str, heirs: Vec<usize>) -> Self {
        let envs = vec![None; heirs.len()];
        Inherited {
            file,
            heirs,
            envs,
            copied: 0,
        }
    }

    /// The ENV a stage on `base` starts from (empty on an image).
    fn take(&mut self, base: Option<usize>) -> anyhow::Result<BTreeMap<String, String>> {
        let Some(b) = base else {
            return Ok(BTreeMap::new());
        };
        self.heirs[b] -= 1;
        if self.heirs[b] == 0 {
            return Ok(self.envs[b].take().unwrap_or_default());
        }
        let env = self.envs[b].clone().unwrap_or_default();
        self.copied += env.len();
        if self.copied > MAX_INHERITED_ENV {
            bail!(
                "{}: the stages built on other stages inherit more than {MAX_INHERITED_ENV} \
                 ENV entries in all",
                self.file
            );
        }
        Ok(env)
    }

    /// Keeps a stage's final ENV if a later stage is built on it.
    fn keep(&mut self, stage: usize, env: BTreeMap<String, String>) {
        if self.heirs[stage] > 0 {
            self.envs[stage] = Some(env);
        }
    }
}

/// Marks the stages that building `target` builds: the target, and what
/// its FROM and its `COPY --from`s name (`stage_before(i, word)`: the
/// stage before `i` named `word`), transitively; each stage is visited
/// once. With `--expand` the `--from` values are the expanded ones.
fn mark_needed(
    stages: &mut [StageOutline],
    target: usize,
    stage_before: impl Fn(usize, &str) -> Option<usize>,
) {
    let mut todo = vec![target];
    let mut seen = BTreeSet::new();
    while let Some(i) = todo.pop() {
        if !seen.insert(i) {
            continue;
        }
        stages[i].needed = true;
        todo.extend(stages[i].base_stage);
        for step in &stages[i].instructions {
            if let Command::Copy(c) = step.expanded.as_ref().unwrap_or(&step.command) {
                if let Some(from) = &c.from {
                    // An index names that stage; anything else, a name or an image.
                    todo.extend(match from.parse::<usize>() {
                        Ok(j) => Some(j).filter(|&j| j < i),
                        Err(_) => stage_before(i, from),
                    });
                }
            }
        }
    }
}
