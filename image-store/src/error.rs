//! The errors of the content store, its tags and its leases.
//!
//! They nest one in another (a commit that protects its blob with a lease
//! fails with the lease's error, taking the lock of a lease fails with a tag
//! error, a tag's document is read as content), so they live together in
//! this leaf module, which depends on nothing of the crate but [`crate::fs`]:
//! `content`, `tags` and `lease` build on it and re-export their own error,
//! and none of them has to reach into another for its error type.

use std::io;
use std::path::PathBuf;

use image_core::digest::VerifyError;
use image_core::reference::ReferenceError;
use image_core::{Algorithm, Classify, Digest, ErrorKind, ParseError};

/// Errors of the content store traits and their implementations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// No committed blob has this digest.
    #[error("blob {digest} not found")]
    NotFound {
        /// The digest asked for.
        digest: Digest,
    },
    /// The committed content is not what the caller expected.
    #[error("ingest {reference:?}")]
    Verify {
        /// The ingest reference.
        reference: String,
        /// Expected and found digest or size.
        source: VerifyError,
    },
    /// Another writer holds this ingest reference.
    #[error("ingest {reference:?} is in use by another writer")]
    Locked {
        /// The ingest reference.
        reference: String,
    },
    /// A blob is larger than the caller's limit for reading it into memory.
    #[error("blob {digest} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An ingest reference that is empty or too long.
    #[error("invalid ingest reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference, cut to 80 characters.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The ingest expected one algorithm and the commit another.
    #[error(
        "ingest {reference:?} hashes with {ingest}, cannot commit against a {expected} digest"
    )]
    AlgorithmMismatch {
        /// The ingest reference.
        reference: String,
        /// The algorithm the writer hashed with.
        ingest: Algorithm,
        /// The algorithm of the expected digest.
        expected: Algorithm,
    },
    /// A file-system operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done ("create", "rename", "fsync", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating-system error.
        source: io::Error,
    },
    /// Adding a blob to the writer's lease failed, so it was not checked
    /// or committed (gc could have removed it before its tag).
    #[error("protecting blob {digest} with a lease")]
    Lease {
        /// The blob.
        digest: Digest,
        /// The lease's error.
        source: Box<LeaseError>,
    },
    /// A file of the store is a symlink, is reached through one, or is not
    /// a regular file: it is refused, never followed or read.
    #[error(transparent)]
    Refused(crate::fs::RefusedFile),
    /// A descriptor whose digest is not a valid digest.
    #[error("invalid descriptor")]
    InvalidDescriptor {
        /// Why.
        source: ParseError,
    },
    /// The stored blob has another size than the descriptor it was asked
    /// for by (see [`Provider::reader_for`](crate::Provider::reader_for)).
    #[error("blob does not match its descriptor")]
    DescriptorMismatch {
        /// The digest, expected and found sizes.
        source: VerifyError,
    },
    /// Taking the store's lock failed.
    #[error("taking the store's lock")]
    Lock {
        /// The lock's error.
        source: Box<TagError>,
    },
    /// Labels over the limits, or a stored labels file that is not a
    /// JSON object of strings.
    #[error("invalid labels: {reason}")]
    InvalidLabels {
        /// What is wrong.
        reason: String,
    },
    /// Reading the source of an ingest or a blob failed.
    #[error("reading {what}")]
    Read {
        /// What was being read.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl ContentError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> ContentError {
        ContentError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this error says the blob does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ContentError::NotFound { .. })
    }
}

impl Classify for ContentError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContentError::NotFound { .. } => ErrorKind::NotFound,
            ContentError::InvalidDescriptor { source } => source.kind(),
            ContentError::InvalidLabels { .. } => ErrorKind::InvalidInput,
            ContentError::Lock { source } => source.kind(),
            ContentError::DescriptorMismatch { source } => source.kind(),
            ContentError::Verify { source, .. } => Classify::kind(source),
            ContentError::Locked { .. } => ErrorKind::FailedPrecondition,
            ContentError::TooLarge { .. } => ErrorKind::FailedPrecondition,
            ContentError::InvalidReference { .. } => ErrorKind::InvalidInput,
            ContentError::AlgorithmMismatch { .. } => ErrorKind::InvalidInput,
            ContentError::Lease { source, .. } => source.kind(),
            ContentError::Refused(e) => e.kind(),
            ContentError::Io { source, .. } | ContentError::Read { source, .. } => {
                crate::fs::io_kind(source)
            }
        }
    }
}

/// Errors of tag operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// The name is not a valid reference.
    #[error("invalid tag name {name:?}")]
    InvalidName {
        /// The name, cut to 200 characters.
        name: String,
        /// What is wrong with it.
        #[source]
        source: ReferenceError,
    },
    /// The name holds a digest: a tag cannot (it would claim content it
    /// does not have), and a digest reference is not looked up as a tag
    /// (see [`resolve_reference`](crate::resolve_reference)).
    #[error("refusing {name:?} as a tag: a tag cannot hold a digest")]
    DigestInName {
        /// The name, cut to 200 characters.
        name: String,
    },
    /// No tag has this name.
    #[error("tag {name:?} not found")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// No image of the repository has the digest a reference pins.
    #[error("no image of repository {repository} with digest {digest} in the store")]
    DigestNotFound {
        /// The repository (`domain/path`).
        repository: String,
        /// The digest asked for.
        digest: Digest,
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
    #[error("{}", path.display())]
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
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The store cannot do this (a store that keeps no untagged index
    /// entries).
    #[error("this store cannot keep {what}")]
    Unsupported {
        /// What was asked.
        what: String,
    },
    /// The store is read-only (an archive read in place).
    #[error("cannot change tag {name:?} of read-only {}", path.display())]
    ReadOnly {
        /// The tag.
        name: String,
        /// The store.
        path: PathBuf,
    },
}

impl Classify for TagError {
    fn kind(&self) -> ErrorKind {
        match self {
            TagError::InvalidName { .. } | TagError::DigestInName { .. } => ErrorKind::InvalidInput,
            TagError::NotFound { .. } | TagError::DigestNotFound { .. } => ErrorKind::NotFound,
            TagError::Dangling { .. } => ErrorKind::FailedPrecondition,
            TagError::Index { source, .. } => Classify::kind(source),
            TagError::Content(e) => e.kind(),
            TagError::Io { source, .. } => crate::fs::io_kind(source),
            TagError::ReadOnly { .. } | TagError::Unsupported { .. } => ErrorKind::Unsupported,
        }
    }
}

/// Errors of lease operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The lease id is not 1 to 128 characters of `[A-Za-z0-9._-]`.
    #[error("invalid lease id {id:?}")]
    InvalidId {
        /// The id, cut to 80 characters.
        id: String,
    },
    /// No lease has this id.
    #[error("lease {id:?} not found")]
    NotFound {
        /// The id.
        id: String,
    },
    /// A lease file is not valid JSON of its kind.
    #[error("{}: invalid lease", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A held lease's file was removed while its guard lived (by hand:
    /// gc never removes a lease whose holder is alive).
    #[error("held lease {id:?} was removed from the store")]
    Lost {
        /// The id.
        id: String,
    },
    /// Adding to a held lease would grow it past what gc reads of one
    /// (far more than any image has blobs).
    #[error("held lease {id:?} would grow past {limit} bytes")]
    Full {
        /// The id.
        id: String,
        /// The most gc reads of a held lease.
        limit: u64,
    },
    /// Taking the store lock failed.
    #[error(transparent)]
    Lock(#[from] TagError),
    /// A file-system operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl Classify for LeaseError {
    fn kind(&self) -> ErrorKind {
        match self {
            LeaseError::InvalidId { .. } | LeaseError::Invalid { .. } => ErrorKind::InvalidInput,
            LeaseError::NotFound { .. } => ErrorKind::NotFound,
            LeaseError::Lost { .. } | LeaseError::Full { .. } => ErrorKind::FailedPrecondition,
            LeaseError::Lock(e) => e.kind(),
            LeaseError::Io { source, .. } => crate::fs::io_kind(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let d = Digest::sha256(b"");
        assert_eq!(
            ContentError::NotFound { digest: d.clone() }.kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            ContentError::Locked {
                reference: "r".into()
            }
            .kind(),
            ErrorKind::FailedPrecondition
        );
        let io = ContentError::io("write", "/x", io::Error::from_raw_os_error(28));
        assert_eq!(io.kind(), ErrorKind::Io);
        assert!(io.to_string().contains("/x"));
    }
}
