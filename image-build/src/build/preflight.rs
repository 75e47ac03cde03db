//! What a build knows before any step runs, and the checks that need
//! nothing more: each target platform's expansion and stage graph, each
//! stage's platform (a stage that RUNs must be for the host's), the
//! annotations and where they can land, the tags. A build that would fail
//! one of these at its end fails here, before a RUN has run, with the
//! error the late check gave.

use image_core::{MediaType, Platform};
use image_store::{Provider, TagStore};

use super::annotate::{Annotations, Level};
use super::graph::{stage_name, Graph, Source};
use super::{BuildError, BuildOptions, StepError};
use crate::builder::BuilderError;
use crate::dockerfile::{BuildInputs, Command, Dockerfile, Expander};

/// One target platform of a build: its expansion (`TARGETPLATFORM` and
/// friends), its stage graph and each stage's platform.
pub(super) struct Plan<'a> {
    /// The platform the result is for.
    pub platform: Platform,
    pub expander: Expander<'a>,
    pub graph: Graph,
    /// By stage index: `FROM --platform` (expanded), else the platform of
    /// the stage its FROM names, else [`Plan::platform`]. Stages the target
    /// does not need have the target's.
    pub stage_platforms: Vec<Platform>,
}

impl<'a> Plan<'a> {
    /// The plans of one build, one per platform of `inputs` (its
    /// `target`), in order, each checked: every stage the target needs
    /// that RUNs is for the host's platform. Their pattern substitutions
    /// share one budget
    /// ([`MAX_PATTERN_STEPS`](crate::dockerfile::MAX_PATTERN_STEPS)), so
    /// a build for 64 platforms may not do 64 times a Dockerfile's work.
    ///
    /// # Errors
    /// An expansion error (one too complex once the platforms before it
    /// spent the budget, too); [`BuildError::NoTarget`]; at a stage's
    /// FROM, an `--platform` that does not parse or names a platform the
    /// host cannot run for a stage that RUNs ([`StepError::Invalid`]); at
    /// a RUN, [`StepError::ForeignRun`] for a stage whose platform comes
    /// from the target.
    pub fn all(
        file: &'a str,
        df: &'a Dockerfile,
        inputs: &'a [BuildInputs],
        target: Option<&str>,
    ) -> Result<Vec<Plan<'a>>, BuildError> {
        let mut plans: Vec<Plan<'a>> = Vec::with_capacity(inputs.len());
        for i in inputs {
            let plan = Self::with(file, df, i, target, plans.first().map(|p| &p.expander))?;
            plans.push(plan);
        }
        Ok(plans)
    }

    fn with(
        file: &'a str,
        df: &'a Dockerfile,
        inputs: &'a BuildInputs,
        target: Option<&str>,
        sharing: Option<&Expander<'_>>,
    ) -> Result<Plan<'a>, BuildError> {
        let expander = match sharing {
            Some(other) => Expander::sharing_budget(file, df, inputs, other)?,
            None => Expander::new(file, df, inputs)?,
        };
        let graph = Graph::new(df, &expander, target)?
            .ok_or_else(|| BuildError::NoTarget(target.unwrap_or_default().to_owned()))?;
        let stage_platforms = stage_platforms(file, df, &expander, &graph, &inputs.target)?;
        Ok(Plan {
            platform: inputs.target.clone(),
            expander,
            graph,
            stage_platforms,
        })
    }
}

/// Each stage's platform (see [`Plan::stage_platforms`]), refusing a RUN
/// in a stage the host cannot run.
fn stage_platforms(
    file: &str,
    df: &Dockerfile,
    expander: &Expander<'_>,
    graph: &Graph,
    target: &Platform,
) -> Result<Vec<Platform>, BuildError> {
    let host = Platform::host();
    let mut out: Vec<Platform> = Vec::with_capacity(df.stages.len());
    for stage in &df.stages {
        if !graph.is_needed(stage.index) {
            out.push(target.clone());
            continue;
        }
        let at = |line, instruction: &str, source| BuildError::Step {
            file: file.to_owned(),
            line,
            instruction: instruction.to_owned(),
            source,
        };
        let from = expander.from(stage)?;
        let first_run = stage
            .instructions
            .iter()
            .find(|i| matches!(i.command, Command::Run(_)));
        let platform = match &from.platform {
            Some(asked) => {
                let invalid = |reason| {
                    at(
                        stage.pos.line,
                        "FROM",
                        StepError::Invalid {
                            what: "FROM --platform",
                            value: asked.clone(),
                            reason,
                        },
                    )
                };
                let platform: Platform = asked
                    .parse()
                    .map_err(|_| invalid("expected os/arch[/variant]"))?;
                if first_run.is_some() && !host.matches(&platform) {
                    return Err(invalid(
                        "a stage that RUNs must be for the host's platform (there is no \
                         emulation); one for another platform may only COPY, ADD and change its \
                         config",
                    ));
                }
                platform
            }
            None => match graph.source(&from.image, stage.index) {
                Source::Stage(j) => out[j].clone(),
                Source::Scratch | Source::Image(_) => target.clone(),
            },
        };
        if let Some(run) = first_run.filter(|_| !host.matches(&platform)) {
            return Err(at(
                run.pos.line,
                "RUN",
                StepError::ForeignRun {
                    stage: stage_name(stage),
                    platform: Box::new(platform),
                },
            ));
        }
        out.push(platform);
    }
    Ok(out)
}

/// The image the target stage starts from through its chain of FROMs:
/// the stage whose FROM names it and the name as expanded; `None` for
/// scratch.
pub(super) fn target_base(
    df: &Dockerfile,
    expander: &Expander<'_>,
    graph: &Graph,
) -> Option<(usize, String)> {
    let mut i = graph.target();
    // Each FROM names an earlier stage: at most one step per stage.
    for _ in 0..df.stages.len() {
        let from = expander.from(&df.stages[i]).ok()?;
        match graph.source(&from.image, i) {
            Source::Scratch => return None,
            Source::Image(name) => return Some((i, name)),
            Source::Stage(j) => i = j,
        }
    }
    None
}

/// The checks of the options against the plans: a multi-platform build's
/// index not asked as a Docker archive, the annotations parse, an index
/// level only on a multi-platform build, manifest annotations
/// only where the result is an OCI manifest (a Docker-format base keeps
/// its format), the tags valid. Returns the annotations parsed and the
/// tags normalised.
///
/// # Errors
/// [`BuildError::IndexInDockerArchive`]; [`BuildError::Annotation`],
/// [`BuildError::AnnotationNeedsIndex`];
/// [`BuildError::Commit`] with [`BuilderError::Annotations`] or
/// [`BuilderError::InvalidTag`], as the commit would fail; the base
/// image's error at its FROM when it cannot be resolved.
pub(super) fn check_options<S: Provider + TagStore + ?Sized>(
    store: &S,
    file: &str,
    df: &Dockerfile,
    plans: &[Plan<'_>],
    options: &BuildOptions,
) -> Result<(Annotations, Vec<String>), BuildError> {
    if options.docker_archive && plans.len() > 1 {
        return Err(BuildError::IndexInDockerArchive {
            platforms: plans.len(),
        });
    }
    let annotations = Annotations::parse(&options.annotations)?;
    if plans.len() < 2 {
        if let Some(annotation) = annotations.needing_index() {
            return Err(BuildError::AnnotationNeedsIndex { annotation });
        }
    }
    for plan in plans {
        let annotated = options.oci_annotations
            || !annotations
                .of(Level::Manifest, Some(&plan.platform))
                .is_empty();
        if !annotated {
            continue;
        }
        let Some((i, name)) = target_base(df, &plan.expander, &plan.graph) else {
            continue;
        };
        let image = image_store::resolve_image(store, &name, Some(&plan.stage_platforms[i]))
            .map_err(|source| BuildError::Step {
                file: file.to_owned(),
                line: df.stages[i].pos.line,
                instruction: "FROM".to_owned(),
                source: StepError::BaseImage {
                    name: name.clone(),
                    source: Box::new(source),
                },
            })?;
        let media_type = image.manifest.media_type();
        if *media_type != MediaType::OciManifest {
            return Err(BuildError::Commit(Box::new(BuilderError::Annotations {
                media_type: media_type.to_string(),
            })));
        }
    }
    let tags = crate::builder::normalize_tags(&options.tags)
        .map_err(|e| BuildError::Commit(Box::new(e)))?;
    Ok((annotations, tags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::{self, MAX_PATTERN_STEPS};

    /// A build's pattern work is bounded for the whole build, not per
    /// platform: global ARGs whose substitutions take between a third and
    /// half of [`MAX_PATTERN_STEPS`] (three such words are refused) plan
    /// for one platform and fail as too complex for two (each platform had
    /// a budget of its own, so 64 platforms could do 64 times the work).
    #[test]
    fn the_platforms_of_a_build_share_one_pattern_budget() {
        // ${A#pattern}: the value's 200,000 characters times the
        // pattern's 202 states, or more, twice.
        let value = "a".repeat(200_000);
        let pattern = format!("{}b", "*a".repeat(100));
        let mut text = format!("ARG A={value}\n");
        for i in 0..2 {
            text.push_str(&format!("ARG B{i}=${{A#{pattern}}}\n"));
        }
        text.push_str("FROM scratch\n");
        let df = dockerfile::parse("Dockerfile", &text).expect("parse");
        let inputs = |archs: &[&str]| -> Vec<BuildInputs> {
            archs
                .iter()
                .map(|arch| BuildInputs {
                    build_args: Default::default(),
                    target: Platform::new("linux", *arch),
                    build: Platform::host(),
                })
                .collect()
        };
        let one = inputs(&["amd64"]);
        if let Err(e) = Plan::all("Dockerfile", &df, &one, None) {
            panic!("{}", image_core::error::Chain(&e));
        }
        let two = inputs(&["amd64", "arm64"]);
        let Err(e) = Plan::all("Dockerfile", &df, &two, None) else {
            panic!("two platforms' pattern work planned");
        };
        let said = image_core::error::Chain(&e).to_string();
        assert!(said.contains(&MAX_PATTERN_STEPS.to_string()), "{said}");
    }
}
