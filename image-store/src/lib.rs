//! # image-store
//!
//! A content-addressable store for OCI and Docker images, in containerd's
//! model: blobs are ingested through a writer that hashes while it writes
//! and commits atomically against an expected digest and size, then read
//! back as streams that verify themselves. Two stores implement the
//! [`ContentStore`] traits: [`OciDir`], an OCI image layout on disk
//! (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) that skopeo, umoci and
//! oci-image-tool read and write too, and [`MemoryStore`]. On top of them:
//! tags in `index.json` ([`TagStore`]), image resolution
//! ([`resolve_image`]: reference -> index -> manifest for a platform ->
//! config and layers), garbage collection with leases and a grace period
//! ([`gc`], [`lease`]), and [`fsck`].
//!
//! The module of each operation owns its error type (`ContentError`,
//! `TagError`, `GcError`, `FsckError`, `LeaseError`, `ImageError`,
//! `LayoutError`); every one reports an [`image_core::ErrorKind`] through
//! [`image_core::Classify`]. Every file-system mutation of [`OciDir`] goes
//! through the [`fs::Fs`] seam, so tests inject ENOSPC or EIO at any step.
//!
//! # Blocking
//!
//! Every call of this crate that touches a store blocks the calling thread
//! on file I/O (and, for `gc` and tagging, on the store's lock): reads,
//! ingests, [`archive::load()`], [`archive::save_docker`], [`copy_tag`],
//! [`OciDir::gc`], [`fsck`]. From async code, run them with
//! `tokio::task::spawn_blocking`, or enable the `tokio` feature and use
//! the `nonblocking` module (the long operations, with progress and cancellation on
//! drop). Long operations take a [`Tracker`](image_core::Tracker) in their
//! options: progress per blob, and an interrupt checked between chunks that
//! stops them with an error of class `Cancelled`.
//!
//! [`MemoryStore`] blocks only on its own mutex. Nothing needs root: a
//! store is plain files, readable and writable by whoever owns them.
//!
//! # Features
//! - `tokio`: the `nonblocking` module (see [Blocking](#blocking)).
//! - `testsuite`: the content store conformance suite
//!   (`testsuite::content_store`), for other implementations of the traits.
//! - `testing`: test doubles (`fs::FaultyFs`, `MemoryStore::corrupt`) for
//!   tests of code handling store failures. Not for production use.
//!
//! ```
//! use image_store::{Ingester, OciDir, Provider, ContentWriter};
//! use std::io::Write;
//!
//! let dir = tempfile::tempdir()?;
//! let store = OciDir::open_or_create(dir.path())?;
//!
//! // One call for small blobs...
//! let config = store.write_blob(br#"{"architecture":"amd64","os":"linux"}"#)?;
//! assert!(store.exists(&config)?);
//!
//! // ...or a writer that hashes while it writes and commits atomically.
//! let mut w = store.writer("my-layer")?;
//! w.write_all(b"layer bytes")?;
//! let layer = w.commit(Some(11), None)?;
//! assert_eq!(store.read_blob_to_vec(&layer, 1024)?, b"layer bytes");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod archive;
mod cold;
pub mod content;
pub mod copy;
pub mod durability;
pub mod error;
pub mod fs;
pub mod fsck;
pub mod gc;
pub mod image;
mod ingest;
pub mod lease;
pub mod memory;
pub mod mutate;
#[cfg(feature = "tokio")]
pub mod nonblocking;
pub mod oci_dir;
mod pending;
pub mod referrers;
pub mod refs;
pub mod tags;
pub mod tar_ending;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use archive::{load, save_docker, save_oci, ArchiveError};
pub use content::{
    ContentError, ContentStore, ContentWriter, Info, IngestStatus, Ingester, Labels, Manager,
    Provider, VerifiedBlob,
};
pub use copy::{
    copy_image, copy_image_with, copy_tag, copy_tag_with, CopyError, CopyOptions, CopyReport,
};
pub use fsck::{FsckOptions, FsckReport};
pub use gc::{GcOptions, GcReport};
pub use image::{resolve_image, Image};
pub use lease::{Lease, LeaseError, LeaseGuard, Leased, Leases};
pub use memory::MemoryStore;
pub use oci_dir::{LayoutError, OciDir};
pub use tags::{resolve_reference, TagError, TagStore, Tagged};

// The registry of image-store's public errors, for
// `image_core::error::classify`: it recognises each error type of this crate
// and, through image-core's registry, of the crate below. It sits at the
// crate root so that no module below depends on every other.
image_core::classify_registry!(
    below: image_core::kind_of;
    crate::archive::ArchiveError,
    crate::error::ContentError,
    crate::copy::CopyError,
    crate::fs::RefusedFile,
    crate::fsck::FsckError,
    crate::gc::GcError,
    crate::image::ImageError,
    crate::error::LeaseError,
    crate::mutate::MutateError,
    crate::oci_dir::LayoutError,
    crate::referrers::OnlyImageError,
    crate::referrers::ReferrersError,
    crate::error::TagError,
);
