//! The metadata file of a snapshotter root and its lock.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use image_store::fs::Root;

use super::{Info, Kind, Labels, SnapshotError};

/// The version of the metadata format.
pub(crate) const VERSION: u32 = 1;

/// One snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The directory `snapshots/<id>`.
    pub(crate) id: u64,
    pub(crate) kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parent: Option<String>,
    /// Unix nanoseconds.
    pub(crate) created: u64,
    /// Unix nanoseconds.
    pub(crate) updated: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) labels: Labels,
}

impl Record {
    pub(crate) fn info(&self, name: &str) -> Info {
        Info {
            kind: self.kind,
            name: name.to_owned(),
            parent: self.parent.clone(),
            created: UNIX_EPOCH + Duration::from_nanos(self.created),
            updated: UNIX_EPOCH + Duration::from_nanos(self.updated),
            labels: self.labels.clone(),
        }
    }
}

/// The whole metadata file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) version: u32,
    pub(crate) driver: String,
    pub(crate) next_id: u64,
    pub(crate) snapshots: BTreeMap<String, Record>,
}

impl Meta {
    pub(crate) fn get(&self, key: &str) -> Result<&Record, SnapshotError> {
        self.snapshots
            .get(key)
            .ok_or_else(|| SnapshotError::NotFound {
                key: key.to_owned(),
            })
    }

    /// The chain of committed parents of `parent`, nearest first, as ids.
    pub(crate) fn chain(&self, parent: Option<&str>) -> Result<Vec<u64>, SnapshotError> {
        let mut out = Vec::new();
        let mut next = parent.map(str::to_owned);
        while let Some(name) = next {
            let r = self.get(&name)?;
            out.push(r.id);
            if out.len() > self.snapshots.len() {
                return Err(SnapshotError::BadRoot {
                    path: PathBuf::from("metadata.json"),
                    reason: format!("parent cycle at {name:?}"),
                });
            }
            next = r.parent.clone();
        }
        Ok(out)
    }

    pub(crate) fn children(&self, key: &str) -> usize {
        self.snapshots
            .values()
            .filter(|r| r.parent.as_deref() == Some(key))
            .count()
    }
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The metadata file's name in the snapshotter's root.
const METADATA: &str = "metadata.json";

/// The driver named by the metadata file of `root`; `None` when there is
/// none yet (a new or empty root).
pub(crate) fn driver_at(root: &Path) -> Result<Option<String>, SnapshotError> {
    #[derive(Deserialize)]
    struct Head {
        driver: String,
    }
    let path = root.join(METADATA);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::io("read", &path, e)),
    };
    let head: Head = serde_json::from_slice(&bytes)
        .map_err(|source| SnapshotError::Metadata { path, source })?;
    Ok(Some(head.driver))
}

/// The metadata file guarded by a mutex (threads) and a `flock` (processes).
#[derive(Debug)]
pub(crate) struct MetaStore {
    path: PathBuf,
    /// The snapshotter's root, which the metadata is written into.
    root: Root,
    driver: &'static str,
    lock: Mutex<File>,
}

impl MetaStore {
    pub(crate) fn open(root: &Path, driver: &'static str) -> Result<MetaStore, SnapshotError> {
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SnapshotError::io("open", &lock_path, e))?;
        let dir = Root::open(root).map_err(|e| SnapshotError::io("open", root, e))?;
        Ok(MetaStore {
            path: root.join(METADATA),
            root: dir,
            driver,
            lock: Mutex::new(lock),
        })
    }

    /// Runs `f` on the current metadata under the exclusive lock; when `f`
    /// returns `true` with its value the metadata is written back atomically.
    pub(crate) fn update<T>(
        &self,
        f: impl FnOnce(&mut Meta) -> Result<(T, bool), SnapshotError>,
    ) -> Result<T, SnapshotError> {
        self.locked(FlockOperation::LockExclusive, |meta| {
            let (value, dirty) = f(meta)?;
            if dirty {
                self.save(meta)?;
            }
            Ok(value)
        })
    }

    /// Runs `f` on the current metadata under a shared lock.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Meta) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        self.locked(FlockOperation::LockShared, |meta| f(meta))
    }

    fn locked<T>(
        &self,
        op: FlockOperation,
        f: impl FnOnce(&mut Meta) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let file = match self.lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        rustix::fs::flock(&*file, op)
            .map_err(|e| SnapshotError::io("flock", &self.path, e.into()))?;
        let result = self.load().and_then(|mut meta| f(&mut meta));
        let _ = rustix::fs::flock(&*file, FlockOperation::Unlock);
        result
    }

    fn load(&self) -> Result<Meta, SnapshotError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Meta {
                    version: VERSION,
                    driver: self.driver.to_owned(),
                    next_id: 1,
                    snapshots: BTreeMap::new(),
                });
            }
            Err(e) => return Err(SnapshotError::io("read", &self.path, e)),
        };
        let meta: Meta =
            serde_json::from_slice(&bytes).map_err(|source| SnapshotError::Metadata {
                path: self.path.clone(),
                source,
            })?;
        if meta.version != VERSION {
            return Err(SnapshotError::BadRoot {
                path: self.path.clone(),
                reason: format!("metadata version {} (expected {VERSION})", meta.version),
            });
        }
        if meta.driver != self.driver {
            return Err(SnapshotError::BadRoot {
                path: self.path.clone(),
                reason: format!("holds {} snapshots, opened as {}", meta.driver, self.driver),
            });
        }
        Ok(meta)
    }

    fn save(&self, meta: &Meta) -> Result<(), SnapshotError> {
        let bytes = serde_json::to_vec_pretty(meta).map_err(|source| SnapshotError::Metadata {
            path: self.path.clone(),
            source,
        })?;
        self.root
            .write_atomic(&self.path, &bytes)
            .map_err(|e| SnapshotError::io("write", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metadata is written into the root with no symlink followed: a
    /// link planted at the temporary name is refused, not written through.
    #[test]
    fn save_never_writes_through_a_planted_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep").expect("sentinel");
        let root = dir.path().join("snapshots");
        std::fs::create_dir(&root).expect("root");
        let store = MetaStore::open(&root, "copy").expect("open");
        let tmp = root.join(format!(".{METADATA}.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&outside, &tmp).expect("plant");
        let r = store.update(|meta| {
            meta.next_id += 1;
            Ok(((), true))
        });
        assert!(r.is_err(), "the write through the link is refused");
        assert_eq!(std::fs::read(&outside).expect("read"), b"keep");
        // Once the link is gone, the same update succeeds.
        std::fs::remove_file(&tmp).expect("unplant");
        store
            .update(|meta| {
                meta.next_id += 1;
                Ok(((), true))
            })
            .expect("update");
        assert!(root.join(METADATA).is_file());
    }
}
