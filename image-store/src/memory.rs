//! An in-memory content store, for tests and embedders.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Cursor, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use image_core::digest::Hasher;
use image_core::{Algorithm, Digest, VerifyingReader};

use crate::content::{
    check_commit_algorithm, check_labels, check_reference, verify_commit, ContentError,
    ContentWriter, Info, IngestStatus, Ingester, Labels, Manager, Provider, Result,
};
use crate::lease::{HeldLease, LeaseError, LeaseGuard, Leases};
use crate::tags::{TagError, TagStore, Tagged};

#[derive(Default)]
struct Inner {
    blobs: HashMap<Digest, (Arc<[u8]>, SystemTime)>,
    ingests: HashMap<String, (Vec<u8>, SystemTime)>,
    open: HashSet<String>,
    /// Held leases by id; a lease lives as long as its guard.
    leases: HashMap<String, HashSet<Digest>>,
    tags: BTreeMap<String, image_core::Descriptor>,
    labels: HashMap<Digest, Labels>,
}

/// A content store (and tag store) held in memory.
///
/// Cloning it gives another handle to the same store. Blobs are verified
/// when read like on disk, so a test can corrupt one with `corrupt` (the
/// `testing` feature) and see the error.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("MemoryStore")
            .field("blobs", &g.blobs.len())
            .field("ingests", &g.ingests.len())
            .field("tags", &g.tags.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is a single map operation), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the bytes stored under `digest` without re-hashing them,
    /// to test corruption handling. Returns whether the blob existed.
    ///
    /// A test double (the `testing` feature): not for production use.
    #[cfg(feature = "testing")]
    pub fn corrupt(&self, digest: &Digest, bytes: &[u8]) -> bool {
        let mut g = self.lock();
        match g.blobs.get_mut(digest) {
            Some(entry) => {
                entry.0 = Arc::from(bytes);
                true
            }
            None => false,
        }
    }
}

impl Provider for MemoryStore {
    /// Every blob went through a writer's commit, which checks its digest
    /// and size.
    fn verified_at_ingest(&self) -> bool {
        true
    }

    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let g = self.lock();
        let (bytes, _) = g.blobs.get(digest).ok_or_else(|| ContentError::NotFound {
            digest: digest.clone(),
        })?;
        let cursor = Cursor::new(ArcBytes(bytes.clone()));
        Ok(Box::new(VerifyingReader::new(cursor, digest.clone(), None)))
    }

    fn try_info(&self, digest: &Digest) -> Result<Option<Info>> {
        let g = self.lock();
        Ok(g.blobs.get(digest).map(|(b, t)| {
            Info::new(digest.clone(), b.len() as u64, Some(*t))
                .with_labels(g.labels.get(digest).cloned().unwrap_or_default())
        }))
    }
}

struct ArcBytes(Arc<[u8]>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Ingester for MemoryStore {
    fn writer_with(&self, reference: &str, algorithm: Algorithm) -> Result<Box<dyn ContentWriter>> {
        check_reference(reference)?;
        let mut g = self.lock();
        if !g.open.insert(reference.to_owned()) {
            return Err(ContentError::Locked {
                reference: reference.to_owned(),
            });
        }
        let data = g
            .ingests
            .remove(reference)
            .map(|(d, _)| d)
            .unwrap_or_default();
        let mut hasher = algorithm.hasher();
        hasher.update(&data);
        Ok(Box::new(MemoryWriter {
            store: self.clone(),
            reference: reference.to_owned(),
            algorithm,
            data: Some(data),
            hasher,
        }))
    }

    fn abort(&self, reference: &str) -> Result<()> {
        let mut g = self.lock();
        if g.open.contains(reference) {
            return Err(ContentError::Locked {
                reference: reference.to_owned(),
            });
        }
        g.ingests.remove(reference);
        Ok(())
    }

    fn ingests(&self) -> Result<Vec<IngestStatus>> {
        let g = self.lock();
        let mut out: Vec<IngestStatus> = g
            .ingests
            .iter()
            .map(|(r, (d, t))| IngestStatus {
                reference: r.clone(),
                offset: d.len() as u64,
                updated: Some(*t),
            })
            .collect();
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }
}

impl Manager for MemoryStore {
    fn list(&self) -> Result<Vec<Info>> {
        let g = self.lock();
        let mut out: Vec<Info> = g
            .blobs
            .iter()
            .map(|(d, (b, t))| Info::new(d.clone(), b.len() as u64, Some(*t)))
            .collect();
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        let mut g = self.lock();
        g.labels.remove(digest);
        match g.blobs.remove(digest) {
            Some(_) => Ok(()),
            None => Err(ContentError::NotFound {
                digest: digest.clone(),
            }),
        }
    }

    fn set_labels(&self, digest: &Digest, labels: Labels) -> Result<Info> {
        check_labels(&labels)?;
        let mut g = self.lock();
        let Some((bytes, created)) = g.blobs.get(digest) else {
            return Err(ContentError::NotFound {
                digest: digest.clone(),
            });
        };
        let info = Info::new(digest.clone(), bytes.len() as u64, Some(*created))
            .with_labels(labels.clone());
        if labels.is_empty() {
            g.labels.remove(digest);
        } else {
            g.labels.insert(digest.clone(), labels);
        }
        Ok(info)
    }
}

impl TagStore for MemoryStore {
    fn tags(&self) -> std::result::Result<Vec<Tagged>, TagError> {
        let g = self.lock();
        Ok(g.tags
            .iter()
            .map(|(name, d)| Tagged::new(name.clone(), d.clone()))
            .collect())
    }

    fn set_tag(
        &self,
        name: &str,
        descriptor: &image_core::Descriptor,
    ) -> std::result::Result<(), TagError> {
        let name = crate::tags::normalize_name(name)?;
        self.lock().tags.insert(name, descriptor.clone());
        Ok(())
    }

    fn replace_tag(
        &self,
        name: &str,
        expected: Option<&Digest>,
        descriptor: &image_core::Descriptor,
    ) -> std::result::Result<bool, TagError> {
        let name = crate::tags::normalize_name(name)?;
        let mut g = self.lock();
        if !crate::tags::same_digest(g.tags.get(&name), expected) {
            return Ok(false);
        }
        g.tags.insert(name, descriptor.clone());
        Ok(true)
    }

    fn remove_tag(&self, name: &str) -> std::result::Result<bool, TagError> {
        let name = crate::tags::normalize_name(name)?;
        Ok(self.lock().tags.remove(&name).is_some())
    }
}

impl Leases for MemoryStore {
    fn begin_lease(&self) -> std::result::Result<LeaseGuard, LeaseError> {
        let id = format!(
            "held-{}",
            crate::content::unique_reference().trim_start_matches("tmp-")
        );
        self.lock().leases.insert(id.clone(), HashSet::new());
        Ok(LeaseGuard::new(Box::new(MemoryLease {
            store: self.clone(),
            id,
        })))
    }

    fn leased_digests(&self) -> std::result::Result<BTreeSet<Digest>, LeaseError> {
        Ok(self.lock().leases.values().flatten().cloned().collect())
    }
}

/// A held lease of a [`MemoryStore`].
#[derive(Debug)]
struct MemoryLease {
    store: MemoryStore,
    id: String,
}

impl HeldLease for MemoryLease {
    fn id(&self) -> &str {
        &self.id
    }

    fn add(&mut self, digests: &[Digest]) -> std::result::Result<(), LeaseError> {
        let mut g = self.store.lock();
        let set = g.leases.get_mut(&self.id).ok_or_else(|| LeaseError::Lost {
            id: self.id.clone(),
        })?;
        set.extend(digests.iter().cloned());
        Ok(())
    }

    fn release(&mut self) -> std::result::Result<(), LeaseError> {
        self.store.lock().leases.remove(&self.id);
        Ok(())
    }
}

/// The writer of [`MemoryStore`].
struct MemoryWriter {
    store: MemoryStore,
    reference: String,
    algorithm: Algorithm,
    data: Option<Vec<u8>>,
    hasher: Hasher,
}

impl MemoryWriter {
    fn data(&mut self) -> &mut Vec<u8> {
        self.data.get_or_insert_with(Vec::new)
    }
}

impl Write for MemoryWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data().extend_from_slice(buf);
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::content::sealed::Writer for MemoryWriter {}

impl ContentWriter for MemoryWriter {
    fn reference(&self) -> &str {
        &self.reference
    }

    fn offset(&self) -> u64 {
        self.data.as_ref().map_or(0, |d| d.len() as u64)
    }

    fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    fn truncate(&mut self, size: u64) -> Result<()> {
        let len = self.offset();
        if size > len {
            return Err(ContentError::io(
                "truncate",
                format!("<memory ingest {}>", self.reference),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "size beyond the ingest's offset",
                ),
            ));
        }
        let algorithm = self.algorithm;
        let data = self.data();
        data.truncate(size as usize);
        let mut hasher = algorithm.hasher();
        hasher.update(data);
        self.hasher = hasher;
        Ok(())
    }

    fn commit(
        mut self: Box<Self>,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Digest> {
        check_commit_algorithm(&self.reference, self.algorithm, expected)?;
        let data = self.data.take().unwrap_or_default();
        let found = self.hasher.clone().finish();
        let check = verify_commit(
            &self.reference,
            expected_size,
            expected,
            &found,
            data.len() as u64,
        );
        let mut g = self.store.lock();
        g.open.remove(&self.reference);
        check?;
        g.blobs
            .entry(found.clone())
            .or_insert_with(|| (Arc::from(data), SystemTime::now()));
        Ok(found)
    }
}

impl Drop for MemoryWriter {
    fn drop(&mut self) {
        let data = self.data.take();
        let mut g = self.store.lock();
        g.open.remove(&self.reference);
        if let Some(data) = data {
            g.ingests
                .insert(self.reference.clone(), (data, SystemTime::now()));
        }
    }
}
