//! The build engine: a Dockerfile into an image in a store, stage by stage,
//! each RUN, COPY and ADD a layer, the other instructions config changes.
//!
//! A build parses the Dockerfile, expands it for the build args and the
//! host platform, and finds the stages the target needs ([`graph`]); each
//! of those is built from its FROM (scratch, an earlier stage, or an image
//! in the store) on a thread of its own as soon as the stages it needs are
//! built, up to [`BuildOptions::jobs`] at once. The first failure sets the
//! build's interrupt: the stages still running stop (a RUN's container is
//! killed, every snapshot and mount a step made is undone by its guard),
//! and that failure is the error. A step that makes a layer prepares an
//! active snapshot on the stage's committed snapshot, lets COPY/ADD or RUN
//! change it, stores its changes as a layer and commits it under the chain
//! ID of the stage's layers, so the next step builds on it without
//! unpacking anything. The cache ([`crate::cache`]) is asked before each
//! layer step; after cache hits, snapshots are made only when a later step
//! needs a filesystem. One lease covers every blob the build writes until
//! the result is tagged. With a source date epoch
//! ([`BuildOptions::source_date_epoch`]) every time the result holds comes
//! from it, so that the same Dockerfile and context give the same image.
//!
//! With [`BuildOptions::platforms`] the Dockerfile is built once per
//! platform, as BuildKit does (`TARGETPLATFORM` and friends per platform,
//! `BUILDPLATFORM` the host's, base images chosen per platform from an
//! index), and the result is an OCI image index of the platforms'
//! manifests. The platforms build at once, their stages sharing the
//! [`BuildOptions::jobs`] places; a step another platform is running with
//! the same cache key is waited for and its layer taken, so a stage they
//! share runs once. A stage may RUN only on the host's platform: there is no
//! emulation. Annotations are placed as buildx spells them ([`annotate`]).
//! Every check that needs no step (`preflight`) is made before any runs.
//!
//! # Security
//! The Dockerfile is read bounded ([`crate::dockerfile::MAX_BYTES`]), the
//! context's own one as the context's files are
//! ([`crate::context::open_dockerfile`]: beneath it, a regular file), its
//! stage graph walked once; the base image's ONBUILD triggers are bounded
//! ([`MAX_TRIGGERS`]) and parsed as the Dockerfile's own instructions are.
//! What COPY reads and RUN runs is guarded by [`crate::copy`] and
//! [`crate::run`].

pub mod annotate;
mod attest;
mod error;
mod events;
pub mod graph;
mod history;
mod layer;
mod output;
mod preflight;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use image_core::progress::Interrupt;
use image_core::{Digest, ImageConfig, Index, Manifest, Platform, Tracker};
use image_runtime::Runtime;
use image_store::{ContentStore, LeaseGuard, Leased, Leases, TagStore};

pub use error::{BuildError, StepError};
pub use events::{BuildEvent, Observer, OutputStream};
use graph::{stage_name, Graph, Source};
pub use output::PlatformImage;
use preflight::Plan;
pub use state::{Entry, State, MAX_HISTORY_BYTES};

use crate::builder::{Built, ImageBuilder};
use crate::cache::Cache;
use crate::context::Context;
use crate::dockerfile::{
    self, BuildInputs, Command, Dockerfile, Expander, Instruction, PROXY_ARGS,
};
use crate::run::Network;
use annotate::Annotations;

/// The most ONBUILD triggers a base image may hold.
pub const MAX_TRIGGERS: usize = 1024;

/// The most platforms one build is for (each is a build of the whole
/// Dockerfile).
pub const MAX_PLATFORMS: usize = 64;

/// What to build and how.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct BuildOptions {
    /// The Dockerfile's path; when empty, `Dockerfile` in the context.
    pub dockerfile: PathBuf,
    /// The Dockerfile's text (read from standard input); wins over
    /// `dockerfile`, which then only names it in errors.
    pub dockerfile_text: Option<String>,
    /// The build context directory; `None` for none (COPY from it fails).
    pub context: Option<PathBuf>,
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (the last one when `None`).
    pub target: Option<String>,
    /// `--label`: labels set on the result.
    pub labels: BTreeMap<String, String>,
    /// The tags to give the result.
    pub tags: Vec<String>,
    /// `--no-cache`: run every step.
    pub no_cache: bool,
    /// `--no-cache-filter`: the stages whose steps run, cache or not.
    pub no_cache_filter: Vec<String>,
    /// The network of a RUN that names none.
    pub network: Network,
    /// `--secret`: the secrets a `RUN --mount=type=secret` may mount, by id.
    pub secrets: BTreeMap<String, crate::mounts::Secret>,
    /// `--allow security.insecure`: a `RUN --security=insecure` runs in a
    /// privileged container (all capabilities, no seccomp, no masked
    /// paths) instead of being refused as not allowed.
    pub allow_insecure: bool,
    /// Progress of long operations (unpacking, packing) and the interrupt,
    /// checked between steps and passed to RUN.
    pub tracker: Option<Tracker>,
    /// `--jobs`: how many stages build at once (across the platforms of a
    /// multi-platform build); 0 for the number of cores.
    pub jobs: usize,
    /// `--source-date-epoch`: the time (seconds since the Unix epoch) every
    /// timestamp of the result comes from: the config's and each new
    /// history entry's `created`, and the mtimes of the files of each
    /// layer the build makes, clamped to it (BuildKit's
    /// `rewrite-timestamp`). When `None`, the build arg
    /// `SOURCE_DATE_EPOCH` (as BuildKit reads it), else the environment
    /// variable of that name.
    pub source_date_epoch: Option<i64>,
    /// `--annotation [TYPE[\[PLATFORM\]]:]KEY=VALUE`, keys as buildx spells
    /// them ([`annotate`]): without a type, annotations of the image's
    /// manifest (an OCI manifest: a Docker-format one has none, and the
    /// build fails before any step); `index:` and `index-descriptor:` need
    /// a multi-platform build.
    pub annotations: BTreeMap<String, String>,
    /// Fill the OCI `org.opencontainers.image.*` annotations as BuildKit
    /// does when asked: `created`, `base.name`, `base.digest`, and
    /// `source`/`revision` from the labels of those names.
    pub oci_annotations: bool,
    /// `--provenance`: attach a provenance record to the image as an OCI
    /// referrer (see [`crate::provenance`]); to each platform's image of a
    /// multi-platform build.
    pub provenance: bool,
    /// `--platform`: the platforms to build for, as BuildKit does: the
    /// Dockerfile is built once per platform, with `TARGETPLATFORM` and
    /// friends set to it (`BUILDPLATFORM` is the host's); a stage whose
    /// platform is not the host's may not RUN (there is no emulation). With
    /// two or more the result is an OCI image index of the platforms'
    /// manifests, tagged; with one, that platform's image; with none, the
    /// host's.
    pub platforms: Vec<Platform>,
    /// The result is to be written as a Docker archive (`--output
    /// type=docker`, the `docker save` form, whose `manifest.json` lists
    /// one image per entry, as `docker load`, `podman load` and skopeo's
    /// `docker-archive:` read it): a build of two or more platforms, whose
    /// result is an image index, is refused before any step runs
    /// ([`BuildError::IndexInDockerArchive`]); an OCI archive holds the
    /// index.
    pub docker_archive: bool,
}

impl BuildOptions {
    /// Options to build the Dockerfile of `context`.
    pub fn new(context: impl Into<PathBuf>) -> BuildOptions {
        BuildOptions {
            context: Some(context.into()),
            ..BuildOptions::default()
        }
    }

    /// Reports progress to `tracker` and stops when its interrupt is set
    /// (between steps, and a RUN's container).
    pub fn with_tracker(mut self, tracker: Tracker) -> BuildOptions {
        self.tracker = Some(tracker);
        self
    }

    /// The time the build stamps: [`BuildOptions::source_date_epoch`], else
    /// the build arg `SOURCE_DATE_EPOCH`, else the environment variable.
    ///
    /// # Errors
    /// [`BuildError::SourceDateEpoch`] for a build arg that is not a number.
    pub fn epoch(&self) -> Result<Option<i64>, BuildError> {
        if let Some(e) = self.source_date_epoch {
            return Ok(Some(e));
        }
        match self.build_args.get("SOURCE_DATE_EPOCH") {
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| BuildError::SourceDateEpoch(v.clone())),
            None => Ok(image_core::time::source_date_epoch()),
        }
    }

    /// The platforms the build is for: [`BuildOptions::platforms`], or the
    /// host's when none is given.
    ///
    /// # Errors
    /// [`BuildError::DuplicatePlatform`] for a platform given twice;
    /// [`BuildError::TooManyPlatforms`] beyond [`MAX_PLATFORMS`].
    pub fn target_platforms(&self) -> Result<Vec<Platform>, BuildError> {
        if self.platforms.is_empty() {
            return Ok(vec![Platform::host()]);
        }
        if self.platforms.len() > MAX_PLATFORMS {
            return Err(BuildError::TooManyPlatforms {
                found: self.platforms.len(),
                limit: MAX_PLATFORMS,
            });
        }
        let mut seen = BTreeSet::new();
        for p in &self.platforms {
            if !seen.insert(p.to_string()) {
                return Err(BuildError::DuplicatePlatform(Box::new(p.clone())));
            }
        }
        Ok(self.platforms.clone())
    }

    /// How many stages build at once: [`BuildOptions::jobs`], or the number
    /// of cores for 0.
    pub fn parallelism(&self) -> usize {
        match self.jobs {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

/// What a build made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildResult {
    /// The image's manifest, as stored (the first platform's, for a
    /// multi-platform build: see [`BuildResult::images`]).
    pub manifest: Manifest,
    /// The image's config, as stored (the first platform's).
    pub config: ImageConfig,
    /// The image ID (the config's digest; the first platform's).
    pub image_id: Digest,
    /// The image index of a multi-platform build, as tagged.
    pub index: Option<Index>,
    /// Each platform's image, in the order of
    /// [`BuildOptions::platforms`] (one for a single-platform build).
    pub images: Vec<PlatformImage>,
    /// The tags set.
    pub tags: Vec<String>,
    /// The layer steps (RUN, COPY, ADD) of the stages built.
    pub steps: usize,
    /// How many of them came from the cache.
    pub cached: usize,
    /// The cache records the build found or made, in order: what
    /// [`crate::cache::export`] writes.
    pub cache_records: Vec<crate::cache::UsedRecord>,
    /// The provenance referrer attached, with
    /// [`BuildOptions::provenance`] (the first platform's).
    pub provenance: Option<image_core::Descriptor>,
}

impl BuildResult {
    /// The cache records an export in `mode` writes: for
    /// [`CacheMode::Min`](crate::cache::export::CacheMode::Min) those of
    /// every platform's image's layers (each platform's final stage), for
    /// `Max` every record the build used.
    pub fn exported_records(
        &self,
        mode: crate::cache::export::CacheMode,
    ) -> Vec<crate::cache::UsedRecord> {
        crate::cache::export::select_for(
            &self.cache_records,
            mode,
            self.images.iter().map(|i| &i.manifest),
        )
    }

    /// What the build tagged: the index of a multi-platform build, else
    /// the image's manifest.
    pub fn descriptor(&self) -> image_core::Descriptor {
        self.index
            .as_ref()
            .map_or_else(|| self.manifest.descriptor(), Index::descriptor)
    }
}

/// Builds Dockerfiles into images of a store, running RUN steps with a
/// runtime whose snapshots hold the build's filesystems.
pub struct Builder<'a, S: ?Sized> {
    store: &'a S,
    runtime: &'a Runtime,
}

impl<S: ?Sized> std::fmt::Debug for Builder<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

impl<'a, S> Builder<'a, S>
where
    S: ContentStore + TagStore + Leases + Sync + ?Sized,
{
    /// A builder on `store`; `runtime` must have snapshots
    /// ([`Runtime::snapshots`]).
    pub fn new(store: &'a S, runtime: &'a Runtime) -> Self {
        Builder { store, runtime }
    }

    /// Builds as `options` say, telling `observer` what happens.
    ///
    /// What depends only on the options, the Dockerfile and the base
    /// images' names is checked before any step runs: every platform's
    /// stage graph, a RUN in a stage the host cannot run, the annotations
    /// (their types, and where they can land) and the tags. The platforms
    /// then build at once under one lease and one cache, at most
    /// [`BuildOptions::jobs`] stages running in all; a step whose key
    /// another platform's running step has waits for it and takes its
    /// layer, so a stage that is the same for each (a `FROM
    /// --platform=$BUILDPLATFORM` stage whose steps do not read the
    /// target) runs once. A failure of one platform stops the others.
    ///
    /// # Errors
    /// A [`BuildError`]; a failed step names its instruction's line. Nothing
    /// is tagged then, and no active snapshot or mount is left.
    pub fn build(
        &self,
        options: &BuildOptions,
        observer: &mut dyn Observer,
    ) -> Result<BuildResult, BuildError> {
        let (file, text) = read_dockerfile(options)?;
        let df = dockerfile::parse(&file, &text)?;
        let host = Platform::host();
        let inputs: Vec<BuildInputs> = options
            .target_platforms()?
            .into_iter()
            .map(|target| BuildInputs {
                build_args: options.build_args.clone(),
                target,
                build: host.clone(),
            })
            .collect();
        let plans = Plan::all(&file, &df, &inputs, options.target.as_deref())?;
        let (annotations, tags) =
            preflight::check_options(self.store, &file, &df, &plans, options)?;
        if self.runtime.snapshots().is_none() {
            return Err(BuildError::NoSnapshots);
        }
        let context = match &options.context {
            Some(dir) => {
                let named = (!options.dockerfile.as_os_str().is_empty())
                    .then_some(options.dockerfile.as_path());
                Context::open(dir, named).map_err(|e| BuildError::Context(Box::new(e)))?
            }
            None => Context::none(),
        };
        let epoch = options.epoch()?;
        let lease = self.store.begin_lease().map_err(BuildError::Lease)?;
        let leased = lease.protect(self.store);
        let cache = Cache::open(&leased).map_err(|e| BuildError::Cache(Box::new(e)))?;
        // The build's own flag: set on the first failure (and when the
        // caller's is), so that every stage still running stops.
        let cancel = Interrupt::new();
        let tracker = options
            .tracker
            .clone()
            .unwrap_or_default()
            .with_interrupt(cancel.clone());
        let counts = Counts::default();
        let declared = Mutex::new(
            df.global_args
                .iter()
                .flat_map(arg_names)
                .collect::<BTreeSet<String>>(),
        );
        let multi = plans.len() > 1;
        let shared_observer: Mutex<&mut dyn Observer> = Mutex::new(observer);
        let context_copies = crate::mounts::ContextCopies::default();
        let runs: Vec<Run<'_, S>> = plans
            .iter()
            .map(|plan| Run {
                store: self.store,
                runtime: self.runtime,
                lease: &lease,
                cache: &cache,
                context: &context,
                options,
                file: &file,
                df: &df,
                expander: &plan.expander,
                graph: &plan.graph,
                platform: plan.platform.clone(),
                stage_platforms: &plan.stage_platforms,
                shown: multi.then(|| plan.platform.to_string()),
                annotations: &annotations,
                epoch,
                observer: &shared_observer,
                states: Mutex::new(vec![None; df.stages.len()]),
                counts: &counts,
                shared: multi,
                declared: &declared,
                cancel: cancel.clone(),
                tracker: tracker.clone(),
                context_copies: &context_copies,
            })
            .collect();
        if let Some(first) = runs.first() {
            for stage in &df.stages {
                if !first.graph.is_needed(stage.index) {
                    first.emit(&BuildEvent::StageSkipped {
                        stage: stage_name(stage),
                    });
                }
            }
        }
        // Every platform's stages at once, up to `jobs` in all; nothing is
        // committed until all are built.
        build_stages(&runs, options.parallelism())?;
        let mut images = Vec::with_capacity(runs.len());
        for run in &runs {
            let state = lock(&run.states)[run.graph.target()]
                .take()
                .ok_or_else(|| BuildError::NoTarget(options.target.clone().unwrap_or_default()))?;
            let built = run.commit(state)?;
            let provenance = if options.provenance {
                let record = run.provenance(&text)?;
                let attached = crate::provenance::attach_provenance(
                    &leased,
                    &built.manifest.descriptor(),
                    &record,
                )
                .map_err(|e| BuildError::Provenance(Box::new(e)))?;
                Some(attached)
            } else {
                None
            };
            images.push(PlatformImage {
                platform: run.platform.clone(),
                manifest: built.manifest,
                config: built.config,
                provenance,
            });
        }
        drop(runs);
        if let Some(warning) = unused_args(options, &lock(&declared)) {
            lock(&shared_observer).event(&warning);
        }
        cache.flush().map_err(|e| BuildError::Cache(Box::new(e)))?;
        let index = output::tag_output(&leased, &images, &annotations, &tags, multi)?;
        let first = images
            .first()
            .cloned()
            .ok_or_else(|| BuildError::NoTarget(options.target.clone().unwrap_or_default()))?;
        let cache_records = cache.used();
        lease.release().map_err(BuildError::Lease)?;
        Ok(BuildResult {
            image_id: first.config.digest().clone(),
            manifest: first.manifest,
            config: first.config,
            index,
            images,
            tags,
            steps: counts.steps.load(Ordering::Relaxed),
            cached: counts.cached.load(Ordering::Relaxed),
            cache_records,
            provenance: first.provenance,
        })
    }
}

/// The counters every platform's run of a build shares.
#[derive(Default)]
struct Counts {
    /// The last step number given.
    step: AtomicUsize,
    /// The layer steps.
    steps: AtomicUsize,
    /// Those that came from the cache.
    cached: AtomicUsize,
    /// The keys of the layers this build made, in a multi-platform build:
    /// a later platform's step of the same key reuses the layer even with
    /// `--no-cache` (a stage shared between platforms is built once, as
    /// BuildKit solves one graph).
    made: Mutex<std::collections::HashSet<Digest>>,
    /// The keys of the layer steps running now, in a multi-platform build:
    /// a platform's step waits while another's of the same key runs, then
    /// takes its layer (see `made`), so that a stage the platforms share
    /// runs once though the platforms build at once.
    running: Mutex<std::collections::HashSet<Digest>>,
    /// Told when a key leaves `running`.
    finished: std::sync::Condvar,
}

/// One build in progress, shared by the threads that build its stages.
struct Run<'b, S: ?Sized> {
    store: &'b S,
    runtime: &'b Runtime,
    lease: &'b LeaseGuard,
    cache: &'b Cache<'b, Leased<'b, S>>,
    context: &'b Context,
    options: &'b BuildOptions,
    file: &'b str,
    df: &'b Dockerfile,
    expander: &'b Expander<'b>,
    graph: &'b Graph,
    /// The platform the result is for (the host's unless asked).
    platform: Platform,
    /// Each stage's platform ([`Plan::stage_platforms`]).
    stage_platforms: &'b [Platform],
    /// The platform, shown before each stage's name in the events of a
    /// multi-platform build (BuildKit's `[linux/arm64 build 2/3]`).
    shown: Option<String>,
    /// The build's annotations, parsed.
    annotations: &'b Annotations,
    /// The time every timestamp comes from, when reproducible.
    epoch: Option<i64>,
    /// The build's observer, shared by every platform's run.
    observer: &'b Mutex<&'b mut dyn Observer>,
    /// Each stage's state once built (taken by the one stage that needs it
    /// when only one does).
    states: Mutex<Vec<Option<State>>>,
    /// Step numbers and counts, across the platforms.
    counts: &'b Counts,
    /// Whether other platforms' runs share this one's layers (see
    /// [`Counts::made`]).
    shared: bool,
    /// Every ARG name the stages built declare (for the unused warning).
    declared: &'b Mutex<BTreeSet<String>>,
    /// The build's interrupt (see [`Builder::build`]).
    cancel: Interrupt,
    /// The caller's progress with the build's interrupt: what every long
    /// operation of every stage reports to and is stopped by.
    tracker: Tracker,
    /// The filtered copies of the context its RUN binds share (across
    /// the platforms), removed when the build ends.
    context_copies: &'b crate::mounts::ContextCopies,
}

/// Builds every stage each platform's target needs (each of `runs` is one
/// platform's), up to `jobs` at once across the platforms, each as soon as
/// the stages it needs are built (see [`graph::Schedule`]); the platforms
/// take turns at the free places. The first failure sets the build's
/// interrupt, so that the stages still running, of every platform, stop
/// (their containers killed, their snapshots removed), and is the error
/// returned; no other stage starts then.
fn build_stages<S>(runs: &[Run<'_, S>], jobs: usize) -> Result<(), BuildError>
where
    S: ContentStore + TagStore + Leases + Sync + ?Sized,
{
    let Some(first) = runs.first() else {
        return Ok(());
    };
    let (done_tx, done) = std::sync::mpsc::channel();
    let mut schedules: Vec<graph::Schedule> =
        runs.iter().map(|r| graph::Schedule::new(r.graph)).collect();
    // The platform whose turn it is to start a stage.
    let mut turn = 0;
    let mut next_ready = |schedules: &mut [graph::Schedule]| {
        let n = schedules.len();
        let start = turn;
        let found = (0..n)
            .map(|k| (start + k) % n)
            .find_map(|p| Some((p, schedules[p].next_ready()?)));
        if let Some((p, _)) = found {
            turn = (p + 1) % n;
        }
        found
    };
    let mut first_err = None;
    let mut panic = None;
    std::thread::scope(|scope| {
        let mut running = 0usize;
        loop {
            while first_err.is_none() && running < jobs.max(1) {
                let Some((p, i)) = next_ready(&mut schedules) else {
                    break;
                };
                let tx = done_tx.clone();
                let run = &runs[p];
                running += 1;
                scope.spawn(move || {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run.check_interrupt()?;
                        run.stage(i)
                    }));
                    let _ = tx.send((p, i, r));
                });
            }
            if running == 0 {
                break;
            }
            // The caller's interrupt becomes the build's, looked at while
            // the stages run.
            match done.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok((p, i, r)) => {
                    running -= 1;
                    match r {
                        Ok(Ok(state)) => {
                            lock(&runs[p].states)[i] = Some(state);
                            schedules[p].done(i);
                        }
                        Ok(Err(e)) => {
                            first.cancel.set();
                            keep_cause(&mut first_err, e, first.caller_interrupted());
                        }
                        Err(e) => {
                            first.cancel.set();
                            panic.get_or_insert(e);
                        }
                    }
                }
                Err(_) if first.caller_interrupted() => first.cancel.set(),
                Err(_) => {}
            }
        }
    });
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Keeps the build's first error in `first`, but a failure rather than a
/// cancellation that reached the scheduler before it: a failed step
/// shared between platforms sets the interrupt itself (its claim) before
/// its error is sent, so a waiter's `Cancelled` may arrive first. Not when
/// the caller interrupted the build (`caller_interrupted`): the
/// cancellation is then the cause, and a later failure only an operation
/// the interrupt cut short.
fn keep_cause(first: &mut Option<BuildError>, e: BuildError, caller_interrupted: bool) {
    use image_core::{Classify, ErrorKind};
    let cancelled = |e: &BuildError| e.kind() == ErrorKind::Cancelled;
    match first {
        Some(f) if cancelled(f) && !cancelled(&e) && !caller_interrupted => *f = e,
        Some(_) => {}
        None => *first = Some(e),
    }
}

/// `mutex` locked; a lock a panicking stage poisoned is still taken (the
/// panic itself is raised when the build's threads are joined).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where an instruction comes from: the Dockerfile, or a base image's
/// ONBUILD trigger run right after the stage's FROM.
#[derive(Clone, Copy)]
enum Origin {
    File,
    Trigger,
}

impl<S> Run<'_, S>
where
    S: ContentStore + TagStore + Leases + Sync + ?Sized,
{
    /// `Err(Cancelled)` once the build's interrupt or the caller's is set
    /// (the caller's reaches the build's within a poll of
    /// [`Run::stages`]; here it is seen at once).
    fn check_interrupt(&self) -> Result<(), BuildError> {
        if self.caller_interrupted() {
            self.cancel.set();
        }
        self.tracker.check().map_err(BuildError::Cancelled)
    }

    /// Whether the caller asked the build to stop.
    fn caller_interrupted(&self) -> bool {
        self.options
            .tracker
            .as_ref()
            .is_some_and(|t| t.interrupt().is_set())
    }

    /// Tells the observer `event` (from whichever stage's thread).
    fn emit(&self, event: &BuildEvent) {
        lock(self.observer).event(event);
    }

    /// The `created` time of a history entry made now: the epoch when
    /// reproducible.
    fn created_now(&self) -> String {
        self.epoch.map_or_else(
            || image_core::time::rfc3339(image_core::time::now_secs()),
            image_core::time::rfc3339,
        )
    }

    fn at(&self, line: usize, instruction: String) -> impl FnOnce(StepError) -> BuildError {
        let file = self.file.to_owned();
        move |source| BuildError::Step {
            file,
            line,
            instruction,
            source,
        }
    }

    /// The image `name` of the store, for `platform`, read through the
    /// build's lease.
    fn resolve(&self, name: &str, platform: &Platform) -> Result<image_store::Image, StepError> {
        image_store::resolve_image(&self.lease.protect(self.store), name, Some(platform)).map_err(
            |source| StepError::BaseImage {
                name: name.to_owned(),
                source: Box::new(source),
            },
        )
    }

    /// How the events name stage `name`: as it is, or after its platform
    /// in a multi-platform build.
    fn shown_stage(&self, name: String) -> String {
        match &self.shown {
            Some(p) => format!("{p} {name}"),
            None => name,
        }
    }

    fn next_step(&self) -> usize {
        self.counts.step.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Builds stage `i` (every stage it needs is built).
    fn stage(&self, i: usize) -> Result<State, BuildError> {
        let df = self.df;
        let stage = &df.stages[i];
        let name = stage_name(stage);
        let started = Instant::now();
        let from = self.expander.from(stage)?;
        // Checked before the build started ([`Plan::all`]).
        let platform = self.stage_platforms[i].clone();
        let mut state = match self.graph.source(&from.image, i) {
            Source::Scratch => State::scratch(&platform),
            // A stage named by this FROM only is taken, not copied: a
            // chain of stages costs the same per stage however long.
            Source::Stage(j) if self.graph.used_once(j) => lock(&self.states)[j]
                .take()
                .map(State::into_child)
                .ok_or_else(|| BuildError::NoTarget(from.image.clone()))?,
            Source::Stage(j) => lock(&self.states)[j]
                .as_ref()
                .map(State::child)
                .ok_or_else(|| BuildError::NoTarget(from.image.clone()))?,
            Source::Image(image) => {
                let resolved = self
                    .resolve(&image, &platform)
                    .map_err(self.at(stage.pos.line, "FROM".into()))?;
                State::from_image(resolved, &platform)
            }
        };
        let triggers = self.triggers(&mut state, stage.pos.line)?;
        // A base image's ONBUILD RUN: known only now.
        if !Platform::host().matches(&platform)
            && triggers
                .iter()
                .any(|t| matches!(t.command, Command::Run(_)))
        {
            return Err(self.at(stage.pos.line, "ONBUILD RUN".into())(
                StepError::ForeignRun {
                    stage: name,
                    platform: Box::new(platform),
                },
            ));
        }
        let layer_steps = triggers
            .iter()
            .chain(&stage.instructions)
            .filter(|i| is_layer_step(&i.command))
            .count();
        let total = layer_steps + 1;
        let step = self.next_step();
        self.emit(&BuildEvent::StepStarted {
            step,
            stage: self.shown_stage(name.clone()),
            index: 1,
            total,
            text: format!("FROM {}", from.image),
        });
        self.emit(&BuildEvent::StepDone {
            step,
            layer_size: None,
            elapsed: started.elapsed(),
        });
        let mut scope = self.expander.stage_scope(state.take_scope_env());
        let mut index = 1;
        for (ins, origin) in triggers
            .iter()
            .map(|t| (t, Origin::Trigger))
            .chain(stage.instructions.iter().map(|t| (t, Origin::File)))
        {
            self.check_interrupt()?;
            lock(self.declared).extend(arg_names(ins));
            let keyword = match origin {
                Origin::File => ins.command.keyword().to_owned(),
                Origin::Trigger => format!("ONBUILD {}", ins.command.keyword()),
            };
            let line = match origin {
                Origin::File => ins.pos.line,
                Origin::Trigger => stage.pos.line,
            };
            let command = self
                .expander
                .step(&mut scope, ins)
                .map_err(|e| match origin {
                    Origin::File => BuildError::Dockerfile(e),
                    Origin::Trigger => self.at(line, keyword.clone())(StepError::Trigger {
                        trigger: history::text(&ins.command, df.directives.escape),
                        source: Box::new(e),
                    }),
                })?;
            if is_layer_step(&command) {
                index += 1;
                self.layer_step(&mut state, &scope, &command, i, index, total)
                    .map_err(self.at(line, keyword))?;
            } else {
                let mut entry = history::config_only(&command, df.directives.escape);
                entry.created = Some(self.created_now());
                let by = entry.created_by.as_deref().unwrap_or_default();
                let key = state.key.child(by, &[]);
                state
                    .apply(&command)
                    .and_then(|()| {
                        state.key = key;
                        state.add(Entry {
                            history: entry,
                            layer: None,
                        })
                    })
                    .map_err(self.at(line, keyword))?;
            }
        }
        state.keep_scope_env(scope.env);
        Ok(state)
    }

    /// The base's ONBUILD triggers as instructions, bounded, each one
    /// instruction other than FROM (as BuildKit requires); the config's
    /// `OnBuild` is cleared, as Docker does once they have run.
    fn triggers(&self, state: &mut State, line: usize) -> Result<Vec<Instruction>, BuildError> {
        let Some(stored) = state.config.config.as_mut().and_then(|c| c.on_build.take()) else {
            return Ok(Vec::new());
        };
        let at = |e| self.at(line, "FROM".into())(e);
        if stored.len() > MAX_TRIGGERS {
            return Err(at(StepError::TooManyTriggers {
                found: stored.len(),
                limit: MAX_TRIGGERS,
            }));
        }
        let mut out = Vec::with_capacity(stored.len());
        for trigger in stored {
            let failed = |source| {
                at(StepError::Trigger {
                    trigger: trigger.clone(),
                    source: Box::new(source),
                })
            };
            let parsed = dockerfile::parse("ONBUILD", &format!("FROM scratch\n{trigger}\n"))
                .map_err(failed)?;
            // One instruction, as BuildKit runs them: several were each
            // run, and a FROM's stage was run in this one.
            let mut stages = parsed.stages.into_iter();
            match (stages.next(), stages.next()) {
                (Some(mut stage), None) if stage.instructions.len() == 1 => {
                    out.append(&mut stage.instructions);
                }
                _ => {
                    return Err(failed(dockerfile::DockerfileError {
                        file: "ONBUILD".to_owned(),
                        line: 1,
                        column: 1,
                        problem: dockerfile::Problem::TriggerNotOneInstruction,
                    }))
                }
            }
        }
        Ok(out)
    }

    /// Writes the final stage as an image through the builder API: its
    /// base image (or scratch), the layers and history entries the build
    /// added, its config, its manifest annotations; kept under the build's
    /// lease, untagged (the build tags its output last).
    fn commit(&self, mut state: State) -> Result<Built, BuildError> {
        if !self.options.labels.is_empty() {
            let labels = state.run_config().labels.get_or_insert_with(BTreeMap::new);
            labels.extend(self.options.labels.clone());
        }
        let commit_err = |e| BuildError::Commit(Box::new(e));
        let base_created = state
            .base
            .as_ref()
            .and_then(|b| b.config.file().created.clone());
        let created = settle_times(&mut state.added, base_created, self.epoch);
        let base_digest = state.base.as_ref().map(|b| b.manifest_digest().clone());
        let mut image = match state.base.take() {
            Some(base) => ImageBuilder::from_resolved(self.store, base),
            None => ImageBuilder::scratch(self.store, &self.platform),
        }
        .map_err(commit_err)?;
        if let Some(epoch) = self.epoch {
            image.source_date_epoch(epoch);
        }
        for entry in state.added {
            match entry.layer {
                Some(layer) => image.add_layer(layer, entry.history),
                None => image.add_history(entry.history),
            };
        }
        let config = image.config_mut();
        config.config = state.config.config;
        config.author = state.config.author;
        // The stage's platform (`FROM --platform` on scratch sets it).
        config.os = state.config.os;
        config.architecture = state.config.architecture;
        config.variant = state.config.variant;
        if let Some(created) = created {
            config.created = Some(created);
        }
        *image.annotations_mut() = self.manifest_annotations(base_digest.as_ref(), image.config());
        image.commit_under(self.lease).map_err(commit_err)
    }
}

/// The warning of build args that no ARG of the stages built declares (as
/// Docker gives it: not an error), if any.
fn unused_args(options: &BuildOptions, declared: &BTreeSet<String>) -> Option<BuildEvent> {
    let unused: Vec<&str> = options
        .build_args
        .keys()
        .filter(|k| {
            !declared.contains(*k)
                && !PROXY_ARGS.contains(&k.as_str())
                && k.as_str() != "SOURCE_DATE_EPOCH"
        })
        .map(String::as_str)
        .collect();
    (!unused.is_empty()).then(|| BuildEvent::Warning {
        message: format!(
            "one or more build args were not consumed: [{}]",
            unused.join(" ")
        ),
    })
}

/// Gives every history entry a time that a cached rebuild reproduces, and
/// returns the image's `created`: a layer step keeps its own (the time it
/// first ran, which the cache record keeps); a step that made no layer
/// takes the time of the layer step before it (the base image's time
/// before the first; the first layer step's in a stage from scratch), as
/// BuildKit's exporter does, so that a rebuild with every step cached
/// writes the same config and manifest, i.e. no new blob. With an `epoch`
/// every new entry has that time already, and the image has it too.
/// `None` when there is no time to give (a build of config steps only on
/// scratch): the builder's time then.
fn settle_times(
    entries: &mut [state::Entry],
    base: Option<String>,
    epoch: Option<i64>,
) -> Option<String> {
    if let Some(epoch) = epoch {
        return Some(image_core::time::rfc3339(epoch));
    }
    let first_layer = || {
        entries
            .iter()
            .find(|e| e.layer.is_some())
            .and_then(|e| e.history.created.clone())
    };
    let mut last = base.or_else(first_layer);
    for e in entries.iter_mut() {
        if e.layer.is_some() && e.history.created.is_some() {
            last = e.history.created.clone();
        } else if e.layer.is_none() && last.is_some() {
            e.history.created = last.clone();
        }
    }
    last
}

/// Whether a command makes a layer.
fn is_layer_step(command: &Command) -> bool {
    matches!(
        command,
        Command::Run(_) | Command::Copy(_) | Command::Add(_)
    )
}

/// The names an ARG instruction declares.
fn arg_names(ins: &Instruction) -> Vec<String> {
    match &ins.command {
        Command::Arg(decls) => decls.iter().map(|d| d.name.clone()).collect(),
        _ => Vec::new(),
    }
}

/// The Dockerfile's name (for errors) and text: the given text, else the
/// file read with a bound.
fn read_dockerfile(options: &BuildOptions) -> Result<(String, String), BuildError> {
    let path = if options.dockerfile.as_os_str().is_empty() {
        options
            .context
            .as_deref()
            .unwrap_or(std::path::Path::new("."))
            .join(crate::context::DEFAULT_DOCKERFILE)
    } else {
        options.dockerfile.clone()
    };
    let name = if options.dockerfile.as_os_str().is_empty() {
        "Dockerfile".to_owned()
    } else {
        path.display().to_string()
    };
    if let Some(text) = &options.dockerfile_text {
        return Ok((name, text.clone()));
    }
    let read_err = |source| BuildError::Read {
        path: path.clone(),
        source,
    };
    // The context's own Dockerfile is one of its files; a named one is
    // the caller's choice, followed as the context directory is.
    let f = match &options.context {
        Some(dir) if options.dockerfile.as_os_str().is_empty() => {
            crate::context::open_dockerfile(dir)
        }
        _ => std::fs::File::open(&path),
    }
    .map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(dockerfile::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() > dockerfile::MAX_BYTES {
        return Err(BuildError::TooLarge {
            path,
            limit: dockerfile::MAX_BYTES,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.utf8_error(),
        ))
    })?;
    Ok((name, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build reports the failure, not a cancellation it caused that
    /// reached the scheduler first; otherwise the first error.
    #[test]
    fn a_failure_is_kept_over_a_cancellation_that_came_first() {
        let cancelled = || BuildError::Cancelled(image_core::progress::Cancelled);
        let failed = |n: usize| BuildError::NoTarget(format!("stage{n}"));
        let is_failed = |e: &Option<BuildError>, n: usize| matches!(e, Some(BuildError::NoTarget(s)) if *s == format!("stage{n}"));
        let mut first = None;
        keep_cause(&mut first, cancelled(), false);
        keep_cause(&mut first, failed(1), false);
        assert!(is_failed(&first, 1), "{first:?}");
        keep_cause(&mut first, cancelled(), false);
        keep_cause(&mut first, failed(2), false);
        assert!(is_failed(&first, 1), "{first:?}");
        let mut only = None;
        keep_cause(&mut only, cancelled(), false);
        keep_cause(&mut only, cancelled(), false);
        assert!(matches!(only, Some(BuildError::Cancelled(_))), "{only:?}");
    }

    /// When the caller interrupted the build, its cancellation stays the
    /// error (and the exit code): a failure after it is of an operation
    /// the interrupt cut short. A failure before it is still kept.
    #[test]
    fn a_cancellation_by_the_caller_is_kept_over_a_later_failure() {
        let cancelled = || BuildError::Cancelled(image_core::progress::Cancelled);
        let failed = || BuildError::NoTarget("stage1".into());
        let mut first = None;
        keep_cause(&mut first, cancelled(), true);
        keep_cause(&mut first, failed(), true);
        assert!(matches!(first, Some(BuildError::Cancelled(_))), "{first:?}");
        let mut first = None;
        keep_cause(&mut first, failed(), true);
        keep_cause(&mut first, cancelled(), true);
        assert!(matches!(first, Some(BuildError::NoTarget(_))), "{first:?}");
    }

    #[test]
    fn target_platforms_are_the_hosts_by_default_distinct_and_bounded() {
        let mut o = BuildOptions::default();
        assert_eq!(o.target_platforms().expect("host"), [Platform::host()]);
        let arm = Platform::new("linux", "arm64");
        o.platforms = vec![arm.clone(), Platform::new("linux", "amd64"), arm];
        assert!(matches!(
            o.target_platforms(),
            Err(BuildError::DuplicatePlatform(p)) if p.architecture == "arm64"
        ));
        o.platforms = (0..=MAX_PLATFORMS)
            .map(|i| Platform::new("linux", format!("arch{i}")))
            .collect();
        assert!(matches!(
            o.target_platforms(),
            Err(BuildError::TooManyPlatforms { found, .. }) if found == MAX_PLATFORMS + 1
        ));
        o.platforms.pop();
        assert_eq!(
            o.target_platforms().expect("at the limit").len(),
            MAX_PLATFORMS
        );
    }
}
