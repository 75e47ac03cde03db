//! # image-build
//!
//! Images from Dockerfiles, and without one:
//!
//! - [`dockerfile`]: the Dockerfile language: the parser
//!   ([`dockerfile::parse`]) into a typed tree with positions, its printer,
//!   and the expansion pass ([`dockerfile::Expander`]); `.dockerignore`
//!   matching ([`dockerignore`]).
//! - [`builder`]: the builder API ([`ImageBuilder`]), an image without a
//!   Dockerfile (crane `append`, ko, jib): a base or scratch, layers from
//!   directories, tar streams or files in memory, any config field, commit
//!   and tag under one lease.
//! - `build` (default feature `runtime`): Dockerfile builds
//!   (`build::Builder`): every instruction, multi-stage and `--target`,
//!   RUN in containers through image-runtime, COPY/ADD from a context
//!   ([`context`], [`copy`]), RUN mounts ([`mounts`]), independent stages
//!   in parallel, multi-platform builds into an OCI index, provenance as an
//!   OCI referrer ([`provenance`]).
//! - [`cache`]: the build cache in the store, its prune, and its export
//!   and import.
//!
//! Parsing and expanding a Dockerfile needs no privilege and touches no
//! file:
//!
//! ```
//! use std::collections::BTreeMap;
//! use image_build::dockerfile::{self, BuildInputs, Command, Expander};
//!
//! let text = "ARG BASE=busybox\nFROM $BASE AS app\nENV DIR=/srv\nWORKDIR ${DIR:-/}/app\nRUN echo $DIR\n";
//! let df = dockerfile::parse("Dockerfile", text)?;
//! assert_eq!(df.stages[0].name(), Some("app"));
//!
//! let platform: image_core::Platform = "linux/amd64".parse()?;
//! let inputs = BuildInputs { build_args: BTreeMap::new(), target: platform.clone(), build: platform };
//! let expander = Expander::new("Dockerfile", &df, &inputs)?;
//! assert_eq!(expander.from(&df.stages[0])?.image, "busybox");
//!
//! let mut scope = expander.stage_scope(BTreeMap::new());
//! let steps: Vec<Command> = df.stages[0]
//!     .instructions
//!     .iter()
//!     .map(|i| expander.step(&mut scope, i))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(steps[1], Command::Workdir("/srv/app".into()));
//! // RUN's shell text is left to the shell.
//! assert_eq!(dockerfile::print(&df).lines().last(), Some("RUN echo $DIR"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Blocking and privilege
//!
//! Parsing, expansion and `.dockerignore` matching are in memory and never
//! block. Everything that touches a store blocks the calling thread on
//! file I/O: the builder API ([`ImageBuilder::add_dir`] and the other
//! `add_*` calls, [`ImageBuilder::commit`]), the cache, and a Dockerfile
//! build (`build::Builder::build`, for as long as the whole build runs,
//! its stages on threads of its own). The builder API needs no privilege
//! (files in memory and tar streams keep any owner they are given; a
//! directory is packed as it is). A Dockerfile build needs root: its steps
//! run on snapshots (mounted, with overlay) and COPY gives every file its
//! owner, and a RUN is a container (`CAP_SYS_ADMIN`). A build takes a
//! [`Tracker`](image_core::Tracker) in its options
//! (`BuildOptions::with_tracker`): its interrupt is checked between steps
//! and kills a running RUN. From async code, enable the `tokio` feature
//! and await `nonblocking::build`, which runs the build on tokio's
//! blocking pool and interrupts it when the future is dropped.
//!
//! A build of a Dockerfile `FROM scratch` with a COPY (as root):
//!
//! ```
//! # #[cfg(feature = "runtime")] {
//! use image_build::build::{BuildEvent, BuildOptions, Builder};
//! use image_runtime::{Driver, NativeOptions, Runtime, Snapshots};
//! use image_store::{OciDir, TagStore};
//!
//! let tmp = tempfile::tempdir()?;
//! let context = tmp.path().join("context");
//! std::fs::create_dir(&context)?;
//! std::fs::write(context.join("motd"), "hello\n")?;
//!
//! let store = OciDir::open_or_create(tmp.path().join("store"))?;
//! let snapshots = Snapshots::open(&tmp.path().join("snapshots"), Driver::Copy)?;
//! let runtime = Runtime::native(&tmp.path().join("state"), NativeOptions::default())?
//!     .with_snapshots(snapshots)?;
//! let mut options = BuildOptions::new(&context);
//! options.dockerfile_text = Some("FROM scratch\nCOPY motd /etc/motd\n".into());
//! options.tags = vec!["example.local/motd:1".into()];
//! let mut events = Vec::new();
//! let built = Builder::new(&store, &runtime)
//!     .build(&options, &mut |e: &BuildEvent| events.push(e.clone()))?;
//! assert_eq!((built.steps, built.cached), (1, 0));
//! let tagged = store.resolve_tag("example.local/motd:1")?;
//! assert_eq!(tagged.digest(), built.manifest.descriptor().digest());
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! - `runtime` (default): Dockerfile builds (`build`), RUN through
//!   image-runtime. Without it, the language layer, the builder API and
//!   the cache remain.
//! - `tokio`: the `nonblocking` module (see
//!   [Blocking and privilege](#blocking-and-privilege)); implies `runtime`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "runtime")]
pub mod build;
pub mod builder;
pub mod cache;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod dockerignore;
mod glob;
pub mod layer;
pub mod mounts;
#[cfg(feature = "tokio")]
pub mod nonblocking;
pub mod provenance;
pub mod run;

pub use builder::{BuilderError, ImageBuilder};
pub use layer::Layer;

// The registry of image-build's public errors, for
// `image_core::error::classify`: it recognises each error type of this crate
// and, through the registry of the crate beneath it, of every crate below.
#[cfg(not(feature = "runtime"))]
use image_overlay::kind_of as kind_below;
#[cfg(feature = "runtime")]
use image_runtime::kind_of as kind_below;
image_core::classify_registry!(
    below: kind_below;
    crate::builder::BuilderError,
    crate::cache::CacheError,
    crate::cache::export::ExportError,
    crate::cache::export::ImportError,
    crate::cache::mounts::MountCacheError,
    crate::context::ContextError,
    crate::copy::CopyError,
    crate::dockerfile::DockerfileError,
    crate::dockerignore::IgnoreError,
    crate::mounts::MountError,
    crate::mounts::SetupError,
    crate::provenance::ReferrerError,
    crate::run::RunError;
    #[cfg(feature = "runtime")]
    crate::build::BuildError,
    crate::build::StepError,
);
