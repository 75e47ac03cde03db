//! The overlayfs driver.
//!
//! Each snapshot is a directory `snapshots/<id>/` holding `fs/` (its own
//! changes: for a committed snapshot, one layer in overlayfs form) and, for
//! an active snapshot with a parent, `work/` (overlayfs' work directory).
//! Mounts:
//! - an active snapshot without parent, or a view with zero or one parent:
//!   a bind mount (`rw` or `ro`) of a single directory;
//! - otherwise one `overlay` mount: `lowerdir=` the parents' `fs`
//!   directories, nearest first, `upperdir=`/`workdir=` for an active one,
//!   and always `index=off,redirect_dir=off,metacopy=off`, so that an upper
//!   directory is a faithful diff (no redirects, no metadata-only copy-ups);
//!   with `userxattr` (in a user namespace) `redirect_dir=nofollow`, the
//!   only redirect mode the kernel takes there.
//!
//! A lowerdir list longer than a page is fine: [`crate::mount::SysMounter`]
//! passes it one directory at a time (`fsconfig` `lowerdir+`, kernel 6.8+).

use std::path::Path;

use super::core::{core_snapshotter, Core, Layout};
use super::SnapshotError;
use crate::mount::{Mount, Mounter};

/// Knobs of the overlay driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverlayOptions {
    /// Mount with `userxattr` (rootless overlayfs in a user namespace);
    /// layers then carry `user.overlay.*` markers.
    pub userxattr: bool,
    /// `syncfs` before a commit so that committed content is durable.
    pub sync_on_commit: bool,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        OverlayOptions {
            userxattr: false,
            sync_on_commit: true,
        }
    }
}

impl OverlayOptions {
    /// Sets `userxattr`.
    pub fn with_userxattr(mut self, on: bool) -> Self {
        self.userxattr = on;
        self
    }

    /// Sets whether commits sync the filesystem.
    pub fn with_sync_on_commit(mut self, on: bool) -> Self {
        self.sync_on_commit = on;
        self
    }
}

/// The overlayfs snapshotter (see the module docs).
#[derive(Debug)]
pub struct OverlaySnapshotter {
    core: Core,
}

impl OverlaySnapshotter {
    /// Whether an overlay mount with its upper directory under `root` works
    /// here through `mounter`: [`OverlaySnapshotter::probe_at`] succeeds.
    pub fn works_at(root: impl AsRef<Path>, mounter: &dyn Mounter) -> bool {
        Self::probe_at(root, mounter).is_ok()
    }

    /// Checks that an overlay mount with its upper directory under `root`
    /// works here through `mounter` (mount privilege, a filesystem overlayfs
    /// accepts as an upper layer): a probe directory under `root` is made,
    /// checked with [`Mounter::probe`] (no mount is left) and removed.
    /// Creates `root` if missing.
    ///
    /// # Errors
    /// [`SnapshotError::Io`] when the probe directories cannot be made;
    /// [`SnapshotError::OverlayUnavailable`] with the probe mount's failure.
    pub fn probe_at(root: impl AsRef<Path>, mounter: &dyn Mounter) -> Result<(), SnapshotError> {
        let root = root.as_ref();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let probe = root.join(format!(".probe-{}-{nanos}", std::process::id()));
        let dirs = ["lower", "upper", "work", "merged"].map(|d| probe.join(d));
        for d in &dirs {
            if let Err(source) = std::fs::create_dir_all(d) {
                let _ = std::fs::remove_dir_all(&probe);
                return Err(SnapshotError::Io {
                    op: "create the overlay probe",
                    path: d.clone(),
                    source,
                });
            }
        }
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let mount = Mount {
            fs_type: "overlay".to_owned(),
            source: "overlay".to_owned(),
            target: None,
            options: vec![
                format!("lowerdir={}", s(&dirs[0])),
                format!("upperdir={}", s(&dirs[1])),
                format!("workdir={}", s(&dirs[2])),
            ],
        };
        let mounted = mounter.probe(&[mount], &dirs[3]);
        let _ = std::fs::remove_dir_all(&probe);
        mounted.map_err(|source| SnapshotError::OverlayUnavailable {
            path: root.to_owned(),
            source: Box::new(source),
        })
    }

    /// Opens (creating it if needed) the root `root` with default options.
    ///
    /// # Errors
    /// I/O; [`SnapshotError::BadRoot`] for a root of another driver or a path
    /// overlayfs options cannot carry (`:` or `,`).
    pub fn open(root: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        Self::open_with(root, OverlayOptions::default())
    }

    /// Opens the root `root` with `options`.
    ///
    /// # Errors
    /// As [`OverlaySnapshotter::open`].
    pub fn open_with(
        root: impl AsRef<Path>,
        options: OverlayOptions,
    ) -> Result<Self, SnapshotError> {
        let core = Core::open(
            root.as_ref(),
            Layout::Overlay {
                userxattr: options.userxattr,
                sync: options.sync_on_commit,
            },
        )?;
        Ok(OverlaySnapshotter { core })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.core.root()
    }
}

core_snapshotter!(OverlaySnapshotter);
