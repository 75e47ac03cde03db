//! Writable snapshots for containers made from images: image-overlay's
//! [`Snapshotter`] drivers, opened at a root the runtime can find again.
//!
//! A container made from an image gets an active snapshot keyed by its ID,
//! prepared on the committed snapshot of the image's top layer (named by
//! its chain ID). The container's record names the driver, the root and the
//! key ([`SnapshotRef`]), so any process (another `imagectl`, the next
//! [`Runtime::gc`](crate::Runtime::gc)) can remove it again without being
//! told where the snapshots live. The snapshot carries labels naming the
//! container and the state directory, so a snapshot whose container is gone
//! is found and removed too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ContainerError;
pub use crate::model::{Driver, SnapshotRef};
use crate::rootfs::RootfsError;
use crate::state::StateDir;
use image_overlay::mount::SysMounter;
use image_overlay::snapshot::{
    CommitOptions, CopySnapshotter, Kind, Labels, OverlayOptions, OverlaySnapshotter,
    SnapshotError, Snapshotter,
};

/// Label on a container's snapshot: the container ID.
pub const LABEL_CONTAINER: &str = "image-runtime/container";
/// Label on a container's snapshot: the runtime's state directory.
pub const LABEL_STATE: &str = "image-runtime/state";

/// A snapshotter of a known [`Driver`] at a known root. Cheap to clone.
#[derive(Clone)]
pub struct Snapshots {
    driver: Driver,
    root: PathBuf,
    snapshotter: Arc<dyn Snapshotter>,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("driver", &self.driver)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Snapshots {
    /// Opens (creating) the snapshotter root `root` with `driver`.
    ///
    /// # Errors
    /// [`SnapshotError::BadRoot`] when the root holds another driver's
    /// snapshots (or, for overlay, has `:` or `,` in its path); I/O.
    pub fn open(root: &Path, driver: Driver) -> Result<Snapshots, SnapshotError> {
        let root = std::path::absolute(root).map_err(|source| SnapshotError::Io {
            op: "resolve",
            path: root.to_owned(),
            source,
        })?;
        let snapshotter: Arc<dyn Snapshotter> = match driver {
            // In a user namespace (rootless) overlayfs keeps its whiteouts
            // and opaque marks in `user.overlay.*` xattrs: the trusted ones
            // need the host's CAP_SYS_ADMIN. The choice is the root's, not
            // the process's: recorded at the first rootless opening.
            Driver::Overlay => {
                let recorded = userxattr_recorded(&root)?;
                let userxattr = recorded || crate::rootless::in_user_namespace();
                let s = OverlaySnapshotter::open_with(
                    &root,
                    OverlayOptions::default().with_userxattr(userxattr),
                )?;
                if userxattr && !recorded {
                    record_userxattr(&root)?;
                }
                Arc::new(s)
            }
            Driver::Copy => Arc::new(CopySnapshotter::open(&root)?),
        };
        Ok(Snapshots {
            driver,
            root,
            snapshotter,
        })
    }

    /// Opens `root` with the driver it already holds, or, for a new root,
    /// overlay after checking that an overlay mount with an upper directory
    /// there works (it needs mount privilege, `CAP_SYS_ADMIN`, and a
    /// filesystem overlayfs accepts as upper layer). It never falls back to
    /// the copy driver silently: a caller that wants copy where overlay is
    /// unavailable opens it with [`Snapshots::open`] on that error.
    ///
    /// # Errors
    /// [`SnapshotError::OverlayUnavailable`] (classified `PermissionDenied`
    /// without mount privilege, else `Unsupported`) naming the probe's
    /// failure; otherwise as [`Snapshots::open`].
    pub fn open_default(root: &Path) -> Result<Snapshots, SnapshotError> {
        match image_overlay::snapshot::driver_at(root)?.as_deref() {
            Some("overlay") => return Snapshots::open(root, Driver::Overlay),
            Some("copy") => return Snapshots::open(root, Driver::Copy),
            Some(other) => {
                return Err(SnapshotError::BadRoot {
                    path: root.to_owned(),
                    reason: format!("holds snapshots of the unknown driver {other}"),
                })
            }
            None => {}
        }
        OverlaySnapshotter::probe_at(root, &SysMounter)?;
        Snapshots::open(root, Driver::Overlay)
    }

    /// The driver.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The snapshotter.
    pub fn snapshotter(&self) -> &dyn Snapshotter {
        &*self.snapshotter
    }

    /// The snapshotter, shared (for work that outlives a borrow, such as a
    /// pull's layer sink).
    pub fn shared(&self) -> Arc<dyn Snapshotter> {
        self.snapshotter.clone()
    }

    fn is(&self, driver: Driver, root: &Path) -> bool {
        self.driver == driver && self.root == root
    }
}

/// The file in an overlay snapshot root recording that its snapshots keep
/// overlayfs' marks in `user.overlay.*` xattrs (made in a user namespace):
/// every later opening mounts them with `userxattr`, rootless or not.
pub const USERXATTR_FILE: &str = "userxattr";

/// Whether `root` records `userxattr` ([`USERXATTR_FILE`], a regular file
/// not followed if a link).
fn userxattr_recorded(root: &Path) -> Result<bool, SnapshotError> {
    let path = root.join(USERXATTR_FILE);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => Ok(true),
        Ok(_) => Err(SnapshotError::BadRoot {
            path,
            reason: "is not a regular file".to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(SnapshotError::Io {
            op: "stat",
            path,
            source,
        }),
    }
}

/// Records `userxattr` in `root` (created without following a link).
fn record_userxattr(root: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join(USERXATTR_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|source| SnapshotError::Io {
            op: "create",
            path,
            source,
        })
}

/// The name of container `id`'s init snapshot.
pub fn init_name(id: &str) -> String {
    format!("{id}-init")
}

/// The key of container `id`'s init snapshot while it is being made.
pub fn init_key(id: &str) -> String {
    format!("{id}-init-prepare")
}

/// Paths the runtime mounts on, made in a container's init snapshot when
/// the image lacks them: (path, is a directory).
pub const INIT_PATHS: &[(&str, bool)] = &[
    ("/proc", true),
    ("/sys", true),
    ("/dev", true),
    ("/etc", true),
    ("/etc/hosts", false),
    ("/etc/hostname", false),
    ("/etc/resolv.conf", false),
];

impl SnapshotRef {
    /// The snapshotter holding it: `current` (a runtime's own) when it is
    /// the same, else the root reopened.
    ///
    /// # Errors
    /// [`ContainerError::Snapshot`].
    pub fn open(&self, current: Option<&Snapshots>) -> Result<Snapshots, ContainerError> {
        match current {
            Some(s) if s.is(self.driver, &self.root) => Ok(s.clone()),
            _ => Snapshots::open(&self.root, self.driver).map_err(snapshot_err(&self.key)),
        }
    }
}

pub(crate) fn snapshot_err(key: &str) -> impl FnOnce(SnapshotError) -> ContainerError + '_ {
    move |source| ContainerError::Snapshot {
        key: key.to_owned(),
        source,
    }
}

/// The labels of container `id`'s snapshot under the runtime whose state
/// directory is `state_root`.
pub(crate) fn labels(state_root: &Path, id: &str) -> Labels {
    let mut l = Labels::new();
    l.insert(LABEL_CONTAINER.to_owned(), id.to_owned());
    l.insert(
        LABEL_STATE.to_owned(),
        state_root.to_string_lossy().into_owned(),
    );
    l
}

/// Removes the snapshots of `sref`: the container's, then its init
/// snapshot (unmounted first by the caller); snapshots that are gone
/// already are success. A snapshot under these keys that is not labelled
/// as this container's under `state_root` (another runtime's container
/// with the same ID) is left alone. `current` is the runtime's own
/// snapshotter, reused when `sref` is on it.
pub(crate) fn remove(
    current: Option<&Snapshots>,
    state_root: &Path,
    sref: &SnapshotRef,
) -> Result<(), ContainerError> {
    let snapshots = sref.open(current)?;
    let sn = snapshots.snapshotter();
    let mut keys = vec![sref.key.clone()];
    if let Some(init) = &sref.init {
        keys.push(init_key(&sref.key));
        keys.push(init.clone());
    }
    let ours = labels(state_root, &sref.key);
    for key in keys {
        let Some(info) = sn.try_stat(&key).map_err(snapshot_err(&key))? else {
            continue;
        };
        if ours.iter().any(|(k, v)| info.labels.get(k) != Some(v)) {
            continue;
        }
        match sn.remove(&key) {
            Ok(()) | Err(SnapshotError::NotFound { .. }) => {}
            Err(e) => return Err(snapshot_err(&key)(e)),
        }
    }
    Ok(())
}

/// Removes the snapshots in `snapshots` of the containers of the runtime
/// at `state_root` (active ones, then init snapshots) whose directory in
/// `state` is gone; returns their container IDs.
pub(crate) fn remove_orphans(
    snapshots: &Snapshots,
    state_root: &Path,
    state: &StateDir,
) -> Vec<String> {
    let Ok(mut all) = snapshots.snapshotter().list() else {
        return Vec::new();
    };
    // Children first: an init snapshot is the parent of the container's.
    all.sort_by_key(|i| i.kind == Kind::Committed);
    let state_label = state_root.to_string_lossy();
    let mut removed = Vec::new();
    for info in all {
        if info.labels.get(LABEL_STATE).map(String::as_str) != Some(&*state_label) {
            continue;
        }
        let Some(id) = info.labels.get(LABEL_CONTAINER) else {
            continue;
        };
        if !crate::model::is_valid_id(id) || state.dir(id).exists() {
            continue;
        }
        if snapshots.snapshotter().remove(&info.name).is_ok() && !removed.contains(id) {
            removed.push(id.clone());
        }
    }
    removed
}

/// Makes container `id`'s init snapshot on `parent` (see
/// [`SnapshotRef::init`]), using `target` (an empty directory) as a
/// temporary mount point; returns its name.
pub(crate) fn make_init(
    state_root: &Path,
    snapshots: &Snapshots,
    id: &str,
    parent: Option<&str>,
    target: &Path,
) -> Result<String, ContainerError> {
    let sn = snapshots.snapshotter();
    let key = init_key(id);
    let mounts = sn
        .prepare_with(&key, parent, labels(state_root, id))
        .map_err(snapshot_err(&key))?;
    crate::rootfs::mount_all(&SysMounter, &mounts, target)?;
    let made = make_mount_points(target);
    let unmounted = crate::rootfs::unmount_all(&SysMounter, target);
    made?;
    unmounted?;
    let name = init_name(id);
    sn.commit_with(
        &name,
        &key,
        CommitOptions::default().with_labels(labels(state_root, id)),
    )
    .map_err(snapshot_err(&key))?;
    Ok(name)
}

fn make_mount_points(root: &Path) -> Result<(), ContainerError> {
    let root = crate::rootfs::RootDir::open(root)?;
    for (path, dir) in INIT_PATHS {
        let path = Path::new(path);
        match root.stat(path) {
            Ok(_) => continue,
            Err(RootfsError::Access { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if *dir {
            root.create_dir_all(path, 0, 0)?;
        } else {
            root.create_file(path, 0o644)?;
        }
    }
    Ok(())
}
