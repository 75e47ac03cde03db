//! Export: an image's final root filesystem as one plain tar stream, no
//! whiteouts (crane `export`), without unpacking it to disk.
//!
//! The stream is the newest-wins merge of all the image's layers
//! (the [module](super)'s `merge`), each layer verified (digest, size, diff ID)
//! as it is read; extracting it with any tar gives the tree that
//! flattening the image gives.
//!
//! ```no_run
//! use image_overlay::surgery::{export, MergeLimits};
//! use image_store::OciDir;
//!
//! let store = OciDir::open("/var/lib/images")?;
//! let mut out = std::fs::File::create("rootfs.tar")?;
//! export(&store, "example/app:1", None, &mut out, MergeLimits::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Write;

use image_core::Platform;
use image_store::image::Image;
use image_store::{Provider, TagStore};

use crate::tarwriter::TarWriter;

use super::merge::{emit, plan, MergeLimits, Source};
use super::{layers_of, resolve, SurgeryError};

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportReport {
    /// Entries in the image's layers.
    pub entries_read: u64,
    /// Entries written.
    pub entries_written: u64,
    /// Compressed bytes of the layers read.
    pub layers_compressed: u64,
    /// Uncompressed bytes of the layers read.
    pub layers_uncompressed: u64,
}

/// Exports the image `reference` of `store` (for `platform`, default the
/// host's, when it names an index) as a tar stream into `out`.
///
/// # Errors
/// [`SurgeryError`]: `Resolve`, a layer refused (`Layer`, `Entry`, the
/// limits), `Write` when `out` fails. What was written before an error is
/// not a whole tar: write to a temporary file and rename it on success.
pub fn export<S: Provider + TagStore + ?Sized>(
    store: &S,
    reference: &str,
    platform: Option<&Platform>,
    out: &mut dyn Write,
    limits: MergeLimits,
) -> Result<ExportReport, SurgeryError> {
    let host = Platform::host();
    let image = resolve(store, reference, Some(platform.unwrap_or(&host)))?;
    export_image(store, &image, out, limits)
}

/// Exports a resolved image as a tar stream into `out` (see [`export`]).
///
/// # Errors
/// As [`export`].
pub fn export_image<P: Provider + ?Sized>(
    store: &P,
    image: &Image,
    out: &mut dyn Write,
    limits: MergeLimits,
) -> Result<ExportReport, SurgeryError> {
    let layers = layers_of(image)?;
    let sources: Vec<Source<'_>> = layers
        .iter()
        .enumerate()
        .map(|(index, (descriptor, diff_id))| Source {
            descriptor,
            diff_id,
            index,
        })
        .collect();
    let planned = plan(store, &sources, &[], limits)?;
    let mut tar = TarWriter::new(std::io::BufWriter::with_capacity(256 * 1024, out));
    let written = emit(store, &sources, &planned, limits.layer, &mut tar)?;
    let mut buffered = tar
        .finish()
        .map_err(|source| SurgeryError::Write { source })?;
    buffered
        .flush()
        .map_err(|source| SurgeryError::Write { source })?;
    Ok(ExportReport {
        entries_read: planned.read.entries,
        entries_written: written,
        layers_compressed: planned.read.compressed,
        layers_uncompressed: planned.read.uncompressed,
    })
}
