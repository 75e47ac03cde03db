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

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::content::ContentError;
use crate::oci_dir::OciDir;

/// The most blobs published without a sync before the pass runs on its
/// own (each keeps a descriptor open until then).
pub const MAX_PENDING: usize = 256;

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
        self.pending.sync(&*self.fs, &self.dir)
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
        if self.pending.add(blob, file, dirs) >= MAX_PENDING {
            self.sync_deferred()?;
        }
        Ok(())
    }
}
