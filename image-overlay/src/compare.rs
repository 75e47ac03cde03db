//! The changes of an active snapshot as a layer (containerd's diff
//! service, `Compare(lower, upper mounts)`): what a commit, and a build's
//! `COPY` and `RUN` steps, turn into a layer blob, with no container in
//! sight.
//!
//! The changes are found from what the snapshotter says of the snapshot
//! (its parent and its mounts), never by mounting anything:
//! - an `overlay` mount with an `upperdir`: that upper directory holds
//!   exactly the changes; its overlayfs whiteouts (0/0 character devices,
//!   opaque-directory xattrs, `user.overlay.*` under `userxattr`) become OCI
//!   whiteouts ([`pack_overlay_upper`]);
//! - a single bind mount without a parent: the whole tree is the change
//!   ([`pack_dir`]);
//! - a single bind mount on a parent (a full copy, the copy driver): the
//!   tree is compared with a read-only view of the parent ([`diff_dirs`]),
//!   made for the comparison and removed afterwards.
//!
//! Anything else (a snapshot whose mounts are not one of these) is refused
//! with [`CompareError::Unsupported`].
//!
//! The layer is packed straight into a store with [`compare_into`]
//! (compressed and hashed in one pass, never held in memory; a failed pack
//! leaves no ingest behind), or into any writer with [`compare`].

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use image_core::manifest::descriptor;
use image_core::Descriptor;
use image_core::{Classify, ErrorKind};
use image_store::{ContentError, Ingester};

use crate::diff::{diff_dirs, DiffError};
use crate::pack::{pack_dir, pack_overlay_upper, PackError, PackOptions, PackReport};
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::whiteout::OverlayXattrs;

/// A failed comparison. Each variant names the snapshot compared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// The snapshotter refused an operation on the snapshot (not found, not
    /// active) or on the parent's temporary view.
    #[error("snapshot {key}")]
    Snapshot {
        /// The key of the snapshot (or of the view) concerned.
        key: String,
        /// The snapshotter's error.
        #[source]
        source: SnapshotError,
    },
    /// The snapshot's mounts are not a shape whose changes can be found
    /// without mounting (see the module docs).
    #[error("the changes of snapshot {key} cannot be found: {reason}")]
    Unsupported {
        /// The snapshot's key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// Packing the changes failed.
    #[error("packing the changes of snapshot {key}")]
    Pack {
        /// The snapshot's key.
        key: String,
        /// The pack error.
        #[source]
        source: PackError,
    },
    /// Comparing the snapshot with its parent failed.
    #[error("comparing snapshot {key} with its parent")]
    Diff {
        /// The snapshot's key.
        key: String,
        /// The diff error.
        #[source]
        source: DiffError,
    },
    /// Writing the layer into the store failed.
    #[error("storing the layer of snapshot {key}")]
    Content {
        /// The snapshot's key.
        key: String,
        /// The store's error.
        #[source]
        source: ContentError,
    },
}

impl Classify for CompareError {
    fn kind(&self) -> ErrorKind {
        match self {
            CompareError::Snapshot { source, .. } => source.kind(),
            CompareError::Unsupported { .. } => ErrorKind::Unsupported,
            CompareError::Pack { source, .. } => source.kind(),
            CompareError::Diff { source, .. } => source.kind(),
            CompareError::Content { source, .. } => source.kind(),
        }
    }
}

/// A layer blob made of a snapshot's changes, committed to a store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ComparedLayer {
    /// The blob's descriptor (media type, digest, size), as a manifest
    /// lists it.
    pub descriptor: Descriptor,
    /// The pack's report: digest, diff ID, sizes, entries.
    pub report: PackReport,
}

/// Packs the changes of the active snapshot `key` of `sn` (against its
/// parent) as a layer into `out`; see the module docs for how they are
/// found.
///
/// # Errors
/// [`CompareError::Snapshot`] (no such snapshot, a committed one),
/// [`CompareError::Unsupported`], [`CompareError::Pack`],
/// [`CompareError::Diff`].
pub fn compare<W: Write>(
    sn: &dyn Snapshotter,
    key: &str,
    mut out: W,
    options: &PackOptions,
) -> Result<PackReport, CompareError> {
    compare_dyn(sn, key, &mut out, options)
}

/// [`compare`] into a new blob of `store`: written under a unique ingest
/// reference, verified and committed with the pack's size and digest
/// (aborted on failure, so nothing half-written stays). Protect the blob
/// with a lease until something refers to it.
///
/// # Errors
/// As [`compare`]; [`CompareError::Content`].
pub fn compare_into<S: Ingester + ?Sized>(
    store: &S,
    sn: &dyn Snapshotter,
    key: &str,
    options: &PackOptions,
) -> Result<ComparedLayer, CompareError> {
    let content_err = |source| CompareError::Content {
        key: key.to_owned(),
        source,
    };
    let report = store_layer(store, content_err, |out| compare_dyn(sn, key, out, options))?;
    Ok(ComparedLayer {
        descriptor: descriptor(&report.media_type, &report.digest, report.size),
        report,
    })
}

/// Runs `pack` on a new blob writer of `store` and commits the blob with
/// the size and digest the pack reports; on a failed pack the ingest is
/// aborted. The one way a layer made in one pass lands in a store.
///
/// # Errors
/// `pack`'s error, or `content_err` of the store's.
pub fn store_layer<S: Ingester + ?Sized, E>(
    store: &S,
    content_err: impl Fn(ContentError) -> E,
    pack: impl FnOnce(&mut dyn Write) -> Result<PackReport, E>,
) -> Result<PackReport, E> {
    let reference = image_store::content::unique_reference();
    let mut w = store.writer(&reference).map_err(&content_err)?;
    let report = match pack(&mut w) {
        Ok(r) => r,
        Err(e) => {
            drop(w);
            let _ = store.abort(&reference);
            return Err(e);
        }
    };
    w.commit(Some(report.size), Some(&report.digest))
        .map_err(&content_err)?;
    Ok(report)
}

fn compare_dyn(
    sn: &dyn Snapshotter,
    key: &str,
    out: &mut dyn Write,
    options: &PackOptions,
) -> Result<PackReport, CompareError> {
    let snap_err = |k: &str| {
        let k = k.to_owned();
        move |source| CompareError::Snapshot { key: k, source }
    };
    let info = sn.stat(key).map_err(snap_err(key))?;
    let mounts = sn.mounts(key).map_err(snap_err(key))?;
    let unsupported = |reason| CompareError::Unsupported {
        key: key.to_owned(),
        reason,
    };
    let pack_err = |source| CompareError::Pack {
        key: key.to_owned(),
        source,
    };
    let [m] = mounts.as_slice() else {
        return Err(unsupported("its mounts are not a single mount"));
    };
    if m.is_read_only() {
        return Err(unsupported("it is read-only (a view has no changes)"));
    }
    match (m.fs_type.as_str(), info.parent.as_deref()) {
        ("overlay", _) => {
            let upper = m
                .option("upperdir")
                .ok_or_else(|| unsupported("its overlay mount has no upper directory"))?;
            let xattrs = if m.options.iter().any(|o| o == "userxattr") {
                OverlayXattrs::User
            } else {
                OverlayXattrs::Trusted
            };
            pack_overlay_upper(Path::new(upper), out, options, xattrs).map_err(pack_err)
        }
        ("bind", None) => pack_dir(Path::new(&m.source), out, options).map_err(pack_err),
        ("bind", Some(parent)) => diff_against_parent(sn, key, parent, &m.source, out, options),
        _ => Err(unsupported("its mount is neither overlay nor bind")),
    }
}

/// Diffs the full tree `own` of snapshot `key` against a temporary
/// read-only view of `parent`, removed afterwards whatever happened.
fn diff_against_parent(
    sn: &dyn Snapshotter,
    key: &str,
    parent: &str,
    own: &str,
    out: &mut dyn Write,
    options: &PackOptions,
) -> Result<PackReport, CompareError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let view = format!(
        "compare-view-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let view_err = |source| CompareError::Snapshot {
        key: view.clone(),
        source,
    };
    let mounts = sn.view(&view, Some(parent)).map_err(view_err)?;
    let result = match mounts.as_slice() {
        [m] if m.fs_type == "bind" => diff_dirs(Path::new(&m.source), Path::new(own), out, options)
            .map_err(|source| CompareError::Diff {
                key: key.to_owned(),
                source,
            }),
        _ => Err(CompareError::Unsupported {
            key: key.to_owned(),
            reason: "the view of its parent is not a single directory",
        }),
    };
    let removed = sn.remove(&view).map_err(view_err);
    let report = result?;
    removed?;
    Ok(report)
}
