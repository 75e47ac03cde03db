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

use image_overlay::mount::{Mount, Mounter, SysMounter};
use image_overlay::snapshot::{
    CommitOptions, CopySnapshotter, Kind, Labels, OverlaySnapshotter, SnapshotError, Snapshotter,
};
use serde::{Deserialize, Serialize};

use crate::error::ContainerError;
use crate::rootfs::RootfsError;
use crate::Runtime;

/// Label on a container's snapshot: the container ID.
pub const LABEL_CONTAINER: &str = "image-runtime/container";
/// Label on a container's snapshot: the runtime's state directory.
pub const LABEL_STATE: &str = "image-runtime/state";

/// The snapshot drivers a container's record can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Driver {
    /// overlayfs ([`OverlaySnapshotter`]): a container's changes land in
    /// its own upper directory.
    Overlay,
    /// Full copies ([`CopySnapshotter`]): portable, no overlayfs needed.
    Copy,
}

impl Driver {
    /// `overlay` or `copy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Overlay => "overlay",
            Driver::Copy => "copy",
        }
    }
}

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
            Driver::Overlay => Arc::new(OverlaySnapshotter::open(&root)?),
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
        if let Some(driver) = existing_driver(root) {
            return Snapshots::open(root, driver);
        }
        probe_overlay(root)?;
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

    fn is(&self, driver: Driver, root: &Path) -> bool {
        self.driver == driver && self.root == root
    }
}

/// The driver named by `<root>/metadata.json`, if the root exists.
fn existing_driver(root: &Path) -> Option<Driver> {
    let bytes = std::fs::read(root.join("metadata.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match v.get("driver")?.as_str()? {
        "overlay" => Some(Driver::Overlay),
        "copy" => Some(Driver::Copy),
        _ => None,
    }
}

/// Checks that an overlay mount with an upper directory under `root` works.
fn probe_overlay(root: &Path) -> Result<(), SnapshotError> {
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
    let s = |p: &PathBuf| p.to_string_lossy().into_owned();
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
    let mounted = SysMounter.mount(&[mount], &dirs[3]);
    if mounted.is_ok() {
        let _ = SysMounter.unmount(&dirs[3], true);
    }
    let _ = std::fs::remove_dir_all(&probe);
    mounted.map_err(|source| SnapshotError::OverlayUnavailable {
        path: root.to_owned(),
        source: Box::new(source),
    })
}

/// Where a container's writable snapshot is: enough to find and remove it
/// from any process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The driver.
    pub driver: Driver,
    /// The snapshotter root.
    pub root: PathBuf,
    /// The active snapshot's key (the container ID).
    pub key: String,
    /// The committed parent: the container's init snapshot when it has
    /// one, else the chain ID of the image's top layer (none for an image
    /// without layers).
    pub parent: Option<String>,
    /// The name of the container's init snapshot (committed, on the
    /// image's top layer): the mount points the runtime needs (`/proc`,
    /// `/sys`, `/dev`, `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`)
    /// made when the image lacks them, so that they are not part of the
    /// container's changes (Docker's init layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
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
    /// The snapshotter holding it: `runtime`'s own when it is the same,
    /// else the root reopened.
    ///
    /// # Errors
    /// [`ContainerError::Snapshot`].
    pub fn open(&self, runtime: &Runtime) -> Result<Snapshots, ContainerError> {
        match runtime.snapshots() {
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

/// The labels of container `id`'s snapshot under `runtime`.
pub(crate) fn labels(runtime: &Runtime, id: &str) -> Labels {
    let mut l = Labels::new();
    l.insert(LABEL_CONTAINER.to_owned(), id.to_owned());
    l.insert(
        LABEL_STATE.to_owned(),
        runtime.root().to_string_lossy().into_owned(),
    );
    l
}

/// Removes the snapshots of `sref`: the container's, then its init
/// snapshot (unmounted first by the caller); snapshots that are gone
/// already are success. A snapshot under these keys that is not labelled
/// as this container's (another runtime's container with the same ID) is
/// left alone.
pub(crate) fn remove(runtime: &Runtime, sref: &SnapshotRef) -> Result<(), ContainerError> {
    let snapshots = sref.open(runtime)?;
    let sn = snapshots.snapshotter();
    let mut keys = vec![sref.key.clone()];
    if let Some(init) = &sref.init {
        keys.push(init_key(&sref.key));
        keys.push(init.clone());
    }
    let ours = labels(runtime, &sref.key);
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

/// Removes snapshots of this runtime's containers (active ones, then init
/// snapshots) whose container directory is gone; returns their container IDs.
pub(crate) fn remove_orphans(runtime: &Runtime) -> Vec<String> {
    let Some(snapshots) = runtime.snapshots() else {
        return Vec::new();
    };
    let Ok(mut all) = snapshots.snapshotter().list() else {
        return Vec::new();
    };
    // Children first: an init snapshot is the parent of the container's.
    all.sort_by_key(|i| i.kind == Kind::Committed);
    let state = runtime.root().to_string_lossy();
    let mut removed = Vec::new();
    for info in all {
        if info.labels.get(LABEL_STATE).map(String::as_str) != Some(&*state) {
            continue;
        }
        let Some(id) = info.labels.get(LABEL_CONTAINER) else {
            continue;
        };
        if crate::state::validate_id(id).is_err() || runtime.state().dir(id).exists() {
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
    runtime: &Runtime,
    snapshots: &Snapshots,
    id: &str,
    parent: Option<&str>,
    target: &Path,
) -> Result<String, ContainerError> {
    let sn = snapshots.snapshotter();
    let key = init_key(id);
    let mounts = sn
        .prepare_with(&key, parent, labels(runtime, id))
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
        CommitOptions::default().with_labels(labels(runtime, id)),
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
