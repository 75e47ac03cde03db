//! The build as a graph of stages: each stage depends on the stages its
//! `FROM` and its instructions' `--from` name ([`references`]). A stage can
//! only name a stage before it (a later or unknown name is an image), so
//! the graph has no cycle; the stages the target needs are found by one
//! walk from the target with a visited set, and built as soon as the
//! stages they need are ([`Schedule`]), several at once.

use std::collections::{BTreeMap, BTreeSet};

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
                // ARG and ENV update the scope; the references are read in
                // it.
                let scoping = matches!(&ins.command, Command::Arg(_) | Command::Env(_));
                if !scoping && references(&ins.command).is_empty() {
                    continue;
                }
                let expanded = expander.step(&mut scope, ins)?;
                for name in references(&expanded) {
                    if let Source::Stage(j) = resolve(&names, &name, stage.index) {
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

    /// What `name`, used in stage `at`, names.
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

/// The names of the stages (or images) an instruction reads files from,
/// besides its stage's own: `COPY --from`. Every flag that makes a step
/// wait for another stage joins here (`RUN --mount=from=` too), so that
/// the graph and the schedule see it. Read on the instruction as written
/// (is there a reference?) and as expanded (what does it name?).
pub fn references(command: &Command) -> Vec<String> {
    match command {
        Command::Copy(c) => c.from.iter().cloned().collect(),
        // RUN --mount=from=... (a bad mount is the step's error).
        Command::Run(r) => crate::mounts::froms(&r.mounts),
        _ => Vec::new(),
    }
}

/// Which stage to build next: a stage is ready once every stage it needs
/// is built, and the ready ones are taken lowest index first (so one job
/// builds them in file order). Each stage and each dependency is looked at
/// once.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// For each stage, how many of the stages it needs are not built yet.
    waiting: Vec<usize>,
    /// For each stage, the stages built that need it.
    dependents: Vec<Vec<usize>>,
    ready: BTreeSet<usize>,
}

impl Schedule {
    /// The schedule of the stages `graph` builds, none built yet.
    pub fn new(graph: &Graph) -> Schedule {
        let n = graph.deps.len();
        let mut waiting = vec![0; n];
        let mut dependents = vec![Vec::new(); n];
        let mut ready = BTreeSet::new();
        for i in (0..n).filter(|&i| graph.needed[i]) {
            let deps: BTreeSet<usize> = graph.deps[i].iter().copied().collect();
            waiting[i] = deps.len();
            for j in deps {
                dependents[j].push(i);
            }
            if waiting[i] == 0 {
                ready.insert(i);
            }
        }
        Schedule {
            waiting,
            dependents,
            ready,
        }
    }

    /// The next stage that may start (taken off the ready set).
    pub fn next_ready(&mut self) -> Option<usize> {
        self.ready.pop_first()
    }

    /// Stage `i` is built: the stages waiting only for it become ready.
    pub fn done(&mut self, i: usize) {
        for d in std::mem::take(&mut self.dependents[i]) {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 {
                self.ready.insert(d);
            }
        }
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

    /// Every stage drained from a schedule, taking all the ready ones at
    /// each round (as unbounded jobs would).
    fn rounds(g: &Graph) -> Vec<Vec<usize>> {
        let mut s = Schedule::new(g);
        let mut out = Vec::new();
        loop {
            let round: Vec<usize> = std::iter::from_fn(|| s.next_ready()).collect();
            if round.is_empty() {
                return out;
            }
            for &i in &round {
                s.done(i);
            }
            out.push(round);
        }
    }

    #[test]
    fn independent_stages_are_ready_together() {
        let text = "FROM scratch AS a\nFROM scratch AS b\nFROM a AS c\nCOPY --from=b / /\nCOPY --from=b /x /y\nFROM scratch AS unused\nFROM scratch AS d\nCOPY --from=c / /\nCOPY --from=a / /\n";
        let g = graph(text, Some("d")).unwrap();
        assert_eq!(rounds(&g), [vec![0, 1], vec![2], vec![4]]);
    }

    /// Property: for generated graphs, every needed stage is scheduled
    /// exactly once, after every stage it depends on, and nothing else is.
    #[test]
    fn a_schedule_respects_every_dependency() {
        // A small deterministic generator (no dependency on a RNG crate).
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as usize
        };
        for _ in 0..200 {
            let n = 1 + next(12);
            let mut text = String::new();
            for i in 0..n {
                match (i, next(3)) {
                    (0, _) | (_, 0) => text.push_str(&format!("FROM scratch AS s{i}\n")),
                    _ => text.push_str(&format!("FROM s{} AS s{i}\n", next(i))),
                }
                for _ in 0..next(3) {
                    if i > 0 {
                        text.push_str(&format!("COPY --from=s{} /a /b\n", next(i)));
                    }
                }
            }
            let g = graph(&text, None).unwrap();
            let order: Vec<usize> = rounds(&g).concat();
            let mut seen = vec![false; n];
            for &i in &order {
                assert!(!seen[i], "{i} twice in {order:?}\n{text}");
                assert!(g.deps(i).iter().all(|&j| seen[j]), "{i} early\n{text}");
                seen[i] = true;
            }
            assert!((0..n).all(|i| seen[i] == g.is_needed(i)), "{text}");
        }
    }
}
