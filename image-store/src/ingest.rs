//! Ingest into an [`OciDir`]: write to a temp file in the store, hash while
//! writing, verify, fsync, rename into `blobs/`, fsync the directory.
//!
//! Each ingest lives in `ingest/<sha256 of its reference>/` as a `ref`
//! file naming the reference and a `data` file holding the bytes so far.
//! The writer holds an exclusive `flock` on `data`, so a second writer of
//! the same reference (in this or another process) gets
//! [`ContentError::Locked`], and garbage collection never removes an ingest
//! in progress; the lock dies with its process, so a crashed ingest can be
//! resumed or collected.
//!
//! # Crash safety
//! A blob appears under `blobs/<alg>/<hex>` only by `rename` of a file that
//! was verified and fsynced, so a crash at any point leaves either no blob
//! or the whole verified blob. The directory is fsynced after the rename so
//! that a committed blob survives power loss. A handle made by
//! [`OciDir::deferring_sync`] leaves both syncs to one pass before the
//! store's next tag (see [`crate::durability`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use image_core::digest::{Hasher, ThreadedHasher};
use image_core::{Algorithm, Digest};
use rustix::fs::{AtFlags, FileType, FlockOperation};
use rustix::io::Errno;

use crate::content::{
    check_commit_algorithm, check_reference, verify_commit, ContentError, ContentWriter,
    IngestStatus, Ingester, Result,
};
use crate::fs::{self as seam, RefusedFile, Target};
use crate::oci_dir::{content_io, list_dir, mtime, OciDir};

const DATA: &str = "data";
const REF: &str = "ref";

impl OciDir {
    /// The directory of the ingest `reference`.
    fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.ingest_root()
            .join(Digest::sha256(reference.as_bytes()).hex())
    }

    /// Opens and locks `dir/data`, retrying when the file was replaced
    /// between open and lock (a commit, an abort or gc removed it);
    /// [`ContentError::Locked`] when that keeps happening.
    fn open_locked_data(&self, reference: &str, dir: &Path) -> Result<File> {
        let data = dir.join(DATA);
        for _ in 0..8 {
            match self.fs.create_dir_all(Target::Blob, &self.dir, dir) {
                Ok(()) => {}
                // gc removed it between its mkdir and its open: a directory
                // without data is stale at once. Make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ContentError::io("create directory", dir, e)),
            }
            let file = match self.fs.open_temp(Target::Blob, &self.dir, &data, false) {
                Ok(f) => f,
                // The directory vanished under us (gc, abort): try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ContentError::io("create", &data, e)),
            };
            try_lock(&file, reference, &data)?;
            if self.dir.holds(&file, &data) {
                return Ok(file);
            }
        }
        // Every file we locked had just been committed or aborted by
        // another writer of the same reference (many writers of one blob
        // follow each other through it): the reference is contended, which
        // is what `Locked` says; a writer by digest then ingests under a
        // reference of its own, and the loser of the commit deduplicates.
        Err(ContentError::Locked {
            reference: reference.to_owned(),
        })
    }

    /// Removes ingests that no writer holds and that were not written to
    /// for `older_than` (only counts them unless `remove`); returns the
    /// bytes freed and the count. Junk (see [`unheld_ingests`](OciDir::unheld_ingests))
    /// is removed the same way, never followed.
    pub(crate) fn clean_ingests(&self, older_than: Duration, remove: bool) -> Result<(u64, usize)> {
        let now = SystemTime::now();
        let (mut bytes, mut count) = (0, 0);
        self.unheld_ingests(|unheld| {
            let old = unheld
                .status
                .updated
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= older_than);
            if !old {
                return Ok(());
            }
            if remove && !unheld.junk && unheld._lock.is_none() {
                // A directory without data: a writer may be making its data
                // file in it right now (it made the directory a moment
                // ago). Remove only its `ref` and then the directory if it
                // is still empty, never recursively, so a data file made
                // since the look stays (`ENOTEMPTY`: left to its writer).
                let path = &unheld.path;
                let _ = self
                    .fs
                    .remove_file(Target::Blob, &self.dir, &path.join(REF));
                match self.fs.remove_dir(Target::Blob, &self.dir, path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Not empty: a writer's new data file, or files no
                    // writer makes. The latter is removed whole once it has
                    // not changed for a minute, far longer than a writer
                    // takes between its mkdir and its lock.
                    Err(_) => {
                        let settled = unheld.status.updated.is_some_and(|t| {
                            now.duration_since(t).unwrap_or_default() >= EMPTY_INGEST_SETTLE
                        });
                        if !settled || self.dir.stat(&path.join(DATA)).ok().flatten().is_some() {
                            return Ok(());
                        }
                        match self.fs.remove_dir_all(Target::Blob, &self.dir, path) {
                            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                                return Err(content_io("remove", path, e))
                            }
                            _ => {}
                        }
                    }
                }
            } else if remove {
                // Still holding the data file's lock, so no writer resumes
                // it meanwhile; a link or a file is removed, never followed.
                let path = &unheld.path;
                match self.fs.remove_dir_all(Target::Blob, &self.dir, path) {
                    // Junk the store cannot remove (a tree deeper than it
                    // descends) is left to the operator, never a reason to
                    // stop collecting the rest; fsck keeps reporting it.
                    Err(e) if unheld.junk && RefusedFile::from_io(&e).is_some() => return Ok(()),
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(content_io("remove", path, e))
                    }
                    _ => {}
                }
            }
            bytes += unheld.status.offset;
            count += 1;
            Ok(())
        })?;
        Ok((bytes, count))
    }

    /// Every entry of `ingest/` that no writer holds, with the lock of its
    /// data file taken when it has one. Besides ingests whose writer died
    /// or dropped them, that is junk no writer of the store makes: an
    /// entry that is not a directory (a link, a file, a FIFO) or whose
    /// `data` is not a regular file. A writer never holds junk (it creates
    /// and locks only a regular `data` in a directory), so junk is
    /// garbage like an abandoned ingest, as containerd's gc aborts every
    /// ingest no one holds; it is listed without following or opening it.
    ///
    /// Each is given to `each` in turn and its lock released after, so one
    /// descriptor is open at a time however many there are.
    fn unheld_ingests(&self, mut each: impl FnMut(Unheld) -> Result<()>) -> Result<()> {
        let root = self.ingest_root();
        let Some(fd) = self.open_listing(&root)? else {
            return Ok(());
        };
        for (name, path) in list_dir(&fd, &root)? {
            let st = match rustix::fs::statat(&fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(ContentError::io("stat", path, e.into())),
            };
            let junk = |path: PathBuf, junk: bool| Unheld {
                status: IngestStatus {
                    reference: name.to_string_lossy().into_owned(),
                    offset: 0,
                    updated: mtime(&st),
                },
                path,
                junk,
                _lock: None,
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                each(junk(path, true))?;
                continue;
            }
            let data = path.join(DATA);
            let file = match self.dir.open_regular(&data) {
                Ok((f, _)) => f,
                // A directory without data: a crash before the data file
                // was created, or after a commit's rename.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    each(junk(path, false))?;
                    continue;
                }
                Err(e) => match seam::split_refused(e) {
                    Ok(_) => {
                        each(junk(path, true))?;
                        continue;
                    }
                    Err(e) => return Err(ContentError::io("open", data, e)),
                },
            };
            if rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_err()
                || !self.dir.holds(&file, &data)
            {
                continue;
            }
            let meta = file
                .metadata()
                .map_err(|e| ContentError::io("stat", &data, e))?;
            let reference = self
                .dir
                .read_regular(&path.join(REF), MAX_REFERENCE_FILE)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_else(|| name.to_string_lossy().into_owned());
            each(Unheld {
                status: IngestStatus {
                    reference,
                    offset: meta.len(),
                    updated: meta.modified().ok(),
                },
                path,
                junk: false,
                _lock: Some(file),
            })?;
        }
        Ok(())
    }

    /// The ingests no writer holds: their writer died, failed, or dropped
    /// them, and junk no writer made (see `clean_ingests`). gc removes
    /// them (see [`GcOptions::ingest_max_age`](crate::GcOptions)).
    ///
    /// # Errors
    /// I/O errors reading the ingest directory; [`ContentError::Refused`]
    /// when `ingest` itself is a symlink or not a directory.
    pub fn stale_ingests(&self) -> Result<Vec<IngestStatus>> {
        let mut out = Vec::new();
        self.unheld_ingests(|u| {
            out.push(u.status);
            Ok(())
        })?;
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }
}

/// An entry of `ingest/` no writer holds.
struct Unheld {
    /// The entry.
    path: PathBuf,
    status: IngestStatus,
    /// Whether it is junk no writer made (not a directory, or its data
    /// not a regular file).
    junk: bool,
    /// Its data file, locked by us while we decide.
    _lock: Option<File>,
}

/// How long a directory of `ingest/` without a data file but with other
/// files must stay unchanged before gc removes it whole.
const EMPTY_INGEST_SETTLE: Duration = Duration::from_secs(60);

/// The most of an ingest's `ref` file that is read (a reference is at most
/// a few hundred bytes).
const MAX_REFERENCE_FILE: u64 = 4096;

/// Takes the writer's lock on an ingest's data file.
///
/// A lock held for a moment by a child process between `fork` and `exec`
/// (it inherits the descriptor until exec closes it) is not a real holder,
/// so a busy lock is retried for about 30 ms before reporting
/// [`ContentError::Locked`].
fn try_lock(file: &File, reference: &str, data: &Path) -> Result<()> {
    let mut wait = Duration::from_millis(1);
    loop {
        match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(Errno::WOULDBLOCK) if wait <= Duration::from_millis(16) => {
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(Errno::WOULDBLOCK) => {
                return Err(ContentError::Locked {
                    reference: reference.to_owned(),
                })
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(ContentError::io("lock", data, e.into())),
        }
    }
}

/// Hashes the first `len` bytes of `file`; returns the hasher and the count read.
fn rehash(
    file: &File,
    algorithm: Algorithm,
    len: Option<u64>,
    path: &Path,
) -> Result<(Hasher, u64)> {
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pos = 0u64;
    loop {
        let want = match len {
            Some(l) if pos >= l => break,
            Some(l) => buf
                .len()
                .min(usize::try_from(l - pos).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let n = match file.read_at(&mut buf[..want], pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ContentError::io("read", path, e)),
        };
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok((hasher, pos))
}

impl Ingester for OciDir {
    fn writer_with(&self, reference: &str, algorithm: Algorithm) -> Result<Box<dyn ContentWriter>> {
        check_reference(reference)?;
        let dir = self.ingest_dir(reference);
        let file = self.open_locked_data(reference, &dir)?;
        let data = dir.join(DATA);
        let (hasher, offset) = rehash(&file, algorithm, None, &data)?;
        let ref_path = dir.join(REF);
        if offset == 0 || !matches!(self.dir.stat(&ref_path), Ok(Some(_))) {
            let mut f = self
                .fs
                .open_temp(Target::Blob, &self.dir, &ref_path, true)
                .map_err(|e| ContentError::io("create", &ref_path, e))?;
            seam::write_all(&*self.fs, Target::Blob, &mut f, reference.as_bytes())
                .map_err(|e| ContentError::io("write", &ref_path, e))?;
        }
        Ok(Box::new(OciWriter {
            store: self.clone(),
            reference: reference.to_owned(),
            dir,
            data,
            file,
            algorithm,
            hasher: Mutex::new(ThreadedHasher::from_hasher(hasher)),
            offset,
            unkicked: offset,
            writeback: None,
        }))
    }

    fn abort(&self, reference: &str) -> Result<()> {
        check_reference(reference)?;
        let dir = self.ingest_dir(reference);
        let data = dir.join(DATA);
        let file = match self.dir.open_regular(&data).map(|(f, _)| f) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return match self.fs.remove_dir_all(Target::Blob, &self.dir, &dir) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        Err(ContentError::io("remove", dir, e))
                    }
                    _ => Ok(()),
                };
            }
            Err(e) => return Err(content_io("open", &data, e)),
        };
        try_lock(&file, reference, &data)?;
        match self.fs.remove_dir_all(Target::Blob, &self.dir, &dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(ContentError::io("remove", dir, e))
            }
            _ => Ok(()),
        }
    }

    fn ingests(&self) -> Result<Vec<IngestStatus>> {
        let root = self.ingest_root();
        let Some(fd) = self.open_listing(&root)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (_, dir) in list_dir(&fd, &root)? {
            let Some(reference) = self
                .dir
                .read_regular(&dir.join(REF), MAX_REFERENCE_FILE)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            else {
                continue;
            };
            // Looked at, not followed: only a regular data file is an ingest.
            let Ok(Some(st)) = self.dir.stat(&dir.join(DATA)) else {
                continue;
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                continue;
            }
            out.push(IngestStatus {
                reference,
                offset: u64::try_from(st.st_size).unwrap_or(0),
                updated: mtime(&st),
            });
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }
}

/// The writer of [`OciDir`]: appends to `ingest/<ref>/data`, holding its lock.
struct OciWriter {
    store: OciDir,
    reference: String,
    dir: PathBuf,
    data: PathBuf,
    file: File,
    algorithm: Algorithm,
    /// Hashes large ingests on a helper thread beside the writes (a mutex
    /// only because [`ContentWriter::digest`] takes `&self`; never contended).
    hasher: Mutex<ThreadedHasher>,
    offset: u64,
    /// Where the data this writer wrote and has not kicked to the disk
    /// yet starts (the bytes of a resumed ingest before it are left alone).
    unkicked: u64,
    writeback: Option<Writeback>,
}

/// Bytes written between two kicks of early writeback.
const WRITEBACK_STEP: u64 = 32 << 20;

/// Starts the kernel writing a large ingest's data to disk while the rest
/// is still being received, so the fsync at commit finds little left to
/// do: one pass with the disk busy throughout, instead of a write burst at
/// the end.
///
/// Each kick only starts the writes of the range written since the last
/// one and waits for nothing: no `fdatasync` per step (each of those is a
/// journal commit and a flush of the disk's cache, and waits for every
/// page written so far; with 32 of them per GiB the fair bench measured
/// an ingest at 1.36 to 1.52 times `dd conv=fsync`). The one durable sync
/// is the fsync of the
/// commit, through the filesystem seam, which reports failure; the
/// kicks' errors are ignored.
///
/// The kick is `posix_fadvise(POSIX_FADV_DONTNEED)` of the range: Linux
/// starts writeback of its dirty pages without waiting (`WB_SYNC_NONE`)
/// and then drops only the pages already clean, which the just-written
/// range has none of; that is `sync_file_range(SYNC_FILE_RANGE_WRITE)`,
/// which rustix does not wrap and this crate has no `unsafe` for. A
/// helper thread makes the call, so the writer never waits on the disk.
struct Writeback {
    kick: std::sync::mpsc::SyncSender<(u64, u64)>,
    thread: std::thread::JoinHandle<()>,
}

impl Writeback {
    fn start(file: &File) -> Option<Writeback> {
        let dup = file.try_clone().ok()?;
        let (kick, ranges) = std::sync::mpsc::sync_channel::<(u64, u64)>(1);
        let thread = std::thread::Builder::new()
            .name("ingest-writeback".into())
            .spawn(move || {
                for (offset, len) in ranges {
                    let _ = rustix::fs::fadvise(
                        &dup,
                        offset,
                        std::num::NonZeroU64::new(len),
                        rustix::fs::Advice::DontNeed,
                    );
                }
            })
            .ok()?;
        Some(Writeback { kick, thread })
    }

    fn stop(self) {
        drop(self.kick);
        let _ = self.thread.join();
    }
}

impl OciWriter {
    fn hasher_mut(&mut self) -> &mut ThreadedHasher {
        self.hasher
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn nudge_writeback(&mut self) {
        if self.offset < self.unkicked + WRITEBACK_STEP {
            return;
        }
        if self.writeback.is_none() {
            self.writeback = Writeback::start(&self.file);
        }
        if let Some(w) = &self.writeback {
            // A full channel means a kick is under way; this range goes
            // with the next one.
            if w.kick
                .try_send((self.unkicked, self.offset - self.unkicked))
                .is_ok()
            {
                self.unkicked = self.offset;
            }
        }
    }

    fn stop_writeback(&mut self) {
        if let Some(w) = self.writeback.take() {
            w.stop();
        }
    }
}

impl Drop for OciWriter {
    fn drop(&mut self) {
        self.stop_writeback();
    }
}

impl Write for OciWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.store.fs.write(Target::Blob, &mut self.file, buf)?;
        self.hasher_mut().update(&buf[..n]);
        self.offset += n as u64;
        self.nudge_writeback();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl OciWriter {
    fn discard(&self) {
        let _ = self
            .store
            .fs
            .remove_dir_all(Target::Blob, &self.store.dir, &self.dir);
    }

    /// Removes what is left of the ingest after the data was renamed away:
    /// the `ref` file and the directory, unless another writer of the same
    /// reference has started a new ingest there meanwhile.
    fn cleanup_after_rename(&self) {
        let fs = &*self.store.fs;
        if matches!(self.store.dir.stat(&self.data), Ok(None)) {
            let _ = fs.remove_file(Target::Blob, &self.store.dir, &self.dir.join(REF));
            let _ = fs.remove_dir(Target::Blob, &self.store.dir, &self.dir);
        }
    }

    fn publish(&mut self, digest: &Digest) -> Result<bool> {
        self.stop_writeback();
        let fs = &*self.store.fs;
        // A deferring handle leaves every sync to its store's one pass
        // before the next tag (see `crate::durability`).
        let defer = self.store.defer_sync;
        let alg_dir = self.store.alg_dir(digest.algorithm());
        let blob = self.store.blob_path(digest);
        let mut dirs = vec![alg_dir.clone()];
        // Looked at without following a symlink: a link planted at the
        // blob's name is replaced by the rename below, never touched.
        let (renamed, published) = match self.store.dir.open_regular(&blob) {
            // Already present: each blob is stored once. Refresh its time so
            // gc's grace period protects it like a new blob, and sync it and
            // its directory: the writer that renamed it may have died
            // first, or deferred its syncs.
            Ok((f, len)) if len == self.offset => {
                {
                    let _ = f.set_modified(SystemTime::now());
                }
                if !defer {
                    fs.sync_file(Target::Blob, &f)
                        .map_err(|e| ContentError::io("fsync", &blob, e))?;
                }
                (false, Some(f))
            }
            _ => {
                // The data is synced before its rename publishes it (an
                // ingest discarded for a blob already present is not).
                if !defer {
                    fs.sync_file(Target::Blob, &self.file)
                        .map_err(|e| ContentError::io("fsync", &self.data, e))?;
                }
                // Looked at, not followed: a link there is refused below.
                if !matches!(self.store.dir.stat(&alg_dir), Ok(Some(_))) {
                    fs.create_dir_all(Target::Blob, &self.store.dir, &alg_dir)
                        .map_err(|e| ContentError::io("create directory", &alg_dir, e))?;
                    let blobs = self.store.root.join("blobs");
                    if defer {
                        dirs.push(blobs);
                    } else {
                        fs.sync_dir(Target::Blob, &self.store.dir, &blobs)
                            .map_err(|e| ContentError::io("fsync", blobs, e))?;
                    }
                }
                fs.rename(Target::Blob, &self.store.dir, &self.data, &blob)
                    .map_err(|e| ContentError::io("rename", &self.data, e))?;
                let file = match defer {
                    true => Some(
                        self.file
                            .try_clone()
                            .map_err(|e| ContentError::io("duplicate", &blob, e))?,
                    ),
                    false => None,
                };
                (true, file)
            }
        };
        if let (true, Some(file)) = (defer, published) {
            self.store.defer_blob(&blob, file, dirs)?;
        } else {
            fs.sync_dir(Target::Blob, &self.store.dir, &alg_dir)
                .map_err(|e| ContentError::io("fsync", &alg_dir, e))?;
        }
        Ok(renamed)
    }
}

impl crate::content::sealed::Writer for OciWriter {}

impl ContentWriter for OciWriter {
    fn reference(&self) -> &str {
        &self.reference
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    fn digest(&self) -> Digest {
        self.hasher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .digest()
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        if size > self.offset {
            return Err(ContentError::io(
                "truncate",
                &self.data,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "size beyond the ingest's offset",
                ),
            ));
        }
        self.store
            .fs
            .set_len(Target::Blob, &self.file, size)
            .map_err(|e| ContentError::io("truncate", &self.data, e))?;
        let (hasher, n) = rehash(&self.file, self.algorithm, Some(size), &self.data)?;
        *self.hasher_mut() = ThreadedHasher::from_hasher(hasher);
        self.offset = n;
        self.unkicked = self.unkicked.min(n);
        Ok(())
    }

    fn commit(
        mut self: Box<Self>,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Digest> {
        check_commit_algorithm(&self.reference, self.algorithm, expected)?;
        let algorithm = self.algorithm;
        let found = std::mem::replace(self.hasher_mut(), ThreadedHasher::new(algorithm)).finish();
        if let Err(e) = verify_commit(
            &self.reference,
            expected_size,
            expected,
            &found,
            self.offset,
        ) {
            self.discard();
            return Err(e);
        }
        // The blob is committed once published; leftovers of the ingest
        // directory are harmless and collected by gc if cleaning fails.
        match self.publish(&found) {
            Ok(true) => self.cleanup_after_rename(),
            Ok(false) => self.discard(),
            Err(e) => {
                if matches!(self.store.dir.stat(&self.data), Ok(None)) {
                    // Renamed, then the directory sync failed: the blob is
                    // there but maybe not durable; report the error.
                    self.cleanup_after_rename();
                }
                return Err(e);
            }
        }
        Ok(found)
    }
}

impl std::fmt::Debug for OciWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciWriter")
            .field("reference", &self.reference)
            .field("offset", &self.offset)
            .finish()
    }
}
