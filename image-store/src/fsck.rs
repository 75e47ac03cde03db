//! fsck: re-hash every blob and check the reference graph.
//!
//! Reports *corrupt* blobs (bytes that do not hash to their name, or
//! files under `blobs/` whose name is not a digest), *missing* blobs
//! (referenced from a root but absent) and *dangling* blobs (present but
//! unreachable from any root or lease: garbage for gc, not an error).
//! Corrupt blobs can be removed, so the next pull or load writes them anew.
//! On an [`OciDir`] it also reports what writers that died left behind:
//! *stale ingests* and *stale held leases* (no writer holds their lock),
//! which gc removes.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use image_core::{Classify, Descriptor, Digest, ErrorKind};

use crate::content::{ContentError, IngestStatus, Manager, Provider};
use crate::fs::Target;
use crate::oci_dir::OciDir;
use crate::refs;
use crate::tags::{ref_name, TagError};

/// Errors that stop fsck (problems found in the store are in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsckError {
    /// Listing or reading blobs failed.
    #[error("fsck")]
    Content(#[from] ContentError),
    /// Reading `index.json` failed.
    #[error("fsck")]
    Index(#[from] TagError),
    /// Reading leases failed.
    #[error("fsck")]
    Lease(#[from] crate::lease::LeaseError),
}

impl Classify for FsckError {
    fn kind(&self) -> ErrorKind {
        match self {
            FsckError::Content(e) => e.kind(),
            FsckError::Index(e) => e.kind(),
            FsckError::Lease(e) => e.kind(),
        }
    }
}

/// Knobs of fsck.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FsckOptions {
    /// Remove corrupt blobs.
    pub remove_corrupt: bool,
}

impl FsckOptions {
    /// Sets whether corrupt blobs are removed.
    pub fn remove_corrupt(mut self, remove: bool) -> Self {
        self.remove_corrupt = remove;
        self
    }
}

/// A blob whose bytes are not the ones its name says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Corrupt {
    /// The blob's name.
    pub digest: Digest,
    /// What is wrong (the digest found, or a read error).
    pub problem: String,
}

/// A blob referenced but absent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Missing {
    /// The missing blob.
    pub digest: Digest,
    /// The tag (or root digest) it is reachable from.
    pub root: String,
}

/// What fsck found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FsckReport {
    /// Blobs re-hashed.
    pub checked: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs that do not hash to their name.
    pub corrupt: Vec<Corrupt>,
    /// Files under `blobs/` that are not named by a valid digest.
    pub strays: Vec<PathBuf>,
    /// Blobs referenced from a root but absent.
    pub missing: Vec<Missing>,
    /// Blobs present but unreachable from any root or lease.
    pub dangling: Vec<Digest>,
    /// Corrupt blobs removed.
    pub removed: Vec<Digest>,
    /// Ingests no writer holds (left by a writer that died or failed):
    /// garbage for gc, like dangling blobs.
    pub stale_ingests: Vec<IngestStatus>,
    /// Held leases whose holder is gone: garbage for gc.
    pub stale_leases: Vec<String>,
}

impl FsckReport {
    /// No corrupt, stray or missing blob (dangling blobs, stale ingests and
    /// stale leases are gc's business).
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.strays.is_empty() && self.missing.is_empty()
    }
}

/// Checks any store against `roots` (tagged or not) and `leased` blobs.
///
/// # Errors
/// I/O errors listing the store.
pub fn fsck<S: Provider + Manager + ?Sized>(
    store: &S,
    roots: &[Descriptor],
    leased: &[Digest],
    options: &FsckOptions,
) -> Result<FsckReport, FsckError> {
    let mut report = FsckReport::default();
    let mut corrupt = HashSet::new();
    for info in store.list()? {
        let problem = match store.reader(&info.digest) {
            Ok(mut r) => match io::copy(&mut r, &mut io::sink()) {
                Ok(n) => {
                    report.bytes += n;
                    None
                }
                Err(e) => Some(e.get_ref().map_or_else(|| e.to_string(), |i| i.to_string())),
            },
            Err(ContentError::NotFound { .. }) => continue,
            Err(e) => Some(e.to_string()),
        };
        report.checked += 1;
        if let Some(problem) = problem {
            corrupt.insert(info.digest.clone());
            report.corrupt.push(Corrupt {
                digest: info.digest,
                problem,
            });
        }
    }
    if options.remove_corrupt {
        for c in &report.corrupt {
            match store.delete(&c.digest) {
                Ok(()) | Err(ContentError::NotFound { .. }) => {
                    report.removed.push(c.digest.clone())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    for root in roots {
        let name = ref_name(root)
            .map(str::to_owned)
            .unwrap_or_else(|| root.digest().to_string());
        refs::walk(store, root, &mut |d, present| {
            if !present {
                report.missing.push(Missing {
                    digest: d.clone(),
                    root: name.clone(),
                });
            }
        })?;
    }
    let reachable = crate::gc::reachable(store, roots, leased)?;
    for info in store.list()? {
        if !reachable.contains(&info.digest) {
            report.dangling.push(info.digest);
        }
    }
    Ok(report)
}

impl OciDir {
    /// Checks this store: every blob re-hashed, `index.json` and live
    /// leases as roots; stale ingests and leases reported.
    ///
    /// # Errors
    /// [`FsckError`] when the store cannot be read at all.
    pub fn fsck(&self, options: &FsckOptions) -> Result<FsckReport, FsckError> {
        let index = self.read_index()?;
        let now = std::time::SystemTime::now();
        let mut leased: Vec<Digest> = self
            .leases()?
            .into_iter()
            .filter(|l| !l.is_expired(now))
            .flat_map(|l| l.digests)
            .collect();
        let mut stale_leases = Vec::new();
        for held in self.held_leases()? {
            if held.live {
                leased.extend(held.digests);
            } else {
                stale_leases.push(held.id);
            }
        }
        let mut report = fsck(self, index.manifests(), &leased, options)?;
        report.stale_leases = stale_leases;
        report.stale_ingests = self.stale_ingests()?;
        let (_, strays) = self.walk_blobs()?;
        if options.remove_corrupt {
            for s in &strays {
                let _ = self.fs.remove_file(Target::Blob, &self.dir, s);
            }
        }
        report.strays = strays;
        Ok(report)
    }
}
