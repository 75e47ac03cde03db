//! The error of archive import and export.

use std::io;

use image_core::error::unless_named;
use image_core::{Classify, Digest, ErrorKind, MediaTypeError, ParseError};

use crate::content::ContentError;
use crate::lease::LeaseError;
use crate::tags::TagError;

/// Why an archive could not be imported or exported.
///
/// Import never tags anything when it returns one of these: blobs it
/// already ingested are verified and harmless (unreferenced, so garbage
/// collection removes them).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The archive stream ended early: inside a header, an entry's data or
    /// its padding (an end at an entry boundary, with or without the
    /// end-of-archive marker, is a complete archive, as for `docker load`).
    #[error("truncated archive: {what}")]
    Truncated {
        /// Where the stream ended ("entry blobs/sha256/ab.. (12 of 512 bytes)").
        what: String,
    },
    /// The tar stream itself is malformed (bad header checksum, bad size field).
    #[error("malformed tar stream near {entry:?}")]
    Tar {
        /// The last entry read, when there was one.
        entry: String,
        /// The parser's error.
        source: io::Error,
    },
    /// The archive holds neither `manifest.json` (docker save) nor
    /// `index.json` with `oci-layout` (OCI image layout).
    #[error("not an image archive: no manifest.json and no oci-layout/index.json")]
    NotAnArchive,
    /// The archive refers to a file it does not contain.
    #[error("{referenced_by} refers to {path:?}, which is not in the archive")]
    MissingEntry {
        /// The path referred to.
        path: String,
        /// Which file refers to it (`manifest.json`, `index.json`).
        referenced_by: String,
    },
    /// A descriptor names a blob that is neither in the archive nor in the store.
    #[error(
        "{referenced_by} refers to blob {digest}, which is neither in the archive nor in the store"
    )]
    MissingBlob {
        /// The missing blob.
        digest: Digest,
        /// What refers to it.
        referenced_by: String,
    },
    /// A layer's digest is not the diff ID its image config declares.
    #[error("layer {path:?} of image {image:?} does not match its config: diff ID {expected}, found {found}")]
    LayerMismatch {
        /// The image (config path in the archive, or a tag).
        image: String,
        /// The layer's path in the archive.
        path: String,
        /// The diff ID in the config's `rootfs.diff_ids`.
        expected: Digest,
        /// The digest of the uncompressed layer.
        found: Digest,
    },
    /// A blob named by its digest in the archive has other content.
    #[error("{path:?} in the archive does not match its name")]
    BlobMismatch {
        /// The entry's path.
        path: String,
        /// The content error naming both digests.
        source: ContentError,
    },
    /// An image lists another number of layers than its config has diff IDs.
    #[error("image {image:?} has {layers} layers but its config lists {diff_ids} diff IDs")]
    LayerCount {
        /// The image (config path or tag).
        image: String,
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// A metadata file (`manifest.json`, `index.json`, ...) is not valid JSON of its kind.
    #[error("{path:?} is not valid")]
    Json {
        /// The file in the archive.
        path: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A manifest, index or config does not parse as one.
    #[error("{what} is not a valid manifest, index or config")]
    Parse {
        /// The file or blob (`index.json`, `sha256:ab..`).
        what: String,
        /// Why.
        source: ParseError,
    },
    /// A media type this operation cannot handle.
    #[error("{what}")]
    MediaType {
        /// Where it was found.
        what: String,
        /// The media type error.
        source: MediaTypeError,
    },
    /// A metadata file too big to be read into memory.
    #[error("{path:?} is {size} bytes, more than the limit of {limit} for a metadata file")]
    TooLarge {
        /// The entry.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry path that leaves the archive root (`../x`).
    #[error("entry path {path:?} leaves the archive root")]
    UnsafePath {
        /// The path as written.
        path: String,
    },
    /// An index has no manifest for the requested platform (docker save
    /// holds exactly one manifest per image).
    #[error("index {digest} has no manifest for {platform}")]
    NoPlatform {
        /// The index.
        digest: Digest,
        /// The platform looked for (`linux/amd64`).
        platform: String,
    },
    /// An image name that is not a valid reference.
    #[error("invalid image name {name:?}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: image_core::reference::ReferenceError,
    },
    /// A layer that cannot be written in this format (a non-distributable
    /// layer whose blob is absent, for instance).
    #[error("{what}: not supported")]
    Unsupported {
        /// What.
        what: String,
    },
    /// Reading or writing the store failed.
    #[error("blob{}", unless_named(.digest, .source))]
    Content {
        /// The blob involved (the digest the caller gave, or the computed one).
        digest: String,
        /// The store's error.
        source: ContentError,
    },
    /// Tagging failed.
    #[error(transparent)]
    Tag(#[from] TagError),
    /// Taking the lease that keeps gc off the import's blobs failed.
    #[error("taking a lease on the store")]
    Lease(#[from] LeaseError),
    /// Reading a compressed layer failed (corrupt gzip or zstd stream).
    #[error("decompressing layer {digest}")]
    Decompress {
        /// The layer blob.
        digest: Digest,
        /// The decoder's error.
        source: io::Error,
    },
    /// The documents of an archive nest deeper than the limit (an index
    /// listing an index listing ...).
    #[error("{digest} is nested more than {limit} documents deep")]
    TooDeep {
        /// The first document past the limit.
        digest: Digest,
        /// The most nested documents allowed.
        limit: usize,
    },
    /// The documents reachable from an archive's images are more than the limit.
    #[error("the images reference more than {limit} distinct manifests and indexes")]
    TooManyDocuments {
        /// The most distinct documents allowed.
        limit: usize,
    },
    /// A compressed layer expands to more bytes than
    /// [`LoadOptions::max_expanded_bytes`](super::LoadOptions::max_expanded_bytes)
    /// (a decompression bomb); decompression stopped at the limit.
    #[error("layer {digest} expands to more than the limit of {limit} bytes")]
    LayerTooLarge {
        /// The layer blob.
        digest: Digest,
        /// The limit.
        limit: u64,
    },
    /// The archive is compressed in a format load does not decode.
    #[error("compressed archive ({compression}): decompress it first")]
    CompressedArchive {
        /// The format (`xz`, `bzip2`).
        compression: &'static str,
    },
    /// The archive file could not be opened or read.
    #[error("reading archive {}", path.display())]
    Read {
        /// The archive.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Writing the output archive failed.
    #[error("writing the archive")]
    Write {
        /// The error of the output stream.
        source: io::Error,
    },
    /// The import or export was stopped by its interrupt: no tag was set
    /// and no partial blob was committed.
    #[error("stopped")]
    Cancelled(#[from] image_core::Cancelled),
}

impl Classify for ArchiveError {
    fn kind(&self) -> ErrorKind {
        match self {
            ArchiveError::Truncated { .. }
            | ArchiveError::Tar { .. }
            | ArchiveError::NotAnArchive
            | ArchiveError::MissingEntry { .. }
            | ArchiveError::LayerCount { .. }
            | ArchiveError::Json { .. }
            | ArchiveError::InvalidName { .. }
            | ArchiveError::TooDeep { .. } => ErrorKind::InvalidInput,
            ArchiveError::TooManyDocuments { .. } | ArchiveError::LayerTooLarge { .. } => {
                ErrorKind::FailedPrecondition
            }
            ArchiveError::CompressedArchive { .. } => ErrorKind::Unsupported,
            ArchiveError::MissingBlob { .. } => ErrorKind::NotFound,
            ArchiveError::LayerMismatch { .. } => ErrorKind::DigestMismatch,
            ArchiveError::BlobMismatch { source, .. } => source.kind(),
            ArchiveError::Parse { source, .. } => source.kind(),
            ArchiveError::MediaType { source, .. } => source.kind(),
            ArchiveError::TooLarge { .. } => ErrorKind::FailedPrecondition,
            ArchiveError::UnsafePath { .. } => ErrorKind::Unsafe,
            ArchiveError::NoPlatform { .. } => ErrorKind::NotFound,
            ArchiveError::Unsupported { .. } => ErrorKind::Unsupported,
            ArchiveError::Content { source, .. } => source.kind(),
            ArchiveError::Tag(e) => e.kind(),
            ArchiveError::Lease(e) => e.kind(),
            ArchiveError::Decompress { source, .. } => match source.kind() {
                io::ErrorKind::InvalidData
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::InvalidInput => ErrorKind::InvalidInput,
                _ => Classify::kind(source),
            },
            ArchiveError::Write { source } | ArchiveError::Read { source, .. } => {
                Classify::kind(source)
            }
            ArchiveError::Cancelled(e) => e.kind(),
        }
    }
}

impl ArchiveError {
    pub(crate) fn content(digest: impl ToString, source: ContentError) -> ArchiveError {
        ArchiveError::Content {
            digest: digest.to_string(),
            source,
        }
    }
}
