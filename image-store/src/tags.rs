//! Tags: names mapped to manifest or index descriptors.
//!
//! In an [`OciDir`] the tags are the entries of `index.json` carrying the
//! `org.opencontainers.image.ref.name` annotation, so skopeo and umoci see
//! the same names. This store writes the full normalised reference
//! (`docker.io/library/busybox:latest`); when reading it also accepts the
//! short names peers write (`latest`, `busybox:1.0`): a name resolves to an
//! entry whose annotation is the same string, or else normalises to the
//! same reference.
//!
//! # Digest references
//!
//! A tag never holds a digest: [`TagStore::set_tag`] refuses
//! `name@sha256:...` (as `docker tag` does), and lookups never compare a
//! digest reference with stored strings. Otherwise an archive or layout
//! could tag its own content `busybox@sha256:<the real image's digest>`
//! and be run in its place. A digest reference is resolved by content
//! ([`resolve_reference`]): as in Docker's containerd image store, it
//! names the image of the same repository (`domain/path`; a tag given with
//! the digest is ignored) whose manifest or index has that digest, that is
//! a tag of that repository points at it, or at an index listing it. An
//! `index.json` entry whose name holds a digest (written by an older
//! version or another tool) is not a tag: it is not listed or matched, it
//! stays a root for gc, and [`TagStore::remove_tag`] removes it by its
//! exact name.
//!
//! # Many tags
//!
//! [`TagStore::set_tags`] sets a batch of tags with one `index.json`
//! rewrite and one closure check per distinct blob, so loading an archive
//! with n names costs O(n), not n rewrites of a growing file.
//!
//! `index.json` is replaced atomically (temp file, fsync, rename, fsync of
//! the directory) under an exclusive `flock` on `index.json.lock`, so
//! concurrent updates from threads and processes never lose one another.
//! Entries without the annotation (untagged roots) are kept as they are.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;

use image_core::oci_spec::image::{ImageIndex, ImageIndexBuilder, MediaType as OciMediaType};
use image_core::reference::{Reference, ReferenceError};
use image_core::{Descriptor, DescriptorExt, Digest, Index, ParseError};
use rustix::fs::FlockOperation;

use crate::content::{ContentError, Provider};
pub use crate::error::TagError;
use crate::fs::Target;
use crate::oci_dir::{write_file_atomic, OciDir};

/// The annotation naming a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A tag and the descriptor it names.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Tagged {
    /// The name as stored (normalised when this store wrote it).
    pub name: String,
    /// The descriptor of the manifest or index.
    pub descriptor: Descriptor,
}

impl Tagged {
    /// Builds a `Tagged`.
    pub fn new(name: String, descriptor: Descriptor) -> Tagged {
        Tagged { name, descriptor }
    }
}

/// Normalises a tag name to the full reference form
/// (`busybox` -> `docker.io/library/busybox:latest`).
///
/// # Errors
/// [`TagError::DigestInName`] when the name holds a digest;
/// [`TagError::InvalidName`] when it is not a reference.
pub fn normalize_name(name: &str) -> Result<String, TagError> {
    Reference::parse_tag(name)
        .map(|r| r.to_string())
        .map_err(|e| invalid_name(name, e))
}

fn clip_name(name: &str) -> String {
    name.chars().take(200).collect()
}

fn invalid_name(name: &str, e: ReferenceError) -> TagError {
    match e {
        ReferenceError::DigestInTag { .. } => TagError::DigestInName {
            name: clip_name(name),
        },
        source => TagError::InvalidName {
            name: clip_name(name),
            source,
        },
    }
}

/// Whether a stored or given name is a digest reference (and so no tag).
fn holds_digest(name: &str) -> bool {
    name.contains('@')
}

/// Whether the stored name `stored` designates the same image as `wanted`
/// (a tag name, never a digest reference).
pub(crate) fn name_matches(stored: &str, wanted: &str, wanted_norm: Option<&str>) -> bool {
    if holds_digest(stored) || holds_digest(wanted) {
        return false;
    }
    if stored == wanted {
        return true;
    }
    match (wanted_norm, normalize_name(stored)) {
        (Some(w), Ok(s)) => s == w,
        _ => false,
    }
}

/// A store of tags: names mapped to descriptors.
pub trait TagStore {
    /// Every tag, sorted by name. Stored names holding a digest are not
    /// tags and are left out.
    ///
    /// # Errors
    /// I/O and parse errors of the underlying storage.
    fn tags(&self) -> Result<Vec<Tagged>, TagError>;

    /// Points the tag `name` (normalised) at `descriptor`, replacing the
    /// entries that had the same name.
    ///
    /// # Errors
    /// [`TagError::DigestInName`] when `name` holds a digest;
    /// [`TagError::InvalidName`]; [`TagError::Dangling`] when the on-disk
    /// store does not hold the descriptor's blob; I/O errors.
    fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), TagError>;

    /// Sets several tags, as [`set_tag`](TagStore::set_tag) each in turn
    /// (a later name replaces an earlier equal one), but every name is
    /// checked first, so one bad name sets none. [`OciDir`] writes
    /// `index.json` once for the whole batch.
    ///
    /// # Errors
    /// As [`set_tag`](TagStore::set_tag).
    fn set_tags(&self, tags: &[(&str, &Descriptor)]) -> Result<(), TagError> {
        for (name, _) in tags {
            normalize_name(name)?;
        }
        for (name, descriptor) in tags {
            self.set_tag(name, descriptor)?;
        }
        Ok(())
    }

    /// Points the tag `name` at `descriptor` only if it points at
    /// `expected` now (`None`: only if there is no such tag); returns
    /// whether it did. This is the compare-and-set a read-modify-write of
    /// a tag (a list of referrers) retries on: [`OciDir`] compares and
    /// writes under its `index.json` lock, so it holds across processes;
    /// `MemoryStore` under its mutex. The provided form compares, then
    /// sets, and is only as atomic as the store's own tagging.
    ///
    /// # Errors
    /// As [`set_tag`](TagStore::set_tag).
    fn replace_tag(
        &self,
        name: &str,
        expected: Option<&Digest>,
        descriptor: &Descriptor,
    ) -> Result<bool, TagError> {
        if !points_at(self, name, expected)? {
            return Ok(false);
        }
        self.set_tag(name, descriptor)?;
        Ok(true)
    }

    /// Every entry of the store's top-level index (an OCI layout's
    /// `index.json`), tagged or not, in its order: where a layout lists
    /// the manifests it holds untagged (oras lists referrers so). The
    /// provided form gives the tags' descriptors.
    ///
    /// # Errors
    /// As [`tags`](TagStore::tags).
    fn index_entries(&self) -> Result<Vec<Descriptor>, TagError> {
        Ok(self.tags()?.into_iter().map(|t| t.descriptor).collect())
    }

    /// Lists `descriptor` in the store's top-level index without a name,
    /// as an OCI layout lists a manifest it holds untagged (oras keeps
    /// referrers so), unless an unnamed entry with its digest is there;
    /// returns whether it added one. Its blobs must be in the store.
    /// [`OciDir`] does (under its lock, its closure checked as a tag's); the
    /// provided form refuses ([`TagError::Unsupported`]).
    ///
    /// # Errors
    /// [`TagError::Dangling`] for a blob missing; I/O errors.
    fn list_untagged(&self, descriptor: &Descriptor) -> Result<bool, TagError> {
        Err(TagError::Unsupported {
            what: format!("an untagged entry for {}", descriptor.digest()),
        })
    }

    /// Removes the tag `name` (every entry that resolves to it); returns
    /// whether there was one.
    ///
    /// # Errors
    /// [`TagError::InvalidName`], I/O errors.
    fn remove_tag(&self, name: &str) -> Result<bool, TagError>;

    /// Removes several tags, as [`remove_tag`](TagStore::remove_tag) each
    /// in turn, but every name is checked first, so one bad name removes
    /// none; returns how many of the names were tags. [`OciDir`] writes
    /// `index.json` once for the whole batch (and not at all when none of
    /// the names is a tag).
    ///
    /// # Errors
    /// [`TagError::DigestInName`] and [`TagError::InvalidName`] for a name
    /// that is no tag name; I/O errors.
    fn remove_tags(&self, names: &[&str]) -> Result<usize, TagError> {
        for name in names {
            normalize_name(name)?;
        }
        let mut removed = 0;
        for name in names {
            removed += usize::from(self.remove_tag(name)?);
        }
        Ok(removed)
    }

    /// The descriptor the tag `name` points at: the entry stored under the
    /// same string, or else one whose name normalises to the same reference.
    /// A name holding a digest is no tag: resolve it with
    /// [`resolve_reference`].
    ///
    /// # Errors
    /// [`TagError::DigestInName`]; [`TagError::NotFound`]; I/O errors.
    fn resolve_tag(&self, name: &str) -> Result<Descriptor, TagError> {
        if holds_digest(name) {
            return Err(TagError::DigestInName {
                name: clip_name(name),
            });
        }
        let tags = self.tags()?;
        if let Some(t) = tags.iter().find(|t| t.name == name) {
            return Ok(t.descriptor.clone());
        }
        // A name no tag has exactly and that is no reference is not "not
        // found" but invalid (a stored name is matched as it is above, so
        // names another tool wrote still resolve).
        let norm = normalize_name(name)?;
        tags.into_iter()
            .find(|t| name_matches(&t.name, name, Some(&norm)))
            .map(|t| t.descriptor)
            .ok_or_else(|| TagError::NotFound {
                name: name.to_owned(),
            })
    }
}

/// Whether the tag `name` in `store` points at `expected` (`None`: is no
/// tag), digests compared as written.
fn points_at<S: TagStore + ?Sized>(
    store: &S,
    name: &str,
    expected: Option<&Digest>,
) -> Result<bool, TagError> {
    let current = match store.resolve_tag(name) {
        Ok(d) => Some(d),
        Err(TagError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    Ok(same_digest(current.as_ref(), expected))
}

/// Whether `current` (a tag's descriptor, if any) has the digest
/// `expected` (`None`: there is no descriptor).
pub(crate) fn same_digest(current: Option<&Descriptor>, expected: Option<&Digest>) -> bool {
    match (current, expected) {
        (None, None) => true,
        (Some(d), Some(e)) => d.digest().to_string() == e.to_string(),
        _ => false,
    }
}

/// Resolves a user-given image reference to the descriptor of its manifest
/// or index: the one resolver behind every command that takes an image
/// name.
///
/// - Without a digest, `name` is a tag ([`TagStore::resolve_tag`]).
/// - With a digest (`name[:tag]@sha256:...`), it is resolved by content,
///   never as a string: to a manifest or index with that digest that a tag
///   of the same repository points at, or that an index such a tag points
///   at lists (a platform's manifest); the tag part is ignored, as Docker
///   does. An image with the digest but no tag in that repository is not
///   found, as in Docker's containerd store (`busybox@X` does not name
///   `asdf@X`). The content is then the content the digest names, whatever
///   names an archive brought along.
///
/// Each index is read at most once, and no larger than
/// [`MAX_DOCUMENT_SIZE`](crate::refs::MAX_DOCUMENT_SIZE).
///
/// # Errors
/// [`TagError::InvalidName`] when `name` is not a reference;
/// [`TagError::NotFound`] or [`TagError::DigestNotFound`]; store errors.
pub fn resolve_reference<S: Provider + TagStore + ?Sized>(
    store: &S,
    name: &str,
) -> Result<Descriptor, TagError> {
    if !holds_digest(name) {
        return store.resolve_tag(name);
    }
    let wanted = Reference::parse_name(name).map_err(|e| invalid_name(name, e))?;
    let (Some(digest), repository) = (wanted.digest(), wanted.name()) else {
        return Err(TagError::DigestInName {
            name: clip_name(name),
        });
    };
    let roots: Vec<Descriptor> = store
        .tags()?
        .into_iter()
        .filter(|t| Reference::parse_tag(&t.name).is_ok_and(|r| r.name() == repository))
        .map(|t| t.descriptor)
        .collect();
    crate::refs::find_document(store, &roots, digest)?.ok_or_else(|| TagError::DigestNotFound {
        repository,
        digest: digest.clone(),
    })
}

/// An exclusive `flock` on `index.json.lock`, released on drop.
#[derive(Debug)]
pub struct IndexLock {
    _file: File,
}

impl OciDir {
    /// Takes the exclusive lock that serialises `index.json` updates and gc,
    /// waiting for it.
    ///
    /// # Errors
    /// I/O errors opening or locking the lock file.
    pub fn lock_index(&self) -> Result<IndexLock, TagError> {
        let path = self.lock_path();
        let file = self
            .dir
            .open_or_create_regular(&path, rustix::fs::OFlags::RDWR)
            .map(File::from)
            .map_err(|source| TagError::Io {
                op: "open",
                path: path.clone(),
                source,
            })?;
        loop {
            match rustix::fs::flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(IndexLock { _file: file }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(TagError::Io {
                        op: "lock",
                        path,
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Reads `index.json` (an empty index when it is missing): a regular
    /// file, reached without a symlink, of at most 8 MiB (the document
    /// limit of `load`).
    ///
    /// # Errors
    /// [`TagError::Index`] when it is not an index;
    /// [`ContentError::Refused`] when it is a symlink, not a regular file
    /// or too large; I/O errors.
    pub fn read_index(&self) -> Result<Index, TagError> {
        let path = self.root.join("index.json");
        match self.dir.read_regular(&path, crate::refs::MAX_DOCUMENT_SIZE) {
            Ok(bytes) => {
                Index::from_bytes(bytes).map_err(|source| TagError::Index { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                empty_index().map_err(|source| TagError::Index { path, source })
            }
            Err(e) => match crate::fs::split_refused(e) {
                Ok(r) => Err(TagError::Content(ContentError::Refused(r))),
                Err(source) => Err(TagError::Io {
                    op: "read",
                    path,
                    source,
                }),
            },
        }
    }

    /// Changes `index.json` under the lock: reads it, lets `f` edit the
    /// list of descriptors, writes it back atomically when `f` returns
    /// `Ok(true)`.
    ///
    /// # Errors
    /// Errors of `f`, of reading, and of writing (the old file is intact).
    pub fn update_index(
        &self,
        f: impl FnOnce(&mut Vec<Descriptor>) -> Result<bool, TagError>,
    ) -> Result<(), TagError> {
        let _lock = self.lock_index()?;
        self.update_index_locked(f)
    }

    /// [`update_index`](OciDir::update_index) for a caller holding the lock.
    pub(crate) fn update_index_locked(
        &self,
        f: impl FnOnce(&mut Vec<Descriptor>) -> Result<bool, TagError>,
    ) -> Result<(), TagError> {
        let path = self.root.join("index.json");
        let index = self.read_index()?;
        let mut manifests = index.manifests().to_vec();
        if !f(&mut manifests)? {
            return Ok(());
        }
        let new = index
            .modify(|i| {
                i.set_manifests(manifests);
                if i.media_type().is_none() {
                    i.set_media_type(Some(OciMediaType::ImageIndex));
                }
            })
            .map_err(|source| TagError::Index {
                path: path.clone(),
                source,
            })?;
        // Every blob a tag may now reach is durable first.
        self.sync_deferred().map_err(TagError::Content)?;
        write_file_atomic(&*self.fs, &self.dir, Target::Index, &path, new.raw()).map_err(|source| {
            TagError::Io {
                op: "write",
                path,
                source,
            }
        })
    }

    /// Checks that each descriptor's blob and everything it references are
    /// present, visiting each blob once across the whole batch.
    fn check_closures(&self, entries: &[(String, Descriptor)]) -> Result<(), TagError> {
        let mut seen = HashSet::new();
        for (name, descriptor) in entries {
            let root = descriptor
                .checked_digest()
                .map_err(|source| TagError::Index {
                    path: self.root.join("index.json"),
                    source,
                })?;
            let mut missing = None;
            crate::refs::walk_from(self, descriptor, &mut seen, &mut |d, present| {
                if !present && missing.is_none() {
                    missing = Some(d.clone());
                }
            })?;
            if missing.is_none() && !self.exists(&root)? {
                missing = Some(root);
            }
            if let Some(digest) = missing {
                return Err(TagError::Dangling {
                    name: name.clone(),
                    digest,
                });
            }
        }
        Ok(())
    }
}

impl OciDir {
    /// Removes the entries stored under a name holding a digest (never a
    /// tag of this store; an older version or another tool wrote them):
    /// the exact string, or one that parses to the same reference.
    fn remove_digest_entries(&self, name: &str) -> Result<bool, TagError> {
        let wanted = Reference::parse_name(name).map_err(|e| invalid_name(name, e))?;
        let same = |stored: &str| {
            stored == name || Reference::parse_name(stored).is_ok_and(|r| r == wanted)
        };
        let mut removed = false;
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|m| !ref_name(m).is_some_and(|n| holds_digest(n) && same(n)));
            removed = manifests.len() != before;
            Ok(removed)
        })?;
        Ok(removed)
    }
}

fn empty_index() -> Result<Index, ParseError> {
    let inner: ImageIndex = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(OciMediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .map_err(|e| ParseError::WrongKind {
            expected: "an empty index",
            found: e.to_string(),
        })?;
    Index::new(inner)
}

/// The tag name of an `index.json` entry.
pub fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

impl OciDir {
    /// [`TagStore::set_tags`], done only if `guard`, run under the
    /// `index.json` lock before anything is checked or written, says so;
    /// returns whether it was.
    fn set_tags_if(
        &self,
        tags: &[(&str, &Descriptor)],
        guard: impl FnOnce() -> Result<bool, TagError>,
    ) -> Result<bool, TagError> {
        // Every name first, so a bad one sets nothing. A later equal name
        // replaces an earlier one in place (`slot`).
        let mut entries: Vec<(String, Descriptor)> = Vec::with_capacity(tags.len());
        let mut slot: HashMap<String, usize> = HashMap::with_capacity(tags.len());
        let mut given: HashSet<&str> = HashSet::with_capacity(tags.len());
        for &(name, descriptor) in tags {
            let norm = normalize_name(name)?;
            given.insert(name);
            let mut d = descriptor.clone();
            let mut annotations = d.annotations().clone().unwrap_or_default();
            annotations.insert(REF_NAME.to_owned(), norm.clone());
            d.set_annotations(Some(annotations));
            match slot.get(&norm) {
                Some(&i) => entries[i].1 = d,
                None => {
                    slot.insert(norm.clone(), entries.len());
                    entries.push((norm, d));
                }
            }
        }
        if entries.is_empty() {
            return Ok(true);
        }
        let _lock = self.lock_index()?;
        if !guard()? {
            return Ok(false);
        }
        // Under the lock, so gc (which takes it too) cannot remove what we
        // are about to reference once we checked it is there.
        self.check_closures(&entries)?;
        // One pass over the entries: a stored name is replaced when it is
        // one of the given strings or normalises to one of the new names.
        let replaced = |stored: &str| {
            !holds_digest(stored)
                && (given.contains(stored)
                    || normalize_name(stored).is_ok_and(|n| slot.contains_key(&n)))
        };
        self.update_index_locked(|manifests| {
            manifests.retain(|m| !ref_name(m).is_some_and(replaced));
            manifests.extend(entries.into_iter().map(|(_, d)| d));
            Ok(true)
        })?;
        Ok(true)
    }
}

impl TagStore for OciDir {
    fn tags(&self) -> Result<Vec<Tagged>, TagError> {
        let index = self.read_index()?;
        let mut out: Vec<Tagged> = index
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|n| Tagged::new(n.to_owned(), d.clone())))
            .filter(|t| !holds_digest(&t.name))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), TagError> {
        self.set_tags(&[(name, descriptor)])
    }

    fn set_tags(&self, tags: &[(&str, &Descriptor)]) -> Result<(), TagError> {
        self.set_tags_if(tags, || Ok(true)).map(drop)
    }

    fn replace_tag(
        &self,
        name: &str,
        expected: Option<&Digest>,
        descriptor: &Descriptor,
    ) -> Result<bool, TagError> {
        self.set_tags_if(&[(name, descriptor)], || points_at(self, name, expected))
    }

    fn index_entries(&self) -> Result<Vec<Descriptor>, TagError> {
        Ok(self.read_index()?.manifests().to_vec())
    }

    fn list_untagged(&self, descriptor: &Descriptor) -> Result<bool, TagError> {
        let digest = descriptor
            .checked_digest()
            .map_err(|source| TagError::Index {
                path: self.root.join("index.json"),
                source,
            })?;
        let mut plain = descriptor.clone();
        if let Some(mut a) = plain.annotations().clone() {
            a.remove(REF_NAME);
            plain.set_annotations((!a.is_empty()).then_some(a));
        }
        let _lock = self.lock_index()?;
        self.check_closures(&[(digest.to_string(), plain.clone())])?;
        let mut added = false;
        self.update_index_locked(|manifests| {
            let listed = manifests
                .iter()
                .any(|m| ref_name(m).is_none() && m.digest().to_string() == digest.to_string());
            if !listed {
                manifests.push(plain);
                added = true;
            }
            Ok(added)
        })?;
        Ok(added)
    }

    fn remove_tags(&self, names: &[&str]) -> Result<usize, TagError> {
        let mut wanted: HashMap<String, usize> = HashMap::with_capacity(names.len());
        let mut given: HashMap<&str, usize> = HashMap::with_capacity(names.len());
        for (i, &name) in names.iter().enumerate() {
            let norm = normalize_name(name)?;
            let slot = *wanted.entry(norm).or_insert(i);
            given.insert(name, slot);
        }
        if names.is_empty() {
            return Ok(0);
        }
        // The slot of the given name a stored one designates, as
        // `name_matches` decides it for one name.
        let slot_of = |stored: &str| {
            if holds_digest(stored) {
                return None;
            }
            given.get(stored).copied().or_else(|| {
                normalize_name(stored)
                    .ok()
                    .and_then(|n| wanted.get(&n).copied())
            })
        };
        let mut hit: HashSet<usize> = HashSet::new();
        self.update_index(|manifests| {
            manifests.retain(|m| match ref_name(m).and_then(slot_of) {
                Some(slot) => {
                    hit.insert(slot);
                    false
                }
                None => true,
            });
            Ok(!hit.is_empty())
        })?;
        Ok(hit.len())
    }

    fn remove_tag(&self, name: &str) -> Result<bool, TagError> {
        if holds_digest(name) {
            return self.remove_digest_entries(name);
        }
        let (norm, invalid) = match normalize_name(name) {
            Ok(n) => (Some(n), None),
            Err(e) => (None, Some(e)),
        };
        if name.is_empty() {
            if let Some(e) = invalid {
                return Err(e);
            }
        }
        let mut removed = false;
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests
                .retain(|m| !ref_name(m).is_some_and(|n| name_matches(n, name, norm.as_deref())));
            removed = manifests.len() != before;
            Ok(removed)
        })?;
        // An invalid name removes only an entry stored under it as it is;
        // with none, it is reported as invalid rather than absent.
        match invalid {
            Some(e) if !removed => Err(e),
            _ => Ok(removed),
        }
    }
}
