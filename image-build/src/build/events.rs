//! What a build reports while it runs: one event per step started, cached,
//! output line and step done, and the stages it skips.

use std::time::Duration;

pub use crate::run::OutputStream;

/// One thing that happened in a build, in order.
///
/// Steps are numbered from 1 across the whole build (`step`, in the order
/// they start: stages building at once take numbers in turn); within its
/// stage a step is `index` of `total` (BuildKit's `[2/5]`), the stage's FROM
/// being the first. Only FROM and the steps that make a layer (RUN, COPY,
/// ADD) are steps: the instructions that change only the config are not
/// reported.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildEvent {
    /// A step starts.
    StepStarted {
        /// The step's number in the build, from 1.
        step: usize,
        /// The stage's name (`stage-N` for a stage without one).
        stage: String,
        /// The step's position in its stage, from 1 (the FROM).
        index: usize,
        /// The number of steps of the stage.
        total: usize,
        /// The instruction, expanded.
        text: String,
    },
    /// The step's layer came from the cache; it did not run.
    StepCached {
        /// The step's number.
        step: usize,
    },
    /// A line of a RUN's output (without its newline).
    Output {
        /// The step's number.
        step: usize,
        /// Which stream.
        stream: OutputStream,
        /// The line, lossily decoded as UTF-8.
        line: String,
    },
    /// The step is done.
    StepDone {
        /// The step's number.
        step: usize,
        /// The compressed size of the layer it made, for a layer step.
        layer_size: Option<u64>,
        /// How long it took.
        elapsed: Duration,
    },
    /// A stage the target does not need; it is not built.
    StageSkipped {
        /// The stage's name (`stage-N` for a stage without one).
        stage: String,
    },
    /// A warning that does not stop the build (build args nothing used).
    Warning {
        /// What to tell the user.
        message: String,
    },
}

/// Receives the events of a build, one at a time (never two at once), from
/// the threads that build its stages: the events of one step come in
/// order; those of stages building at the same time interleave, each
/// naming its step (and [`BuildEvent::StepStarted`] the step's stage).
pub trait Observer: Send {
    /// One event.
    fn event(&mut self, event: &BuildEvent);
}

impl<F: FnMut(&BuildEvent) + Send> Observer for F {
    fn event(&mut self, event: &BuildEvent) {
        self(event);
    }
}
