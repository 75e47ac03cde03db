//! The errors of a build: what failed, and for a step, the file and line of
//! its instruction.

use std::path::PathBuf;

use image_core::config::ConfigLimitError;
use image_core::error::{Classify, ErrorKind};
use image_core::progress::Cancelled;
use image_overlay::mount::MountError;
use image_overlay::snapshot::SnapshotError;
use image_overlay::CompareError;
use image_store::image::ImageError;
use image_store::LeaseError;

use crate::builder::BuilderError;
use crate::cache::CacheError;
use crate::context::ContextError;
use crate::copy::CopyError;
use crate::dockerfile::DockerfileError;
use crate::run::RunError;

/// A build that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The Dockerfile could not be read.
    #[error("reading the Dockerfile {path}")]
    Read {
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Dockerfile is larger than the parser takes.
    #[error("the Dockerfile {path} is larger than {limit} bytes")]
    TooLarge {
        /// Its path.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// The Dockerfile does not parse, or a word does not expand.
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    /// `--target` names no stage.
    #[error("target stage {0:?} not found in the Dockerfile")]
    NoTarget(String),
    /// The runtime given to the builder has no snapshots to build on.
    #[error("the runtime has no snapshots to build on")]
    NoSnapshots,
    /// The build context could not be opened.
    #[error("the build context")]
    Context(#[source] Box<ContextError>),
    /// The cache's records could not be read or written.
    #[error("the build cache")]
    Cache(#[source] Box<CacheError>),
    /// The build's lease could not be taken or kept.
    #[error("the build's lease")]
    Lease(#[source] LeaseError),
    /// A step failed: where its instruction is, and why.
    #[error("{file}:{line}: {instruction}")]
    Step {
        /// The Dockerfile's name.
        file: String,
        /// The line of the instruction (of the FROM, for an ONBUILD trigger).
        line: usize,
        /// The instruction's keyword (`ONBUILD RUN` for a trigger).
        instruction: String,
        /// What went wrong.
        #[source]
        source: StepError,
    },
    /// The result could not be written or tagged.
    #[error("writing the image")]
    Commit(#[source] Box<BuilderError>),
    /// The build was interrupted between steps.
    #[error("the build was interrupted")]
    Cancelled(#[source] Cancelled),
    /// The build arg `SOURCE_DATE_EPOCH` is not a number of seconds.
    #[error(
        "the build arg SOURCE_DATE_EPOCH={0:?} is not a number of seconds since the Unix epoch"
    )]
    SourceDateEpoch(String),
    /// The provenance record could not be attached to the image.
    #[error("attaching the provenance record")]
    Provenance(#[source] Box<crate::provenance::ReferrerError>),
    /// An `--annotation` key that does not parse (an unknown type, a
    /// platform where none may be).
    #[error("--annotation {annotation:?}: {reason}")]
    Annotation {
        /// The key as given.
        annotation: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An `index:` or `index-descriptor:` annotation on a build whose
    /// result is one image manifest, not an index.
    #[error(
        "--annotation {annotation:?} is for an image index, and a build for one platform makes \
         one image manifest"
    )]
    AnnotationNeedsIndex {
        /// The annotation, as `TYPE:KEY`.
        annotation: String,
    },
    /// A platform is asked twice.
    #[error("the platform {0} is asked more than once")]
    DuplicatePlatform(Box<image_core::Platform>),
    /// More platforms are asked than a build is for.
    #[error("{found} platforms are asked, more than {limit}")]
    TooManyPlatforms {
        /// How many.
        found: usize,
        /// The limit ([`super::MAX_PLATFORMS`]).
        limit: usize,
    },
    /// A multi-platform build's result (an image index) is asked as a
    /// Docker archive ([`super::BuildOptions::docker_archive`]), whose
    /// `manifest.json` lists images, not an index.
    #[error(
        "a Docker archive holds one image per entry, not the index of a {platforms}-platform \
         build: write an OCI archive (type=oci)"
    )]
    IndexInDockerArchive {
        /// How many platforms are asked.
        platforms: usize,
    },
}

impl Classify for BuildError {
    fn kind(&self) -> ErrorKind {
        match self {
            BuildError::Read { source, .. } => ErrorKind::from_io(source),
            BuildError::TooLarge { .. }
            | BuildError::NoTarget(_)
            | BuildError::SourceDateEpoch(_) => ErrorKind::InvalidInput,
            BuildError::Dockerfile(e) => e.kind(),
            BuildError::NoSnapshots => ErrorKind::FailedPrecondition,
            BuildError::Lease(e) => e.kind(),
            BuildError::Step { source, .. } => source.kind(),
            BuildError::Context(e) => e.kind(),
            BuildError::Cache(e) => e.kind(),
            BuildError::Commit(e) => e.kind(),
            BuildError::Cancelled(_) => ErrorKind::Cancelled,
            BuildError::Provenance(e) => e.kind(),
            BuildError::Annotation { .. }
            | BuildError::AnnotationNeedsIndex { .. }
            | BuildError::DuplicatePlatform(_)
            | BuildError::TooManyPlatforms { .. } => ErrorKind::InvalidInput,
            BuildError::IndexInDockerArchive { .. } => ErrorKind::Unsupported,
        }
    }
}

/// Why one step (or the final commit) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StepError {
    /// FROM names an image that is not in the store (there is no pull).
    #[error("base image {name}")]
    BaseImage {
        /// The name as expanded.
        name: String,
        /// The store's error.
        #[source]
        source: Box<ImageError>,
    },
    /// An instruction's argument is not valid (a port, a duration...).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What the argument is.
        what: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The config would hold more than a config may.
    #[error("the stage's config would grow too large")]
    Limit(#[source] ConfigLimitError),
    /// The history entries the build added to the stage's image would
    /// take more than [`MAX_HISTORY_BYTES`](super::MAX_HISTORY_BYTES).
    #[error("the stage's history would take {found} bytes, more than {limit}")]
    History {
        /// The bytes it would take with this step's entry.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// An ONBUILD trigger of the base image does not parse.
    #[error("the base image's ONBUILD trigger {trigger:?}")]
    Trigger {
        /// The trigger as stored.
        trigger: String,
        /// The parse error.
        #[source]
        source: Box<DockerfileError>,
    },
    /// The base image holds more ONBUILD triggers than a build runs.
    #[error("the base image has {found} ONBUILD triggers, more than {limit}")]
    TooManyTriggers {
        /// How many.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// A snapshot operation failed.
    #[error("snapshot {key}")]
    Snapshot {
        /// The snapshot's key or name.
        key: String,
        /// The snapshotter's error.
        #[source]
        source: Box<SnapshotError>,
    },
    /// Mounting or unmounting a snapshot failed.
    #[error("mounting snapshot {key}")]
    Mount {
        /// The snapshot's key.
        key: String,
        /// The mounter's error.
        #[source]
        source: Box<MountError>,
    },
    /// A temporary directory for a mount could not be made.
    #[error("making a mount point in {dir}")]
    MountPoint {
        /// Where.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot's changes could not be stored as a layer.
    #[error("storing the step's layer")]
    Layer(#[source] Box<CompareError>),
    /// COPY or ADD failed.
    #[error("copying")]
    Copy(#[source] Box<CopyError>),
    /// RUN failed (a non-zero exit: [`RunError::Failed`] holds its code
    /// and last lines).
    #[error("running the command")]
    Run(#[source] Box<RunError>),
    /// The cache could not be asked or written, or the snapshots of cached
    /// layers made.
    #[error("the build cache")]
    Cache(#[source] Box<CacheError>),
    /// The step was interrupted.
    #[error("interrupted")]
    Cancelled(#[source] Cancelled),
    /// A RUN in a stage for a platform the host cannot run (there is no
    /// emulation); such a stage may only COPY, ADD and change its config.
    #[error(
        "stage {stage} is for {platform}, which this host cannot run (there is no emulation): \
         a stage for another platform may only COPY, ADD and change its config"
    )]
    ForeignRun {
        /// The stage's name (`stage-N` for a stage without one).
        stage: String,
        /// Its platform.
        platform: Box<image_core::Platform>,
    },
}

impl Classify for StepError {
    fn kind(&self) -> ErrorKind {
        match self {
            StepError::BaseImage { source, .. } => source.kind(),
            StepError::Copy(e) => e.kind(),
            StepError::Run(e) => e.kind(),
            StepError::Cache(e) => e.kind(),
            StepError::Invalid { .. }
            | StepError::TooManyTriggers { .. }
            | StepError::History { .. } => ErrorKind::InvalidInput,
            StepError::Trigger { source, .. } => source.kind(),
            StepError::Limit(e) => e.kind(),
            StepError::Snapshot { source, .. } => source.kind(),
            StepError::Mount { source, .. } => source.kind(),
            StepError::MountPoint { source, .. } => ErrorKind::from_io(source),
            StepError::Layer(e) => e.kind(),
            StepError::Cancelled(_) => ErrorKind::Cancelled,
            StepError::ForeignRun { .. } => ErrorKind::Unsupported,
        }
    }
}
