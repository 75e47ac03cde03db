//! # image-build
//!
//! Dockerfile parsing and image builds. This part holds the language layer:
//! the Dockerfile parser ([`dockerfile::parse`]) into a typed tree, its
//! printer, the expansion pass, and `.dockerignore` matching
//! ([`dockerignore`]). The build steps come on top of it, and on the
//! builder API ([`builder`]), which makes an image without a Dockerfile
//! (crane `append`, ko, jib).
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
