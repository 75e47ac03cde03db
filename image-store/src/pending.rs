//! The list of blobs that deferring handles of one store published
//! without syncing, and the pass that syncs them (see the
//! `durability` module); a leaf beneath `oci_dir`, which holds one per
//! store, and `durability`, which drives it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::content::ContentError;
use crate::fs::{Fs, Root, Target};

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

impl Pending {
    /// Adds a blob published without syncs (its file and the directories
    /// its rename changed); returns how many files now wait.
    pub(crate) fn add(
        &self,
        blob: &Path,
        file: File,
        dirs: impl IntoIterator<Item = PathBuf>,
    ) -> usize {
        let mut pending = self.lock();
        pending.files.push((blob.to_path_buf(), file));
        pending.dirs.extend(dirs);
        pending.files.len()
    }

    /// Syncs every waiting file, then every waiting directory; what a
    /// failed pass did not sync waits for the next one.
    pub(crate) fn sync(&self, fs: &dyn Fs, root: &Root) -> Result<(), ContentError> {
        let batch = std::mem::take(&mut *self.lock());
        if batch.is_empty() {
            return Ok(());
        }
        let result = sync_batch(fs, root, &batch);
        if result.is_err() {
            let mut pending = self.lock();
            pending.files.extend(batch.files);
            pending.dirs.extend(batch.dirs);
        }
        result
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
