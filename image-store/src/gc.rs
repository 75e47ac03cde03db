//! Garbage collection: mark from the roots, sweep the rest.
//!
//! The roots are every descriptor of `index.json` (tagged or not) and
//! every blob named by a live [lease](crate::lease). Marking follows
//! indexes to their manifests, manifests to their config and layers, and
//! the OCI 1.1 `subject` link both ways: a manifest keeps its subject, and
//! a referrer (a signature, an SBOM) whose subject is kept is kept too.
//!
//! # Concurrency
//! gc holds the store's index lock from reading the leases to the end of
//! the sweep; tagging checks, under the same lock, that what it tags is
//! present, so a tag written after gc never points at a swept blob. Every
//! writer holds a [lease](crate::lease::Leases) from its first blob until
//! it has tagged, adding each blob (under the same lock) before it checks
//! that the blob exists and before it commits it: so gc at any grace period
//! is safe beside writers. The grace period is a second line of defence,
//! for writers that take no lease: a blob whose file is younger than
//! [`GcOptions::grace`] is never swept (an ingest that finds its blob
//! already present refreshes that time).
//!
//! A held lease or an ingest is locked (`flock`) by its writer for as long
//! as the writer lives. One that is not locked was left by a writer that
//! died or failed: it is stale at once, and gc removes it (ingests after
//! [`GcOptions::ingest_max_age`], zero by default). So is junk in
//! `ingest/` that no writer makes (an entry that is a link or a file, a
//! `data` that is not a regular file): no writer can hold it, and gc
//! removes it without following or opening it rather than stopping on it
//! forever. The store's own directories (`ingest`, `leases`) are listed
//! without following a symlink; one that is a symlink is refused.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use image_core::{
    Cancelled, Classify, Descriptor, DescriptorExt, Digest, Document, ErrorKind, Tracker,
};

use crate::content::{ContentError, Manager, Provider};
use crate::fs::Target;
use crate::lease::LeaseError;
use crate::oci_dir::{list_dir, OciDir};
use crate::refs::{self, MAX_DOCUMENT_SIZE};
use crate::tags::TagError;

/// Errors of garbage collection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    /// Reading or deleting blobs failed.
    #[error("gc")]
    Content(#[from] ContentError),
    /// Reading `index.json` or taking the lock failed.
    #[error("gc")]
    Index(#[from] TagError),
    /// Reading or removing leases failed.
    #[error("gc")]
    Lease(#[from] LeaseError),
    /// Removing a file failed.
    #[error("gc: remove {}", path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The collection's interrupt was set; what was removed before stays
    /// removed (it was unreachable), the rest is left for the next run.
    #[error("gc stopped")]
    Cancelled(#[from] Cancelled),
}

impl Classify for GcError {
    fn kind(&self) -> ErrorKind {
        match self {
            GcError::Content(e) => e.kind(),
            GcError::Index(e) => e.kind(),
            GcError::Lease(e) => e.kind(),
            GcError::Remove { source, .. } => Classify::kind(source),
            GcError::Cancelled(e) => e.kind(),
        }
    }
}

/// The default grace period of [`GcOptions`]: ten seconds.
///
/// Every writer of this family holds a lease from its first blob until it
/// has tagged, so gc is safe beside them at any grace: the grace only
/// covers tools that write into the layout without a lease (their blobs
/// land a moment before their `index.json` does). Ten seconds covers that
/// moment for a local writer and still frees at once, as `docker rmi` and
/// `docker image prune` do, what an image untagged a while after it was
/// made no longer needs. (It was ten minutes, so `rmi` then `gc` freed
/// nothing of an image made in the last ten minutes.)
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Knobs of a collection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GcOptions {
    /// Unreferenced blobs younger than this are kept (default
    /// [`DEFAULT_GRACE`], ten seconds).
    pub grace: Duration,
    /// Ingests no writer holds (their writer died or dropped them) and not
    /// written to for this long are removed (default zero: at once; a
    /// caller that drops writers to resume them later sets it).
    pub ingest_max_age: Duration,
    /// Report what would be removed without removing it.
    pub dry_run: bool,
    /// Reports the sweep as one item, `"sweep"`, whose units are blobs
    /// (total: the blobs in the store; done: the blobs looked at), and
    /// stops between two blobs once its interrupt is set.
    pub tracker: Tracker,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: DEFAULT_GRACE,
            ingest_max_age: Duration::ZERO,
            dry_run: false,
            tracker: Tracker::default(),
        }
    }
}

impl GcOptions {
    /// Sets the grace period.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Sets the age after which abandoned ingests are removed.
    pub fn ingest_max_age(mut self, age: Duration) -> Self {
        self.ingest_max_age = age;
        self
    }

    /// Only report.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Sets [`tracker`](GcOptions::tracker), under the setter name every
    /// options type of the family uses.
    pub fn with_tracker(mut self, tracker: Tracker) -> Self {
        self.tracker = tracker;
        self
    }
}

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Blobs reachable from a root or a lease.
    pub marked: usize,
    /// Blobs removed (or that would be, in a dry run).
    pub removed: Vec<Digest>,
    /// Their bytes.
    pub freed_bytes: u64,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub kept_recent: usize,
    /// Abandoned ingests (no writer holds them) removed (or that would be).
    pub ingests_removed: usize,
    /// Their bytes.
    pub ingest_bytes: u64,
    /// Expired leases removed.
    pub leases_expired: usize,
    /// Held leases whose holder is gone, removed (or that would be).
    pub leases_stale: usize,
}

/// The blobs reachable from `roots` and `leased` (see the module
/// documentation for the links followed), in any store.
///
/// # Errors
/// I/O errors of the store.
pub fn reachable<S: Provider + Manager + ?Sized>(
    store: &S,
    roots: &[Descriptor],
    leased: &[Digest],
) -> Result<HashSet<Digest>, ContentError> {
    let mut marked = HashSet::new();
    let mut mark = |_: &Digest, _: bool| {};
    for root in roots {
        refs::walk_from(store, root, &mut marked, &mut mark)?;
    }
    for digest in leased {
        // Marked already (reached, or named by another lease): walked
        // once, however many leases name it.
        if marked.contains(digest) {
            continue;
        }
        let root = match sniff_document(store, digest)? {
            Some(doc) => doc.descriptor(),
            None => {
                marked.insert(digest.clone());
                continue;
            }
        };
        refs::walk_from(store, &root, &mut marked, &mut mark)?;
    }
    // Referrers: unmarked manifests whose subject is marked, to a fixpoint.
    let mut candidates: Vec<(Digest, Document)> = Vec::new();
    for info in store.list()? {
        if marked.contains(&info.digest) || info.size > MAX_DOCUMENT_SIZE {
            continue;
        }
        if let Some(doc) = sniff_document(store, &info.digest)? {
            if subject(&doc).is_some() {
                candidates.push((info.digest, doc));
            }
        }
    }
    loop {
        let mut changed = false;
        let mut rest = Vec::new();
        for (digest, doc) in candidates {
            let kept = subject(&doc).is_some_and(|s| marked.contains(&s));
            if kept && !marked.contains(&digest) {
                refs::walk_from(store, &doc.descriptor(), &mut marked, &mut mark)?;
                changed = true;
            } else if !kept {
                rest.push((digest, doc));
            }
        }
        candidates = rest;
        if !changed {
            break;
        }
    }
    Ok(marked)
}

fn subject(doc: &Document) -> Option<Digest> {
    let s = match doc {
        Document::Manifest(m) => m.subject().cloned(),
        Document::Index(i) => i.inner().subject().clone(),
    }?;
    s.checked_digest().ok()
}

/// Reads a blob as a manifest or index when it looks like one.
fn sniff_document<S: Provider + ?Sized>(
    store: &S,
    digest: &Digest,
) -> Result<Option<Document>, ContentError> {
    let Some(info) = store.try_info(digest)? else {
        return Ok(None);
    };
    if info.size > MAX_DOCUMENT_SIZE || info.size < 2 {
        return Ok(None);
    }
    let mut head = [0u8; 1];
    let mut r = store.reader(digest)?;
    if io::Read::read(&mut r, &mut head).unwrap_or(0) == 0 || head[0] != b'{' {
        return Ok(None);
    }
    match store.read_blob_to_vec(digest, MAX_DOCUMENT_SIZE) {
        Ok(bytes) => Ok(Document::from_bytes(bytes, None)
            .ok()
            .map(|doc| doc.with_algorithm(digest.algorithm()))),
        Err(ContentError::NotFound { .. } | ContentError::Read { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl OciDir {
    /// Collects garbage: removes every blob not reachable from `index.json`
    /// or a live lease and older than the grace period, abandoned ingests,
    /// expired leases and held leases whose holder is gone.
    ///
    /// # Errors
    /// [`GcError`]; what was removed before the error stays removed, which
    /// is safe because only unreachable blobs are removed.
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport, GcError> {
        let now = SystemTime::now();
        let mut report = GcReport::default();
        let tracker = &options.tracker;
        tracker.check()?;
        let _lock = self.lock_index()?;
        let index = self.read_index()?;
        let mut leased = Vec::new();
        for lease in self.leases()? {
            if lease.is_expired(now) {
                if !options.dry_run {
                    self.delete_lease(&lease.id)?;
                }
                report.leases_expired += 1;
            } else {
                leased.extend(lease.digests);
            }
        }
        for held in self.scan_held_leases(!options.dry_run)? {
            if held.live {
                leased.extend(held.digests);
            } else {
                report.leases_stale += 1;
            }
        }
        let marked = reachable(self, index.manifests(), &leased)?;
        report.marked = marked.len();
        let blobs = self.list()?;
        let progress = tracker.progress();
        progress.item_started("sweep", Some(blobs.len() as u64));
        let total = blobs.len() as u64;
        for (n, info) in blobs.into_iter().enumerate() {
            // `n` blobs are looked at; the flag is seen before the next one.
            progress.item_progress("sweep", n as u64);
            tracker.check()?;
            if marked.contains(&info.digest) {
                continue;
            }
            // Re-stat just before deciding: an ingest may have refreshed it.
            let Some(info) = self.try_info(&info.digest)? else {
                continue;
            };
            let young = info
                .created
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() < options.grace);
            if young {
                report.kept_recent += 1;
                continue;
            }
            if !options.dry_run {
                match self.delete(&info.digest) {
                    Ok(()) | Err(ContentError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            report.freed_bytes += info.size;
            report.removed.push(info.digest);
        }
        progress.item_progress("sweep", total);
        progress.item_finished("sweep");
        tracker.check()?;
        let (bytes, count) = self.clean_ingests(options.ingest_max_age, !options.dry_run)?;
        report.ingest_bytes = bytes;
        report.ingests_removed = count;
        if !options.dry_run {
            self.clean_temp_files()?;
        }
        Ok(report)
    }

    /// Removes temp files of atomic writes (`.NAME.tmp-PID`) left by a
    /// crash, at once: every atomic write of the store (`index.json`,
    /// `oci-layout`, leases, a new held lease) makes and renames its temp
    /// file under the index lock, which the caller holds, so a temp file
    /// found here has no live writer. What is not a file or a link (a
    /// directory of that name is not the store's) is left alone.
    fn clean_temp_files(&self) -> Result<(), GcError> {
        for dir in [self.root.clone(), self.root.join("leases")] {
            // Listed without following a symlink; one in place of `leases`
            // was refused by the lease scan already.
            let Ok(Some(fd)) = self.open_listing(&dir) else {
                continue;
            };
            for (name, path) in list_dir(&fd, &dir)? {
                let Some(name) = name.to_str() else { continue };
                if !(name.starts_with('.') && name.contains(".tmp-")) {
                    continue;
                }
                let file = rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| {
                        matches!(
                            rustix::fs::FileType::from_raw_mode(st.st_mode),
                            rustix::fs::FileType::RegularFile | rustix::fs::FileType::Symlink
                        )
                    });
                if file {
                    match self.fs.remove_file(Target::Layout, &self.dir, &path) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            return Err(GcError::Remove { path, source: e })
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}
