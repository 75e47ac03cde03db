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

use crate::mount::Mount;
use crate::whiteout::WhiteoutMode;

use super::core::{Core, Layout};
use super::{Capabilities, CommitOptions, Info, Kind, Labels, SnapshotError, Snapshotter, Usage};

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

impl Snapshotter for CopySnapshotter {
    fn driver(&self) -> &'static str {
        "copy"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            rebase: false,
            layer_whiteouts: WhiteoutMode::Apply,
            sync_on_commit: self.core.syncs(),
        }
    }
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        self.core.stat(key)
    }
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        self.core.usage(key)
    }
    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        self.core.mounts(key)
    }
    fn prepare_with(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.core.create(Kind::Active, key, parent, labels)
    }
    fn view_with(
        &self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.core.create(Kind::View, key, parent, labels)
    }
    fn commit_with(
        &self,
        name: &str,
        key: &str,
        options: CommitOptions,
    ) -> Result<(), SnapshotError> {
        self.core.commit(name, key, options)
    }
    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        self.core.remove(key)
    }
    fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotError> {
        self.core.walk(visit)
    }
}
