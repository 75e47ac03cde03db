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
//! Nothing here needs privilege. Parsing and hashing in memory never block;
//! the hashing readers and writers block only as the reader or writer they
//! wrap does (from async code, hash on a blocking thread or feed the bytes
//! of an async stream to a [`DigestWriter`] yourself).
//!
//! Small helpers the crates above share: [`path`] cleans the paths images
//! and archives name, [`time`] writes `created` times (RFC 3339, UTC,
//! `SOURCE_DATE_EPOCH`), [`Manifest::build`] makes a new manifest.
//!
//! Progress and cancellation ([`progress`]): every long operation of the
//! family takes a [`Tracker`] in its options, a [`Progress`] sink and an
//! [`Interrupt`] that stops the operation with an error of class
//! [`ErrorKind::Cancelled`]. Errors ([`error`]): each reports its
//! [`ErrorKind`] through [`Classify`], and [`error::classify`] finds the
//! class of any error of the family behind a `&dyn Error`;
//! [`error::Chain`] prints an error with its causes, each said once.
//!
//! # Features
//! - `codec`: the `codec` module compresses and decompresses layer and
//!   archive streams (gzip, zstd), for every crate of the family that reads
//!   or writes them. Off by default, so a user of digests, references and
//!   documents alone builds neither flate2 nor libzstd.
//! - `tokio`: `progress::spawn_blocking`, a blocking call on tokio's
//!   blocking pool whose tracker's interrupt is set when the future is
//!   dropped (the crates above build their `nonblocking` modules on it).
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

#[cfg(feature = "codec")]
pub mod codec;
pub mod config;
pub mod digest;
pub mod error;
pub mod ids;
pub mod json;
pub mod manifest;
pub mod media_type;
pub mod path;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod time;

pub use oci_spec;

pub use config::ImageConfig;
pub use digest::{
    Algorithm, Digest, DigestError, DigestWriter, HashingReader, VerifyError, VerifyingReader,
};
pub use error::{Classify, ErrorKind};
pub use ids::{chain_id, chain_ids};
pub use manifest::{Descriptor, DescriptorExt, Document, Index, Manifest, ParseError};
pub use media_type::{Compression, MediaType, MediaTypeError};
pub use platform::Platform;
pub use progress::{Cancelled, Interrupt, NoProgress, Progress, Recorder, Tracker};
pub use reference::Reference;

/// An `io::Error` is classified by [`ErrorKind::from_io`], except that an
/// error of this family travelling inside one (as [`VerifyingReader`] sends
/// a [`VerifyError`]) keeps its own class. It sits at the crate root, beside
/// the registry, so that `error` stays the leaf every module builds on.
impl Classify for std::io::Error {
    fn kind(&self) -> ErrorKind {
        self.get_ref()
            .and_then(|inner| kind_of(inner))
            .unwrap_or_else(|| ErrorKind::from_io(self))
    }
}

// The registry's end: no type below image-core.
fn nothing_below(_: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    None
}

classify_registry!(
    below: nothing_below;
    std::io::Error,
    crate::digest::DigestError,
    crate::digest::VerifyError,
    crate::reference::ReferenceError,
    crate::media_type::MediaTypeError,
    crate::config::ConfigLimitError,
    crate::manifest::ParseError,
    crate::platform::PlatformError,
    crate::progress::Cancelled;
    #[cfg(feature = "codec")]
    crate::codec::CompressError,
);
