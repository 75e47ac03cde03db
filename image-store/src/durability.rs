//! Deferred durability: a batch of ingests synced once, before a tag makes
//! any of them reachable.
//!
//! An ingest through an ordinary [`OciDir`] handle is durable when its
//! commit returns: the data is fsynced before the rename into `blobs/`, the
//! directory after it. That is two journal commits per blob, which dominate
//! the time of a batch of small blobs (a build cache import is a dozen
//! configs, manifests and layers). A handle made by
//! [`OciDir::deferring_sync`] verifies and renames each blob as usual but
//! leaves both syncs to one pass: the blobs' files are fsynced together
//! (concurrently, so the file system folds them into a few journal
//! commits), then each directory a rename touched, once.
//!
//! # Crash safety
//! - A blob still appears under `blobs/` only by the rename of a complete,
//!   verified file (a process crash keeps what it wrote: the page cache
//!   outlives the process).
//! - No tag points at a blob that a power loss could take back: every
//!   `index.json` write of the store, through any handle of this process,
//!   first runs the pass over every blob published unsynced
//!   ([`OciDir::sync_deferred`]), and a commit that finds its blob already
//!   present fsyncs that file and its directory, so a blob another
//!   process published unsynced is made durable before this one can tag it.
//! - After a power loss before the pass, the unsynced blobs are
//!   unreachable debris: no tag names them, their writer's lease died with
//!   it, so gc collects them at once.
//!
//! The pass keeps a bounded number of files open
//! ([`MAX_PENDING`]): a batch larger than that is synced in parts, which is
//! only earlier, never less, durability.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::content::ContentError;
use crate::fs::{Fs, Root, Target};
use crate::oci_dir::OciDir;

/// The most blobs published without a sync before the pass runs on its
/// own (each keeps a descriptor open until then).
pub const MAX_PENDING: usize = 256;

/// The most fsyncs of one pass in flight at once.
const SYNC_THREADS: usize = 16;

/// What the handles of one store in this process published without
/// syncing: the blobs' files and the directories their renames changed.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    inner: Mutex<Unsynced>,
}

#[derive(Debug, Default)]
struct Unsynced {
    files: Vec<(PathBuf, File)>,
    dirs: BTreeSet<PathBuf>,
}

impl Unsynced {
    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Unsynced> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OciDir {
    /// A handle on the same store whose ingests defer their syncs: each
    /// commit verifies and renames its blob into place without fsyncing
    /// it or its directory, and the first `index.json` write of the store
    /// (a tag, by any handle of this process) or
    /// [`sync_deferred`](OciDir::sync_deferred) syncs them all in one pass
    /// first. Meant for a batch of ingests followed by a tag (an import);
    /// see the [module docs](crate::durability) for the crash rules.
    pub fn deferring_sync(&self) -> OciDir {
        let mut handle = self.clone();
        handle.defer_sync = true;
        handle
    }

    /// Whether this handle's ingests defer their syncs (see
    /// [`deferring_sync`](OciDir::deferring_sync)).
    pub fn defers_sync(&self) -> bool {
        self.defer_sync
    }

    /// Makes every blob that a deferring handle of this store published
    /// durable: fsyncs their files (concurrently), then the directories
    /// their renames changed. Nothing to do when none is pending.
    ///
    /// # Errors
    /// [`ContentError::Io`] naming the first file or directory whose sync
    /// failed; what was not synced stays pending for the next pass.
    pub fn sync_deferred(&self) -> Result<(), ContentError> {
        let batch = std::mem::take(&mut *self.pending.lock());
        if batch.is_empty() {
            return Ok(());
        }
        let result = sync_batch(&*self.fs, &self.dir, &batch);
        if result.is_err() {
            let mut pending = self.pending.lock();
            pending.files.extend(batch.files);
            pending.dirs.extend(batch.dirs);
        }
        result
    }

    /// Records a blob published without syncs: its file and the
    /// directories its rename changed; runs the pass when
    /// [`MAX_PENDING`] files are waiting.
    pub(crate) fn defer_blob(
        &self,
        blob: &Path,
        file: File,
        dirs: impl IntoIterator<Item = PathBuf>,
    ) -> Result<(), ContentError> {
        let full = {
            let mut pending = self.pending.lock();
            pending.files.push((blob.to_path_buf(), file));
            pending.dirs.extend(dirs);
            pending.files.len() >= MAX_PENDING
        };
        if full {
            self.sync_deferred()?;
        }
        Ok(())
    }
}

/// Syncs the files of `batch`, at most [`SYNC_THREADS`] at once, then its
/// directories: a directory's entry is made durable only after the file it
/// names.
fn sync_batch(fs: &dyn Fs, root: &Root, batch: &Unsynced) -> Result<(), ContentError> {
    let per_thread = batch.files.len().div_ceil(SYNC_THREADS).max(1);
    let failed: Option<(PathBuf, io::Error)> = std::thread::scope(|scope| {
        let workers: Vec<_> = batch
            .files
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    for (path, file) in chunk {
                        if let Err(e) = fs.sync_file(Target::Blob, file) {
                            return Some((path.clone(), e));
                        }
                    }
                    None
                })
            })
            .collect();
        let mut first = None;
        for w in workers {
            let r = w.join().unwrap_or_else(|_| {
                Some((PathBuf::new(), io::Error::other("a sync thread panicked")))
            });
            first = first.or(r);
        }
        first
    });
    if let Some((path, e)) = failed {
        return Err(ContentError::io("fsync", path, e));
    }
    for dir in &batch.dirs {
        fs.sync_dir(Target::Blob, root, dir)
            .map_err(|e| ContentError::io("fsync", dir, e))?;
    }
    Ok(())
}
