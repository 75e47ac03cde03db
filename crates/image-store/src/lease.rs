//! Leases: named sets of blobs that garbage collection must keep.
//!
//! A pull or a build that writes blobs before it tags them takes a lease
//! naming those blobs (as containerd's leases do), then removes it once
//! the tag is written. Each lease is a file `leases/<id>.json`:
//!
//! ```json
//! {"id":"pull-1","digests":["sha256:..."],"expires":1700000000}
//! ```
//!
//! `expires` (seconds since the epoch) is optional; gc deletes expired
//! leases, so a crashed process's lease does not protect garbage forever.
//! Lease files are replaced atomically under the store's index lock, the
//! lock gc takes, so gc always sees a lease whole.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use image_core::{Classify, Digest, ErrorKind};

use crate::fs::Target;
use crate::oci_dir::{write_file_atomic, OciDir};
use crate::tags::TagError;

/// Errors of lease operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The lease id is not 1 to 128 characters of `[A-Za-z0-9._-]`.
    #[error("invalid lease id {id:?}")]
    InvalidId {
        /// The id, cut to 80 characters.
        id: String,
    },
    /// No lease has this id.
    #[error("lease {id:?} not found")]
    NotFound {
        /// The id.
        id: String,
    },
    /// A lease file is not valid JSON of its kind.
    #[error("{}: invalid lease: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Taking the store lock failed.
    #[error(transparent)]
    Lock(#[from] TagError),
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl Classify for LeaseError {
    fn kind(&self) -> ErrorKind {
        match self {
            LeaseError::InvalidId { .. } | LeaseError::Invalid { .. } => ErrorKind::InvalidInput,
            LeaseError::NotFound { .. } => ErrorKind::NotFound,
            LeaseError::Lock(e) => e.kind(),
            LeaseError::Io { source, .. } => Classify::kind(source),
        }
    }
}

/// A lease: blobs gc keeps until the lease is deleted or expires.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Lease {
    /// The lease id (its file name).
    pub id: String,
    /// The blobs it protects (and, for manifests and indexes, what they reference).
    #[serde(default)]
    pub digests: BTreeSet<Digest>,
    /// When it stops protecting anything, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

impl Lease {
    /// Whether the lease has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        match self.expires {
            Some(t) => epoch_secs(now) >= t,
            None => false,
        }
    }
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check_id(id: &str) -> Result<(), LeaseError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LeaseError::InvalidId {
            id: id.chars().take(80).collect(),
        })
    }
}

impl OciDir {
    fn lease_dir(&self) -> PathBuf {
        self.root.join("leases")
    }

    fn lease_path(&self, id: &str) -> PathBuf {
        self.lease_dir().join(format!("{id}.json"))
    }

    fn write_lease(&self, lease: &Lease) -> Result<(), LeaseError> {
        let dir = self.lease_dir();
        self.fs
            .create_dir_all(Target::Lease, &self.dir, &dir)
            .map_err(|source| LeaseError::Io {
                op: "create directory",
                path: dir,
                source,
            })?;
        let path = self.lease_path(&lease.id);
        let bytes = serde_json::to_vec(lease).map_err(|source| LeaseError::Invalid {
            path: path.clone(),
            source,
        })?;
        write_file_atomic(&*self.fs, &self.dir, Target::Lease, &path, &bytes).map_err(|source| {
            LeaseError::Io {
                op: "write",
                path,
                source,
            }
        })
    }

    fn read_lease(&self, id: &str) -> Result<Option<Lease>, LeaseError> {
        let path = self.lease_path(id);
        // A lease holds an id and digests: 8 MiB is far more than any.
        match self.dir.read_regular(&path, crate::refs::MAX_DOCUMENT_SIZE) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| LeaseError::Invalid { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LeaseError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// Creates (or replaces) the lease `id`, protecting `digests`, expiring
    /// after `ttl` when given.
    ///
    /// # Errors
    /// [`LeaseError::InvalidId`], I/O errors.
    pub fn create_lease(
        &self,
        id: &str,
        digests: &[Digest],
        ttl: Option<Duration>,
    ) -> Result<Lease, LeaseError> {
        check_id(id)?;
        let lease = Lease {
            id: id.to_owned(),
            digests: digests.iter().cloned().collect(),
            expires: ttl.map(|t| epoch_secs(SystemTime::now() + t)),
        };
        let _lock = self.lock_index()?;
        self.write_lease(&lease)?;
        Ok(lease)
    }

    /// Adds `digests` to the lease `id`.
    ///
    /// # Errors
    /// [`LeaseError::NotFound`], I/O errors.
    pub fn add_to_lease(&self, id: &str, digests: &[Digest]) -> Result<(), LeaseError> {
        check_id(id)?;
        let _lock = self.lock_index()?;
        let mut lease = self
            .read_lease(id)?
            .ok_or_else(|| LeaseError::NotFound { id: id.to_owned() })?;
        lease.digests.extend(digests.iter().cloned());
        self.write_lease(&lease)
    }

    /// Deletes the lease `id`; returns whether it existed.
    ///
    /// # Errors
    /// I/O errors.
    pub fn delete_lease(&self, id: &str) -> Result<bool, LeaseError> {
        check_id(id)?;
        let path = self.lease_path(id);
        match self.fs.remove_file(Target::Lease, &self.dir, &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(LeaseError::Io {
                op: "remove",
                path,
                source,
            }),
        }
    }

    /// Every lease, expired ones included, sorted by id. Files that are not
    /// valid leases are skipped.
    ///
    /// # Errors
    /// I/O errors reading the directory.
    pub fn leases(&self) -> Result<Vec<Lease>, LeaseError> {
        let dir = self.lease_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LeaseError::Io {
                    op: "read directory",
                    path: dir,
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if check_id(id).is_err() {
                continue;
            }
            if let Ok(Some(l)) = self.read_lease(id) {
                out.push(l);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_safe_file_names() {
        for ok in ["pull-1", "a.b_c", "X"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", &"x".repeat(129)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expiry() {
        let now = SystemTime::now();
        let mut l = Lease {
            id: "l".into(),
            digests: BTreeSet::new(),
            expires: None,
        };
        assert!(!l.is_expired(now));
        l.expires = Some(epoch_secs(now) + 60);
        assert!(!l.is_expired(now));
        l.expires = Some(epoch_secs(now));
        assert!(l.is_expired(now));
    }
}
