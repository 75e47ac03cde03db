//! # image-overlay
//!
//! Layers as streams. A layer is a tarball of filesystem changes; this
//! crate reads and writes them in one pass, byte-exact and safe against
//! hostile input:
//!
//! - [`unpack()`]: decompress (gzip, zstd, sniffed or declared), hash the
//!   blob digest and the diff ID, and apply a layer onto a directory at once,
//!   working relative to directory descriptors (see its `# Security` section);
//! - [`list`](mod@list): the entries of a layer, read through the same stream path
//!   as unpack (decompression, digests, where the tar may end, limits);
//! - [`whiteout`]: OCI whiteouts, applied when flattening or converted to
//!   overlayfs form for a layer unpacked into a directory of its own;
//! - [`pack`]: a deterministic layer from a directory or from an overlayfs
//!   upper directory, compressed and hashed in the same pass;
//! - [`diff`]: a layer from the difference between two directory trees;
//! - [`compress`]: gzip (flate2, zlib-rs) and zstd (multi-threaded), which
//!   is image-core's [`codec`](image_core::codec) under its old name;
//! - [`append`]: a new tagged image from a base plus a directory or a
//!   layer tarball, with config changes, in one call ([`append_dir`]);
//! - [`surgery`]: squash, rebase, mutate and export an image without a
//!   rebuild or an unpack to disk;
//! - [`snapshot`]: overlay and copy snapshotters, and [`image_unpack`]
//!   unpacking an image's layers into them;
//! - [`analysis`]: what each layer changes, dive's efficiency, leaked
//!   secrets and an HTML size report, from one read of each layer.
//!
//! ```
//! use image_core::Compression;
//! use image_overlay::pack::{pack_dir, PackOptions};
//! use image_overlay::unpack::{unpack, UnpackOptions};
//!
//! let src = tempfile::tempdir()?;
//! std::fs::create_dir(src.path().join("etc"))?;
//! std::fs::write(src.path().join("etc/motd"), b"hello\n")?;
//!
//! let mut layer = Vec::new();
//! let packed = pack_dir(src.path(), &mut layer, &PackOptions::new(Compression::Zstd))?;
//!
//! let dst = tempfile::tempdir()?;
//! let options = UnpackOptions::default()
//!     .with_digest(packed.digest.clone())
//!     .with_diff_id(packed.diff_id.clone());
//! let report = unpack(&layer[..], dst.path(), &options)?;
//! assert_eq!(report.diff_id, packed.diff_id);
//! assert_eq!(std::fs::read(dst.path().join("etc/motd"))?, b"hello\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Blocking
//!
//! Every operation here blocks the calling thread on file I/O and CPU
//! (compression and hashing run on worker threads besides): [`unpack()`],
//! [`list()`], [`pack_dir`], [`diff_dirs`], [`compare()`], [`flatten_image`],
//! [`append_dir`], [`unpack_image`], the snapshotters and mounts. From async
//! code, run them with `tokio::task::spawn_blocking`, or enable the `tokio`
//! feature and use the `nonblocking` module (unpack, pack, flatten and image
//! unpack, with progress and cancellation when the future is dropped). The
//! long ones take a [`Tracker`](image_core::Tracker) in their options
//! ([`UnpackOptions::tracker`], [`PackOptions::tracker`]).
//!
//! Packing, unpacking onto a directory, listing, diffing and appending
//! need no privilege, except to keep what only root may make: an unpack as
//! another user keeps no file owners and skips device nodes the kernel
//! refuses (see [`UnpackOptions`]). Root (`CAP_SYS_ADMIN`) is needed to
//! mount ([`SysMounter`], an [`OverlaySnapshotter`]'s snapshots) and for
//! overlayfs whiteouts in `trusted.*` form.
//!
//! # Features
//! - `testing`: test doubles (`mount::RecordingMounter`, which records
//!   mount calls and performs none) for tests of code above the
//!   [`Mounter`] seam. Not for production use.
//! - `tokio`: the `nonblocking` module (see [Blocking](#blocking)).
//! - `testsuite`: the snapshotter conformance suite, for this crate's
//!   drivers and for other implementations of [`Snapshotter`].
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod analysis;
pub mod append;
pub mod compare;
/// Compression of layer streams: image-core's [`codec`](image_core::codec),
/// under the name this crate has always used. The codec lives at the
/// lowest tier, so that the store (archives) and a registry client use the
/// same one without depending on image-overlay.
pub mod compress {
    pub use image_core::codec::*;
}
pub mod diff;
pub mod flatten;
mod fsops;
pub mod image_unpack;
pub mod list;
mod lower;
pub mod mount;
#[cfg(feature = "tokio")]
pub mod nonblocking;
pub mod pack;
pub mod resolve;
pub mod snapshot;
pub mod stream_unpack;
pub mod surgery;
mod sys;
mod tarwriter;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod unpack;
pub mod whiteout;

pub use append::{append_dir, append_source, AppendError, AppendSource, ConfigChanges};
pub use compare::{compare, compare_into, CompareError, ComparedLayer};
pub use compress::{CompressError, Encoding};
pub use diff::{diff_dirs, DiffError};
pub use flatten::{flatten_image, FlattenError};
pub use image_unpack::{
    unpack_image, unpack_layers, ImageUnpackError, ImageUnpackOptions, ImageUnpackReport,
};
pub use list::{list, ListEntry, ListOptions, ListReport};
#[cfg(feature = "testing")]
pub use mount::RecordingMounter;
pub use mount::{LegacyMounter, Mount, MountError, MountGuard, Mounter, SysMounter};
pub use pack::{
    pack_dir, pack_overlay_upper, LayerStream, LayerWriter, PackError, PackOptions, PackReport,
};
pub use snapshot::{
    CopySnapshotter, Info as SnapshotInfo, Kind as SnapshotKind, OverlaySnapshotter, SnapshotError,
    Snapshotter,
};
pub use stream_unpack::{LayerFeed, StreamUnpacker};
pub use unpack::{unpack, unpack_at, PathResolution, UnpackError, UnpackOptions, UnpackReport};
pub use whiteout::{OverlayXattrs, WhiteoutMode};

// The registry of image-overlay's public errors, for
// `image_core::error::classify`: it recognises each error type of this crate
// and, through image-store's registry, of the crates below.
image_core::classify_registry!(
    below: image_store::kind_of;
    crate::analysis::AnalysisError,
    crate::analysis::AllowListError,
    crate::analysis::GateError,
    crate::append::AppendError,
    crate::compare::CompareError,
    crate::diff::DiffError,
    crate::flatten::FlattenError,
    crate::image_unpack::ImageUnpackError,
    crate::mount::MountError,
    crate::pack::PackError,
    crate::snapshot::SnapshotError,
    crate::surgery::SurgeryError,
    crate::unpack::UnpackError,
    crate::whiteout::WhiteoutError,
);
