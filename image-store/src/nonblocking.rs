//! Async wrappers of the store's long operations (feature `tokio`).
//!
//! Every operation of this crate blocks the calling thread on file I/O
//! (see the [crate documentation](crate#blocking)). Each function here runs
//! one on tokio's blocking pool ([`image_core::progress::spawn_blocking`])
//! and takes owned arguments, so the future is `'static` and `Send`. The
//! options' [`Tracker`](image_core::Tracker) goes with the call: progress
//! is reported from the blocking thread, and dropping the future sets its
//! interrupt, so the operation stops at its next check, leaving no tag and
//! no half-written blob (as any cancelled operation does).
//!
//! ```
//! use image_store::archive::LoadOptions;
//! use image_store::{nonblocking, MemoryStore};
//!
//! let rt = tokio::runtime::Builder::new_multi_thread().build()?;
//! let store = MemoryStore::new();
//! // An empty tar stream is no archive: the error comes back to the caller.
//! let archive = std::io::Cursor::new(vec![0u8; 1024]);
//! let result = rt.block_on(nonblocking::load(store.clone(), archive, LoadOptions::default()));
//! assert!(result.is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{Read, Write};

use image_core::progress::spawn_blocking;
use image_core::Descriptor;

use crate::archive::{
    ArchiveError, BlobStore, LoadOptions, LoadReport, SaveImage, SaveOptions, SaveReport,
};
use crate::copy::{CopyError, CopyOptions, CopyReport};
use crate::gc::{GcError, GcOptions, GcReport};
use crate::lease::Leases;
use crate::tags::TagStore;
use crate::{OciDir, Provider};

/// [`archive::load`](crate::archive::load()) on the blocking pool.
///
/// # Errors
/// As `load`; of class [`Cancelled`](image_core::ErrorKind::Cancelled)
/// once the interrupt is set.
pub async fn load<S, R>(
    store: S,
    reader: R,
    options: LoadOptions,
) -> Result<LoadReport, ArchiveError>
where
    S: BlobStore + TagStore + Leases + Send + 'static,
    R: Read + Send + 'static,
{
    spawn_blocking(options.tracker.clone(), move |_| {
        crate::archive::load(&store, reader, &options)
    })
    .await
}

/// [`archive::save_docker`](crate::archive::save_docker) on the blocking
/// pool; gives the output back with the report.
///
/// # Errors
/// As `save_docker`.
pub async fn save_docker<P, W>(
    store: P,
    images: Vec<SaveImage>,
    mut out: W,
    options: SaveOptions,
) -> Result<(SaveReport, W), ArchiveError>
where
    P: Provider + Send + 'static,
    W: Write + Send + 'static,
{
    spawn_blocking(options.tracker.clone(), move |_| {
        crate::archive::save_docker(&store, &images, &mut out, &options).map(|r| (r, out))
    })
    .await
}

/// [`copy::copy_tag_with`](crate::copy::copy_tag_with) on the blocking pool.
///
/// # Errors
/// As `copy_tag_with`.
pub async fn copy_tag<S, D>(
    src: S,
    name: String,
    dst: D,
    dst_name: Option<String>,
    options: CopyOptions,
) -> Result<CopyReport, CopyError>
where
    S: Provider + TagStore + Send + 'static,
    D: BlobStore + TagStore + Leases + Send + 'static,
{
    spawn_blocking(options.tracker.clone(), move |_| {
        crate::copy::copy_tag_with(&src, &name, &dst, dst_name.as_deref(), &options)
    })
    .await
}

/// [`copy::copy_image_with`](crate::copy::copy_image_with) on the blocking pool.
///
/// # Errors
/// As `copy_image_with`.
pub async fn copy_image<S, D>(
    src: S,
    dst: D,
    descriptor: Descriptor,
    options: CopyOptions,
) -> Result<CopyReport, CopyError>
where
    S: Provider + Send + 'static,
    D: BlobStore + Send + 'static,
{
    spawn_blocking(options.tracker.clone(), move |_| {
        crate::copy::copy_image_with(&src, &dst, &descriptor, &options)
    })
    .await
}

/// [`OciDir::gc`] on the blocking pool.
///
/// # Errors
/// As `gc`.
pub async fn gc(store: OciDir, options: GcOptions) -> Result<GcReport, GcError> {
    spawn_blocking(options.tracker.clone(), move |_| store.gc(&options)).await
}
