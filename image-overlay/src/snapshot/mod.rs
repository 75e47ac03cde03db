//! Snapshotters: storage drivers in containerd's style.
//!
//! # Lifecycle
//! A snapshot is a directory tree with a kind:
//! - **active** (writable), made by [`Snapshotter::prepare`] on top of an
//!   optional committed parent and named by a *key*;
//! - **view** (read-only), made by [`Snapshotter::view`], also by key;
//! - **committed**, made by [`Snapshotter::commit`] from an active snapshot,
//!   named by a *name*, immutable, and the only kind that can be a parent.
//!
//! Keys and names share one namespace. A snapshot with children cannot be
//! removed. Drivers return the [`Mount`]s that make a snapshot visible as
//! data; a [`crate::mount::Mounter`] performs them. Snapshots of image layers
//! are committed under their chain ID (see [`crate::image_unpack`]), so
//! images sharing layers share snapshots. Drivers know nothing of tar or images.
//!
//! Two drivers: [`OverlaySnapshotter`] (overlayfs: each snapshot holds only
//! its own changes) and [`CopySnapshotter`] (a full copy of the parent;
//! portable, no mount privilege needed to use its directories).
//!
//! # Durability
//! The metadata of all snapshots is one JSON file, `metadata.json`,
//! replaced atomically (temp file, fsync, rename, fsync of the directory)
//! under an exclusive `flock` on `lock`, and re-read by every operation, so
//! several handles and processes can share a root. A snapshot directory is
//! built under a temporary name and renamed into place before the metadata
//! names it; on open, directories the metadata does not name (leftovers of
//! a crash) are removed. Committing syncs the filesystem first (`syncfs`),
//! so a committed snapshot's content survives a crash too.
//!
//! Mounting an overlay snapshot needs root (`CAP_SYS_ADMIN`); every call
//! blocks on the filesystem (run them on a blocking thread from async
//! code). The copy driver's directories are usable without mounting.
//!
//! ```
//! use image_overlay::mount::{MountGuard, SysMounter};
//! use image_overlay::snapshot::{OverlaySnapshotter, Snapshotter};
//!
//! let tmp = tempfile::tempdir()?;
//! let sn = OverlaySnapshotter::open(tmp.path().join("overlay"))?;
//! let rootfs = tmp.path().join("rootfs");
//! std::fs::create_dir(&rootfs)?;
//!
//! // A first layer: an active snapshot, mounted, written, committed.
//! let mounts = sn.prepare("build-1", None)?;
//! let guard = MountGuard::mount(SysMounter, &mounts, &rootfs)?;
//! std::fs::write(rootfs.join("hello"), b"hi")?;
//! guard.unmount()?;
//! sn.commit("layer-1", "build-1")?;
//!
//! // A container on it: an overlay of its own upper directory on the layer.
//! let mounts = sn.prepare("container-1", Some("layer-1"))?;
//! assert_eq!(mounts[0].fs_type, "overlay");
//! let guard = MountGuard::mount(SysMounter, &mounts, &rootfs)?;
//! assert_eq!(std::fs::read(rootfs.join("hello"))?, b"hi");
//! guard.unmount()?;
//! sn.remove("container-1")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use image_core::{Classify, ErrorKind};

use crate::mount::Mount;
use crate::whiteout::WhiteoutMode;

mod copy;
mod core;
pub(crate) mod fsutil;
mod meta;
mod overlay;

pub use self::copy::CopySnapshotter;
pub use self::overlay::{OverlayOptions, OverlaySnapshotter};

/// The name of the driver whose snapshots the root `root` holds
/// ([`Snapshotter::driver`]: `overlay`, `copy`), read from its metadata;
/// `None` for a root without snapshot metadata (new, or not a root yet),
/// so a caller can reopen a root with the driver it was made with.
///
/// # Errors
/// [`SnapshotError::Metadata`] for a corrupt metadata file; I/O.
pub fn driver_at(root: impl AsRef<std::path::Path>) -> Result<Option<String>, SnapshotError> {
    meta::driver_at(root.as_ref())
}

/// Labels of a snapshot: free-form key/value pairs.
pub type Labels = BTreeMap<String, String>;

/// The kind of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable, named by a key.
    Active,
    /// Read-only, named by a key.
    View,
    /// Immutable, named by a name; can be a parent.
    Committed,
}

impl Kind {
    /// `active`, `view` or `committed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "view",
            Kind::Committed => "committed",
        }
    }
}

/// What [`Snapshotter::stat`] tells about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Info {
    /// The kind.
    pub kind: Kind,
    /// The key (active, view) or name (committed).
    pub name: String,
    /// The name of the committed parent.
    pub parent: Option<String>,
    /// When it was created (for a committed snapshot: when its active was prepared).
    pub created: SystemTime,
    /// When it last changed kind or labels.
    pub updated: SystemTime,
    /// Labels.
    pub labels: Labels,
}

/// The disk space a snapshot's own directory takes (for overlay: its
/// changes only; for copy: its whole tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes of allocated blocks.
    pub size: u64,
    /// Inodes (hardlinked files counted once).
    pub inodes: u64,
}

/// What a driver can do beyond the common lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// An active snapshot prepared without a parent can be committed onto a
    /// parent ([`CommitOptions::rebase`]): its directory holds a diff that
    /// does not depend on what lies below (overlay). Layers can then be
    /// unpacked in parallel.
    pub rebase: bool,
    /// How a layer is applied to an active snapshot's directory: with
    /// whiteouts converted to overlayfs form, or applied onto a full copy.
    pub layer_whiteouts: WhiteoutMode,
    /// A commit makes the snapshot's content durable first (`syncfs`), so
    /// that a crash never leaves a committed snapshot with lost data. A
    /// caller that syncs itself says so with [`CommitOptions::synced`].
    pub sync_on_commit: bool,
}

/// Options of [`Snapshotter::commit_with`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CommitOptions {
    /// Labels of the committed snapshot.
    pub labels: Labels,
    /// Commit onto this committed parent instead of the (absent) parent the
    /// active snapshot was prepared on; only where [`Capabilities::rebase`].
    pub rebase: Option<String>,
    /// The caller made the snapshot's content durable (`syncfs` of its
    /// filesystem after the last write to it), so the driver skips its own
    /// sync before recording the commit. Lets an image unpack sync once for
    /// all its layers instead of once per layer.
    pub synced: bool,
}

impl CommitOptions {
    /// Sets the labels.
    pub fn with_labels(mut self, labels: Labels) -> Self {
        self.labels = labels;
        self
    }

    /// Commits onto `parent`.
    pub fn with_rebase(mut self, parent: impl Into<String>) -> Self {
        self.rebase = Some(parent.into());
        self
    }

    /// Declares the content durable already (see [`CommitOptions::synced`]).
    pub fn with_synced(mut self, synced: bool) -> Self {
        self.synced = synced;
        self
    }
}

/// A failed snapshot operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// No snapshot has this key or name.
    #[error("snapshot {key:?} not found")]
    NotFound {
        /// The key or name.
        key: String,
    },
    /// A snapshot with this key or name exists already.
    #[error("snapshot {key:?} already exists")]
    AlreadyExists {
        /// The key or name.
        key: String,
    },
    /// A key or name that cannot be used.
    #[error("invalid snapshot key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The snapshot is not of a kind the operation accepts.
    #[error("snapshot {key:?} is {}, {op} needs {wanted}", .kind.as_str())]
    WrongKind {
        /// The key or name.
        key: String,
        /// Its kind.
        kind: Kind,
        /// The operation.
        op: &'static str,
        /// What the operation needs.
        wanted: &'static str,
    },
    /// A snapshot that others are built on cannot be removed.
    #[error("snapshot {key:?} has {children} children")]
    HasChildren {
        /// The key or name.
        key: String,
        /// How many.
        children: usize,
    },
    /// The driver cannot do this.
    #[error("{driver} snapshotter: {what} is not supported")]
    Unsupported {
        /// The driver.
        driver: &'static str,
        /// What.
        what: &'static str,
    },
    /// The root holds another driver's snapshots, or metadata of an unknown version.
    #[error("{path}: {reason}")]
    BadRoot {
        /// The root or metadata file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// overlayfs cannot be used at this root: a probe mount with an upper
    /// directory there failed (no mount privilege, a filesystem overlayfs
    /// refuses as upper layer, no overlayfs in the kernel). The caller may
    /// choose the copy driver instead.
    #[error("overlayfs is unavailable at {} (the copy driver works without it)", path.display())]
    OverlayUnavailable {
        /// The snapshotter root.
        path: PathBuf,
        /// The probe mount's failure (boxed: a mount error is large).
        #[source]
        source: Box<crate::mount::MountError>,
    },
    /// The metadata file is not valid JSON of the expected shape.
    #[error("{path}: corrupt snapshot metadata")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl Classify for SnapshotError {
    fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::NotFound { .. } => ErrorKind::NotFound,
            SnapshotError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            SnapshotError::InvalidKey { .. } | SnapshotError::Metadata { .. } => {
                ErrorKind::InvalidInput
            }
            SnapshotError::BadRoot { .. } => ErrorKind::InvalidInput,
            SnapshotError::WrongKind { .. } | SnapshotError::HasChildren { .. } => {
                ErrorKind::FailedPrecondition
            }
            SnapshotError::Unsupported { .. } => ErrorKind::Unsupported,
            SnapshotError::OverlayUnavailable { source, .. } => match source.kind() {
                ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                _ => ErrorKind::Unsupported,
            },
            SnapshotError::Io { source, .. } => Classify::kind(source),
        }
    }
}

/// A storage driver: snapshots with a key/name/parent lifecycle (see the
/// module docs), made visible by mounts returned as data.
///
/// Implementations are safe to share between threads; operations on
/// different keys may run concurrently.
pub trait Snapshotter: Send + Sync {
    /// The driver's name (`overlay`, `copy`).
    fn driver(&self) -> &'static str;

    /// What the driver can do.
    fn capabilities(&self) -> Capabilities;

    /// The snapshot `key` (an active or view key, or a committed name).
    ///
    /// # Errors
    /// [`SnapshotError::NotFound`], or I/O on the metadata.
    fn stat(&self, key: &str) -> Result<Info, SnapshotError>;

    /// The disk usage of the snapshot's own directory.
    ///
    /// # Errors
    /// [`SnapshotError::NotFound`], or I/O.
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError>;

    /// The mounts of an active snapshot or a view.
    ///
    /// # Errors
    /// [`SnapshotError::NotFound`]; [`SnapshotError::WrongKind`] for a committed one.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError>;

    /// Makes a writable snapshot `key` on top of the committed `parent`
    /// (empty when `None`), with `labels`, and returns its mounts.
    ///
    /// # Errors
    /// [`SnapshotError::AlreadyExists`] for a used key; [`SnapshotError::NotFound`]
    /// or [`SnapshotError::WrongKind`] for a bad parent; I/O.
    fn prepare_with(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>, SnapshotError>;

    /// Makes a read-only snapshot `key` of the committed `parent`.
    ///
    /// # Errors
    /// As [`Snapshotter::prepare_with`].
    fn view_with(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>, SnapshotError>;

    /// Commits the active snapshot `key` as the committed snapshot `name`;
    /// `key` is gone afterwards. Unmount it first.
    ///
    /// # Errors
    /// [`SnapshotError::AlreadyExists`] for a used name; [`SnapshotError::NotFound`]
    /// or [`SnapshotError::WrongKind`] for a bad key; [`SnapshotError::Unsupported`]
    /// for a rebase the driver cannot do; I/O.
    fn commit_with(
        &self,
        name: &str,
        key: &str,
        options: CommitOptions,
    ) -> Result<(), SnapshotError>;

    /// Removes the snapshot `key` (of any kind) and its directory.
    ///
    /// # Errors
    /// [`SnapshotError::NotFound`]; [`SnapshotError::HasChildren`].
    fn remove(&self, key: &str) -> Result<(), SnapshotError>;

    /// Calls `visit` with every snapshot, ordered by name.
    ///
    /// # Errors
    /// I/O on the metadata.
    fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotError>;

    /// [`Snapshotter::prepare_with`] without labels.
    ///
    /// # Errors
    /// As [`Snapshotter::prepare_with`].
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, SnapshotError> {
        self.prepare_with(key, parent, Labels::new())
    }

    /// [`Snapshotter::view_with`] without labels.
    ///
    /// # Errors
    /// As [`Snapshotter::view_with`].
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, SnapshotError> {
        self.view_with(key, parent, Labels::new())
    }

    /// [`Snapshotter::commit_with`] with default options.
    ///
    /// # Errors
    /// As [`Snapshotter::commit_with`].
    fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError> {
        self.commit_with(name, key, CommitOptions::default())
    }

    /// The snapshot `key`, or `None` when there is none.
    ///
    /// # Errors
    /// I/O on the metadata.
    fn try_stat(&self, key: &str) -> Result<Option<Info>, SnapshotError> {
        match self.stat(key) {
            Ok(i) => Ok(Some(i)),
            Err(SnapshotError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every snapshot, ordered by name.
    ///
    /// # Errors
    /// I/O on the metadata.
    fn list(&self) -> Result<Vec<Info>, SnapshotError> {
        let mut out = Vec::new();
        self.walk(&mut |i| out.push(i.clone()))?;
        Ok(out)
    }
}

macro_rules! forward {
    ($($ty:ty),*) => {$(
        impl<T: Snapshotter + ?Sized> Snapshotter for $ty {
            fn driver(&self) -> &'static str { (**self).driver() }
            fn capabilities(&self) -> Capabilities { (**self).capabilities() }
            fn stat(&self, key: &str) -> Result<Info, SnapshotError> { (**self).stat(key) }
            fn usage(&self, key: &str) -> Result<Usage, SnapshotError> { (**self).usage(key) }
            fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> { (**self).mounts(key) }
            fn prepare_with(&self, key: &str, parent: Option<&str>, labels: Labels)
                -> Result<Vec<Mount>, SnapshotError> { (**self).prepare_with(key, parent, labels) }
            fn view_with(&self, key: &str, parent: Option<&str>, labels: Labels)
                -> Result<Vec<Mount>, SnapshotError> { (**self).view_with(key, parent, labels) }
            fn commit_with(&self, name: &str, key: &str, options: CommitOptions)
                -> Result<(), SnapshotError> { (**self).commit_with(name, key, options) }
            fn remove(&self, key: &str) -> Result<(), SnapshotError> { (**self).remove(key) }
            fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotError> {
                (**self).walk(visit)
            }
        }
    )*};
}

forward!(&T, Box<T>, std::sync::Arc<T>);
