//! The lifecycle shared by both drivers: metadata, directories, rules.
//! The drivers differ only in how a snapshot directory is filled and
//! which mounts show it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::mount::Mount;
use crate::whiteout::{OverlayXattrs, WhiteoutMode};

use super::meta::{now_nanos, Meta, MetaStore, Record};
use super::{fsutil, Capabilities, CommitOptions, Info, Kind, Labels, SnapshotError, Usage};

/// How a driver lays out and mounts its snapshots.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    /// overlayfs.
    Overlay {
        /// Add `userxattr` (rootless overlay).
        userxattr: bool,
        /// syncfs before commit.
        sync: bool,
    },
    /// Full copies.
    Copy {
        /// syncfs before commit.
        sync: bool,
    },
}

impl Layout {
    /// The name of the driver of this layout.
    fn driver(&self) -> &'static str {
        match self {
            Layout::Overlay { .. } => "overlay",
            Layout::Copy { .. } => "copy",
        }
    }
}

/// A snapshotter root: `metadata.json`, `lock`, `snapshots/<id>/`.
#[derive(Debug)]
pub(crate) struct Core {
    root: PathBuf,
    meta: MetaStore,
    layout: Layout,
}

const MAX_KEY: usize = 4096;

fn check_key(key: &str) -> Result<(), SnapshotError> {
    let bad = |reason| {
        Err(SnapshotError::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_KEY {
        return bad("longer than 4096 bytes");
    }
    if key.contains('\0') {
        return bad("contains a NUL byte");
    }
    Ok(())
}

impl Core {
    pub(crate) fn open(root: &Path, layout: Layout) -> Result<Core, SnapshotError> {
        let root = std::path::absolute(root).map_err(|e| SnapshotError::io("resolve", root, e))?;
        if let Layout::Overlay { .. } = layout {
            let s = root.to_string_lossy();
            if s.contains([':', ',']) || s.len() > 200 {
                return Err(SnapshotError::BadRoot {
                    path: root.clone(),
                    reason: "an overlay root path must not contain ':' or ',' and stay under 200 bytes (overlayfs options)".to_owned(),
                });
            }
        }
        let snaps = root.join("snapshots");
        std::fs::create_dir_all(&snaps).map_err(|e| SnapshotError::io("create", &snaps, e))?;
        let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700));
        let core = Core {
            meta: MetaStore::open(&root, layout.driver())?,
            root,
            layout,
        };
        core.cleanup()?;
        Ok(core)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Removes directories under `snapshots/` that the metadata does not name.
    fn cleanup(&self) -> Result<(), SnapshotError> {
        let snaps = self.root.join("snapshots");
        self.meta.update(|meta| {
            let ids: std::collections::HashSet<u64> =
                meta.snapshots.values().map(|r| r.id).collect();
            let entries =
                std::fs::read_dir(&snaps).map_err(|e| SnapshotError::io("list", &snaps, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| SnapshotError::io("list", &snaps, e))?;
                let name = entry.file_name();
                let keep = name
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|id| ids.contains(&id));
                if !keep {
                    let p = entry.path();
                    fsutil::remove_all(&p).map_err(|e| SnapshotError::io("remove", &p, e))?;
                }
            }
            Ok(((), false))
        })
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    pub(crate) fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        self.meta.read(|m| Ok(m.get(key)?.info(key)))
    }

    pub(crate) fn walk(&self, visit: &mut dyn FnMut(&Info)) -> Result<(), SnapshotError> {
        let infos = self.meta.read(|m| {
            Ok(m.snapshots
                .iter()
                .map(|(k, r)| r.info(k))
                .collect::<Vec<_>>())
        })?;
        for i in &infos {
            visit(i);
        }
        Ok(())
    }

    pub(crate) fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let id = self.meta.read(|m| Ok(m.get(key)?.id))?;
        let fs = self.fs(id);
        let (size, inodes) =
            fsutil::disk_usage(&fs).map_err(|e| SnapshotError::io("usage of", &fs, e))?;
        Ok(Usage { size, inodes })
    }

    pub(crate) fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        self.meta.read(|m| {
            let r = m.get(key)?;
            if r.kind == Kind::Committed {
                return Err(SnapshotError::WrongKind {
                    key: key.to_owned(),
                    kind: r.kind,
                    op: "mounts",
                    wanted: "an active snapshot or a view",
                });
            }
            let chain = m.chain(r.parent.as_deref())?;
            Ok(self.mounts_of(r, &chain))
        })
    }

    fn mounts_of(&self, r: &Record, parents: &[u64]) -> Vec<Mount> {
        let own = self.fs(r.id).to_string_lossy().into_owned();
        let parent_fs = |id: u64| self.fs(id).to_string_lossy().into_owned();
        match (&self.layout, r.kind) {
            (Layout::Overlay { userxattr, .. }, kind) => {
                let ro = kind == Kind::View;
                match (parents, ro) {
                    ([], _) => vec![Mount::bind(own, ro)],
                    ([only], true) => vec![Mount::bind(parent_fs(*only), true)],
                    _ => {
                        // In a user namespace (`userxattr`) the kernel takes
                        // only `redirect_dir=nofollow` (`off` still follows
                        // redirects, which needs trusted xattrs).
                        let redirect = if *userxattr { "nofollow" } else { "off" };
                        let mut options = vec![
                            "index=off".to_owned(),
                            format!("redirect_dir={redirect}"),
                            "metacopy=off".to_owned(),
                        ];
                        if *userxattr {
                            options.push("userxattr".to_owned());
                        }
                        let lower: Vec<String> = parents.iter().map(|p| parent_fs(*p)).collect();
                        options.push(format!("lowerdir={}", lower.join(":")));
                        if !ro {
                            options.push(format!("upperdir={own}"));
                            options.push(format!(
                                "workdir={}",
                                self.dir(r.id).join("work").to_string_lossy()
                            ));
                        }
                        vec![Mount {
                            fs_type: "overlay".to_owned(),
                            source: "overlay".to_owned(),
                            target: None,
                            options,
                        }]
                    }
                }
            }
            (Layout::Copy { .. }, Kind::View) => match parents.first() {
                Some(p) => vec![Mount::bind(parent_fs(*p), true)],
                None => vec![Mount::bind(own, true)],
            },
            (Layout::Copy { .. }, _) => vec![Mount::bind(own, false)],
        }
    }

    pub(crate) fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
    ) -> Result<Vec<Mount>, SnapshotError> {
        check_key(key)?;
        self.meta.update(|m| {
            if m.snapshots.contains_key(key) {
                return Err(SnapshotError::AlreadyExists {
                    key: key.to_owned(),
                });
            }
            if let Some(p) = parent {
                let pr = m.get(p)?;
                if pr.kind != Kind::Committed {
                    return Err(SnapshotError::WrongKind {
                        key: p.to_owned(),
                        kind: pr.kind,
                        op: "a parent",
                        wanted: "a committed snapshot",
                    });
                }
            }
            let chain = m.chain(parent)?;
            let id = m.next_id;
            m.next_id += 1;
            self.make_dir(id, kind, &chain)?;
            let now = now_nanos();
            let record = Record {
                id,
                kind,
                parent: parent.map(str::to_owned),
                created: now,
                updated: now,
                labels,
            };
            let mounts = self.mounts_of(&record, &chain);
            m.snapshots.insert(key.to_owned(), record);
            Ok((mounts, true))
        })
    }

    /// Builds `snapshots/.tmp-<id>` and renames it to `snapshots/<id>`.
    fn make_dir(&self, id: u64, kind: Kind, chain: &[u64]) -> Result<(), SnapshotError> {
        let snaps = self.root.join("snapshots");
        let tmp = snaps.join(format!(".tmp-{id}"));
        let result = (|| -> Result<(), SnapshotError> {
            fsutil::remove_all(&tmp).map_err(|e| SnapshotError::io("remove", &tmp, e))?;
            std::fs::create_dir(&tmp).map_err(|e| SnapshotError::io("create", &tmp, e))?;
            let fs = tmp.join("fs");
            std::fs::create_dir(&fs).map_err(|e| SnapshotError::io("create", &fs, e))?;
            std::fs::set_permissions(&fs, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| SnapshotError::io("chmod", &fs, e))?;
            match (&self.layout, kind, chain.first()) {
                (Layout::Overlay { .. }, Kind::Active, Some(_)) => {
                    let work = tmp.join("work");
                    std::fs::create_dir(&work)
                        .map_err(|e| SnapshotError::io("create", &work, e))?;
                }
                (Layout::Copy { .. }, Kind::Active, Some(parent)) => {
                    let from = self.fs(*parent);
                    fsutil::copy_tree(&from, &fs)
                        .map_err(|e| SnapshotError::io("copy", &from, e))?;
                }
                _ => {}
            }
            let dir = self.dir(id);
            std::fs::rename(&tmp, &dir).map_err(|e| SnapshotError::io("rename", &dir, e))?;
            fsutil::fsync_dir(&snaps).map_err(|e| SnapshotError::io("fsync", &snaps, e))
        })();
        if result.is_err() {
            let _ = fsutil::remove_all(&tmp);
        }
        result
    }

    /// The driver's name.
    pub(crate) fn driver(&self) -> &'static str {
        self.layout.driver()
    }

    /// What the driver of this layout can do.
    pub(crate) fn capabilities(&self) -> Capabilities {
        match self.layout {
            Layout::Overlay { userxattr, sync } => Capabilities {
                rebase: true,
                layer_whiteouts: WhiteoutMode::Overlay(if userxattr {
                    OverlayXattrs::User
                } else {
                    OverlayXattrs::Trusted
                }),
                sync_on_commit: sync,
            },
            Layout::Copy { sync } => Capabilities {
                rebase: false,
                layer_whiteouts: WhiteoutMode::Apply,
                sync_on_commit: sync,
            },
        }
    }

    /// Whether commits sync the filesystem first.
    pub(crate) fn syncs(&self) -> bool {
        match self.layout {
            Layout::Overlay { sync, .. } | Layout::Copy { sync } => sync,
        }
    }

    pub(crate) fn commit(
        &self,
        name: &str,
        key: &str,
        options: CommitOptions,
    ) -> Result<(), SnapshotError> {
        check_key(name)?;
        let rebase_ok = matches!(self.layout, Layout::Overlay { .. });
        let sync = self.syncs();
        // Sync the content before the metadata names it committed (outside
        // the lock: syncfs can take a while).
        if sync && !options.synced {
            let id = self.meta.read(|m| Ok(m.get(key)?.id))?;
            let fs = self.fs(id);
            let f = std::fs::File::open(&fs).map_err(|e| SnapshotError::io("open", &fs, e))?;
            rustix::fs::syncfs(&f).map_err(|e| SnapshotError::io("syncfs", &fs, e.into()))?;
        }
        self.meta.update(|m| {
            let r = m.get(key)?;
            if r.kind != Kind::Active {
                return Err(SnapshotError::WrongKind {
                    key: key.to_owned(),
                    kind: r.kind,
                    op: "commit",
                    wanted: "an active snapshot",
                });
            }
            if m.snapshots.contains_key(name) {
                return Err(SnapshotError::AlreadyExists {
                    key: name.to_owned(),
                });
            }
            let mut record = r.clone();
            if let Some(new_parent) = &options.rebase {
                if !rebase_ok {
                    return Err(SnapshotError::Unsupported {
                        driver: "copy",
                        what: "rebase",
                    });
                }
                if record.parent.is_some() {
                    return Err(SnapshotError::WrongKind {
                        key: key.to_owned(),
                        kind: record.kind,
                        op: "a rebase",
                        wanted: "an active snapshot prepared without a parent",
                    });
                }
                let pr = m.get(new_parent)?;
                if pr.kind != Kind::Committed {
                    return Err(SnapshotError::WrongKind {
                        key: new_parent.clone(),
                        kind: pr.kind,
                        op: "a parent",
                        wanted: "a committed snapshot",
                    });
                }
                record.parent = Some(new_parent.clone());
            }
            record.kind = Kind::Committed;
            record.updated = now_nanos();
            record.labels = options.labels;
            m.snapshots.remove(key);
            m.snapshots.insert(name.to_owned(), record);
            Ok(((), true))
        })?;
        Ok(())
    }

    pub(crate) fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let id = self.meta.update(|m: &mut Meta| {
            let r = m.get(key)?;
            let children = m.children(key);
            if children > 0 {
                return Err(SnapshotError::HasChildren {
                    key: key.to_owned(),
                    children,
                });
            }
            let id = r.id;
            m.snapshots.remove(key);
            Ok((id, true))
        })?;
        // The metadata no longer names the directory: move it out of the
        // way and delete it; whatever a crash leaves is removed on open.
        let dir = self.dir(id);
        let trash = self.root.join("snapshots").join(format!(".rm-{id}"));
        if std::fs::rename(&dir, &trash).is_ok() {
            let _ = fsutil::remove_all(&trash);
        }
        Ok(())
    }
}

/// `impl Snapshotter` for drivers that are a [`Core`] in a field named
/// `core`: every method goes to the core, which knows its layout.
macro_rules! core_snapshotter {
    ($($driver:ty),*) => {$(
        impl super::Snapshotter for $driver {
            fn driver(&self) -> &'static str {
                self.core.driver()
            }
            fn capabilities(&self) -> super::Capabilities {
                self.core.capabilities()
            }
            fn stat(&self, key: &str) -> Result<super::Info, super::SnapshotError> {
                self.core.stat(key)
            }
            fn usage(&self, key: &str) -> Result<super::Usage, super::SnapshotError> {
                self.core.usage(key)
            }
            fn mounts(&self, key: &str) -> Result<Vec<crate::mount::Mount>, super::SnapshotError> {
                self.core.mounts(key)
            }
            fn prepare_with(
                &self,
                key: &str,
                parent: Option<&str>,
                labels: super::Labels,
            ) -> Result<Vec<crate::mount::Mount>, super::SnapshotError> {
                self.core.create(super::Kind::Active, key, parent, labels)
            }
            fn view_with(
                &self,
                key: &str,
                parent: Option<&str>,
                labels: super::Labels,
            ) -> Result<Vec<crate::mount::Mount>, super::SnapshotError> {
                self.core.create(super::Kind::View, key, parent, labels)
            }
            fn commit_with(
                &self,
                name: &str,
                key: &str,
                options: super::CommitOptions,
            ) -> Result<(), super::SnapshotError> {
                self.core.commit(name, key, options)
            }
            fn remove(&self, key: &str) -> Result<(), super::SnapshotError> {
                self.core.remove(key)
            }
            fn walk(&self, visit: &mut dyn FnMut(&super::Info)) -> Result<(), super::SnapshotError> {
                self.core.walk(visit)
            }
        }
    )*};
}
pub(crate) use core_snapshotter;
