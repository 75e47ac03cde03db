//! The copy driver: every active snapshot is a full copy of its parent.
//!
//! Each snapshot is a directory `snapshots/<id>/fs` holding a whole tree.
//! Preparing on a parent copies the parent's tree (owners, modes, xattrs,
//! hardlinks, device nodes, fifos, timestamps; reflinks where the filesystem
//! has them); the mount is a bind mount of that directory, and a caller
//! without mount privileges can use the directory (the mount's `source`)
//! directly. A view is a read-only bind mount of the parent's tree.
//! Portable, slow to prepare, no overlayfs needed.

use std::path::Path;

use super::core::{core_snapshotter, Core, Layout};
use super::SnapshotError;

/// The copy snapshotter (see the module docs).
#[derive(Debug)]
pub struct CopySnapshotter {
    core: Core,
}

impl CopySnapshotter {
    /// Opens (creating it if needed) the root `root`; commits sync the filesystem.
    ///
    /// # Errors
    /// I/O; [`SnapshotError::BadRoot`] for a root of another driver.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        Self::open_with(root, true)
    }

    /// Opens the root `root`; `sync_on_commit` runs `syncfs` before each commit.
    ///
    /// # Errors
    /// As [`CopySnapshotter::open`].
    pub fn open_with(root: impl AsRef<Path>, sync_on_commit: bool) -> Result<Self, SnapshotError> {
        let core = Core::open(
            root.as_ref(),
            Layout::Copy {
                sync: sync_on_commit,
            },
        )?;
        Ok(CopySnapshotter { core })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.core.root()
    }
}

core_snapshotter!(CopySnapshotter);
