//! What the cache's tests watch a store through: a seam that records
//! every mutation, by kind and target, and a view that counts the reads of
//! each blob.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use image_core::{Algorithm, Descriptor, Digest};
use image_store::content::{ContentWriter, Info, IngestStatus};
use image_store::fs::{Fs, Op, RealFs, Root, Target};
use image_store::{ContentError, Ingester, OciDir, Provider, TagError, TagStore, Tagged};

/// A seam that records every mutation of the store, by kind and target.
#[derive(Debug, Default)]
pub struct Recording {
    calls: std::sync::Mutex<Vec<(Op, Target)>>,
}

impl Recording {
    fn note(&self, op: Op, target: Target) {
        self.calls.lock().expect("calls").push((op, target));
    }

    /// The calls so far, in order; the record starts anew.
    pub fn take(&self) -> Vec<(Op, Target)> {
        std::mem::take(&mut *self.calls.lock().expect("calls"))
    }
}

impl Fs for Recording {
    fn create_dir_all(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.note(Op::CreateDir, t);
        RealFs.create_dir_all(t, r, p)
    }
    fn open_temp(&self, t: Target, r: &Root, p: &Path, truncate: bool) -> std::io::Result<File> {
        self.note(Op::CreateTemp, t);
        RealFs.open_temp(t, r, p, truncate)
    }
    fn write(&self, t: Target, f: &mut File, buf: &[u8]) -> std::io::Result<usize> {
        self.note(Op::Write, t);
        RealFs.write(t, f, buf)
    }
    fn set_len(&self, t: Target, f: &File, len: u64) -> std::io::Result<()> {
        self.note(Op::SetLen, t);
        RealFs.set_len(t, f, len)
    }
    fn sync_file(&self, t: Target, f: &File) -> std::io::Result<()> {
        self.note(Op::SyncFile, t);
        RealFs.sync_file(t, f)
    }
    fn rename(&self, t: Target, r: &Root, from: &Path, to: &Path) -> std::io::Result<()> {
        self.note(Op::Rename, t);
        RealFs.rename(t, r, from, to)
    }
    fn sync_dir(&self, t: Target, r: &Root, d: &Path) -> std::io::Result<()> {
        self.note(Op::SyncDir, t);
        RealFs.sync_dir(t, r, d)
    }
    fn remove_file(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.note(Op::RemoveFile, t);
        RealFs.remove_file(t, r, p)
    }
    fn remove_dir_all(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.note(Op::RemoveDir, t);
        RealFs.remove_dir_all(t, r, p)
    }
    fn remove_dir(&self, t: Target, r: &Root, p: &Path) -> std::io::Result<()> {
        self.note(Op::RemoveDir, t);
        RealFs.remove_dir(t, r, p)
    }
}

/// A store seen through a counter of blob reads (every read of a blob,
/// whole or streamed, opens a reader).
pub struct CountingReads<'a> {
    store: &'a OciDir,
    reads: Mutex<HashMap<Digest, usize>>,
}

impl<'a> CountingReads<'a> {
    /// `store`, with no read counted yet.
    pub fn new(store: &'a OciDir) -> Self {
        CountingReads {
            store,
            reads: Mutex::new(HashMap::new()),
        }
    }

    /// How many readers each blob had so far.
    pub fn reads(&self) -> HashMap<Digest, usize> {
        self.reads.lock().expect("reads").clone()
    }
}

impl Provider for CountingReads<'_> {
    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, ContentError> {
        *self
            .reads
            .lock()
            .expect("reads")
            .entry(digest.clone())
            .or_default() += 1;
        self.store.reader(digest)
    }
    fn try_info(&self, digest: &Digest) -> Result<Option<Info>, ContentError> {
        self.store.try_info(digest)
    }
}

impl Ingester for CountingReads<'_> {
    fn writer_with(
        &self,
        reference: &str,
        algorithm: Algorithm,
    ) -> Result<Box<dyn ContentWriter>, ContentError> {
        self.store.writer_with(reference, algorithm)
    }
    fn abort(&self, reference: &str) -> Result<(), ContentError> {
        self.store.abort(reference)
    }
    fn ingests(&self) -> Result<Vec<IngestStatus>, ContentError> {
        self.store.ingests()
    }
}

impl TagStore for CountingReads<'_> {
    fn tags(&self) -> Result<Vec<Tagged>, TagError> {
        self.store.tags()
    }
    fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), TagError> {
        self.store.set_tag(name, descriptor)
    }
    fn remove_tag(&self, name: &str) -> Result<bool, TagError> {
        self.store.remove_tag(name)
    }
}
