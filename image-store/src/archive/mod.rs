//! Image archives: `docker save` tarballs and OCI archives, imported into a
//! store and exported from one, streaming.
//!
//! - [`load()`] reads either kind of archive from any [`Read`](std::io::Read) in one pass
//!   (plain, or compressed with gzip or zstd as `docker load` accepts it),
//!   ingesting blobs as they stream past, then writes manifests and tags
//!   (see [`load`](mod@load) for the details and for what is verified).
//!   It recognises the old docker-save layout (`<id>/layer.tar`, as
//!   `docker save` before Docker 25 and skopeo write it), the newer one
//!   (`blobs/sha256/<hex>` beside `manifest.json`, Docker 25+), and OCI
//!   image layouts (`oci-archive:`).
//! - [`OciArchive`] reads an uncompressed OCI archive in place, as a
//!   read-only store (blobs read at their offset in the file, verified).
//! - [`save_docker`] writes a docker-save archive (old layout by default,
//!   which skopeo, podman and every Docker read; the newer one on request)
//!   and [`save_oci`] an OCI archive, both straight from the store to any
//!   [`Write`](std::io::Write), one image or several.
//!
//! ```
//! use image_store::archive::{load, save_oci, LoadOptions, SaveImage};
//! use image_store::{MemoryStore, TagStore};
//! # use image_store::Ingester;
//! # use image_core::{manifest::descriptor, MediaType, ImageConfig, config::ConfigFile};
//! # let store = MemoryStore::new();
//! # let config = ImageConfig::new(ConfigFile::new("linux", "amd64"))?;
//! # let cfg = store.write_blob(config.raw())?;
//! # let m = image_store::archive::build_manifest(&cfg, config.raw().len() as u64, vec![])?;
//! # store.write_blob(m.raw())?;
//! # store.set_tag("example:1", &m.descriptor())?;
//! // Export an image as an OCI archive, and load it into another store.
//! let image = SaveImage::from_tag(&store, "example:1")?;
//! let mut tarball = Vec::new();
//! save_oci(&store, &[image], &mut tarball)?;
//!
//! let other = MemoryStore::new();
//! let report = load(&other, &tarball[..], &LoadOptions::default())?;
//! assert_eq!(report.images[0].tags, ["docker.io/library/example:1"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Security
//! Entry paths are only used as names to look blobs up: nothing is ever
//! written to a path taken from an archive, and a path climbing above the
//! archive root is refused. Metadata files are limited to 8 MiB in memory;
//! blobs stream to the store's ingest, bounded only by the disk (and so
//! does a compressed archive: it is decoded as it streams, its expansion
//! bounded only by the disk too). The work of checking what was loaded is
//! linear in the archive: each manifest and index is read and parsed once
//! however many descriptors name it, nested at most
//! [`MAX_DOCUMENT_DEPTH`](load::MAX_DOCUMENT_DEPTH) deep and at most
//! [`MAX_DOCUMENTS`](load::MAX_DOCUMENTS) of them; each layer's diff ID is
//! computed once per blob however many images name it, and its
//! decompression stops at
//! [`LoadOptions::max_expanded_bytes`](load::LoadOptions::max_expanded_bytes)
//! (a decompression bomb is refused after that many bytes, not expanded).

use crate::content::{Ingester, Provider};

mod error;
pub mod load;
pub mod open;
pub mod save;
mod tarstream;

pub use error::ArchiveError;
pub use load::{
    load, ArchiveFormat, LoadOptions, LoadReport, LoadedImage, DEFAULT_MAX_EXPANDED_BYTES,
};
pub use open::OciArchive;
pub use save::{
    save_docker, save_oci, save_oci_with, DockerLayout, RepoTagForm, SaveImage, SaveOptions,
    SaveReport,
};

/// A store blobs can be read from and written to; implemented for every
/// [`Provider`] + [`Ingester`], so `&dyn BlobStore` is one pointer for both.
pub trait BlobStore: Provider + Ingester {}

impl<T: Provider + Ingester + ?Sized> BlobStore for T {}

/// Builds an OCI image manifest for a config and layers, serialised
/// canonically (config media type `application/vnd.oci.image.config.v1+json`).
///
/// # Errors
/// [`ArchiveError::Parse`] when a descriptor is invalid.
pub fn build_manifest(
    config: &image_core::Digest,
    config_size: u64,
    layers: Vec<image_core::Descriptor>,
) -> Result<image_core::Manifest, ArchiveError> {
    load::build_manifest(config, config_size, layers, "new manifest")
}
