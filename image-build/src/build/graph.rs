//! The build as a graph of stages: each stage depends on the stages its
//! `FROM` and its `COPY --from` name. A stage can only name a stage before
//! it (a later or unknown name is an image), so the graph has no cycle;
//! the stages the target needs are found by one walk from the target with
//! a visited set, and built in file order.

use std::collections::BTreeMap;

use crate::dockerfile::{Command, Dockerfile, DockerfileError, Expander, Stage};

/// What a stage's `FROM` (or a `COPY --from`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `scratch`: nothing.
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// An image in the store, by name.
    Image(String),
}

/// The stages of a Dockerfile, their dependencies and which are built.
#[derive(Debug, Clone)]
pub struct Graph {
    names: BTreeMap<String, usize>,
    deps: Vec<Vec<usize>>,
    needed: Vec<bool>,
    /// How many times the stages built name each stage (FROM, COPY --from).
    uses: Vec<usize>,
    target: usize,
}

/// The display name of a stage: its name, or `stage-N`.
pub fn stage_name(stage: &Stage) -> String {
    stage
        .name()
        .map_or_else(|| format!("stage-{}", stage.index), str::to_owned)
}

impl Graph {
    /// The graph of `df`: dependencies read from each stage's FROM (expanded
    /// in the global scope) and `COPY --from` (expanded with the stage's own
    /// ARGs and ENVs, the base image's ENV not yet known), for the stage
    /// `target` (the last one when `None`).
    ///
    /// # Errors
    /// An expansion error; `Ok(None)` when `target` names no stage.
    pub fn new(
        df: &Dockerfile,
        expander: &Expander<'_>,
        target: Option<&str>,
    ) -> Result<Option<Graph>, DockerfileError> {
        let mut names = BTreeMap::new();
        let mut deps = Vec::with_capacity(df.stages.len());
        for stage in &df.stages {
            let mut mine = Vec::new();
            if let Source::Stage(j) = resolve(&names, &expander.from(stage)?.image, stage.index) {
                mine.push(j);
            }
            let mut scope = expander.stage_scope(BTreeMap::new());
            for ins in &stage.instructions {
                // ARG and ENV update the scope; COPY's --from is read in it.
                if !matches!(
                    &ins.command,
                    Command::Copy(_) | Command::Arg(_) | Command::Env(_) | Command::Run(_)
                ) {
                    continue;
                }
                let froms = match expander.step(&mut scope, ins)? {
                    Command::Copy(c) => c.from.into_iter().collect(),
                    // RUN --mount=from=... (a bad mount is the step's error).
                    Command::Run(r) => crate::mounts::froms(&r.mounts),
                    _ => Vec::new(),
                };
                for f in froms {
                    if let Source::Stage(j) = resolve(&names, &f, stage.index) {
                        mine.push(j);
                    }
                }
            }
            if let Some(n) = stage.name() {
                names.insert(n.to_owned(), stage.index);
            }
            deps.push(mine);
        }
        let target = match target {
            None => df.stages.len() - 1,
            Some(t) => match names.get(&t.to_lowercase()) {
                Some(&i) => i,
                None => return Ok(None),
            },
        };
        let mut graph = Graph {
            names,
            needed: vec![false; deps.len()],
            uses: vec![0; deps.len()],
            deps,
            target,
        };
        graph.mark_needed();
        for i in 0..graph.deps.len() {
            if graph.needed[i] {
                for &j in &graph.deps[i] {
                    graph.uses[j] += 1;
                }
            }
        }
        Ok(Some(graph))
    }

    /// What `name`, used in stage `at`, names (see [`resolve`]).
    pub fn source(&self, name: &str, at: usize) -> Source {
        resolve(&self.names, name, at)
    }

    /// One walk from the target, each stage visited once.
    fn mark_needed(&mut self) {
        let mut stack = vec![self.target];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut self.needed[i], true) {
                continue;
            }
            stack.extend(self.deps[i].iter().copied().filter(|&j| !self.needed[j]));
        }
    }

    /// The target stage's index.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Whether stage `i` is built.
    pub fn is_needed(&self, i: usize) -> bool {
        self.needed.get(i).copied().unwrap_or(false)
    }

    /// Whether stage `i` is named once only by the stages built and is not
    /// the target: the one stage that names it may take its state.
    pub fn used_once(&self, i: usize) -> bool {
        i != self.target && self.uses.get(i) == Some(&1)
    }

    /// The stages `i` depends on directly.
    pub fn deps(&self, i: usize) -> &[usize] {
        self.deps.get(i).map_or(&[], Vec::as_slice)
    }
}

/// What `name`, used in stage `at`, names: a stage before `at` (by name,
/// or by index as `COPY --from=0` does), `scratch`, or an image.
fn resolve(names: &BTreeMap<String, usize>, name: &str, at: usize) -> Source {
    if name.eq_ignore_ascii_case("scratch") {
        return Source::Scratch;
    }
    if let Some(&i) = names.get(&name.to_lowercase()) {
        if i < at {
            return Source::Stage(i);
        }
    }
    match name.parse::<usize>() {
        Ok(i) if i < at => Source::Stage(i),
        _ => Source::Image(name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::{parse, BuildInputs};

    fn graph(text: &str, target: Option<&str>) -> Option<Graph> {
        let df = parse("Dockerfile", text).unwrap();
        let p: image_core::Platform = "linux/amd64".parse().unwrap();
        let inputs = BuildInputs {
            build_args: BTreeMap::new(),
            target: p.clone(),
            build: p,
        };
        let ex = Expander::new("Dockerfile", &df, &inputs).unwrap();
        Graph::new(&df, &ex, target).unwrap()
    }

    #[test]
    fn only_what_the_target_needs() {
        let text = "FROM busybox AS a\nFROM scratch AS b\nFROM a AS c\nARG S=b\nCOPY --from=$S / /\nFROM scratch AS d\nCOPY --from=0 / /\n";
        let g = graph(text, Some("C")).unwrap();
        assert_eq!(g.target(), 2);
        assert_eq!(g.deps(2), &[0, 1]);
        assert!(g.is_needed(0) && g.is_needed(1) && g.is_needed(2) && !g.is_needed(3));
        assert!(g.used_once(0) && g.used_once(1) && !g.used_once(2));
        let g = graph(text, None).unwrap();
        assert_eq!(
            (0..4).map(|i| g.is_needed(i)).collect::<Vec<_>>(),
            [true, false, false, true]
        );
        assert!(graph(text, Some("nope")).is_none());
    }

    #[test]
    fn a_later_stage_or_itself_is_an_image() {
        let g = graph("FROM b AS a\nFROM a AS b\nCOPY --from=b / /\n", None).unwrap();
        assert_eq!(g.source("b", 0), Source::Image("b".into()));
        assert_eq!(g.source("b", 1), Source::Image("b".into()));
        assert_eq!(g.source("a", 1), Source::Stage(0));
        assert_eq!(g.deps(1), &[0]);
    }

    /// A chain of stages each naming every earlier one: the walk visits
    /// each stage once (the needed set is exactly the chain).
    #[test]
    fn a_dense_graph_is_walked_once() {
        let mut text = String::from("FROM scratch AS s0\n");
        for i in 1..100 {
            text.push_str(&format!("FROM s{} AS s{i}\n", i - 1));
            for j in 0..i {
                text.push_str(&format!("COPY --from=s{j} /x /x{j}\n"));
            }
        }
        let g = graph(&text, None).unwrap();
        assert!((0..100).all(|i| g.is_needed(i)));
    }
}
