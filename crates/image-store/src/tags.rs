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
//! `index.json` is replaced atomically (temp file, fsync, rename, fsync of
//! the directory) under an exclusive `flock` on `index.json.lock`, so
//! concurrent updates from threads and processes never lose one another.
//! Entries without the annotation (untagged roots) are kept as they are.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use image_core::oci_spec::image::{ImageIndex, ImageIndexBuilder, MediaType as OciMediaType};
use image_core::{Classify, Descriptor, Digest, ErrorKind, Index, ParseError};
use rustix::fs::FlockOperation;

use crate::content::{ContentError, Provider};
use crate::fs::Target;
use crate::oci_dir::{write_file_atomic, OciDir};

/// The annotation naming a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Errors of tag operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// The name is not a valid reference.
    #[error("invalid tag name {name:?}: {reason}")]
    InvalidName {
        /// The name, cut to 200 characters.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No tag has this name.
    #[error("tag {name:?} not found")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The descriptor to tag names a blob (or a blob it references) that
    /// is not in the store.
    #[error("cannot tag {name:?}: blob {digest} is not in the store")]
    Dangling {
        /// The tag.
        name: String,
        /// The missing blob.
        digest: Digest,
    },
    /// `index.json` is not a valid index.
    #[error("{}: {source}", path.display())]
    Index {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: ParseError,
    },
    /// Reading the blobs to check failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl Classify for TagError {
    fn kind(&self) -> ErrorKind {
        match self {
            TagError::InvalidName { .. } => ErrorKind::InvalidInput,
            TagError::NotFound { .. } => ErrorKind::NotFound,
            TagError::Dangling { .. } => ErrorKind::FailedPrecondition,
            TagError::Index { source, .. } => Classify::kind(source),
            TagError::Content(e) => e.kind(),
            TagError::Io { source, .. } => crate::fs::io_kind(source),
        }
    }
}

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
/// [`TagError::InvalidName`].
pub fn normalize_name(name: &str) -> Result<String, TagError> {
    let r: image_core::reference::Reference = name.parse().map_err(
        |e: image_core::reference::ReferenceError| TagError::InvalidName {
            name: name.chars().take(200).collect(),
            reason: e.to_string(),
        },
    )?;
    Ok(r.to_string())
}

/// Whether the stored name `stored` designates the same image as `wanted`.
pub(crate) fn name_matches(stored: &str, wanted: &str, wanted_norm: Option<&str>) -> bool {
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
    /// Every tag, sorted by name.
    ///
    /// # Errors
    /// I/O and parse errors of the underlying storage.
    fn tags(&self) -> Result<Vec<Tagged>, TagError>;

    /// Points the tag `name` (normalised) at `descriptor`, replacing the
    /// entries that had the same name.
    ///
    /// # Errors
    /// [`TagError::InvalidName`]; [`TagError::Dangling`] when the on-disk
    /// store does not hold the descriptor's blob; I/O errors.
    fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), TagError>;

    /// Removes the tag `name` (every entry that resolves to it); returns
    /// whether there was one.
    ///
    /// # Errors
    /// [`TagError::InvalidName`], I/O errors.
    fn remove_tag(&self, name: &str) -> Result<bool, TagError>;

    /// The descriptor the tag `name` points at: the entry stored under the
    /// same string, or else one whose name normalises to the same reference.
    ///
    /// # Errors
    /// [`TagError::NotFound`]; I/O errors.
    fn resolve_tag(&self, name: &str) -> Result<Descriptor, TagError> {
        let tags = self.tags()?;
        if let Some(t) = tags.iter().find(|t| t.name == name) {
            return Ok(t.descriptor.clone());
        }
        let norm = normalize_name(name).ok();
        tags.into_iter()
            .find(|t| name_matches(&t.name, name, norm.as_deref()))
            .map(|t| t.descriptor)
            .ok_or_else(|| TagError::NotFound {
                name: name.to_owned(),
            })
    }
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
        write_file_atomic(&*self.fs, &self.dir, Target::Index, &path, new.raw()).map_err(|source| {
            TagError::Io {
                op: "write",
                path,
                source,
            }
        })
    }

    /// Checks that `descriptor`'s blob and everything it references are present.
    fn check_closure(&self, name: &str, descriptor: &Descriptor) -> Result<(), TagError> {
        let root =
            crate::refs::descriptor_digest(descriptor).map_err(|source| TagError::Index {
                path: self.root.join("index.json"),
                source,
            })?;
        let mut missing = None;
        crate::refs::walk(self, descriptor, &mut |d, present| {
            if !present && missing.is_none() {
                missing = Some(d.clone());
            }
        })?;
        if !self.exists(&root)? {
            missing = Some(root);
        }
        match missing {
            Some(digest) => Err(TagError::Dangling {
                name: name.to_owned(),
                digest,
            }),
            None => Ok(()),
        }
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

impl TagStore for OciDir {
    fn tags(&self) -> Result<Vec<Tagged>, TagError> {
        let index = self.read_index()?;
        let mut out: Vec<Tagged> = index
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|n| Tagged::new(n.to_owned(), d.clone())))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn set_tag(&self, name: &str, descriptor: &Descriptor) -> Result<(), TagError> {
        let norm = normalize_name(name)?;
        let mut d = descriptor.clone();
        let mut annotations = d.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME.to_owned(), norm.clone());
        d.set_annotations(Some(annotations));
        let _lock = self.lock_index()?;
        // Under the lock, so gc (which takes it too) cannot remove what we
        // are about to reference once we checked it is there.
        self.check_closure(&norm, descriptor)?;
        self.update_index_locked(|manifests| {
            manifests.retain(|m| !ref_name(m).is_some_and(|n| name_matches(n, name, Some(&norm))));
            manifests.push(d);
            Ok(true)
        })
    }

    fn remove_tag(&self, name: &str) -> Result<bool, TagError> {
        let norm = normalize_name(name).ok();
        if norm.is_none() && !name.contains(['\0', '\n']) && name.is_empty() {
            return Err(TagError::InvalidName {
                name: String::new(),
                reason: "empty".into(),
            });
        }
        let mut removed = false;
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests
                .retain(|m| !ref_name(m).is_some_and(|n| name_matches(n, name, norm.as_deref())));
            removed = manifests.len() != before;
            Ok(removed)
        })?;
        Ok(removed)
    }
}
