//! Leases: sets of blobs that garbage collection must keep.
//!
//! Two kinds, as containerd has them:
//!
//! - **Held leases** ([`Leases::begin_lease`] -> [`LeaseGuard`]): every
//!   writer (load, copy, commit, append, and later build and pull) holds one
//!   from its first blob until it has tagged. The writer adds each digest
//!   to its lease *before* it checks that the blob exists and before it
//!   commits the ingest ([`Leased`] does both for any store), so gc, which
//!   reads leases under the same lock, never sees an unprotected blob the
//!   writer is about to reference. On an [`OciDir`] a held lease is the file
//!   `leases/<id>.held`, one digest a line, created and locked (`flock`)
//!   under the index lock and kept locked by its holder for as long as the
//!   guard lives: a lease whose holder died is not locked any more, so it
//!   is stale *at once*, and gc removes it. The guard deletes it on drop.
//!   Held leases are not fsynced: a power loss ends their holders too.
//! - **Explicit leases** ([`OciDir::create_lease`]): a file
//!   `leases/<id>.json`,
//!
//!   ```json
//!   {"id":"pull-1","digests":["sha256:..."],"expires":1700000000}
//!   ```
//!
//!   kept until deleted or until `expires` (seconds since the epoch), when
//!   gc deletes it, so a crashed process's lease does not protect garbage
//!   forever. They are replaced atomically under the store's index lock.
//!
//! A lease on a manifest or an index protects everything it references.
//!
//! # A writer of one's own
//!
//! A library writer (a puller, a builder) takes a held lease the way
//! `load` and `copy_tag` do: begin it before the first blob, do every
//! check, read and commit through [`LeaseGuard::protect`], tag, then drop
//! the guard. gc at any grace period is then safe beside it; a writer that
//! skips the lease is protected only by the grace period.
//!
//! ```
//! use image_core::{Digest, Manifest};
//! use image_store::{Ingester, Leases, OciDir, Provider, TagStore};
//!
//! let dir = tempfile::tempdir()?;
//! let store = OciDir::open_or_create(dir.path())?;
//!
//! // 1. From the first blob until the tag is set.
//! let lease = store.begin_lease()?;
//! let leased = lease.protect(&store);
//!
//! // 2. Through `leased`: a blob asked about is leased before it is
//! //    checked, so gc cannot remove it after `exists` said yes; a blob
//! //    written is leased before its commit. Write the manifest last.
//! let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
//! let config_digest = Digest::sha256(config);
//! if !leased.exists(&config_digest)? {
//!     leased.write_blob(config)?;
//! }
//! let manifest = format!(
//!     r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
//!     config.len()
//! );
//! leased.write_blob(manifest.as_bytes())?;
//!
//! // 3. Tag, then end the lease: the tag protects the image now.
//! let manifest = Manifest::from_bytes(manifest.into_bytes())?;
//! leased.set_tag("example:1", &manifest.descriptor())?;
//! lease.release()?;
//! assert!(store.resolve_tag("example:1").is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use image_core::{Algorithm, Descriptor, DescriptorExt, Digest};
use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::content::{
    ContentError, ContentWriter, Info, IngestStatus, Ingester, Provider, Result as ContentResult,
};
use crate::fs::{self as seam, Target};
use crate::oci_dir::{write_file_atomic, OciDir};
use crate::tags::{TagError, TagStore, Tagged};

pub use crate::error::LeaseError;

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
        let mut out = Vec::new();
        for (name, _, _) in self.list_leases()? {
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

/// Stores whose blobs a writer can protect from gc while it works: the
/// lease seam of a content store (containerd's lease manager).
///
/// # Lifecycle
/// 1. [`begin_lease`](Leases::begin_lease) before the first blob; keep the
///    [`LeaseGuard`] alive until the image is tagged.
/// 2. Add each digest to it before checking whether the blob exists and
///    before committing it: wrap the store as [`Leased`]
///    ([`LeaseGuard::protect`]) and every `exists`, `info`, read and commit
///    through the wrapper does that.
/// 3. Tag, then drop the guard (or [`release`](LeaseGuard::release) it).
///
/// A guard whose holder dies stops protecting anything at once. The
/// [module documentation](self#a-writer-of-ones-own) has an example.
pub trait Leases {
    /// Starts a lease held by the caller for as long as the guard lives.
    ///
    /// # Errors
    /// I/O errors of the store.
    fn begin_lease(&self) -> Result<LeaseGuard, LeaseError>;

    /// Every digest protected now by a live lease (held by a live holder,
    /// or explicit and not expired).
    ///
    /// A snapshot: a collector of its own (over [`gc::reachable`](crate::gc::reachable))
    /// must keep writers from adding to their leases between this call
    /// and the end of its sweep, as [`OciDir::gc`] does by holding the
    /// index lock that [`HeldLease::add`] takes; a [`MemoryStore`](crate::MemoryStore)
    /// offers no such lock, so nothing may sweep one beside its writers.
    ///
    /// # Errors
    /// I/O errors of the store.
    fn leased_digests(&self) -> Result<BTreeSet<Digest>, LeaseError>;
}

/// A lease as a store keeps it while its holder lives; what
/// [`Leases::begin_lease`] puts in a [`LeaseGuard`].
pub trait HeldLease: Send + std::fmt::Debug {
    /// The lease's id.
    fn id(&self) -> &str;

    /// Adds digests; they are protected once this returns.
    ///
    /// # Errors
    /// I/O errors; [`LeaseError::Lost`].
    fn add(&mut self, digests: &[Digest]) -> Result<(), LeaseError>;

    /// Ends the lease. Called once, by the guard.
    ///
    /// # Errors
    /// I/O errors (the lease is then stale and gc removes it).
    fn release(&mut self) -> Result<(), LeaseError>;
}

#[derive(Debug)]
struct LeaseState {
    held: Box<dyn HeldLease>,
    /// Digests already added, so each is written once.
    added: HashSet<Digest>,
    released: bool,
}

/// A lease held until this guard is dropped or released.
///
/// Writers opened through [`Leased`] share it: committing after the guard
/// is gone fails with [`LeaseError::Lost`] instead of writing an
/// unprotected blob.
#[derive(Debug)]
pub struct LeaseGuard {
    id: String,
    state: Arc<Mutex<LeaseState>>,
}

/// Locks a lease's state. Every change is made only after its store call
/// succeeded, so a panic leaves it consistent and poisoning is ignored.
fn lock_state(state: &Mutex<LeaseState>) -> MutexGuard<'_, LeaseState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn add_to(state: &Mutex<LeaseState>, digests: &[Digest]) -> Result<(), LeaseError> {
    let mut s = lock_state(state);
    if s.released {
        return Err(LeaseError::Lost {
            id: s.held.id().to_owned(),
        });
    }
    let new: Vec<Digest> = digests
        .iter()
        .filter(|d| !s.added.contains(*d))
        .cloned()
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    s.held.add(&new)?;
    s.added.extend(new);
    Ok(())
}

impl LeaseGuard {
    /// Wraps a store's held lease.
    pub fn new(held: Box<dyn HeldLease>) -> LeaseGuard {
        LeaseGuard {
            id: held.id().to_owned(),
            state: Arc::new(Mutex::new(LeaseState {
                held,
                added: HashSet::new(),
                released: false,
            })),
        }
    }

    /// The lease's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Protects `digests` (and, for manifests and indexes, what they
    /// reference) until the guard is dropped. Digests already added are
    /// skipped without touching the store.
    ///
    /// # Errors
    /// The store's [`HeldLease::add`] errors.
    pub fn add(&self, digests: &[Digest]) -> Result<(), LeaseError> {
        add_to(&self.state, digests)
    }

    /// Whether `digest` was added to this lease.
    pub fn contains(&self, digest: &Digest) -> bool {
        lock_state(&self.state).added.contains(digest)
    }

    /// `store` seen through this lease: see [`Leased`].
    pub fn protect<'a, S: ?Sized>(&'a self, store: &'a S) -> Leased<'a, S> {
        Leased { store, lease: self }
    }

    /// Ends the lease now, reporting an error (dropping the guard ends it
    /// too, ignoring errors).
    ///
    /// # Errors
    /// The store's [`HeldLease::release`] errors.
    pub fn release(self) -> Result<(), LeaseError> {
        self.end()
    }

    fn end(&self) -> Result<(), LeaseError> {
        let mut s = lock_state(&self.state);
        if s.released {
            return Ok(());
        }
        s.released = true;
        s.held.release()
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        // A lease left behind is stale once its holder is gone, and gc
        // removes it: nothing is lost by ignoring the error here.
        let _ = self.end();
    }
}

/// A store seen through a lease: every blob the caller asks about (`exists`,
/// `info`, a read) or commits is added to the lease first, so gc cannot
/// remove it between the check and the tag. Tags pass through unchanged.
#[derive(Debug)]
pub struct Leased<'a, S: ?Sized> {
    store: &'a S,
    lease: &'a LeaseGuard,
}

impl<S: ?Sized> Clone for Leased<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: ?Sized> Copy for Leased<'_, S> {}

impl<'a, S: ?Sized> Leased<'a, S> {
    /// The store itself.
    pub fn store(&self) -> &'a S {
        self.store
    }

    /// The lease.
    pub fn lease(&self) -> &'a LeaseGuard {
        self.lease
    }

    fn protect(&self, digest: &Digest) -> ContentResult<()> {
        self.lease
            .add(std::slice::from_ref(digest))
            .map_err(|source| ContentError::Lease {
                digest: digest.clone(),
                source: Box::new(source),
            })
    }
}

impl<S: Provider + ?Sized> Provider for Leased<'_, S> {
    fn reader(&self, digest: &Digest) -> ContentResult<Box<dyn Read + Send>> {
        self.protect(digest)?;
        self.store.reader(digest)
    }

    fn reader_for_unverified(
        &self,
        descriptor: &Descriptor,
    ) -> ContentResult<Box<dyn Read + Send>> {
        if let Ok(digest) = descriptor.checked_digest() {
            self.protect(&digest)?;
        }
        self.store.reader_for_unverified(descriptor)
    }

    fn verified_at_ingest(&self) -> bool {
        self.store.verified_at_ingest()
    }

    fn try_info(&self, digest: &Digest) -> ContentResult<Option<Info>> {
        self.protect(digest)?;
        self.store.try_info(digest)
    }
}

impl<S: Ingester + ?Sized> Ingester for Leased<'_, S> {
    fn writer_with(
        &self,
        reference: &str,
        algorithm: Algorithm,
    ) -> ContentResult<Box<dyn ContentWriter>> {
        let inner = self.store.writer_with(reference, algorithm)?;
        Ok(Box::new(LeasedWriter {
            inner,
            lease: self.lease.state.clone(),
        }))
    }

    fn abort(&self, reference: &str) -> ContentResult<()> {
        self.store.abort(reference)
    }

    fn ingests(&self) -> ContentResult<Vec<IngestStatus>> {
        self.store.ingests()
    }
}

impl<S: TagStore + ?Sized> TagStore for Leased<'_, S> {
    fn tags(&self) -> Result<Vec<Tagged>, TagError> {
        self.store.tags()
    }

    fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), TagError> {
        self.store.set_tag(name, descriptor)
    }

    fn set_tags(&self, tags: &[(&str, &Descriptor)]) -> Result<(), TagError> {
        self.store.set_tags(tags)
    }

    fn replace_tag(
        &self,
        name: &str,
        expected: Option<&Digest>,
        descriptor: &Descriptor,
    ) -> Result<bool, TagError> {
        self.store.replace_tag(name, expected, descriptor)
    }

    fn remove_tag(&self, name: &str) -> Result<bool, TagError> {
        self.store.remove_tag(name)
    }

    fn remove_tags(&self, names: &[&str]) -> Result<usize, TagError> {
        self.store.remove_tags(names)
    }

    fn index_entries(&self) -> Result<Vec<Descriptor>, TagError> {
        self.store.index_entries()
    }

    fn list_untagged(&self, descriptor: &Descriptor) -> Result<bool, TagError> {
        self.store.list_untagged(descriptor)
    }

    fn resolve_tag(&self, name: &str) -> Result<Descriptor, TagError> {
        self.store.resolve_tag(name)
    }
}

/// A writer of a [`Leased`] store: adds the blob to the lease before it commits.
struct LeasedWriter {
    inner: Box<dyn ContentWriter>,
    lease: Arc<Mutex<LeaseState>>,
}

impl std::fmt::Debug for LeasedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedWriter")
            .field("reference", &self.inner.reference())
            .finish()
    }
}

impl Write for LeasedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl crate::content::sealed::Writer for LeasedWriter {}

impl ContentWriter for LeasedWriter {
    fn reference(&self) -> &str {
        self.inner.reference()
    }

    fn offset(&self) -> u64 {
        self.inner.offset()
    }

    fn digest(&self) -> Digest {
        self.inner.digest()
    }

    fn truncate(&mut self, size: u64) -> ContentResult<()> {
        self.inner.truncate(size)
    }

    fn commit(
        self: Box<Self>,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> ContentResult<Digest> {
        // The digest the commit will publish: the expected one, or, when
        // none is given, the digest of what was written.
        let digest = expected.cloned().unwrap_or_else(|| self.inner.digest());
        if let Err(source) = add_to(&self.lease, std::slice::from_ref(&digest)) {
            return Err(ContentError::Lease {
                digest,
                source: Box::new(source),
            });
        }
        self.inner.commit(expected_size, expected)
    }
}

/// A held lease of an [`OciDir`]: `leases/<id>.held`, locked while it lives.
#[derive(Debug)]
struct OciHeldLease {
    store: OciDir,
    id: String,
    path: PathBuf,
    file: Option<File>,
    /// Bytes written to the file (or tried: a failed write counts whole).
    written: u64,
}

/// The suffix of held lease files.
const HELD: &str = ".held";

/// The most of a held lease file that is read.
const MAX_HELD_LEASE_BYTES: u64 = 64 << 20;

impl HeldLease for OciHeldLease {
    fn id(&self) -> &str {
        &self.id
    }

    fn add(&mut self, digests: &[Digest]) -> Result<(), LeaseError> {
        // Each batch starts on a new line: a write cut short before (a
        // full disk) leaves a partial line, which must not swallow the
        // first digest of this one (gc skips lines that do not parse).
        let mut lines = String::with_capacity(digests.len() * 72 + 1);
        lines.push('\n');
        for d in digests {
            lines.push_str(&d.to_string());
            lines.push('\n');
        }
        let lost = || LeaseError::Lost {
            id: self.id.clone(),
        };
        // Under the index lock: gc reads leases under it, so it sees either
        // none of these digests (and finishes before the caller's next
        // step) or all of them.
        // gc reads no more of the file than this: past it, an added
        // digest would not be protected.
        let len = lines.len() as u64;
        if self.written + len > MAX_HELD_LEASE_BYTES {
            return Err(LeaseError::Full {
                id: self.id.clone(),
                limit: MAX_HELD_LEASE_BYTES,
            });
        }
        let _lock = self.store.lock_index()?;
        let file = self.file.as_mut().ok_or_else(lost)?;
        self.written += len;
        if !self.store.dir.holds(file, &self.path) {
            return Err(lost());
        }
        seam::write_all(&*self.store.fs, Target::Lease, file, lines.as_bytes()).map_err(|source| {
            LeaseError::Io {
                op: "write",
                path: self.path.clone(),
                source,
            }
        })
    }

    fn release(&mut self) -> Result<(), LeaseError> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        // Removed before it is unlocked: a gc never finds it unlocked
        // while we live. (Either way the image is tagged by now.)
        let result = match self
            .store
            .fs
            .remove_file(Target::Lease, &self.store.dir, &self.path)
        {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LeaseError::Io {
                op: "remove",
                path: self.path.clone(),
                source: e,
            }),
            _ => Ok(()),
        };
        drop(file);
        result
    }
}
/// A held lease found in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldLeaseStatus {
    /// The lease's id.
    pub id: String,
    /// The digests it protects (while its holder lives).
    pub digests: BTreeSet<Digest>,
    /// Whether its holder is alive (the file is locked).
    pub live: bool,
}

impl OciDir {
    /// The entries of `leases/`, listed without following a symlink, with
    /// their paths and types (`None` when unknown): none when it does not
    /// exist; [`LeaseError::Io`] carrying a [`RefusedFile`](crate::fs::RefusedFile)
    /// when it is a symlink or not a directory.
    pub(crate) fn list_leases(
        &self,
    ) -> Result<Vec<(std::ffi::OsString, PathBuf, Option<rustix::fs::FileType>)>, LeaseError> {
        let dir = self.lease_dir();
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY;
        let fd = match self.dir.open_at(&dir, flags, rustix::fs::Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LeaseError::Io {
                    op: "open",
                    path: dir,
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd).map_err(|e| LeaseError::Io {
            op: "read directory",
            path: dir.clone(),
            source: e.into(),
        })? {
            let entry = entry.map_err(|e| LeaseError::Io {
                op: "read directory",
                path: dir.clone(),
                source: e.into(),
            })?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = std::os::unix::ffi::OsStrExt::from_bytes(name);
            let name = std::ffi::OsStr::to_owned(name);
            let file_type = rustix::fs::statat(&fd, &name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode));
            out.push((name.clone(), dir.join(&name), file_type));
        }
        Ok(out)
    }

    fn held_path(&self, id: &str) -> PathBuf {
        self.lease_dir().join(format!("{id}{HELD}"))
    }

    /// Every held lease, sorted by id, with whether its holder lives. With
    /// `remove_stale`, the stale ones (holder gone) are removed as they are
    /// found; the caller holds the index lock then.
    pub(crate) fn scan_held_leases(
        &self,
        remove_stale: bool,
    ) -> Result<Vec<HeldLeaseStatus>, LeaseError> {
        let mut out = Vec::new();
        for (name, path, file_type) in self.list_leases()? {
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(HELD)) else {
                continue;
            };
            // Only regular files with a valid id: anything else is not ours
            // and must not stop gc.
            if check_id(id).is_err() || file_type != Some(rustix::fs::FileType::RegularFile) {
                continue;
            }
            let mut file = match self.dir.open_regular(&path) {
                Ok((f, _)) => f,
                // Released meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(LeaseError::Io {
                        op: "open",
                        path,
                        source,
                    })
                }
            };
            let live = match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => false,
                Err(Errno::WOULDBLOCK) => true,
                Err(e) => {
                    return Err(LeaseError::Io {
                        op: "lock",
                        path,
                        source: e.into(),
                    })
                }
            };
            let mut digests = BTreeSet::new();
            if live {
                // A lease lists each blob of one image at most a few
                // times: 64 MiB is far beyond any real writer's.
                let mut text = String::new();
                (&mut file)
                    .take(MAX_HELD_LEASE_BYTES)
                    .read_to_string(&mut text)
                    .map_err(|source| LeaseError::Io {
                        op: "read",
                        path: path.clone(),
                        source,
                    })?;
                // A line being appended by a holder that does not take
                // the index lock (fsck does not either) may be cut short:
                // skip what does not parse.
                digests.extend(text.lines().filter_map(|l| l.parse::<Digest>().ok()));
            } else if remove_stale {
                match self.fs.remove_file(Target::Lease, &self.dir, &path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(LeaseError::Io {
                            op: "remove",
                            path,
                            source: e,
                        })
                    }
                    _ => {}
                }
            }
            out.push(HeldLeaseStatus {
                id: id.to_owned(),
                digests,
                live,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Every held lease (see [`Leases::begin_lease`]), with whether its
    /// holder is alive, sorted by id.
    ///
    /// # Errors
    /// I/O errors reading the directory or a lease.
    pub fn held_leases(&self) -> Result<Vec<HeldLeaseStatus>, LeaseError> {
        self.scan_held_leases(false)
    }
}

/// A new held lease id, unique to this process and moment.
fn held_id() -> String {
    // `tmp-PID-NANOS-N` from the ingest references: unique and a valid id.
    let unique = crate::content::unique_reference();
    format!("held-{}", unique.trim_start_matches("tmp-"))
}

impl Leases for OciDir {
    fn begin_lease(&self) -> Result<LeaseGuard, LeaseError> {
        let id = held_id();
        let dir = self.lease_dir();
        let path = self.held_path(&id);
        let io_err = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| LeaseError::Io { op, path, source }
        };
        // Created and locked under a temp name no scanner looks at, then
        // renamed into place, under the index lock: neither gc nor fsck
        // (which takes no lock) ever finds it unlocked (and stale) before
        // its holder locked it, nor holds its lock while it is taken.
        // gc removes the temp file of a crash here (`clean_temp_files`).
        let tmp = dir.join(format!(".{id}{HELD}.tmp-{}", std::process::id()));
        let _lock = self.lock_index()?;
        self.fs
            .create_dir_all(Target::Lease, &self.dir, &dir)
            .map_err(io_err("create directory", &dir))?;
        let file = self
            .fs
            .open_temp(Target::Lease, &self.dir, &tmp, true)
            .map_err(io_err("create", &tmp))?;
        let published = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| LeaseError::Io {
                op: "lock",
                path: tmp.clone(),
                source: e.into(),
            })
            .and_then(|()| {
                self.fs
                    .rename(Target::Lease, &self.dir, &tmp, &path)
                    .map_err(io_err("rename", &tmp))
            });
        if let Err(e) = published {
            let _ = self.fs.remove_file(Target::Lease, &self.dir, &tmp);
            return Err(e);
        }
        Ok(LeaseGuard::new(Box::new(OciHeldLease {
            store: self.clone(),
            id,
            path,
            file: Some(file),
            written: 0,
        })))
    }

    fn leased_digests(&self) -> Result<BTreeSet<Digest>, LeaseError> {
        let now = SystemTime::now();
        let mut out: BTreeSet<Digest> = self
            .leases()?
            .into_iter()
            .filter(|l| !l.is_expired(now))
            .flat_map(|l| l.digests)
            .collect();
        for held in self.held_leases()? {
            if held.live {
                out.extend(held.digests);
            }
        }
        Ok(out)
    }
}

macro_rules! forward_leases {
    ($($ptr:ty),*) => {$(
        impl<T: Leases + ?Sized> Leases for $ptr {
            fn begin_lease(&self) -> Result<LeaseGuard, LeaseError> {
                (**self).begin_lease()
            }
            fn leased_digests(&self) -> Result<BTreeSet<Digest>, LeaseError> {
                (**self).leased_digests()
            }
        }
    )*};
}

forward_leases!(&T, Box<T>, Arc<T>);

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
