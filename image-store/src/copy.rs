//! Copying images between stores, as `crane copy` and `skopeo copy` do.
//!
//! [`copy_image`] copies a manifest with its config and layers, or an
//! index with every manifest it lists (recursively), from any [`Provider`]
//! to any store that can also be read ([`BlobStore`]). Children are copied
//! before their parent, so the destination never holds a manifest whose
//! blobs are missing; a blob the destination already has is skipped
//! without being read. Every blob is verified twice: by the source's
//! verifying reader and by the destination's commit against the
//! descriptor's digest and size. [`copy_tag`] resolves a tag in the
//! source, copies, and tags in the destination.
//!
//! ```
//! use image_store::{copy_tag, MemoryStore, TagStore, Ingester};
//! # use image_core::{config::ConfigFile, ImageConfig};
//! let src = MemoryStore::new();
//! # let config = ImageConfig::new(ConfigFile::new("linux", "amd64"))?;
//! # let cfg = src.write_blob(config.raw())?;
//! # let m = image_store::archive::build_manifest(&cfg, config.raw().len() as u64, vec![])?;
//! # src.write_blob(m.raw())?;
//! # src.set_tag("app:1", &m.descriptor())?;
//! let dst = MemoryStore::new();
//! let report = copy_tag(&src, "app:1", &dst, Some("app:copy"))?;
//! assert_eq!(report.copied, 2); // config and manifest
//! assert_eq!(dst.resolve_tag("app:copy")?, report.descriptor);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use image_core::digest::VerifyError;
use image_core::error::unless_named;
use image_core::manifest::descriptor_media_type;
use image_core::DescriptorExt;
use image_core::{
    Cancelled, Classify, Descriptor, Digest, Document, ErrorKind, MediaTypeError, ParseError,
    Tracker,
};

use crate::archive::BlobStore;
use crate::content::{ContentError, Provider};
use crate::lease::{LeaseError, Leases};
use crate::refs::MAX_DOCUMENT_SIZE;
use crate::tags::{resolve_reference, TagError, TagStore, REF_NAME};

/// The deepest nesting of indexes followed.
const MAX_DEPTH: usize = 8;

/// Why a copy failed. The destination may hold some of the image's blobs
/// (verified, harmless, collected by gc) but no tag was set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// Reading from the source or writing to the destination failed; a
    /// digest or size mismatch is a [`ContentError::Verify`] or a
    /// [`ContentError::Read`] wrapping a `VerifyError`.
    #[error("copying blob{}", unless_named(.digest, .source))]
    Content {
        /// The blob.
        digest: Digest,
        /// The store's error.
        source: ContentError,
    },
    /// A manifest or index that does not parse, or a descriptor with an invalid digest.
    #[error("{what}")]
    Parse {
        /// The document or field.
        what: String,
        /// Why.
        source: ParseError,
    },
    /// The descriptor to copy is neither a manifest nor an index.
    #[error("cannot copy {digest} as an image")]
    MediaType {
        /// The descriptor's digest.
        digest: String,
        /// The media type error.
        source: MediaTypeError,
    },
    /// The source holds more bytes for a blob than its descriptor says: the
    /// copy stopped reading after the descriptor's size.
    #[error("blob {digest} in the source holds more than the {size} bytes its descriptor gives")]
    LargerThanDescriptor {
        /// The blob.
        digest: Digest,
        /// The size in the descriptor.
        size: u64,
    },
    /// Indexes nested deeper than the limit (8).
    #[error("indexes nested more than {MAX_DEPTH} deep at {digest}")]
    TooDeep {
        /// The index at the limit.
        digest: Digest,
    },
    /// Resolving the source tag or setting the destination tag failed.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// Taking the lease that keeps gc off the copied blobs failed.
    #[error("taking a lease on the destination")]
    Lease(#[from] LeaseError),
    /// The copy's interrupt was set between two blobs.
    #[error("copy stopped")]
    Cancelled(#[from] Cancelled),
}

impl Classify for CopyError {
    fn kind(&self) -> ErrorKind {
        match self {
            CopyError::Content { source, .. } => source.kind(),
            CopyError::Parse { source, .. } => source.kind(),
            CopyError::MediaType { source, .. } => source.kind(),
            CopyError::LargerThanDescriptor { .. } => ErrorKind::SizeMismatch,
            CopyError::TooDeep { .. } => ErrorKind::Unsupported,
            CopyError::Tag(e) => e.kind(),
            CopyError::Lease(e) => e.kind(),
            CopyError::Cancelled(e) => e.kind(),
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CopyReport {
    /// The descriptor of the copied manifest or index (without tag annotation).
    pub descriptor: Descriptor,
    /// Blobs written to the destination.
    pub copied: usize,
    /// Blobs the destination already had (not read).
    pub skipped: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Options of [`copy_image_with`] and [`copy_tag_with`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Reports each blob copied (an item named by its digest, with the
    /// descriptor's size) and stops the copy once its interrupt is set.
    /// A blob stopped mid-way is not committed and its ingest is removed;
    /// no tag is set.
    pub tracker: Tracker,
}

impl CopyOptions {
    /// Sets [`tracker`](CopyOptions::tracker), under the setter name every
    /// options type of the family uses.
    pub fn with_tracker(mut self, tracker: Tracker) -> Self {
        self.tracker = tracker;
        self
    }
}

/// Copies the manifest or index `descriptor` and everything it references
/// from `src` to `dst`. Tags nothing: a caller that tags the copy afterwards
/// protects it from gc meanwhile by copying into
/// [`lease.protect(dst)`](crate::lease::LeaseGuard::protect) and keeping
/// the lease until the tag is set, as [`copy_tag`] does.
///
/// # Errors
/// [`CopyError`]: a blob missing from or corrupt in the source, a document
/// that does not parse, a root that is not a manifest or index, a
/// destination error.
pub fn copy_image<S, D>(src: &S, dst: &D, descriptor: &Descriptor) -> Result<CopyReport, CopyError>
where
    S: Provider + ?Sized,
    D: BlobStore + ?Sized,
{
    copy_dyn(&src, &dst, descriptor, &Tracker::default())
}

/// [`copy_image`] with options: progress and cancellation.
///
/// # Errors
/// As [`copy_image`]; [`CopyError::Cancelled`], or a
/// [`CopyError::Content`] of class [`ErrorKind::Cancelled`] when a blob
/// was stopped mid-way.
pub fn copy_image_with<S, D>(
    src: &S,
    dst: &D,
    descriptor: &Descriptor,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError>
where
    S: Provider + ?Sized,
    D: BlobStore + ?Sized,
{
    copy_dyn(&src, &dst, descriptor, &options.tracker)
}

/// Copies the image `name` names in `src` (a tag, or a digest reference
/// resolved by content: see [`resolve_reference`]) to `dst` and tags it
/// there as `dst_name` (default: `name`).
///
/// # Errors
/// As [`copy_image`]; [`CopyError::Tag`] when `name` names no image of
/// `src` or the destination tag cannot be set (a name holding a digest is
/// refused as a tag).
pub fn copy_tag<S, D>(
    src: &S,
    name: &str,
    dst: &D,
    dst_name: Option<&str>,
) -> Result<CopyReport, CopyError>
where
    S: Provider + TagStore,
    D: BlobStore + TagStore + Leases,
{
    copy_tag_with(src, name, dst, dst_name, &CopyOptions::default())
}

/// [`copy_tag`] with options: progress and cancellation. A cancelled copy
/// sets no tag.
///
/// # Errors
/// As [`copy_tag`] and [`copy_image_with`].
pub fn copy_tag_with<S, D>(
    src: &S,
    name: &str,
    dst: &D,
    dst_name: Option<&str>,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError>
where
    S: Provider + TagStore,
    D: BlobStore + TagStore + Leases,
{
    let target = dst_name.unwrap_or(name);
    // Refused before any blob is copied.
    crate::tags::normalize_name(target)?;
    let descriptor = resolve_reference(src, name)?;
    // Held until the tag is set: each blob is added before the destination
    // is asked whether it has it, so gc cannot remove it in between.
    let lease = dst.begin_lease()?;
    let report = copy_dyn(src, &lease.protect(dst), &descriptor, &options.tracker)?;
    options.tracker.check()?;
    dst.set_tag(target, &report.descriptor)?;
    drop(lease);
    Ok(report)
}

fn copy_dyn(
    src: &dyn Provider,
    dst: &dyn BlobStore,
    descriptor: &Descriptor,
    tracker: &Tracker,
) -> Result<CopyReport, CopyError> {
    let media_type = descriptor_media_type(descriptor);
    let digest = descriptor
        .checked_digest()
        .map_err(|source| CopyError::Parse {
            what: "descriptor".into(),
            source,
        })?;
    if !(media_type.is_manifest() || media_type.is_index()) {
        return Err(CopyError::MediaType {
            digest: digest.to_string(),
            source: MediaTypeError::WrongKind {
                expected: "a manifest or an index",
                found: media_type.as_str().to_owned(),
            },
        });
    }
    let mut plain = descriptor.clone();
    if let Some(mut a) = plain.annotations().clone() {
        a.remove(REF_NAME);
        plain.set_annotations(if a.is_empty() { None } else { Some(a) });
    }
    let report = CopyReport {
        descriptor: plain,
        copied: 0,
        skipped: 0,
        bytes: 0,
    };
    let mut copy = Copy {
        src,
        dst,
        tracker,
        done: std::collections::HashSet::new(),
        report,
    };
    copy.node(descriptor, &digest, 0)?;
    Ok(copy.report)
}

fn content(digest: &Digest) -> impl FnOnce(ContentError) -> CopyError + '_ {
    move |source| CopyError::Content {
        digest: digest.clone(),
        source,
    }
}

/// One copy's state: the stores, the tracker, the visited set and the report.
struct Copy<'a> {
    src: &'a dyn Provider,
    dst: &'a dyn BlobStore,
    tracker: &'a Tracker,
    done: std::collections::HashSet<Digest>,
    report: CopyReport,
}

impl Copy<'_> {
    /// Copies one node after its children.
    fn node(&mut self, d: &Descriptor, digest: &Digest, depth: usize) -> Result<(), CopyError> {
        let (src, dst) = (self.src, self.dst);
        if !self.done.insert(digest.clone()) {
            return Ok(());
        }
        self.tracker.check()?;
        let media_type = descriptor_media_type(d);
        if !(media_type.is_manifest() || media_type.is_index()) {
            return self.blob(d, digest);
        }
        if depth >= MAX_DEPTH {
            return Err(CopyError::TooDeep {
                digest: digest.clone(),
            });
        }
        let bytes = src
            .read_descriptor_to_vec(d, MAX_DOCUMENT_SIZE)
            .map_err(content(digest))?;
        let doc =
            Document::from_bytes(bytes, Some(&media_type)).map_err(|source| CopyError::Parse {
                what: digest.to_string(),
                source,
            })?;
        let subject = match &doc {
            Document::Manifest(m) => m.subject().cloned(),
            Document::Index(i) => i.inner().subject().clone(),
        };
        for child in crate::refs::children(&doc) {
            let cd = child.checked_digest().map_err(|source| CopyError::Parse {
                what: digest.to_string(),
                source,
            })?;
            let optional = subject
                .as_ref()
                .is_some_and(|s| s.digest() == child.digest())
                || descriptor_media_type(&child).is_non_distributable();
            if optional && !src.exists(&cd).map_err(content(&cd))? {
                continue;
            }
            self.node(&child, &cd, depth + 1)?;
        }
        if dst.exists(digest).map_err(content(digest))? {
            self.report.skipped += 1;
            return Ok(());
        }
        let raw = doc.raw();
        let item = digest.to_string();
        let mut r = self.tracker.reader(&item, Some(raw.len() as u64), raw);
        dst.ingest_reader(&mut r, Some(d.size()), Some(digest))
            .map_err(content(digest))?;
        r.finish();
        self.report.copied += 1;
        self.report.bytes += raw.len() as u64;
        Ok(())
    }

    /// Copies a blob that is not a manifest or an index, read by its
    /// descriptor, at most the descriptor's size.
    fn blob(&mut self, d: &Descriptor, digest: &Digest) -> Result<(), CopyError> {
        if self.dst.exists(digest).map_err(content(digest))? {
            self.report.skipped += 1;
            return Ok(());
        }
        let larger = || CopyError::LargerThanDescriptor {
            digest: digest.clone(),
            size: d.size(),
        };
        let inner = match self.src.reader_for(d) {
            Ok(r) => r,
            Err(ContentError::DescriptorMismatch {
                source:
                    VerifyError::Size {
                        expected, found, ..
                    },
            }) if found > expected => return Err(larger()),
            Err(e) => return Err(content(digest)(e)),
        };
        let item = digest.to_string();
        let mut r = AtMost {
            inner: self.tracker.reader(&item, Some(d.size()), inner),
            left: d.size(),
            over: false,
        };
        let ingested = self.dst.ingest_reader(&mut r, Some(d.size()), Some(digest));
        if r.over {
            return Err(larger());
        }
        ingested.map_err(content(digest))?;
        r.inner.finish();
        self.report.copied += 1;
        self.report.bytes += d.size();
        Ok(())
    }
}

/// Reads at most `left` bytes (a descriptor's size) from a source blob,
/// then fails if the source has more: a blob larger than its descriptor
/// is never read (or written) past that size.
struct AtMost<R> {
    inner: R,
    left: u64,
    over: bool,
}

impl<R: std::io::Read> std::io::Read for AtMost<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // One more byte tells the end of the blob from a longer one.
            let n = self.inner.read(&mut buf[..1])?;
            if n > 0 {
                self.over = true;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the blob is larger than its descriptor",
                ));
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}
