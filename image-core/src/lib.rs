//! # image-core
//!
//! The vocabulary of OCI and Docker images, with no filesystem policy:
//! validated [`Digest`]s and the readers and writers that hash while bytes
//! move, [`MediaType`]s of both formats, manifests, indexes and image
//! configs that keep their raw bytes as the truth, image IDs, diff IDs and
//! chain IDs, image [`Reference`]s normalised as Docker does, [`Platform`]s
//! and platform matching, and the [`ErrorKind`] classification that every
//! error of the family reports.
//!
//! ```
//! use image_core::{chain_ids, Digest, Reference};
//!
//! let layer = Digest::sha256(b"a layer tar");
//! assert_eq!(chain_ids(&[layer.clone()])[0], layer);
//!
//! let r: Reference = "nginx:1.21.1-alpine".parse()?;
//! assert_eq!(r.to_string(), "docker.io/library/nginx:1.21.1-alpine");
//! assert_eq!(r.familiar(), "nginx:1.21.1-alpine");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod digest;
pub mod error;
pub mod ids;
pub mod json;
pub mod manifest;
pub mod media_type;
pub mod platform;
pub mod progress;
pub mod reference;

pub use oci_spec;

pub use config::ImageConfig;
pub use digest::{
    Algorithm, Digest, DigestError, DigestWriter, HashingReader, VerifyError, VerifyingReader,
};
pub use error::{Classify, ErrorKind};
pub use ids::{chain_id, chain_ids};
pub use manifest::{Descriptor, Document, Index, Manifest, ParseError};
pub use media_type::{Compression, MediaType, MediaTypeError};
pub use platform::Platform;
pub use progress::{Cancelled, Interrupt, NoProgress, Progress, Recorder, Tracker};
pub use reference::Reference;
