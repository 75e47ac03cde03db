//! Async wrappers of the long layer operations (feature `tokio`).
//!
//! Unpacking and packing block the calling thread on file I/O and CPU
//! (see the [crate documentation](crate#blocking)). Each function here runs
//! one on tokio's blocking pool ([`image_core::progress::spawn_blocking`])
//! with owned arguments. The options' [`Tracker`](image_core::Tracker)
//! goes with the call, and dropping the future sets its interrupt: the
//! operation stops at its next chunk or entry, and an image unpack removes
//! the snapshot of the layer it was unpacking.
//!
//! ```
//! use image_overlay::{nonblocking, PackOptions};
//!
//! let rt = tokio::runtime::Builder::new_multi_thread().build()?;
//! let src = tempfile::tempdir()?;
//! std::fs::write(src.path().join("motd"), b"hello\n")?;
//! let (report, layer) = rt.block_on(nonblocking::pack_dir(
//!     src.path().to_path_buf(),
//!     Vec::new(),
//!     PackOptions::default(),
//! ))?;
//! assert_eq!(report.size, layer.len() as u64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{Read, Write};
use std::path::PathBuf;

use image_core::progress::spawn_blocking;
use image_store::{Image, Provider};

use crate::flatten::FlattenError;
use crate::image_unpack::{ImageUnpackError, ImageUnpackOptions, ImageUnpackReport};
use crate::pack::{PackError, PackOptions, PackReport};
use crate::snapshot::Snapshotter;
use crate::unpack::{UnpackError, UnpackOptions, UnpackReport};

/// [`unpack_image`](crate::unpack_image) on the blocking pool.
///
/// # Errors
/// As `unpack_image`; of class [`Cancelled`](image_core::ErrorKind::Cancelled)
/// once the interrupt is set.
pub async fn unpack_image<P, S>(
    store: P,
    image: Image,
    snapshotter: S,
    options: ImageUnpackOptions,
) -> Result<ImageUnpackReport, ImageUnpackError>
where
    P: Provider + Send + Sync + 'static,
    S: Snapshotter + Send + 'static,
{
    spawn_blocking(options.unpack.tracker.clone(), move |_| {
        crate::unpack_image(&store, &image, &snapshotter, &options)
    })
    .await
}

/// [`flatten_image`](crate::flatten_image) on the blocking pool.
///
/// # Errors
/// As `flatten_image`.
pub async fn flatten_image<P>(
    store: P,
    image: Image,
    target: PathBuf,
    options: UnpackOptions,
) -> Result<Vec<UnpackReport>, FlattenError>
where
    P: Provider + Send + 'static,
{
    spawn_blocking(options.tracker.clone(), move |_| {
        crate::flatten_image(&store, &image, &target, &options)
    })
    .await
}

/// [`unpack`](crate::unpack()) of one layer on the blocking pool.
///
/// # Errors
/// As `unpack`.
pub async fn unpack<R>(
    reader: R,
    target: PathBuf,
    options: UnpackOptions,
) -> Result<UnpackReport, UnpackError>
where
    R: Read + Send + 'static,
{
    spawn_blocking(options.tracker.clone(), move |_| {
        crate::unpack(reader, &target, &options)
    })
    .await
}

/// [`pack_dir`](crate::pack_dir) on the blocking pool; gives the output
/// back with the report.
///
/// # Errors
/// As `pack_dir`.
pub async fn pack_dir<W>(
    dir: PathBuf,
    mut out: W,
    options: PackOptions,
) -> Result<(PackReport, W), PackError>
where
    W: Write + Send + 'static,
{
    spawn_blocking(options.tracker.clone(), move |_| {
        crate::pack_dir(&dir, &mut out, &options).map(|r| (r, out))
    })
    .await
}
