//! Unpack one layer onto a directory in a single streaming pass.
//!
//! The stream is decompressed (gzip or zstd, sniffed from its first bytes
//! or declared), hashed twice on the way (the compressed bytes give the
//! blob digest, the uncompressed bytes the diff ID), parsed as a tar and
//! applied to the target directory, all at once. The tar is read to the end
//! of the stream, past its end-of-archive marker, so that the gzip CRC and
//! both digests cover every byte. The stream may end where Go's
//! `archive/tar` (Docker, containerd, umoci) lets it: at an entry boundary,
//! with or without the marker, or right after the last entry's data with
//! none of its padding; an end anywhere else is [`UnpackError::Truncated`].
//!
//! # Security
//! The applier works relative to a directory descriptor of the target:
//! parent directories are opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` (or, where the kernel lacks it or
//! [`PathResolution::ComponentWalk`] asks, by a walk of one `O_NOFOLLOW`
//! component at a time that expands symlinks itself), so symlinks, whether
//! from this layer or an earlier one, resolve as if the target were `/`;
//! the last component is
//! created with `O_CREAT|O_EXCL|O_NOFOLLOW`, `mkdirat`, `symlinkat`,
//! `linkat` (not following) or `mknodat`, after removing whatever had the
//! name; metadata is set through the opened file (`fchown`, `fchmod`,
//! `fsetxattr`, `futimens`) or with no-follow calls. A regular file is
//! created with mode 0600 and given its own mode after its data, or,
//! when `openat` gives exactly that mode (no setuid, setgid or sticky
//! bit, nothing the umask removes, no default ACL on the parent), created
//! with it and not chmodded. `..` components are
//! rejected, absolute paths are taken relative to the target. Entry count,
//! expanded bytes, entry sizes and the size of each entry's header group
//! (PAX records, GNU long names, held in memory) are limited ([`Limits`]); device nodes,
//! `security.*`/`trusted.*` xattrs and overlayfs xattrs follow a policy
//! ([`DevicePolicy`], [`XattrPolicy`]). What is not guarded: a concurrent
//! process changing the target while it is unpacked, and the content of
//! files (a setuid binary in a layer is still a setuid binary).
//!
//! On error the target is left as far as the unpack got: unpack into a
//! fresh directory and discard it on failure.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use image_core::digest::ThreadedHasher;
use image_core::{
    Algorithm, Cancelled, Classify, Compression, Digest, ErrorKind, Tracker, VerifyError,
};
use image_store::tar_ending::{self, EndState, HeaderLimitHit};
use rustix::fs::Timespec;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;

use crate::compress;
use crate::fsops::{self, display_path, io_err};
use crate::lower::{self, Found, Lowers};
pub use crate::resolve::PathResolution;
use crate::whiteout::{self, OverlayXattrs, WhiteoutMode, WhiteoutName};

/// The default of [`Limits::max_header_bytes`]: room for a PAX record, a
/// GNU long name and a GNU long link of 1 MiB each, as Go allows them.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 4 << 20;

/// Limits that bound what a layer may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most uncompressed bytes (the whole tar stream, trailing bytes included).
    pub max_expanded_bytes: u64,
    /// Most entries (headers describing a file, link, directory or whiteout).
    pub max_entries: u64,
    /// Most bytes of one entry's header group: its header block and the
    /// PAX records and GNU long names and links before it, which the tar
    /// parser holds in memory. Go's `archive/tar` caps each such record
    /// at 1 MiB.
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_expanded_bytes: image_store::archive::DEFAULT_MAX_EXPANDED_BYTES,
            max_entries: 4_000_000,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// What to do with character and block device entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// Create them; fail with [`UnpackError::DeviceNotPermitted`] when the
    /// kernel refuses.
    Create,
    /// Create them when permitted, skip them (and report it) otherwise.
    #[default]
    CreateOrSkip,
    /// Skip them and report it.
    Skip,
    /// Fail with [`UnpackError::DeviceRejected`].
    Reject,
}

/// Which `security.*` xattrs to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityXattrs {
    /// None.
    None,
    /// Only `security.capability` (file capabilities, which images use).
    #[default]
    Capability,
    /// All of them (including `security.selinux` and `security.ima`).
    All,
}

/// What to do with xattrs that overlayfs would interpret
/// (`trusted.overlay.*`, `user.overlay.*`) when an image carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReservedXattrs {
    /// Drop them and report it.
    #[default]
    Skip,
    /// Fail with [`UnpackError::ReservedXattr`].
    Reject,
}

/// Which PAX `SCHILY.xattr.*` records are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrPolicy {
    /// Apply any xattrs at all.
    pub enabled: bool,
    /// `user.*` (other than `user.overlay.*`).
    pub user: bool,
    /// `security.*`.
    pub security: SecurityXattrs,
    /// `trusted.*` (other than `trusted.overlay.*`), which needs CAP_SYS_ADMIN.
    pub trusted: bool,
    /// `system.*` (POSIX ACLs).
    pub system: bool,
    /// Overlayfs markers from the image; never applied as-is.
    pub reserved: ReservedXattrs,
}

impl Default for XattrPolicy {
    fn default() -> Self {
        XattrPolicy {
            enabled: true,
            user: true,
            security: SecurityXattrs::Capability,
            trusted: false,
            system: true,
            reserved: ReservedXattrs::Skip,
        }
    }
}

/// Knobs of an unpack. The defaults verify nothing, sniff the compression,
/// apply whiteouts, keep ownership when running as root.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpackOptions {
    /// The declared compression (from the media type); `None` sniffs it.
    /// A declared compression that the bytes contradict is an error.
    pub compression: Option<Compression>,
    /// The expected blob digest (of the compressed bytes).
    pub digest: Option<Digest>,
    /// The expected diff ID (of the uncompressed tar).
    pub diff_id: Option<Digest>,
    /// The expected size of the compressed blob.
    pub size: Option<u64>,
    /// The caller verifies the compressed bytes against
    /// [`digest`](UnpackOptions::digest) itself (a pull whose store hashes
    /// the same bytes as they are written, and keeps the unpack only once
    /// the blob is committed): they are not hashed again here, and the
    /// report's `digest` is the one given. Ignored without a `digest`.
    pub digest_checked_by_caller: bool,
    /// The compressed bytes are a blob of a store, which checked them
    /// against [`digest`](UnpackOptions::digest) when it took them in:
    /// with a [`diff_id`](UnpackOptions::diff_id) to check they are not
    /// hashed again, and the report's `digest` is the one given (the size
    /// is still counted and checked). The diff ID covers every byte that
    /// is unpacked: stored bytes changed since either fail to decompress
    /// (gzip's CRC-32, zstd's frame checks) or give another diff ID, and
    /// either fails the unpack before its caller keeps anything; a change
    /// that decompresses to the same tar (a gzip header's time field)
    /// unpacks the tree the diff ID names, and is the store's `fsck`'s to
    /// find. Without a diff ID or a digest, the bytes are hashed as ever.
    /// Not public: [`flatten_image`](crate::flatten_image) and
    /// [`unpack_image`](crate::unpack_image) set it from their provider's
    /// [`verified_at_ingest`](image_store::Provider::verified_at_ingest),
    /// never a caller for a source of its choosing.
    pub(crate) digest_checked_by_store: bool,
    /// The algorithm for digests not given above (their own algorithm wins).
    pub algorithm: Algorithm,
    /// Whiteout handling.
    pub whiteouts: WhiteoutMode,
    /// Cost limits.
    pub limits: Limits,
    /// Device node handling.
    pub devices: DevicePolicy,
    /// Xattr handling.
    pub xattrs: XattrPolicy,
    /// Set owners from the tar (needs privilege); otherwise files belong to the caller.
    pub preserve_ownership: bool,
    /// With [`preserve_ownership`](UnpackOptions::preserve_ownership), the
    /// owner (uid, gid) of every entry instead of the tar's (`ADD --chown`
    /// of an archive).
    pub owner: Option<(u32, u32)>,
    /// The directories of the lower layers, nearest first, for a layer
    /// unpacked in overlay form ([`WhiteoutMode::Overlay`]) into a
    /// directory of its own: a hardlink whose target is not in that
    /// directory finds it in the merged view of these (whiteouts and opaque
    /// directories honoured), copies it up (content and metadata, as
    /// overlayfs' copy-up does) and links to the copy; only regular files
    /// are copied up. Ignored when whiteouts are applied (flattening,
    /// where the target is in the directory already). They are only read,
    /// and must not change during the unpack.
    pub lowers: Vec<PathBuf>,
    /// How paths are resolved inside the target.
    pub path_resolution: PathResolution,
    /// Reports the layer's compressed bytes read (an item named by
    /// [`digest`](UnpackOptions::digest), or `"layer"`, with
    /// [`size`](UnpackOptions::size) as its total) and stops the unpack
    /// once its interrupt is set: per chunk read and per entry. What was
    /// applied stays in the target (as after any failed unpack): an image
    /// unpack removes the snapshot it was unpacking into.
    pub tracker: Tracker,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            compression: None,
            digest: None,
            diff_id: None,
            size: None,
            digest_checked_by_caller: false,
            digest_checked_by_store: false,
            algorithm: Algorithm::Sha256,
            whiteouts: WhiteoutMode::Apply,
            limits: Limits::default(),
            devices: DevicePolicy::default(),
            xattrs: XattrPolicy::default(),
            preserve_ownership: rustix::process::geteuid().is_root(),
            owner: None,
            lowers: Vec::new(),
            path_resolution: PathResolution::Auto,
            tracker: Tracker::default(),
        }
    }
}

impl UnpackOptions {
    /// Expects the blob digest `digest`.
    pub fn with_digest(mut self, digest: Digest) -> Self {
        self.digest = Some(digest);
        self
    }

    /// Expects the diff ID `diff_id`.
    pub fn with_diff_id(mut self, diff_id: Digest) -> Self {
        self.diff_id = Some(diff_id);
        self
    }

    /// Declares the compression (as a layer media type does).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// Sets how paths are resolved inside the target.
    pub fn with_path_resolution(mut self, resolution: PathResolution) -> Self {
        self.path_resolution = resolution;
        self
    }

    /// Sets the whiteout handling.
    pub fn with_whiteouts(mut self, mode: WhiteoutMode) -> Self {
        self.whiteouts = mode;
        self
    }

    /// Sets the limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`tracker`](UnpackOptions::tracker).
    pub fn with_tracker(mut self, tracker: Tracker) -> Self {
        self.tracker = tracker;
        self
    }

    /// Gives every entry the owner `uid`:`gid` instead of the tar's.
    pub fn with_owner(mut self, uid: u32, gid: u32) -> Self {
        self.owner = Some((uid, gid));
        self
    }

    /// Sets the lower layers' directories, nearest first (see
    /// [`UnpackOptions::lowers`]).
    pub fn with_lowers(mut self, lowers: Vec<PathBuf>) -> Self {
        self.lowers = lowers;
        self
    }
}

/// Why an entry or part of it was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// A device node, by policy or because the kernel refused it.
    Device,
    /// An xattr the policy excludes or the filesystem does not support.
    Xattr,
    /// An overlayfs xattr carried by the image.
    ReservedXattr,
    /// Whiteout metadata such as `.wh..wh.plnk`.
    WhiteoutMeta,
    /// A whiteout of an entry the same layer created.
    SelfWhiteout,
    /// A PAX global header (its records are not applied).
    GlobalHeader,
}

/// One thing left out, with the entry it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The entry path as the tar names it.
    pub path: PathBuf,
    /// Why.
    pub reason: SkipReason,
    /// The xattr name, for xattr skips.
    pub detail: Option<String>,
}

/// What an unpack found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpackReport {
    /// The digest of the compressed blob, as read.
    pub digest: Digest,
    /// The diff ID: the digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The compression used.
    pub compression: Compression,
    /// Compressed bytes read.
    pub compressed_size: u64,
    /// Uncompressed bytes read (trailing bytes included).
    pub size: u64,
    /// Entries applied or skipped.
    pub entries: u64,
    /// Bytes after the end-of-archive marker (zero padding).
    pub trailing_bytes: u64,
    /// What was left out (the first 1000).
    pub skipped: Vec<Skipped>,
    /// How many things were left out in all.
    pub skipped_total: u64,
}

/// A failed unpack. Every variant about an entry carries its path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The target directory could not be opened.
    #[error("cannot open target directory {path}")]
    OpenTarget {
        /// The target.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The unpack's interrupt was set between two entries (a stop while
    /// reading the layer is a [`UnpackError::Source`] of the same class).
    #[error("unpack stopped")]
    Cancelled(#[from] Cancelled),
    /// Reading the source stream failed.
    #[error("reading the layer")]
    Source {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The declared compression is not what the bytes are.
    #[error("layer declared as {declared:?} but its bytes are {found:?}")]
    CompressionMismatch {
        /// Declared (media type).
        declared: Compression,
        /// Sniffed.
        found: Compression,
    },
    /// The compressed stream is corrupt (bad data, bad CRC or checksum).
    #[error("corrupt {compression:?} stream")]
    Decompress {
        /// The compression.
        compression: Compression,
        /// The decoder's error.
        #[source]
        source: io::Error,
    },
    /// The tar is malformed (bad header checksum, bad number, bad PAX record).
    #[error("corrupt tar{}", at(.path))]
    Corrupt {
        /// The entry being read, when known.
        path: Option<PathBuf>,
        /// The parser's error.
        #[source]
        source: io::Error,
    },
    /// The stream ended inside a header, an entry's data or its padding
    /// (an end at an entry boundary, with or without the end-of-archive
    /// marker, is a complete layer).
    #[error("layer ends inside an entry{}", at(.path))]
    Truncated {
        /// The entry being read, when known.
        path: Option<PathBuf>,
    },
    /// Non-zero bytes after the end-of-archive marker, which other tar
    /// readers might take for more entries.
    #[error("{count} bytes of data after the tar end-of-archive marker")]
    TrailingData {
        /// How many trailing bytes.
        count: u64,
    },
    /// An entry's header group (header block, PAX records, GNU long name
    /// and link) is larger than allowed.
    #[error("entry header exceeds the limit of {limit} bytes{}", after_entry(.after))]
    HeaderTooLarge {
        /// The entry before it, when there was one.
        after: Option<PathBuf>,
        /// The limit.
        limit: u64,
    },
    /// The layer expands to more bytes than allowed (decompression bomb),
    /// or an entry claims more than that.
    #[error("layer exceeds the limit of {limit} expanded bytes{}", at(.path))]
    TooLarge {
        /// The entry, when one claimed too much.
        path: Option<PathBuf>,
        /// The limit.
        limit: u64,
    },
    /// The layer has more entries than allowed.
    #[error("layer has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// A `..` component.
    #[error("entry path {path} has a '..' component")]
    PathTraversal {
        /// The entry path.
        path: PathBuf,
    },
    /// A path that cannot name a file (NUL byte, empty link target).
    #[error("entry {path}: {reason}")]
    InvalidPath {
        /// The entry path.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A parent component exists and is not a directory (or is a dangling symlink).
    #[error("a parent of {path} exists and is not a directory")]
    ParentNotDirectory {
        /// The entry path.
        path: PathBuf,
    },
    /// A hardlink to a name that does not exist in the target.
    #[error("hardlink {path} -> {target}: target does not exist")]
    HardlinkTargetMissing {
        /// The entry path.
        path: PathBuf,
        /// The link target.
        target: PathBuf,
    },
    /// A hardlink, in a layer unpacked in overlay form, to something in a
    /// lower layer that is not a regular file (only regular files are
    /// copied up).
    #[error("hardlink {path} -> {target}: the target in a lower layer is not a regular file")]
    HardlinkTargetNotRegular {
        /// The entry path.
        path: PathBuf,
        /// The link target.
        target: PathBuf,
    },
    /// A hardlink to a directory.
    #[error("hardlink {path} -> {target}: target is a directory")]
    HardlinkToDirectory {
        /// The entry path.
        path: PathBuf,
        /// The link target.
        target: PathBuf,
    },
    /// A whiteout of nothing (`.wh.`), of its own directory (`.wh..`), of its
    /// parent (`.wh...`), or a whiteout used as a directory.
    #[error("invalid whiteout {path}")]
    InvalidWhiteout {
        /// The entry path.
        path: PathBuf,
    },
    /// A 0/0 character device in a layer unpacked for overlayfs, where it
    /// would act as a whiteout that the layer did not declare as one.
    #[error("{path} is a 0/0 character device, which overlayfs would take for a whiteout")]
    ForgedWhiteout {
        /// The entry path.
        path: PathBuf,
    },
    /// An overlayfs xattr in the image, refused by policy.
    #[error("{path} carries the overlayfs xattr {name}")]
    ReservedXattr {
        /// The entry path.
        path: PathBuf,
        /// The xattr.
        name: String,
    },
    /// A uid or gid that does not fit a 32-bit id (or is -1).
    #[error("{path}: owner id {id} out of range")]
    IdOutOfRange {
        /// The entry path.
        path: PathBuf,
        /// The id.
        id: u64,
    },
    /// A device number that does not fit 32 bits.
    #[error("{path}: device number {value} out of range")]
    DeviceOutOfRange {
        /// The entry path.
        path: PathBuf,
        /// The major or minor number.
        value: u64,
    },
    /// A device node refused by policy.
    #[error("{path}: device nodes are rejected by policy")]
    DeviceRejected {
        /// The entry path.
        path: PathBuf,
    },
    /// A device node the kernel refused to create.
    #[error("{path}: not permitted to create a device node")]
    DeviceNotPermitted {
        /// The entry path.
        path: PathBuf,
    },
    /// An entry type this unpacker does not apply.
    #[error("{path}: unsupported tar entry type {entry_type:?}")]
    UnsupportedEntry {
        /// The entry path.
        path: PathBuf,
        /// The type flag byte.
        entry_type: char,
    },
    /// A sparse file whose map is malformed or of an unsupported format.
    #[error("{path}: bad sparse file: {reason}")]
    Sparse {
        /// The entry path.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The blob digest is not the expected one.
    #[error("layer digest mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        /// Expected.
        expected: Digest,
        /// Computed.
        found: Digest,
    },
    /// A caller handed a streamed layer the store's proof of another blob:
    /// nothing was hashed to `given`, the caller passed the wrong proof.
    #[error("the proof given for layer {layer} is of another blob, {given}")]
    WrongProof {
        /// The layer being unpacked.
        layer: Digest,
        /// The digest the given proof is of.
        given: Digest,
    },
    /// The diff ID is not the expected one.
    #[error("layer diff ID mismatch: expected {expected}, found {found}")]
    DiffIdMismatch {
        /// Expected.
        expected: Digest,
        /// Computed.
        found: Digest,
    },
    /// The compressed size is not the expected one.
    #[error("layer size mismatch: expected {expected} bytes, found {found}")]
    SizeMismatch {
        /// Expected.
        expected: u64,
        /// Read.
        found: u64,
    },
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Fs {
        /// The entry path.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn after_entry(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" after entry {}", p.display()))
        .unwrap_or_default()
}

fn at(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" at {}", p.display()),
        None => String::new(),
    }
}

impl Classify for UnpackError {
    fn kind(&self) -> ErrorKind {
        use UnpackError as E;
        match self {
            E::OpenTarget { source, .. } | E::Fs { source, .. } | E::Source { source } => {
                Classify::kind(source)
            }
            E::Cancelled(c) => c.kind(),
            E::CompressionMismatch { .. }
            | E::Decompress { .. }
            | E::Corrupt { .. }
            | E::Truncated { .. }
            | E::ParentNotDirectory { .. }
            | E::Sparse { .. } => ErrorKind::InvalidInput,
            E::HardlinkTargetMissing { .. } => ErrorKind::NotFound,
            E::TrailingData { .. }
            | E::TooLarge { .. }
            | E::HeaderTooLarge { .. }
            | E::TooManyEntries { .. }
            | E::PathTraversal { .. }
            | E::InvalidPath { .. }
            | E::HardlinkToDirectory { .. }
            | E::InvalidWhiteout { .. }
            | E::ForgedWhiteout { .. }
            | E::ReservedXattr { .. }
            | E::IdOutOfRange { .. }
            | E::DeviceOutOfRange { .. }
            | E::DeviceRejected { .. } => ErrorKind::Unsafe,
            E::DeviceNotPermitted { .. } => ErrorKind::PermissionDenied,
            E::UnsupportedEntry { .. } | E::HardlinkTargetNotRegular { .. } => {
                ErrorKind::Unsupported
            }
            E::DigestMismatch { .. } | E::DiffIdMismatch { .. } => ErrorKind::DigestMismatch,
            E::WrongProof { .. } => ErrorKind::InvalidInput,
            E::SizeMismatch { .. } => ErrorKind::SizeMismatch,
        }
    }
}

impl UnpackError {
    /// The entry path the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        use UnpackError as E;
        match self {
            E::Corrupt { path, .. } | E::Truncated { path } | E::TooLarge { path, .. } => {
                path.as_deref()
            }
            E::OpenTarget { path, .. }
            | E::PathTraversal { path }
            | E::InvalidPath { path, .. }
            | E::ParentNotDirectory { path }
            | E::HardlinkTargetMissing { path, .. }
            | E::HardlinkTargetNotRegular { path, .. }
            | E::HardlinkToDirectory { path, .. }
            | E::InvalidWhiteout { path }
            | E::ForgedWhiteout { path }
            | E::ReservedXattr { path, .. }
            | E::IdOutOfRange { path, .. }
            | E::DeviceOutOfRange { path, .. }
            | E::DeviceRejected { path }
            | E::DeviceNotPermitted { path }
            | E::UnsupportedEntry { path, .. }
            | E::Sparse { path, .. }
            | E::Fs { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Unpacks one layer from `reader` onto the directory `target`.
///
/// `reader` is any byte stream (a blob file, an HTTP body, a byte slice);
/// it is read to its end.
///
/// # Errors
/// An [`UnpackError`]; see its variants. Hostile input is reported with
/// [`ErrorKind::Unsafe`].
///
/// # Example
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use image_overlay::unpack::{unpack, UnpackOptions};
/// let dir = tempfile::tempdir()?;
/// let mut tar = tar::Builder::new(Vec::new());
/// let mut h = tar::Header::new_ustar();
/// h.set_path("hello.txt")?;
/// h.set_size(2);
/// h.set_mode(0o644);
/// h.set_uid(0);
/// h.set_gid(0);
/// h.set_mtime(1_700_000_000);
/// h.set_cksum();
/// tar.append(&h, &b"hi"[..])?;
/// let layer = tar.into_inner()?;
/// let report = unpack(&layer[..], dir.path(), &UnpackOptions::default())?;
/// assert_eq!(std::fs::read(dir.path().join("hello.txt"))?, b"hi");
/// assert_eq!(report.digest, report.diff_id); // not compressed
/// # Ok(()) }
/// ```
pub fn unpack<R: Read>(
    mut reader: R,
    target: &Path,
    options: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let root = open_target(target)?;
    unpack_core(&mut reader, root.as_fd(), options)
}

/// Opens the target directory of an unpack.
fn open_target(target: &Path) -> Result<OwnedFd, UnpackError> {
    rfs::open(
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::OpenTarget {
        path: target.to_path_buf(),
        source: io_err(e),
    })
}

/// Unpacks one layer from `reader` onto the directory open as `root`
/// (an `O_PATH` descriptor is enough).
///
/// # Errors
/// As [`unpack`].
pub fn unpack_at<R: Read, Fd: AsFd>(
    mut reader: R,
    root: Fd,
    options: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    unpack_core(&mut reader, root.as_fd(), options)
}

// ---- the reader stack ------------------------------------------------------

/// Marks an error of the source stream as it passes through the decoder.
#[derive(Debug)]
struct SourceFailure(io::Error);
impl std::fmt::Display for SourceFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for SourceFailure {}

/// The unpack's error for a failed read of its source. A verifying
/// source (a store's reader) that found the layer's bytes are not the
/// blob's reports a [`VerifyError`] inside the `io::Error`: it becomes the
/// unpack's own [`UnpackError::DigestMismatch`] or
/// [`UnpackError::SizeMismatch`], as if the unpack had checked them itself.
fn source_failed(source: io::Error) -> UnpackError {
    match source
        .get_ref()
        .and_then(|i| i.downcast_ref::<VerifyError>())
    {
        Some(v) => mismatch(v),
        None => UnpackError::Source { source },
    }
}

/// The unpack's own mismatch variant for a store's verification failure
/// (`VerifyError` is non-exhaustive: a kind added later stays a source
/// error carrying it, which keeps its own class).
fn mismatch(v: &VerifyError) -> UnpackError {
    match v {
        VerifyError::Digest { expected, found } => UnpackError::DigestMismatch {
            expected: expected.clone(),
            found: found.clone(),
        },
        VerifyError::Size {
            expected, found, ..
        } => UnpackError::SizeMismatch {
            expected: *expected,
            found: *found,
        },
        other => UnpackError::Source {
            source: io::Error::new(io::ErrorKind::InvalidData, other.clone()),
        },
    }
}

/// A layer read by its descriptor whose stored blob does not match it
/// ([`ContentError::DescriptorMismatch`](image_store::ContentError)) fails
/// as the unpack's own mismatch, as if the unpack had read the blob and
/// checked it: the caller sees one variant for a damaged blob whichever
/// check found it first. Any other read failure is given back.
pub(crate) fn descriptor_mismatch(
    e: image_store::ContentError,
) -> Result<UnpackError, image_store::ContentError> {
    match &e {
        image_store::ContentError::DescriptorMismatch { source } => Ok(mismatch(source)),
        _ => Err(e),
    }
}

/// The error of an unpack of the blob `digest` of `store` that failed on
/// the layer's bytes (a corrupt compressed stream or tar, a cut, or another
/// diff ID than the image's, which is all an unpack with
/// `digest_checked_by_store` finds of a blob changed in the
/// store): the blob is read again to its end through the store's verifying
/// reader, and when it is not what its digest says, that mismatch is the
/// error, as the cause, rather than what the decoder tripped on first (a
/// gzip checksum sits before the digest check at the end). Other errors are
/// returned as they are. The extra read happens only on this error path, at most the blob's
/// size (the reader stops there).
pub(crate) fn blame_the_blob<P: image_store::Provider + ?Sized>(
    store: &P,
    digest: &Digest,
    e: UnpackError,
) -> UnpackError {
    if !matches!(
        e,
        UnpackError::Decompress { .. }
            | UnpackError::Corrupt { .. }
            | UnpackError::Truncated { .. }
            | UnpackError::DiffIdMismatch { .. }
    ) {
        return e;
    }
    let Ok(mut blob) = store.reader(digest) else {
        return e;
    };
    match io::copy(&mut blob, &mut io::sink()).map_err(source_failed) {
        Err(m @ (UnpackError::DigestMismatch { .. } | UnpackError::SizeMismatch { .. })) => m,
        _ => e,
    }
}

/// Marks an error of the decoder.
#[derive(Debug)]
struct DecodeFailure(io::Error);
impl std::fmt::Display for DecodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for DecodeFailure {}

/// Marks the expanded-bytes limit.
#[derive(Debug)]
struct LimitHit;
impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("expanded-bytes limit reached")
    }
}
impl std::error::Error for LimitHit {}

pub(crate) struct SourceTag<'a>(pub(crate) &'a mut dyn Read);
impl Read for SourceTag<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), SourceFailure(e)))
    }
}

/// Hashes and counts the compressed stream, hashing on a helper thread
/// (the decompressor and the applier keep this thread busy); only counts
/// when the caller checks the digest.
struct BlobReader<'a> {
    inner: &'a mut dyn Read,
    hasher: BlobHash,
    read: u64,
}

/// The compressed stream's digest: hashed here, or the one the caller
/// checks ([`UnpackOptions::digest_checked_by_caller`]).
enum BlobHash {
    Hashed(Box<ThreadedHasher>),
    Given(Digest),
}

impl BlobHash {
    fn finish(self) -> Digest {
        match self {
            BlobHash::Hashed(h) => h.finish(),
            BlobHash::Given(d) => d,
        }
    }
}

impl<'a> BlobReader<'a> {
    /// Reads `inner`, the compressed stream of an unpack with `opts`:
    /// hashing it, or taking the digest [`given_digest`] gives.
    fn new(inner: &'a mut dyn Read, opts: &UnpackOptions) -> Self {
        let hasher = match given_digest(opts) {
            Some(d) => BlobHash::Given(d.clone()),
            None => BlobHash::Hashed(Box::new(ThreadedHasher::new(blob_algorithm(opts)))),
        };
        BlobReader {
            inner,
            hasher,
            read: 0,
        }
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let BlobHash::Hashed(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// With a [`Writeback`], bytes of a file's data written between two
/// starts of their writeback ([`crate::sys::start_writeback`]): a large
/// file's pages go to the disk while the rest of it is decompressed.
const WRITEBACK_STEP: u64 = 8 << 20;

/// With a [`Writeback`], the smallest file whose writeback it starts once
/// the file is written. A smaller one is closed at once and left to the
/// kernel's writeback (the caller's `sync`, or the flusher), which writes
/// many files' pages in one pass and merges them into large requests: one
/// `sync_file_range` per small file made a disk request of each (a flatten
/// of 36,000 files of 14 KiB on average made 7.6 times the write requests,
/// and spent 1.4 s more of CPU, most of it in the kernel, than leaving
/// them all to one `syncfs`: it was 0.3 s slower in all). The bound is
/// chosen, not measured (the bench has no file between 64 KiB and 256
/// MiB): a call cost about 40 µs of CPU there, and 1 MiB is about half a
/// millisecond of that disk's writing.
const WRITEBACK_MIN: u64 = 1 << 20;

/// Files handed to a [`Writeback`] thread at once (one wake-up of it per
/// batch, not per file: a wake-up per file cost a futex call per file).
const WRITEBACK_BATCH: usize = 64;
/// Batches a [`Writeback`] thread may hold that it has not taken yet.
const WRITEBACK_QUEUE: usize = 4;
/// The most descriptors all [`Writeback`]s of the process hold at once,
/// whatever the descriptor limit: the batches a thread may hold.
const WRITEBACK_FDS_MAX: usize = WRITEBACK_BATCH * WRITEBACK_QUEUE;

/// The descriptors the [`Writeback`]s of this process hold (the files
/// handed over and not closed yet), counted against one cap for them all:
/// parallel flattens share it, so together they keep at most a quarter of
/// the soft `RLIMIT_NOFILE` (and at most [`WRITEBACK_FDS_MAX`]) open for
/// their writeback. A file beyond the cap is closed at once, its writeback
/// left to the kernel.
struct FdBudget {
    held: AtomicUsize,
    /// The cap; 0: a quarter of the soft descriptor limit, read once.
    fixed: usize,
    cap: OnceLock<usize>,
}

/// The budget every [`Writeback`] of the process takes from.
static WRITEBACK_FDS: FdBudget = FdBudget::new(0);

impl FdBudget {
    const fn new(fixed: usize) -> Self {
        FdBudget {
            held: AtomicUsize::new(0),
            fixed,
            cap: OnceLock::new(),
        }
    }

    fn cap(&self) -> usize {
        *self.cap.get_or_init(|| {
            if self.fixed > 0 {
                return self.fixed;
            }
            let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
            let quarter = soft.map_or(u64::MAX, |n| n / 4);
            usize::try_from(quarter).map_or(WRITEBACK_FDS_MAX, |q| q.min(WRITEBACK_FDS_MAX))
        })
    }

    /// The descriptors held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// `job` counted against the cap, or `None` (its file closed) when the
    /// cap is reached.
    fn take(&'static self, job: WritebackJob) -> Option<Held> {
        let cap = self.cap();
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(Held {
            job: Some(job),
            budget: self,
        })
    }
}

/// The writeback to start of `len` bytes of `fd` from `offset` (`len` 0:
/// to its end), then `fd` closed.
struct WritebackJob {
    fd: OwnedFd,
    offset: u64,
    len: u64,
}

/// A [`WritebackJob`] counted in its [`FdBudget`]: dropped, its file is
/// closed, then given back.
struct Held {
    job: Option<WritebackJob>,
    budget: &'static FdBudget,
}

impl Held {
    fn start(&self) {
        if let Some(job) = &self.job {
            // A failure to start it early changes nothing of the result.
            let _ = crate::sys::start_writeback(&job.fd, job.offset, job.len);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.job.take());
        self.budget.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// For an unpack whose caller does not sync (a flatten), a thread that
/// starts the writeback of each file of at least [`WRITEBACK_MIN`] written
/// and closes it, and of each
/// [`WRITEBACK_STEP`] of a large file while it is written
/// ([`crate::sys::start_writeback`]): the data goes to the disk while the
/// rest is unpacked, rather than all at a `sync` after the unpack, and the
/// unpack's thread neither pays for the call nor waits where the disk's
/// queue is full. Best effort: a file it cannot take (no second CPU, no
/// thread, a full queue, the process's [`FdBudget`] spent) is closed at
/// once, its writeback left to the kernel as before, and without the
/// thread no writeback is started at all. Dropped, it lets its thread
/// close what it holds and waits for it (at most the queue). Off, it only
/// closes the files.
struct Writeback {
    tx: Option<SyncSender<Vec<Held>>>,
    /// Files not handed over yet.
    batch: Vec<Held>,
    budget: &'static FdBudget,
    thread: Option<JoinHandle<()>>,
}

impl Writeback {
    /// A writeback thread if `on` and there is a second CPU.
    fn start(on: bool) -> Self {
        Self::with_budget(on, &WRITEBACK_FDS)
    }

    /// As [`start`](Writeback::start), its descriptors counted in `budget`.
    fn with_budget(on: bool, budget: &'static FdBudget) -> Self {
        let none = Writeback {
            tx: None,
            batch: Vec::new(),
            budget,
            thread: None,
        };
        if !on || !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
            return none;
        }
        let (tx, rx) = mpsc::sync_channel::<Vec<Held>>(WRITEBACK_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                for batch in rx {
                    for held in batch {
                        held.start();
                    }
                }
            });
        match spawned {
            Ok(thread) => Writeback {
                tx: Some(tx),
                batch: Vec::with_capacity(WRITEBACK_BATCH),
                budget,
                thread: Some(thread),
            },
            Err(_) => none,
        }
    }

    /// Whether a thread takes the writeback (else nothing is started).
    fn started(&self) -> bool {
        self.tx.is_some()
    }

    /// Hands over `fd`, a file of `size` bytes whose data and metadata are
    /// written: to the thread if it is at least [`WRITEBACK_MIN`], else
    /// closed.
    fn hand_over(&mut self, fd: OwnedFd, size: u64) {
        if size < WRITEBACK_MIN {
            return;
        }
        self.take(WritebackJob {
            fd,
            offset: 0,
            len: 0,
        });
        if self.batch.len() >= WRITEBACK_BATCH {
            self.send();
        }
    }

    /// Has the thread start the writeback of `len` bytes of `file` from
    /// `offset` (a large file still being written, through a descriptor of
    /// its own), at once; nothing without a thread.
    fn kick(&mut self, file: &File, offset: u64, len: u64) {
        if !self.started() {
            return;
        }
        // A descriptor that cannot be had means no early writeback.
        if let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(file, 0) {
            self.take(WritebackJob { fd, offset, len });
            self.send();
        }
    }

    /// Adds `job` to the batch, or closes its file (no thread, or the
    /// budget spent: then the batch goes, so the thread can give back).
    fn take(&mut self, job: WritebackJob) {
        if !self.started() {
            return;
        }
        match self.budget.take(job) {
            Some(held) => self.batch.push(held),
            None => self.send(),
        }
    }

    /// Sends the batch to the thread; full or gone, it comes back and is
    /// closed here.
    fn send(&mut self) {
        let Some(tx) = &self.tx else {
            return;
        };
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(WRITEBACK_BATCH));
        let _ = tx.try_send(batch);
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            // The last files: waits for room (the thread is taking).
            let _ = tx.send(std::mem::take(&mut self.batch));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Compressed chunks a [`ReadAhead`] may hold that the unpack has not
/// taken yet: how far ahead of the decoder it reads, at most.
const AHEAD_CHUNKS: usize = 4;
/// Bytes a [`ReadAhead`] asks its source for at a time (and a
/// [`LayersAhead`] its decoder).
const AHEAD_CHUNK: usize = 256 * 1024;
/// Decoded bytes a [`LayersAhead`] may hold that the applier has not taken
/// yet, whichever layers they belong to: how far ahead of the applier the
/// decoding of a flatten runs, into the next layer too.
const DECODED_AHEAD: usize = 32 << 20;

/// What a read-ahead thread sends: a stream's chunks, then its end or its
/// failure; a [`LayersAhead`] sends one such stream per layer (its
/// decoded tar), each between a [`Began`](Ahead::Began) and, once it
/// ended, a [`Blob`](Ahead::Blob).
enum Ahead {
    /// The next bytes of the stream.
    Data(Vec<u8>),
    /// The end of the stream: the digest and size of all it gave.
    End(Digest, u64),
    /// The stream failed; nothing of it follows.
    Failed(io::Error),
    /// A layer's decoding started, with this compression, or failed
    /// before any byte was decoded (and nothing follows).
    Began(Result<Compression, UnpackError>),
    /// After a layer's [`End`](Ahead::End): its compressed stream read to
    /// its end, with this digest and size, or the failure of that read.
    Blob(Result<(Digest, u64), UnpackError>),
}

/// The receiving end of a read-ahead thread: the chunks of one stream at a
/// time, read in order, their buffers sent back to the thread for reuse.
struct Chunks {
    rx: Receiver<Ahead>,
    /// Chunks the reader is done with, back to the thread.
    recycle: Sender<Vec<u8>>,
    /// The chunk being read.
    cur: io::Cursor<Vec<u8>>,
    end: Option<(Digest, u64)>,
    failed: bool,
}

impl Chunks {
    fn new(rx: Receiver<Ahead>, recycle: Sender<Vec<u8>>) -> Self {
        Chunks {
            rx,
            recycle,
            cur: io::Cursor::new(Vec::new()),
            end: None,
            failed: false,
        }
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.cur.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.failed {
                return Err(io::Error::other("the layer's source failed earlier"));
            }
            if self.end.is_some() || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ahead::Data(d)) => {
                    let used = std::mem::replace(&mut self.cur, io::Cursor::new(d)).into_inner();
                    if used.capacity() > 0 {
                        // The thread may be gone: then the buffer drops.
                        let _ = self.recycle.send(used);
                    }
                }
                Ok(Ahead::End(digest, size)) => self.end = Some((digest, size)),
                Ok(Ahead::Failed(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                Ok(Ahead::Began(_) | Ahead::Blob(_)) => {
                    self.failed = true;
                    return Err(io::Error::other("the layer's reader thread lost its place"));
                }
                Err(_) => {
                    self.failed = true;
                    return Err(io::Error::other("the layer's reader thread stopped"));
                }
            }
        }
    }
}

/// A layer's compressed stream read, hashed and counted on a thread of
/// its own, at most [`AHEAD_CHUNKS`] chunks ahead of its reader: the
/// unpack's thread then only takes the bytes (read syscalls and the blob
/// digest, a fifth of an unpack's CPU on the bench image, leave the
/// thread that parses and writes). The bytes, errors and their order are
/// the source's; the digest and size come from [`ReadAhead::finish`] once
/// the stream has been read to its end. Dropped early, it closes the
/// channel, which stops the thread at its next chunk (it is not waited
/// for: a source blocked in a read would hold the caller).
pub(crate) struct ReadAhead {
    chunks: Chunks,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading `source`, its digest hashed or given as `digest`
    /// says. Gives the source back when reading ahead would not help (one
    /// CPU) or no thread could be started.
    pub(crate) fn start(
        source: Box<dyn Read + Send>,
        digest: AheadDigest,
    ) -> Result<Self, Box<dyn Read + Send>> {
        if !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
            return Err(source);
        }
        let (tx, rx) = mpsc::sync_channel(AHEAD_CHUNKS);
        let (recycle, recycled) = mpsc::channel();
        // The source comes back if the thread cannot be started.
        let slot = Arc::new(Mutex::new(Some(source)));
        let theirs = Arc::clone(&slot);
        let spawned = std::thread::Builder::new()
            .name("layer-read".into())
            .spawn(move || {
                let source = theirs.lock().ok().and_then(|mut s| s.take());
                if let Some(source) = source {
                    read_ahead(source, digest, &tx, &recycled);
                }
            });
        match spawned {
            Ok(thread) => Ok(ReadAhead {
                chunks: Chunks::new(rx, recycle),
                thread: Some(thread),
            }),
            Err(_) => match slot.lock().ok().and_then(|mut s| s.take()) {
                Some(source) => Err(source),
                None => Err(Box::new(io::empty())),
            },
        }
    }

    /// The digest and size of the whole source, once it has been read to
    /// its end; an error when it has not (or its thread panicked, which
    /// is resumed here).
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64)> {
        let end = self
            .chunks
            .end
            .take()
            .ok_or_else(|| io::Error::other("the layer was not read to its end"))?;
        // It sent its last message: it has returned, or is returning.
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Ok(end)
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.chunks.read(buf)
    }
}

/// The digest a [`ReadAhead`] gives for what it read.
pub(crate) enum AheadDigest {
    /// Hashed with this algorithm as it is read.
    Hash(Algorithm),
    /// Given, not hashed ([`given_digest`]).
    Given(Digest),
}

/// The body of a [`ReadAhead`] thread: reads `source` to its end or
/// first error, hashing what it reads unless its `digest` is given,
/// until the reader goes away.
fn read_ahead(
    mut source: Box<dyn Read + Send>,
    digest: AheadDigest,
    tx: &SyncSender<Ahead>,
    recycled: &Receiver<Vec<u8>>,
) {
    let (mut hasher, given) = match digest {
        AheadDigest::Hash(algorithm) => (Some(algorithm.hasher()), None),
        AheadDigest::Given(digest) => (None, Some(digest)),
    };
    let Sent::End(read) = send_chunks(&mut source, hasher.as_mut(), tx, recycled) else {
        return;
    };
    let digest = match (hasher, given) {
        (Some(h), _) => h.finish(),
        (None, Some(d)) => d,
        (None, None) => return,
    };
    let _ = tx.send(Ahead::End(digest, read));
}

/// How [`send_chunks`] ended.
enum Sent {
    /// The source ended after this many bytes, all sent; its
    /// [`Ahead::End`] is the caller's to send.
    End(u64),
    /// The source failed ([`Ahead::Failed`] sent), or the reader went away.
    Stopped,
}

/// Reads `source` to its end or first error, sending it in chunks of
/// [`AHEAD_CHUNK`] bytes (and its error as [`Ahead::Failed`]), each hashed
/// by `hasher` when there is one, taking the buffers the reader gives back
/// before allocating, until the reader goes away.
fn send_chunks(
    source: &mut dyn Read,
    mut hasher: Option<&mut image_core::digest::Hasher>,
    tx: &SyncSender<Ahead>,
    recycled: &Receiver<Vec<u8>>,
) -> Sent {
    let mut read: u64 = 0;
    loop {
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(AHEAD_CHUNK, 0);
        let msg = match source.read(&mut buf) {
            Ok(0) => return Sent::End(read),
            Ok(n) => {
                buf.truncate(n);
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf);
                }
                read += n as u64;
                Ahead::Data(buf)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Ahead::Failed(e));
                return Sent::Stopped;
            }
        };
        if tx.send(msg).is_err() {
            return Sent::Stopped;
        }
    }
}

/// Hashes (on a helper thread), counts and limits the uncompressed stream.
pub(crate) struct Meter<'a> {
    inner: Decoded<'a>,
    count: u64,
    limit: u64,
}

/// The uncompressed stream and the hasher of its diff ID.
enum Decoded<'a> {
    /// Decompressed on a worker thread; the decoder feeds the hasher its
    /// own output buffers, once read, without a copy.
    Threaded(compress::ThreadedDecoder<'a>),
    /// Decoded on this thread (or not compressed): each read is hashed.
    Plain(Box<dyn Read + 'a>, ThreadedHasher),
    /// Decoded and hashed ahead by a [`LayersAhead`] thread: its chunks,
    /// the diff ID at their end.
    Ahead(&'a mut Chunks),
}

impl Meter<'_> {
    /// The diff ID: the digest of every byte read; for a stream decoded
    /// ahead, an error unless it was read to its end.
    fn finish(self) -> io::Result<Digest> {
        match self.inner {
            Decoded::Threaded(mut d) => match d.take_hasher() {
                Some(h) => Ok(h.finish()),
                None => unreachable!("the threaded decoder of a meter hashes"),
            },
            Decoded::Plain(_, h) => Ok(h.finish()),
            Decoded::Ahead(chunks) => chunks
                .end
                .as_ref()
                .map(|(diff_id, _)| diff_id.clone())
                .ok_or_else(|| io::Error::other("the layer was not decoded to its end")),
        }
    }
}

impl Read for Meter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = match &mut self.inner {
            Decoded::Threaded(d) => d.read(buf),
            Decoded::Plain(r, _) => r.read(buf),
            Decoded::Ahead(chunks) => chunks.read(buf),
        };
        // An error a meter ahead already marked keeps its mark.
        let n = read.map_err(|e| {
            let tagged = e.get_ref().is_some_and(|i| {
                i.is::<SourceFailure>() || i.is::<LimitHit>() || i.is::<DecodeFailure>()
            });
            if tagged {
                e
            } else {
                io::Error::new(e.kind(), DecodeFailure(e))
            }
        })?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LimitHit));
        }
        if let Decoded::Plain(_, h) = &mut self.inner {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The decoded layer as the tar parser reads it: metered, ending where
/// the family's one rule ([`image_store::tar_ending`]) allows.
pub(crate) type Ending<'a> = tar_ending::Ending<'a, Meter<'a>>;

/// An error of the tar parser, or of reading an entry, as a truncation
/// when the stream had already ended.
fn at_end(end: &EndState, e: UnpackError) -> UnpackError {
    match e {
        UnpackError::Corrupt { path, .. } if end.hit_eof() => UnpackError::Truncated { path },
        e => e,
    }
}

pub(crate) fn classify_read(
    e: io::Error,
    path: Option<&[u8]>,
    limits: Limits,
    compression: Compression,
) -> UnpackError {
    let (limit, header_limit) = (limits.max_expanded_bytes, limits.max_header_bytes);
    let path = path.map(display_path);
    if e.get_ref().is_some_and(|i| i.is::<HeaderLimitHit>()) {
        return UnpackError::HeaderTooLarge {
            after: path,
            limit: header_limit,
        };
    }
    let marker = e.get_ref().map(|i| {
        (
            i.is::<LimitHit>(),
            i.is::<SourceFailure>(),
            i.is::<DecodeFailure>(),
        )
    });
    match marker {
        Some((true, _, _)) => return UnpackError::TooLarge { path, limit },
        Some((_, true, _)) => {
            if let Some(inner) = e.into_inner() {
                if let Ok(s) = inner.downcast::<SourceFailure>() {
                    return source_failed(s.0);
                }
            }
            return UnpackError::Source {
                source: io::Error::other("source failed"),
            };
        }
        Some((_, _, true)) => {
            let kind = e.kind();
            if kind == io::ErrorKind::UnexpectedEof && compression != Compression::None {
                return UnpackError::Truncated { path };
            }
            let source = match e.into_inner().map(|i| i.downcast::<DecodeFailure>()) {
                Some(Ok(d)) => d.0,
                _ => io::Error::new(kind, "decoder failed"),
            };
            if compression == Compression::None {
                return source_failed(source);
            }
            return UnpackError::Decompress {
                compression,
                source,
            };
        }
        _ => {}
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        UnpackError::Truncated { path }
    } else {
        UnpackError::Corrupt { path, source: e }
    }
}

// ---- the applier -------------------------------------------------------------

struct Ctx<'o> {
    opts: &'o UnpackOptions,
    limits: Limits,
    compression: Compression,
}

impl Ctx<'_> {
    fn err(&self, e: io::Error, path: Option<&[u8]>) -> UnpackError {
        classify_read(e, path, self.limits, self.compression)
    }
}

#[cfg(test)]
thread_local! {
    /// Parent directories resolved from the root (cache misses) on this
    /// thread, for the tests.
    static PARENT_OPENS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

struct Applier<'r, 'o> {
    root: BorrowedFd<'r>,
    compression: Compression,
    opts: &'o UnpackOptions,
    /// The last parent directory opened, by normalised path.
    cache: Option<(Vec<u8>, OwnedFd)>,
    /// The owner a file gets when created in the cached parent (learned
    /// from the first one), so the `fchown` of those already owned as the
    /// layer says is skipped. Known only across a run of regular files in
    /// one parent: forgotten when the parent changes and at any other
    /// entry (which may change a directory's group or setgid bit).
    born: Option<(u32, u32)>,
    /// Every path this layer created (whiteouts apply only to lower layers).
    created: HashSet<Vec<u8>>,
    /// Directories whose mode and times are set at the end.
    dirs: Vec<(Vec<u8>, u32, Timespec)>,
    skipped: Vec<Skipped>,
    skipped_total: u64,
    buf: Vec<u8>,
    /// Lower layers, for hardlinks to their files (overlay form).
    lowers: Lowers,
    /// The process's umask when the unpack started (`None` when it could
    /// not be read): a regular file whose mode the umask leaves whole is
    /// created with that mode, and needs no `fchmod`.
    umask: Option<u32>,
    /// Whether the cached parent has a default ACL (which, not the umask,
    /// shapes a created file's mode): learned at the first regular file
    /// created in it, forgotten with the cache.
    parent_acl: Option<bool>,
    /// Starts the writeback of the large files written, when asked.
    writeback: Writeback,
}

/// The metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A normalised entry path: components joined by `/`, no `.`, no empties.
struct NormPath {
    full: Vec<u8>,
    /// Where the last component starts.
    split: usize,
}

impl NormPath {
    fn parent(&self) -> &[u8] {
        if self.split == 0 {
            b""
        } else {
            &self.full[..self.split - 1]
        }
    }
    fn name(&self) -> &[u8] {
        &self.full[self.split..]
    }
    fn is_root(&self) -> bool {
        self.full.is_empty()
    }
}

fn normalise(raw: &[u8]) -> Result<NormPath, UnpackError> {
    if raw.contains(&0) {
        return Err(UnpackError::InvalidPath {
            path: display_path(raw),
            reason: "NUL byte in path",
        });
    }
    let mut full = Vec::with_capacity(raw.len());
    let mut split = 0;
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => {
                return Err(UnpackError::PathTraversal {
                    path: display_path(raw),
                })
            }
            c => {
                if !full.is_empty() {
                    full.push(b'/');
                }
                split = full.len();
                full.extend_from_slice(c);
            }
        }
    }
    Ok(NormPath { full, split })
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    v.extend_from_slice(parent);
    if !parent.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn fs_err(path: &[u8], op: &'static str, e: Errno) -> UnpackError {
    UnpackError::Fs {
        path: display_path(path),
        op,
        source: io_err(e),
    }
}

/// Parses a PAX time (`-12.5`, `1700000000.123456789`).
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if neg {
        if nanos == 0 {
            Timespec {
                tv_sec: -secs,
                tv_nsec: 0,
            }
        } else {
            Timespec {
                tv_sec: -secs - 1,
                tv_nsec: 1_000_000_000 - nanos,
            }
        }
    } else {
        Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }
    })
}

/// Parses a numeric tar header field (octal, or GNU base-256) to u64.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return None; // negative
            }
            let mut v: u64 = u64::from(first & 0x3f);
            for &b in &field[1..] {
                v = v.checked_mul(256)?.checked_add(u64::from(b))?;
            }
            return Some(v);
        }
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != 0 && *b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let s = std::str::from_utf8(&s).ok()?;
    u64::from_str_radix(s, 8).ok()
}

fn check_id(path: &[u8], id: u64) -> Result<u32, UnpackError> {
    u32::try_from(id)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or(UnpackError::IdOutOfRange {
            path: display_path(path),
            id,
        })
}

/// The algorithm of the blob digest of an unpack: the expected digest's,
/// or the options' default.
fn blob_algorithm(opts: &UnpackOptions) -> Algorithm {
    opts.digest
        .as_ref()
        .map_or(opts.algorithm, Digest::algorithm)
}

/// The blob digest an unpack takes as given instead of hashing the
/// compressed bytes: one its caller checks
/// ([`UnpackOptions::digest_checked_by_caller`]), or one its store checked
/// where a diff ID is checked here (`digest_checked_by_store`, set only
/// for a provider [`verified_at_ingest`](image_store::Provider::verified_at_ingest)).
fn given_digest(opts: &UnpackOptions) -> Option<&Digest> {
    let digest = opts.digest.as_ref()?;
    let store_checked = opts.digest_checked_by_store && opts.diff_id.is_some();
    (opts.digest_checked_by_caller || store_checked).then_some(digest)
}

/// The progress item of an unpack: its digest, or `"layer"`.
fn progress_item(opts: &UnpackOptions) -> String {
    opts.digest
        .as_ref()
        .map_or_else(|| "layer".to_owned(), Digest::to_string)
}

fn unpack_core(
    src: &mut dyn Read,
    root: BorrowedFd<'_>,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let mut src = opts.tracker.reader(&progress_item(opts), opts.size, src);
    let mut tagged = SourceTag(&mut src);
    let mut compressed = BlobReader::new(&mut tagged, opts);
    let applied = apply_stream(&mut compressed, root, opts, false)?;
    let (digest, compressed_size) = (compressed.hasher.finish(), compressed.read);
    verified_report(applied, digest, compressed_size, opts)
}

/// Unpacks a layer as [`unpack`] does, its compressed stream read and
/// hashed (the blob digest) by a [`ReadAhead`] thread, so the thread that
/// applies the layer neither waits for the source's reads nor pays for
/// them: for a source that can move to another thread (a blob of a
/// store), on a machine with a second CPU. Elsewhere it is [`unpack`].
/// With `early_writeback` (for a caller that does not sync the target),
/// the writeback of each file of at least [`WRITEBACK_MIN`] is started
/// once it is written ([`Writeback`]).
pub(crate) fn unpack_read_ahead(
    reader: Box<dyn Read + Send>,
    target: &Path,
    options: &UnpackOptions,
    early_writeback: bool,
) -> Result<UnpackReport, UnpackError> {
    let root = open_target(target)?;
    let digest = match given_digest(options) {
        Some(d) => AheadDigest::Given(d.clone()),
        None => AheadDigest::Hash(blob_algorithm(options)),
    };
    let mut ahead = match ReadAhead::start(reader, digest) {
        Ok(ahead) => ahead,
        Err(mut reader) => return unpack_core(&mut reader, root.as_fd(), options),
    };
    let applied = {
        let mut src = options
            .tracker
            .reader(&progress_item(options), options.size, &mut ahead);
        let mut tagged = SourceTag(&mut src);
        apply_stream(&mut tagged, root.as_fd(), options, early_writeback)?
    };
    let (digest, compressed_size) = ahead.finish().map_err(source_failed)?;
    verified_report(applied, digest, compressed_size, options)
}

/// A layer for a [`LayersAhead`] to decode: its compressed stream and the
/// options of its unpack.
struct AheadJob {
    source: Box<dyn Read + Send>,
    opts: UnpackOptions,
}

/// The layers of a flatten decoded on a thread of their own, one after
/// the other, ahead of the thread that applies them: each layer's blob is
/// read (counted and reported to its tracker, its digest hashed unless
/// [`given_digest`] gives it), decompressed (on the decoder's worker
/// thread) and its diff ID hashed there, as the unpack of that layer alone
/// would, and its decoded tar handed over in chunks of [`AHEAD_CHUNK`]
/// bytes, at most [`DECODED_AHEAD`] bytes ahead of the applier in all.
/// Once a layer's blob is read the next queued one starts, so the next
/// layer is decoding while the end of the current one is still applied.
/// The applier takes the layers in the order they were queued
/// ([`unpack_next`](LayersAhead::unpack_next)), applies each as an unpack
/// does (the same checks, errors and limits, in the same order; a layer's
/// failure ahead is only seen when its turn comes). Dropped, it closes its
/// queues and refuses its thread every further source read, so the
/// thread stops at its next chunk or read; it waits for the thread unless
/// that thread is inside a source read, which may never return (a
/// registry that stalls, a FUSE mount): then, as a [`ReadAhead`], it
/// does not wait, and the thread ends, letting go of the source, when
/// the read returns. Either way no layer is decoded after the flatten
/// returns.
pub(crate) struct LayersAhead {
    jobs: Option<Sender<AheadJob>>,
    chunks: Option<Chunks>,
    thread: Option<JoinHandle<()>>,
    /// The source reads in progress on the thread, and [`STOPPED`] once
    /// no more may start (shared with each queued source's [`InRead`]).
    reads: Arc<AtomicUsize>,
}

/// The bit of [`LayersAhead::reads`] that refuses further source reads.
const STOPPED: usize = 1 << (usize::BITS - 1);

/// A layer's source queued on a [`LayersAhead`]: counts its reads in
/// progress, and refuses any once the `LayersAhead` is stopped.
struct InRead {
    inner: Box<dyn Read + Send>,
    reads: Arc<AtomicUsize>,
}

impl Read for InRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        /// Ends the count of a read, also when the source panics.
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let counted = Counted(&self.reads);
        if self.reads.fetch_add(1, Ordering::SeqCst) & STOPPED != 0 {
            drop(counted);
            return Err(io::Error::other("the flatten stopped"));
        }
        self.inner.read(buf)
    }
}

impl LayersAhead {
    /// Starts the decoding thread; `None` where decoding ahead would not
    /// help (one CPU) or no thread could be started.
    pub(crate) fn start() -> Option<Self> {
        if !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
            return None;
        }
        let (jobs, queued) = mpsc::channel::<AheadJob>();
        let (tx, rx) = mpsc::sync_channel(DECODED_AHEAD / AHEAD_CHUNK);
        let (recycle, recycled) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("layers-ahead".into())
            .spawn(move || {
                for job in queued {
                    if !decode_ahead(job, &tx, &recycled) {
                        return;
                    }
                }
            })
            .ok()?;
        Some(LayersAhead {
            jobs: Some(jobs),
            chunks: Some(Chunks::new(rx, recycle)),
            thread: Some(thread),
            reads: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Queues the next layer: its compressed stream, to unpack with
    /// `options` (which must be those given to its
    /// [`unpack_next`](LayersAhead::unpack_next)).
    pub(crate) fn queue(&mut self, source: Box<dyn Read + Send>, options: &UnpackOptions) {
        if let Some(jobs) = &self.jobs {
            // A thread that stopped is found by `unpack_next`.
            let source = InRead {
                inner: source,
                reads: Arc::clone(&self.reads),
            };
            let _ = jobs.send(AheadJob {
                source: Box::new(source),
                opts: options.clone(),
            });
        }
    }

    /// Unpacks the next queued layer onto `target`, as
    /// [`unpack_read_ahead`] would with the same `options`.
    pub(crate) fn unpack_next(
        &mut self,
        target: &Path,
        options: &UnpackOptions,
        early_writeback: bool,
    ) -> Result<UnpackReport, UnpackError> {
        let root = open_target(target)?;
        let compression = match self.next()? {
            Ahead::Began(began) => began?,
            _ => return Err(lost()),
        };
        let mut blob = None;
        let applied = apply_walked(
            root.as_fd(),
            options,
            compression,
            early_writeback,
            |visit| {
                let chunks = self.chunks.as_mut().ok_or_else(stopped)?;
                chunks.end = None;
                let end = EndState::default();
                let walked = walk_decoded(
                    Decoded::Ahead(chunks),
                    &end,
                    compression,
                    options.limits,
                    visit,
                )?;
                // The blob read to its end (or that read's failure), where an
                // unpack reads it: before the directories are finished.
                blob = Some(match self.next()? {
                    Ahead::Blob(read) => read?,
                    _ => return Err(lost()),
                });
                Ok(walked)
            },
        )?;
        let (digest, compressed_size) = blob.ok_or_else(lost)?;
        verified_report(applied, digest, compressed_size, options)
    }

    /// The thread's next message; once it has stopped, it is waited for
    /// (its panic resumed) and the unpack fails.
    fn next(&mut self) -> Result<Ahead, UnpackError> {
        let chunks = self.chunks.as_mut().ok_or_else(stopped)?;
        match chunks.rx.recv() {
            Ok(msg) => Ok(msg),
            Err(_) => {
                self.stop();
                Err(stopped())
            }
        }
    }

    /// Closes the queues, refuses the thread any further source read and
    /// waits for it, resuming its panic (unless this thread is unwinding
    /// already); unless it is inside a source read, which may never
    /// return: then it is left to end once that read does.
    fn stop(&mut self) {
        self.jobs = None;
        self.chunks = None;
        let reads = self.reads.fetch_or(STOPPED, Ordering::SeqCst);
        if reads & !STOPPED != 0 {
            // Not joined: it reads nothing more, and ends when this read
            // returns (its channels are closed).
            self.thread = None;
            return;
        }
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                if !std::thread::panicking() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}

impl Drop for LayersAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The error of a [`LayersAhead`] whose thread stopped.
fn stopped() -> UnpackError {
    UnpackError::Source {
        source: io::Error::other("the layers' decoding thread stopped"),
    }
}

/// The error of a [`LayersAhead`] whose messages came out of order (a
/// bug, not the layer's).
fn lost() -> UnpackError {
    UnpackError::Source {
        source: io::Error::other("the layers' decoding thread lost its place"),
    }
}

/// Decodes the layer of `job` for a [`LayersAhead`]: sends its
/// [`Ahead::Began`], its decoded chunks and their end (with the diff ID),
/// then its [`Ahead::Blob`]. Returns whether the next layer may follow
/// (not after a failure, nor once the applier went away).
fn decode_ahead(job: AheadJob, tx: &SyncSender<Ahead>, recycled: &Receiver<Vec<u8>>) -> bool {
    let AheadJob { mut source, opts } = job;
    let mut src = opts
        .tracker
        .reader(&progress_item(&opts), opts.size, &mut source);
    let mut tagged = SourceTag(&mut src);
    let mut compressed = BlobReader::new(&mut tagged, &opts);
    let compression = {
        let began = sniff(&mut compressed, opts.compression).and_then(|(head, compression)| {
            decode(&mut compressed, &head, compression, diff_algorithm(&opts))
                .map(|decoded| (decoded, compression))
        });
        let (decoded, compression) = match began {
            Ok(began) => began,
            Err(e) => {
                let _ = tx.send(Ahead::Began(Err(e)));
                return false;
            }
        };
        if tx.send(Ahead::Began(Ok(compression))).is_err() {
            return false;
        }
        // Not limited here: the applier's own meter stops at the limit,
        // where an unpack would; this one is bounded by the queue.
        let mut meter = Meter {
            inner: decoded,
            count: 0,
            limit: u64::MAX,
        };
        let Sent::End(size) = send_chunks(&mut meter, None, tx, recycled) else {
            return false;
        };
        let end = match meter.finish() {
            Ok(diff_id) => Ahead::End(diff_id, size),
            Err(e) => Ahead::Failed(e),
        };
        if tx.send(end).is_err() {
            return false;
        }
        compression
    };
    let read = match io::copy(&mut compressed, &mut io::sink()) {
        Ok(_) => Ok((compressed.hasher.finish(), compressed.read)),
        Err(e) => Err(classify_read(e, None, opts.limits, compression)),
    };
    let ok = read.is_ok();
    tx.send(Ahead::Blob(read)).is_ok() && ok
}

/// What [`apply_stream`] applied and found, before the blob digest and
/// size are known.
struct Applied {
    walked: Walked,
    compression: Compression,
    skipped: Vec<Skipped>,
    skipped_total: u64,
}

/// Applies the layer whose compressed bytes `compressed` gives (already
/// tracked and tagged as the source): sniffs its compression, walks and
/// applies every entry, reads the stream to its end and sets the
/// directories' modes and times; with `early_writeback`, starts the
/// writeback of the large files it writes ([`Writeback`]).
fn apply_stream(
    compressed: &mut dyn Read,
    root: BorrowedFd<'_>,
    opts: &UnpackOptions,
    early_writeback: bool,
) -> Result<Applied, UnpackError> {
    let (head, compression) = sniff(&mut *compressed, opts.compression)?;
    apply_walked(root, opts, compression, early_writeback, |visit| {
        let end = EndState::default();
        let decoded = decode(&mut *compressed, &head, compression, diff_algorithm(opts))?;
        let walked = walk_decoded(decoded, &end, compression, opts.limits, visit)?;
        // Anything the decoder left unread (nothing, normally).
        io::copy(compressed, &mut io::sink())
            .map_err(|e| classify_read(e, None, opts.limits, compression))?;
        Ok(walked)
    })
}

/// The algorithm of the diff ID of an unpack: the expected diff ID's, or
/// the options' default.
fn diff_algorithm(opts: &UnpackOptions) -> Algorithm {
    opts.diff_id
        .as_ref()
        .map_or(opts.algorithm, Digest::algorithm)
}

/// Applies the entries `walker` hands its visitor (a layer of
/// `compression`, unpacked with `opts` onto `root`) and then sets the
/// directories' modes and times; with `early_writeback`, starts the
/// writeback of the large files it writes ([`Writeback`]).
fn apply_walked(
    root: BorrowedFd<'_>,
    opts: &UnpackOptions,
    compression: Compression,
    early_writeback: bool,
    walker: impl FnOnce(&mut Visitor<'_>) -> Result<Walked, UnpackError>,
) -> Result<Applied, UnpackError> {
    let ctx = Ctx {
        opts,
        limits: opts.limits,
        compression,
    };
    let mut applier = Applier {
        root,
        compression,
        opts,
        cache: None,
        born: None,
        created: HashSet::new(),
        dirs: Vec::new(),
        skipped: Vec::new(),
        skipped_total: 0,
        buf: vec![0u8; 256 * 1024],
        lowers: Lowers::new(opts.lowers.clone(), opts.path_resolution),
        umask: process_umask(),
        parent_acl: None,
        writeback: Writeback::start(early_writeback),
    };
    let walked = walker(&mut |entry, raw_path, global| {
        opts.tracker.check()?;
        if global {
            applier.skip(raw_path, SkipReason::GlobalHeader, None);
            Ok(())
        } else {
            applier.apply(entry, raw_path, &ctx)
        }
    })?;
    applier.finish_dirs()?;
    Ok(Applied {
        walked,
        compression,
        skipped: applier.skipped,
        skipped_total: applier.skipped_total,
    })
}

/// The report of an unpack whose compressed stream had the blob `digest`
/// and `compressed_size`, once both are checked against what `opts`
/// expects, and the diff ID and the trailing bytes too.
fn verified_report(
    applied: Applied,
    digest: Digest,
    compressed_size: u64,
    opts: &UnpackOptions,
) -> Result<UnpackReport, UnpackError> {
    let Applied {
        walked:
            Walked {
                diff_id,
                size,
                trailing_bytes,
                nonzero_trailing,
                entries: entries_seen,
            },
        compression,
        skipped,
        skipped_total,
    } = applied;
    if let Some(expected) = &opts.size {
        if *expected != compressed_size {
            return Err(UnpackError::SizeMismatch {
                expected: *expected,
                found: compressed_size,
            });
        }
    }
    if let Some(expected) = &opts.digest {
        if *expected != digest {
            return Err(UnpackError::DigestMismatch {
                expected: expected.clone(),
                found: digest,
            });
        }
    }
    if let Some(expected) = &opts.diff_id {
        if *expected != diff_id {
            return Err(UnpackError::DiffIdMismatch {
                expected: expected.clone(),
                found: diff_id,
            });
        }
    }
    if nonzero_trailing {
        return Err(UnpackError::TrailingData {
            count: trailing_bytes,
        });
    }
    Ok(UnpackReport {
        digest,
        diff_id,
        compression,
        compressed_size,
        size,
        entries: entries_seen,
        trailing_bytes,
        skipped,
        skipped_total,
    })
}

/// Reads the first bytes of the (possibly compressed) stream and decides
/// its compression: sniffed, checked against the `declared` one.
pub(crate) fn sniff(
    compressed: &mut dyn Read,
    declared: Option<Compression>,
) -> Result<(Vec<u8>, Compression), UnpackError> {
    let mut head = [0u8; 8];
    let mut n = 0;
    while n < head.len() {
        match compressed.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(source_failed(
                    match e.into_inner().map(|i| i.downcast::<SourceFailure>()) {
                        Some(Ok(s)) => s.0,
                        _ => io::Error::other("source failed"),
                    },
                ))
            }
        }
    }
    let sniffed = Compression::sniff(&head[..n]);
    match declared {
        Some(declared) if declared != sniffed => Err(UnpackError::CompressionMismatch {
            declared,
            found: sniffed,
        }),
        _ => Ok((head[..n].to_vec(), sniffed)),
    }
}

/// What [`walk`] found in the uncompressed stream.
pub(crate) struct Walked {
    pub(crate) diff_id: Digest,
    pub(crate) size: u64,
    pub(crate) trailing_bytes: u64,
    pub(crate) nonzero_trailing: bool,
    pub(crate) entries: u64,
}

/// What [`walk`] hands each entry to: the entry (its data readable), its
/// raw path, and whether it is a PAX global header (not counted as an
/// entry).
pub(crate) type Visitor<'v> =
    dyn FnMut(&mut tar::Entry<'_, Ending<'_>>, &[u8], bool) -> Result<(), UnpackError> + 'v;

/// The one tar reading path of unpack and list: decompresses (`head` is
/// what [`sniff`] read), hashes, counts and limits the uncompressed stream,
/// parses it as a tar that may end where [`Ending`] allows, hands every
/// entry to `visit` and reads to the end of the stream.
pub(crate) fn walk(
    compressed: &mut dyn Read,
    head: &[u8],
    compression: Compression,
    limits: Limits,
    diff_alg: Algorithm,
    visit: &mut Visitor<'_>,
) -> Result<Walked, UnpackError> {
    let end = EndState::default();
    let decoded = decode(compressed, head, compression, diff_alg)?;
    walk_decoded(decoded, &end, compression, limits, visit)
}

/// The decoder of `compressed` (of `compression`; `head` is what [`sniff`]
/// read), hashing what is read of it with `diff_alg`: with a second CPU,
/// decompressing on a worker thread while this one hashes, parses and
/// writes files (the bytes and errors are the same).
fn decode<'a>(
    compressed: &'a mut dyn Read,
    head: &[u8],
    compression: Compression,
    diff_alg: Algorithm,
) -> Result<Decoded<'a>, UnpackError> {
    let worker = (compression != Compression::None
        && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
    .then(|| compress::DecompressWorker::start(compression))
    .flatten();
    let hasher = ThreadedHasher::new(diff_alg);
    Ok(match worker {
        Some(w) => Decoded::Threaded(w.hashing_decoder(head.to_vec(), compressed, hasher)),
        None => {
            let head_reader = io::Cursor::new(head.to_vec()).chain(compressed);
            let decoder = compress::decoder(compression, head_reader).map_err(|e| {
                UnpackError::Decompress {
                    compression,
                    source: e,
                }
            })?;
            Decoded::Plain(Box::new(decoder), hasher)
        }
    })
}

/// [`walk`] of a layer decoded already (`decoded`, of `compression`):
/// counts and limits its bytes, parses it (where it ends kept in `end`,
/// fresh), hands every entry to `visit` and reads to its end.
fn walk_decoded<'a>(
    decoded: Decoded<'a>,
    end: &'a EndState,
    compression: Compression,
    limits: Limits,
    visit: &mut Visitor<'_>,
) -> Result<Walked, UnpackError> {
    let err = |e: io::Error, path: Option<&[u8]>| classify_read(e, path, limits, compression);
    end.set_header_limit(limits.max_header_bytes);
    let ending = Ending::new(
        Meter {
            inner: decoded,
            count: 0,
            limit: limits.max_expanded_bytes,
        },
        end,
    );
    let mut archive = tar::Archive::new(ending);
    let mut entries_seen: u64 = 0;
    {
        let entries = archive.entries().map_err(|e| at_end(end, err(e, None)))?;
        let mut last_path: Option<Vec<u8>> = None;
        for entry in entries {
            let mut entry = entry.map_err(|e| at_end(end, err(e, last_path.as_deref())))?;
            end.entry(&entry);
            let raw_path = entry.path_bytes().into_owned();
            let global = entry.header().entry_type() == tar::EntryType::XGlobalHeader;
            if !global {
                entries_seen += 1;
                if entries_seen > limits.max_entries {
                    return Err(UnpackError::TooManyEntries {
                        limit: limits.max_entries,
                    });
                }
            }
            visit(&mut entry, &raw_path, global).map_err(|e| at_end(end, e))?;
            last_path = Some(raw_path);
        }
    }
    end.set_header_limit(u64::MAX);
    // The tar crate stops at the first zero block or where the stream ends
    // at an entry boundary; what follows must be zeros (the rest of the
    // end-of-archive marker and any padding a writer added to a record size).
    let mut meter = archive.into_inner().into_inner();
    let before = meter.count;
    let mut nonzero_trailing = false;
    let mut buf = vec![0u8; 64 * 1024];
    while !end.hit_eof() {
        let k = match meter.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e, None)),
        };
        nonzero_trailing |= buf[..k].iter().any(|b| *b != 0);
    }
    let trailing_bytes = meter.count - before;
    let size = meter.count;
    let diff_id = meter.finish().map_err(|e| err(e, None))?;
    Ok(Walked {
        diff_id,
        size,
        trailing_bytes,
        nonzero_trailing,
        entries: entries_seen,
    })
}

/// Sparse layout of an entry: the real size and, for PAX 1.0 sparse files,
/// whether a map precedes the data.
enum Sparse {
    None,
    /// Old GNU sparse: the tar crate expands holes into zeros.
    Gnu {
        real_size: u64,
    },
    /// PAX 1.0 (`GNU.sparse.major=1`): a map at the start of the data.
    Pax1 {
        real_size: u64,
    },
}

impl<'r, 'o> Applier<'r, 'o> {
    fn err(&self, e: io::Error, raw: &[u8]) -> UnpackError {
        classify_read(e, Some(raw), self.opts.limits, self.compression)
    }

    fn skip(&mut self, path: &[u8], reason: SkipReason, detail: Option<String>) {
        self.skipped_total += 1;
        if self.skipped.len() < 1000 {
            self.skipped.push(Skipped {
                path: display_path(path),
                reason,
                detail,
            });
        }
    }

    /// Opens (from the cache) the parent directory, creating missing ones.
    fn parent(&mut self, parent: &[u8], raw: &[u8]) -> Result<BorrowedFd<'_>, UnpackError> {
        let hit = matches!(&self.cache, Some((p, _)) if p == parent);
        if !hit {
            #[cfg(test)]
            PARENT_OPENS.with(|c| c.set(c.get() + 1));
            let fd = match fsops::open_dir_in_root(self.root, parent, self.opts.path_resolution) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => self.create_parents(parent, raw)?,
                Err(Errno::NOTDIR) => {
                    return Err(UnpackError::ParentNotDirectory {
                        path: display_path(raw),
                    })
                }
                Err(e) => return Err(fs_err(raw, "open parent of", e)),
            };
            self.cache = Some((parent.to_vec(), fd));
            self.born = None;
            self.parent_acl = None;
        }
        match &self.cache {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(fs_err(raw, "open parent of", Errno::NOENT)),
        }
    }

    fn create_parents(&mut self, parent: &[u8], raw: &[u8]) -> Result<OwnedFd, UnpackError> {
        let not_dir = || UnpackError::ParentNotDirectory {
            path: display_path(raw),
        };
        let mut cur = fsops::open_dir_in_root(self.root, b"", self.opts.path_resolution)
            .map_err(|e| fs_err(raw, "open target", e))?;
        let mut end = 0;
        for comp in parent.split(|b| *b == b'/') {
            if comp.starts_with(whiteout::WHITEOUT_PREFIX.as_bytes()) {
                return Err(UnpackError::InvalidWhiteout {
                    path: display_path(raw),
                });
            }
            end += comp.len();
            let prefix = &parent[..end];
            end += 1;
            match fsops::open_dir_in_root(self.root, prefix, self.opts.path_resolution) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    match rfs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(Errno::EXIST) => return Err(not_dir()),
                        Err(e) => return Err(fs_err(raw, "create parent of", e)),
                    }
                    self.created.insert(prefix.to_vec());
                    cur = rfs::openat(
                        &cur,
                        comp,
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| fs_err(raw, "open parent of", e))?;
                }
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Err(not_dir()),
                Err(e) => return Err(fs_err(raw, "open parent of", e)),
            }
        }
        Ok(cur)
    }

    fn apply(
        &mut self,
        entry: &mut tar::Entry<'_, Ending<'_>>,
        raw_path: &[u8],
        ctx: &Ctx<'_>,
    ) -> Result<(), UnpackError> {
        let opts = ctx.opts;
        let header = entry.header().clone();
        let etype = header.entry_type();
        let hbytes = *header.as_bytes();

        // PAX records that the tar crate does not apply for us.
        let mut pax_mtime = None;
        let mut xattrs = Vec::new();
        let mut sparse_major = None;
        let mut sparse_name = None;
        let mut sparse_realsize = None;
        let mut sparse_old = false;
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| ctx.err(e, Some(raw_path)))?
        {
            for ext in exts {
                let ext = ext.map_err(|e| ctx.err(e, Some(raw_path)))?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                if key == b"mtime" {
                    pax_mtime = parse_pax_time(value);
                    if pax_mtime.is_none() {
                        return Err(UnpackError::Corrupt {
                            path: Some(display_path(raw_path)),
                            source: io::Error::new(io::ErrorKind::InvalidData, "bad PAX mtime"),
                        });
                    }
                } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), value.to_vec()));
                } else if key == b"GNU.sparse.major" {
                    sparse_major = Some(value.to_vec());
                } else if key == b"GNU.sparse.name" {
                    sparse_name = Some(value.to_vec());
                } else if key == b"GNU.sparse.realsize" || key == b"GNU.sparse.size" {
                    sparse_realsize = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok());
                } else if key == b"GNU.sparse.map" || key == b"GNU.sparse.offset" {
                    sparse_old = true;
                }
            }
        }

        let mut sparse = Sparse::None;
        let path_bytes: Vec<u8> = if let Some(major) = &sparse_major {
            if major != b"1" {
                return Err(UnpackError::Sparse {
                    path: display_path(raw_path),
                    reason: "unsupported PAX sparse version",
                });
            }
            let real_size = sparse_realsize.ok_or(UnpackError::Sparse {
                path: display_path(raw_path),
                reason: "no GNU.sparse.realsize",
            })?;
            sparse = Sparse::Pax1 { real_size };
            sparse_name.clone().unwrap_or_else(|| raw_path.to_vec())
        } else if sparse_old {
            return Err(UnpackError::Sparse {
                path: display_path(raw_path),
                reason: "PAX 0.x sparse format is not supported",
            });
        } else {
            raw_path.to_vec()
        };
        let raw_path = &path_bytes[..];
        if etype.is_gnu_sparse() {
            let real_size =
                header
                    .as_gnu()
                    .and_then(|g| g.real_size().ok())
                    .ok_or(UnpackError::Sparse {
                        path: display_path(raw_path),
                        reason: "bad GNU sparse header",
                    })?;
            sparse = Sparse::Gnu { real_size };
        }

        let norm = normalise(raw_path)?;
        let mode = header.mode().map_err(|e| ctx.err(e, Some(raw_path)))? & 0o7777;
        let uid = check_id(
            raw_path,
            header.uid().map_err(|e| ctx.err(e, Some(raw_path)))?,
        )?;
        let gid = check_id(
            raw_path,
            header.gid().map_err(|e| ctx.err(e, Some(raw_path)))?,
        )?;
        let (uid, gid) = self.opts.owner.unwrap_or((uid, gid));
        let mtime = match pax_mtime {
            Some(t) => t,
            None => {
                let secs = header.mtime().map_err(|e| ctx.err(e, Some(raw_path)))?;
                Timespec {
                    tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
                    tv_nsec: 0,
                }
            }
        };
        let size = entry.size();
        let limit = ctx.limits.max_expanded_bytes;
        let claimed = match sparse {
            Sparse::None => size,
            Sparse::Gnu { real_size } | Sparse::Pax1 { real_size } => real_size.max(size),
        };
        if claimed > limit {
            return Err(UnpackError::TooLarge {
                path: Some(display_path(raw_path)),
                limit,
            });
        }
        let meta = Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        };

        use tar::EntryType as T;
        if !matches!(etype, T::Regular | T::Continuous | T::GNUSparse) {
            self.born = None;
        }
        // Whiteouts.
        if !norm.is_root() && self.opts.whiteouts != WhiteoutMode::Keep {
            let name = norm.name().to_vec();
            let wh = whiteout::classify(&name).map_err(|_| UnpackError::InvalidWhiteout {
                path: display_path(raw_path),
            })?;
            if norm
                .parent()
                .split(|b| *b == b'/')
                .any(|c| c.starts_with(whiteout::WHITEOUT_PREFIX.as_bytes()))
            {
                return Err(UnpackError::InvalidWhiteout {
                    path: display_path(raw_path),
                });
            }
            match wh {
                WhiteoutName::Plain => {}
                WhiteoutName::Meta => {
                    self.skip(raw_path, SkipReason::WhiteoutMeta, None);
                    return Ok(());
                }
                WhiteoutName::Remove(target) => {
                    if etype.is_dir() {
                        return Err(UnpackError::InvalidWhiteout {
                            path: display_path(raw_path),
                        });
                    }
                    return self.whiteout(&norm, target, raw_path);
                }
                WhiteoutName::Opaque => {
                    if etype.is_dir() {
                        return Err(UnpackError::InvalidWhiteout {
                            path: display_path(raw_path),
                        });
                    }
                    return self.opaque(&norm, raw_path);
                }
            }
        }

        match etype {
            T::Regular | T::Continuous | T::GNUSparse => {
                self.regular(entry, &norm, raw_path, &meta, size, sparse)
            }
            T::Directory => self.directory(&norm, raw_path, &meta),
            T::Symlink => {
                let target = entry.link_name_bytes().map(|c| c.into_owned());
                self.symlink(&norm, raw_path, target, &meta)
            }
            T::Link => {
                let target = entry.link_name_bytes().map(|c| c.into_owned());
                self.hardlink(&norm, raw_path, target)
            }
            T::Char | T::Block | T::Fifo => {
                let major = parse_numeric(&hbytes[329..337]);
                let minor = parse_numeric(&hbytes[337..345]);
                self.special(&norm, raw_path, etype, major, minor, &meta, opts)
            }
            other => Err(UnpackError::UnsupportedEntry {
                path: display_path(raw_path),
                entry_type: char::from(other.as_byte()),
            }),
        }
    }

    /// Clears the name for a new entry: removes what is there, except a
    /// directory when `keep_dir`. Returns whether a directory was kept.
    fn clear_name(
        &mut self,
        norm: &NormPath,
        raw: &[u8],
        keep_dir: bool,
    ) -> Result<bool, UnpackError> {
        let parent = self.parent(norm.parent(), raw)?;
        match fsops::lstat_at(parent, norm.name()) {
            Ok(None) => Ok(false),
            Ok(Some(st)) => {
                if keep_dir && FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Ok(true);
                }
                fsops::remove_all_at(parent, norm.name())
                    .map_err(|e| fs_err(raw, "remove existing", e))?;
                Ok(false)
            }
            Err(e) => Err(fs_err(raw, "stat", e)),
        }
    }

    fn regular(
        &mut self,
        entry: &mut tar::Entry<'_, Ending<'_>>,
        norm: &NormPath,
        raw: &[u8],
        meta: &Meta,
        size: u64,
        sparse: Sparse,
    ) -> Result<(), UnpackError> {
        if norm.is_root() {
            return Err(UnpackError::InvalidPath {
                path: display_path(raw),
                reason: "a file cannot replace the target directory",
            });
        }
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut tries = 0;
        let (fd, mode_set) = loop {
            let mode_set = self.creates_exactly(meta.mode, norm.parent(), raw)?;
            let create = if mode_set { meta.mode } else { 0o600 };
            let parent = self.parent(norm.parent(), raw)?;
            match rfs::openat(parent, norm.name(), flags, Mode::from_raw_mode(create)) {
                Ok(fd) => break (fd, mode_set),
                Err(Errno::EXIST) if tries == 0 => {
                    tries += 1;
                    self.clear_name(norm, raw, false)?;
                }
                Err(e) => return Err(fs_err(raw, "create", e)),
            }
        };
        self.created.insert(norm.full.clone());
        let mut file = File::from(fd);
        match sparse {
            Sparse::None => self.copy_data(entry, &mut file, raw, size, false)?,
            Sparse::Gnu { real_size } => {
                self.copy_data(entry, &mut file, raw, real_size, true)?;
                rfs::ftruncate(&file, real_size).map_err(|e| fs_err(raw, "truncate", e))?;
            }
            Sparse::Pax1 { real_size } => {
                self.copy_pax_sparse(entry, &file, raw, size, real_size)?;
                rfs::ftruncate(&file, real_size).map_err(|e| fs_err(raw, "truncate", e))?;
            }
        }
        let fd = OwnedFd::from(file);
        let mut chown = true;
        if self.opts.preserve_ownership {
            let born = match self.born {
                Some(b) => b,
                None => {
                    let st = rfs::fstat(&fd).map_err(|e| fs_err(raw, "stat", e))?;
                    *self.born.insert((st.st_uid, st.st_gid))
                }
            };
            chown = born != (meta.uid, meta.gid);
        }
        self.set_meta_fd(fd.as_fd(), raw, meta, true, chown, mode_set)?;
        self.writeback.hand_over(fd, size);
        Ok(())
    }

    /// Whether a regular file of `mode` created in `parent` gets exactly
    /// that mode from `openat`: no setuid, setgid or sticky bit (a chown
    /// clears the first two, `openat` may drop them), no bit the umask
    /// removes, and no default ACL on the parent (it would shape the mode
    /// instead of the umask). Then the `fchmod` after the data is skipped,
    /// one syscall of the few a small file costs.
    fn creates_exactly(
        &mut self,
        mode: u32,
        parent: &[u8],
        raw: &[u8],
    ) -> Result<bool, UnpackError> {
        let Some(umask) = self.umask else {
            return Ok(false);
        };
        if mode & 0o7000 != 0 || mode & umask != 0 {
            return Ok(false);
        }
        // Opened (or taken from the cache) first: a new parent forgets
        // what was learned of the previous one.
        self.parent(parent, raw)?;
        let acl = match self.parent_acl {
            Some(acl) => acl,
            None => {
                // The parent is open with O_PATH, which fgetxattr refuses:
                // asked through its descriptor's magic link instead (the
                // directory itself, no path walked).
                let fd = self.parent(parent, raw)?;
                let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
                let acl = match rfs::getxattr_query(link.as_str(), "system.posix_acl_default") {
                    Err(Errno::NODATA | Errno::OPNOTSUPP) => false,
                    // Present, or unknown (no /proc): fchmod as always.
                    _ => true,
                };
                *self.parent_acl.insert(acl)
            }
        };
        Ok(!acl)
    }

    fn read_entry(
        &mut self,
        entry: &mut tar::Entry<'_, Ending<'_>>,
        raw: &[u8],
        want: usize,
    ) -> Result<usize, UnpackError> {
        // Filled as far as the entry goes (the decoder hands out its
        // chunks one by one): one write per buffer, not one per chunk.
        let mut filled = 0;
        while filled < want {
            match entry.read(&mut self.buf[filled..want]) {
                Ok(0) => break,
                Ok(k) => filled += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err(e, raw)),
            }
        }
        Ok(filled)
    }

    /// Copies `expected` bytes of entry data into `file`; with `holes`,
    /// all-zero blocks become holes.
    fn copy_data(
        &mut self,
        entry: &mut tar::Entry<'_, Ending<'_>>,
        file: &mut File,
        raw: &[u8],
        expected: u64,
        holes: bool,
    ) -> Result<(), UnpackError> {
        let mut done: u64 = 0;
        let mut kicked: u64 = 0;
        while done < expected {
            if self.writeback.started() && done - kicked >= WRITEBACK_STEP {
                // On the writeback thread, never this one's.
                self.writeback.kick(file, kicked, done - kicked);
                kicked = done;
            }
            let want = usize::try_from((expected - done).min(self.buf.len() as u64))
                .unwrap_or(self.buf.len());
            let k = self.read_entry(entry, raw, want)?;
            if k == 0 {
                return Err(UnpackError::Truncated {
                    path: Some(display_path(raw)),
                });
            }
            if holes && self.buf[..k].iter().all(|b| *b == 0) {
                rfs::seek(&*file, rfs::SeekFrom::Current(k as i64))
                    .map_err(|e| fs_err(raw, "seek", e))?;
            } else {
                file.write_all(&self.buf[..k])
                    .map_err(|e| UnpackError::Fs {
                        path: display_path(raw),
                        op: "write",
                        source: e,
                    })?;
            }
            done += k as u64;
        }
        Ok(())
    }

    fn copy_pax_sparse(
        &mut self,
        entry: &mut tar::Entry<'_, Ending<'_>>,
        file: &File,
        raw: &[u8],
        size: u64,
        real_size: u64,
    ) -> Result<(), UnpackError> {
        let bad = |reason| UnpackError::Sparse {
            path: display_path(raw),
            reason,
        };
        // The map: decimal numbers, one a line, padded to a 512-byte block.
        let mut consumed: u64 = 0;
        let mut pending: Vec<u8> = Vec::new();
        let mut numbers: Vec<u64> = Vec::new();
        let mut count: Option<u64> = None;
        loop {
            if let Some(c) = count {
                if numbers.len() as u64 == c * 2 {
                    break;
                }
            }
            let mut byte = [0u8; 1];
            let k = entry.read(&mut byte).map_err(|e| self.err(e, raw))?;
            if k == 0 {
                return Err(bad("map ends early"));
            }
            consumed += 1;
            if consumed > 1 << 20 || consumed > size {
                return Err(bad("map too long"));
            }
            if byte[0] == b'\n' {
                let s = std::str::from_utf8(&pending).map_err(|_| bad("map is not decimal"))?;
                let v: u64 = s.parse().map_err(|_| bad("map is not decimal"))?;
                pending.clear();
                match count {
                    None => {
                        if v > 1 << 16 {
                            return Err(bad("too many sparse regions"));
                        }
                        count = Some(v);
                    }
                    Some(_) => numbers.push(v),
                }
            } else {
                pending.push(byte[0]);
                if pending.len() > 20 {
                    return Err(bad("map is not decimal"));
                }
            }
        }
        let pad = (512 - consumed % 512) % 512;
        let mut padbuf = vec![0u8; usize::try_from(pad).unwrap_or(0)];
        entry
            .read_exact(&mut padbuf)
            .map_err(|e| self.err(e, raw))?;
        consumed += pad;
        let mut data_left = size
            .checked_sub(consumed)
            .ok_or(bad("map larger than entry"))?;
        let mut last_end = 0u64;
        for pair in numbers.chunks_exact(2) {
            let (off, len) = (pair[0], pair[1]);
            let end = off.checked_add(len).ok_or(bad("region overflows"))?;
            if off < last_end || end > real_size {
                return Err(bad("regions out of order or beyond the size"));
            }
            if len > data_left {
                return Err(bad("regions hold more than the entry"));
            }
            last_end = end;
            let mut pos = off;
            let mut left = len;
            while left > 0 {
                let want = usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(0);
                let k = self.read_entry(entry, raw, want)?;
                if k == 0 {
                    return Err(UnpackError::Truncated {
                        path: Some(display_path(raw)),
                    });
                }
                let mut written = 0;
                while written < k {
                    let w = rustix::io::pwrite(file, &self.buf[written..k], pos + written as u64)
                        .map_err(|e| fs_err(raw, "write", e))?;
                    written += w;
                }
                pos += k as u64;
                left -= k as u64;
            }
            data_left -= len;
        }
        if data_left != 0 {
            return Err(bad("data left after the last region"));
        }
        Ok(())
    }

    /// Sets owner (unless `chown` is false: it is already right), mode
    /// (unless `mode_set`: the file was created with it), xattrs and times
    /// through an open file.
    fn set_meta_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        raw: &[u8],
        meta: &Meta,
        mode_and_times: bool,
        chown: bool,
        mode_set: bool,
    ) -> Result<(), UnpackError> {
        if chown && self.opts.preserve_ownership {
            rfs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            )
            .map_err(|e| fs_err(raw, "chown", e))?;
        }
        if mode_and_times && !mode_set {
            rfs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(|e| fs_err(raw, "chmod", e))?;
        }
        self.set_xattrs(fd, raw, &meta.xattrs)?;
        if mode_and_times {
            rfs::futimens(fd, &times(meta.mtime)).map_err(|e| fs_err(raw, "set times of", e))?;
        }
        Ok(())
    }

    fn set_xattrs(
        &mut self,
        fd: BorrowedFd<'_>,
        raw: &[u8],
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), UnpackError> {
        let policy = self.opts.xattrs;
        for (name, value) in xattrs {
            let lossy = || String::from_utf8_lossy(name).into_owned();
            if whiteout::is_overlay_xattr(name) {
                if policy.reserved == ReservedXattrs::Reject {
                    return Err(UnpackError::ReservedXattr {
                        path: display_path(raw),
                        name: lossy(),
                    });
                }
                self.skip(raw, SkipReason::ReservedXattr, Some(lossy()));
                continue;
            }
            let allowed = policy.enabled
                && if name.starts_with(b"user.") {
                    policy.user
                } else if name.starts_with(b"security.") {
                    match policy.security {
                        SecurityXattrs::None => false,
                        SecurityXattrs::Capability => name == b"security.capability",
                        SecurityXattrs::All => true,
                    }
                } else if name.starts_with(b"trusted.") {
                    policy.trusted
                } else if name.starts_with(b"system.") {
                    policy.system
                } else {
                    false
                };
            if !allowed || name.contains(&0) {
                self.skip(raw, SkipReason::Xattr, Some(lossy()));
                continue;
            }
            match rfs::fsetxattr(fd, &name[..], value, rfs::XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::NOTSUP) | Err(Errno::PERM) | Err(Errno::INVAL) => {
                    self.skip(raw, SkipReason::Xattr, Some(lossy()))
                }
                Err(e) => return Err(fs_err(raw, "set xattr on", e)),
            }
        }
        Ok(())
    }

    fn directory(&mut self, norm: &NormPath, raw: &[u8], meta: &Meta) -> Result<(), UnpackError> {
        let fd = if norm.is_root() {
            fsops::open_real_dir_in_root(self.root, b"", self.opts.path_resolution)
                .map_err(|e| fs_err(raw, "open", e))?
        } else {
            let mut tries = 0;
            loop {
                let parent = self.parent(norm.parent(), raw)?;
                match rfs::mkdirat(parent, norm.name(), Mode::from_raw_mode(0o700)) {
                    Ok(()) => {
                        self.created.insert(norm.full.clone());
                    }
                    Err(Errno::EXIST) if tries == 0 => {
                        tries += 1;
                        if !self.clear_name(norm, raw, true)? {
                            continue;
                        }
                    }
                    Err(e) => return Err(fs_err(raw, "create directory", e)),
                }
                let parent = self.parent(norm.parent(), raw)?;
                break fsops::open_child_dir(parent, norm.name())
                    .map_err(|e| fs_err(raw, "open directory", e))?;
            }
        };
        self.created.insert(norm.full.clone());
        self.set_meta_fd(fd.as_fd(), raw, meta, false, true, false)?;
        self.dirs.push((norm.full.clone(), meta.mode, meta.mtime));
        // The entries that follow a directory are mostly its own: it is
        // their parent, open already (from its parent, no link followed),
        // so it need not be resolved from the root again.
        self.cache = Some((norm.full.clone(), fd));
        self.born = None;
        self.parent_acl = None;
        Ok(())
    }

    fn symlink(
        &mut self,
        norm: &NormPath,
        raw: &[u8],
        target: Option<Vec<u8>>,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let target = target.filter(|t| !t.is_empty() && !t.contains(&0)).ok_or(
            UnpackError::InvalidPath {
                path: display_path(raw),
                reason: "symlink without a valid target",
            },
        )?;
        if norm.is_root() {
            return Err(UnpackError::InvalidPath {
                path: display_path(raw),
                reason: "a symlink cannot replace the target directory",
            });
        }
        let mut tries = 0;
        loop {
            let parent = self.parent(norm.parent(), raw)?;
            match rfs::symlinkat(&target[..], parent, norm.name()) {
                Ok(()) => break,
                Err(Errno::EXIST) if tries == 0 => {
                    tries += 1;
                    self.clear_name(norm, raw, false)?;
                }
                Err(e) => return Err(fs_err(raw, "create symlink", e)),
            }
        }
        self.created.insert(norm.full.clone());
        self.set_meta_at(norm, raw, meta, false)
    }

    /// Sets owner, (mode) and times of the last component without following it.
    fn set_meta_at(
        &mut self,
        norm: &NormPath,
        raw: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        let preserve = self.opts.preserve_ownership;
        let parent = self.parent(norm.parent(), raw)?;
        if preserve {
            rfs::chownat(
                parent,
                norm.name(),
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| fs_err(raw, "chown", e))?;
        }
        if chmod {
            // Only called for nodes just created by mknodat under this
            // name, which cannot be symlinks; fchmodat has no working
            // no-follow flag for them.
            rfs::chmodat(
                parent,
                norm.name(),
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| fs_err(raw, "chmod", e))?;
        }
        rfs::utimensat(
            parent,
            norm.name(),
            &times(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| fs_err(raw, "set times of", e))?;
        Ok(())
    }

    fn hardlink(
        &mut self,
        norm: &NormPath,
        raw: &[u8],
        target: Option<Vec<u8>>,
    ) -> Result<(), UnpackError> {
        let target = target.ok_or(UnpackError::InvalidPath {
            path: display_path(raw),
            reason: "hardlink without a target",
        })?;
        let tnorm = normalise(&target)?;
        if tnorm.is_root() || norm.is_root() {
            return Err(UnpackError::HardlinkToDirectory {
                path: display_path(raw),
                target: display_path(&target),
            });
        }
        let missing = || UnpackError::HardlinkTargetMissing {
            path: display_path(raw),
            target: display_path(&target),
        };
        let overlay = match self.opts.whiteouts {
            WhiteoutMode::Overlay(ns) => Some(ns),
            WhiteoutMode::Apply | WhiteoutMode::Keep => None,
        };
        let own =
            match fsops::open_dir_in_root(self.root, tnorm.parent(), self.opts.path_resolution) {
                Ok(fd) => match fsops::lstat_at(fd.as_fd(), tnorm.name()) {
                    Ok(Some(st)) => Some((fd, st)),
                    Ok(None) => None,
                    Err(e) => return Err(fs_err(raw, "stat link target of", e)),
                },
                Err(Errno::NOENT) | Err(Errno::NOTDIR) => None,
                Err(e) => return Err(fs_err(raw, "open link target of", e)),
            };
        let (tparent, tstat) = match own {
            // In overlay form, a whiteout of this layer deleted the target
            // (a 0/0 device from the image itself is refused).
            Some((_, st)) if overlay.is_some() && is_whiteout(&st) => return Err(missing()),
            Some(found) => found,
            None => match overlay {
                Some(ns) if !self.lowers.is_empty() => self.copy_up(&tnorm, raw, &target, ns)?,
                _ => return Err(missing()),
            },
        };
        if FileType::from_raw_mode(tstat.st_mode) == FileType::Directory {
            return Err(UnpackError::HardlinkToDirectory {
                path: display_path(raw),
                target: display_path(&target),
            });
        }
        let mut tries = 0;
        loop {
            let parent = self.parent(norm.parent(), raw)?;
            match rfs::linkat(
                &tparent,
                tnorm.name(),
                parent,
                norm.name(),
                AtFlags::empty(),
            ) {
                Ok(()) => break,
                Err(Errno::EXIST) if tries == 0 => {
                    tries += 1;
                    if let Ok(Some(st)) = fsops::lstat_at(parent, norm.name()) {
                        if st.st_dev == tstat.st_dev && st.st_ino == tstat.st_ino {
                            break; // already this file
                        }
                    }
                    self.clear_name(norm, raw, false)?;
                }
                Err(Errno::NOENT) => return Err(missing()),
                Err(Errno::PERM) => {
                    return Err(UnpackError::HardlinkToDirectory {
                        path: display_path(raw),
                        target: display_path(&target),
                    })
                }
                Err(e) => return Err(fs_err(raw, "link", e)),
            }
        }
        self.created.insert(norm.full.clone());
        Ok(())
    }

    /// Copies the lower layers' file `tnorm` up into this layer's directory
    /// (see the `lower` module); returns the directory it is in and its stat.
    fn copy_up(
        &mut self,
        tnorm: &NormPath,
        raw: &[u8],
        target: &[u8],
        ns: OverlayXattrs,
    ) -> Result<(OwnedFd, rfs::Stat), UnpackError> {
        let err = |op| move |e| fs_err(raw, op, e);
        let not_regular = || UnpackError::HardlinkTargetNotRegular {
            path: display_path(raw),
            target: display_path(target),
        };
        let found = self
            .lowers
            .lookup(self.root, &tnorm.full, ns)
            .map_err(err("look up link target of"))?;
        let (layer, stat, parents) = match found {
            Found::Regular {
                layer,
                stat,
                parents,
            } => (layer, stat, parents),
            Found::Missing => {
                return Err(UnpackError::HardlinkTargetMissing {
                    path: display_path(raw),
                    target: display_path(target),
                })
            }
            Found::Directory => {
                return Err(UnpackError::HardlinkToDirectory {
                    path: display_path(raw),
                    target: display_path(target),
                })
            }
            Found::NotRegular => return Err(not_regular()),
        };
        let src = self
            .lowers
            .open_file(layer, &tnorm.full, &stat)
            .map_err(err("open link target of"))?
            .ok_or_else(not_regular)?;
        let preserve = self.opts.preserve_ownership;
        let chown = |fd: BorrowedFd<'_>, st: &rfs::Stat| {
            if !preserve {
                return Ok(());
            }
            rfs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(st.st_uid)),
                Some(rustix::fs::Gid::from_raw(st.st_gid)),
            )
        };
        // The parents: this layer's where it has them, else new ones with
        // the metadata of the lower directory the merged view shows (mode
        // and times set once the copy is in, as overlayfs' copy-up leaves
        // them; entries this layer adds later change their mtime, as they
        // do when flattening).
        let mut made = Vec::new();
        let mut dir = fsops::open_real_dir_in_root(self.root, b"", self.opts.path_resolution)
            .map_err(err("open target for"))?;
        for (comp, level) in tnorm.parent().split(|b| *b == b'/').zip(parents) {
            if level.layer != 0 {
                rfs::mkdirat(&dir, comp, Mode::from_raw_mode(0o700))
                    .map_err(err("copy up parent of"))?;
                let sub =
                    fsops::open_child_dir(dir.as_fd(), comp).map_err(err("copy up parent of"))?;
                chown(sub.as_fd(), &level.stat).map_err(err("copy up parent of"))?;
                lower::copy_xattrs(level.fd.as_fd(), sub.as_fd())
                    .map_err(err("copy up parent of"))?;
                made.push((
                    rustix::io::dup(&sub).map_err(err("copy up parent of"))?,
                    level.stat,
                ));
                dir = sub;
            } else {
                dir = fsops::open_child_dir(dir.as_fd(), comp).map_err(err("open parent of"))?;
            }
        }
        let dst = rfs::openat(
            &dir,
            tnorm.name(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(err("copy up"))?;
        lower::copy_content(&src, &dst, u64::try_from(stat.st_size).unwrap_or(0))
            .map_err(err("copy up"))?;
        chown(dst.as_fd(), &stat).map_err(err("copy up"))?;
        lower::copy_xattrs(src.as_fd(), dst.as_fd()).map_err(err("copy up"))?;
        rfs::fchmod(&dst, Mode::from_raw_mode(stat.st_mode & 0o7777)).map_err(err("copy up"))?;
        rfs::futimens(&dst, &times(mtime_of(&stat))).map_err(err("copy up"))?;
        let copied = rfs::fstat(&dst).map_err(err("copy up"))?;
        for (fd, st) in made.iter().rev() {
            rfs::fchmod(fd, Mode::from_raw_mode(st.st_mode & 0o7777))
                .map_err(err("copy up parent of"))?;
            rfs::futimens(fd, &times(mtime_of(st))).map_err(err("copy up parent of"))?;
        }
        Ok((dir, copied))
    }

    #[allow(clippy::too_many_arguments)]
    fn special(
        &mut self,
        norm: &NormPath,
        raw: &[u8],
        etype: tar::EntryType,
        major: Option<u64>,
        minor: Option<u64>,
        meta: &Meta,
        opts: &UnpackOptions,
    ) -> Result<(), UnpackError> {
        if norm.is_root() {
            return Err(UnpackError::InvalidPath {
                path: display_path(raw),
                reason: "a special file cannot replace the target directory",
            });
        }
        let (file_type, is_device) = match etype {
            tar::EntryType::Char => (FileType::CharacterDevice, true),
            tar::EntryType::Block => (FileType::BlockDevice, true),
            _ => (FileType::Fifo, false),
        };
        let mut dev = 0;
        if is_device {
            let bad = |v| UnpackError::DeviceOutOfRange {
                path: display_path(raw),
                value: v,
            };
            let major = major.ok_or_else(|| bad(u64::MAX))?;
            let minor = minor.ok_or_else(|| bad(u64::MAX))?;
            let ma = u32::try_from(major).map_err(|_| bad(major))?;
            let mi = u32::try_from(minor).map_err(|_| bad(minor))?;
            if ma == 0 && mi == 0 && etype == tar::EntryType::Char {
                if let WhiteoutMode::Overlay(_) = opts.whiteouts {
                    return Err(UnpackError::ForgedWhiteout {
                        path: display_path(raw),
                    });
                }
            }
            match opts.devices {
                DevicePolicy::Reject => {
                    return Err(UnpackError::DeviceRejected {
                        path: display_path(raw),
                    })
                }
                DevicePolicy::Skip => {
                    self.skip(raw, SkipReason::Device, None);
                    return Ok(());
                }
                DevicePolicy::Create | DevicePolicy::CreateOrSkip => {}
            }
            dev = rfs::makedev(ma, mi);
        }
        let mut tries = 0;
        loop {
            let parent = self.parent(norm.parent(), raw)?;
            match rfs::mknodat(
                parent,
                norm.name(),
                file_type,
                Mode::from_raw_mode(meta.mode & 0o777),
                dev,
            ) {
                Ok(()) => break,
                Err(Errno::EXIST) if tries == 0 => {
                    tries += 1;
                    self.clear_name(norm, raw, false)?;
                }
                Err(Errno::PERM) if is_device => {
                    if opts.devices == DevicePolicy::CreateOrSkip {
                        self.skip(raw, SkipReason::Device, None);
                        return Ok(());
                    }
                    return Err(UnpackError::DeviceNotPermitted {
                        path: display_path(raw),
                    });
                }
                Err(e) => return Err(fs_err(raw, "create node", e)),
            }
        }
        self.created.insert(norm.full.clone());
        // xattrs on special files would need a real descriptor, and
        // opening a device opens the device: they are reported, not set.
        for (name, _) in &meta.xattrs {
            self.skip(
                raw,
                SkipReason::Xattr,
                Some(String::from_utf8_lossy(name).into_owned()),
            );
        }
        self.set_meta_at(norm, raw, meta, true)
    }

    fn whiteout(&mut self, norm: &NormPath, target: &[u8], raw: &[u8]) -> Result<(), UnpackError> {
        self.born = None;
        let victim = join(norm.parent(), target);
        if self.created.contains(&victim) {
            self.skip(raw, SkipReason::SelfWhiteout, None);
            return Ok(());
        }
        match self.opts.whiteouts {
            WhiteoutMode::Apply | WhiteoutMode::Keep => {
                let parent = match fsops::open_dir_in_root(
                    self.root,
                    norm.parent(),
                    self.opts.path_resolution,
                ) {
                    Ok(fd) => fd,
                    // Nothing to delete below a missing or non-directory parent.
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(()),
                    Err(e) => return Err(fs_err(raw, "open parent of", e)),
                };
                fsops::remove_all_at(parent.as_fd(), target)
                    .map_err(|e| fs_err(raw, "apply whiteout", e))?;
                // The parent was opened here, not through the cache: a
                // cached directory the whiteout removed (the victim or
                // one below it) is forgotten, or the entries after it
                // would be made in an unlinked directory or through a
                // link that is gone.
                if let Some((cached, _)) = &self.cache {
                    if cached.starts_with(&victim)
                        && matches!(cached.get(victim.len()), None | Some(b'/'))
                    {
                        self.cache = None;
                        self.parent_acl = None;
                    }
                }
                Ok(())
            }
            WhiteoutMode::Overlay(_) => {
                let vnorm = NormPath {
                    split: victim.len() - target.len(),
                    full: victim.clone(),
                };
                let mut tries = 0;
                loop {
                    let parent = self.parent(vnorm.parent(), raw)?;
                    match rfs::mknodat(
                        parent,
                        target,
                        FileType::CharacterDevice,
                        Mode::empty(),
                        rfs::makedev(0, 0),
                    ) {
                        Ok(()) => break,
                        Err(Errno::EXIST) if tries == 0 => {
                            tries += 1;
                            self.clear_name(&vnorm, raw, false)?;
                        }
                        Err(e) => return Err(fs_err(raw, "create whiteout", e)),
                    }
                }
                Ok(())
            }
        }
    }

    fn opaque(&mut self, norm: &NormPath, raw: &[u8]) -> Result<(), UnpackError> {
        self.born = None;
        let dir_path = norm.parent().to_vec();
        // Make sure the directory exists (as the parent of the marker).
        self.parent(&dir_path, raw)?;
        let dir = fsops::open_real_dir_in_root(self.root, &dir_path, self.opts.path_resolution)
            .map_err(|e| fs_err(raw, "open opaque directory", e))?;
        match self.opts.whiteouts {
            WhiteoutMode::Apply | WhiteoutMode::Keep => {
                let created = &self.created;
                fsops::clear_dir(dir.as_fd(), &mut |name| {
                    created.contains(&join(&dir_path, name))
                })
                .map_err(|e| fs_err(raw, "apply opaque whiteout", e))?;
            }
            WhiteoutMode::Overlay(ns) => {
                rfs::fsetxattr(&dir, ns.opaque(), b"y", rfs::XattrFlags::empty())
                    .map_err(|e| fs_err(raw, "mark opaque", e))?;
            }
        }
        Ok(())
    }

    /// Sets directory modes and times, after everything inside them.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        self.cache = None;
        self.born = None;
        self.parent_acl = None;
        for (path, mode, mtime) in dirs.iter().rev() {
            let fd = match fsops::open_real_dir_in_root(self.root, path, self.opts.path_resolution)
            {
                Ok(fd) => fd,
                // Replaced later in the layer by a non-directory.
                Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                Err(e) => return Err(fs_err(path, "open directory", e)),
            };
            rfs::fchmod(&fd, Mode::from_raw_mode(*mode)).map_err(|e| fs_err(path, "chmod", e))?;
            rfs::futimens(&fd, &times(*mtime)).map_err(|e| fs_err(path, "set times of", e))?;
        }
        Ok(())
    }
}

/// The process's umask, read from `/proc/self/status` (its `Umask:`
/// line); `None` when it cannot be read. Reading it with `umask(2)` would
/// mean setting it, which races with other threads creating files.
fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Whether a file is an overlayfs whiteout (a 0/0 character device).
fn is_whiteout(st: &rfs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

/// The modification time of a stat.
fn mtime_of(st: &rfs::Stat) -> Timespec {
    Timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec as _,
    }
}

fn times(t: Timespec) -> Timestamps {
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- the read-ahead path (flatten's) against the plain one ----------

    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// A layer of `files` files of random sizes (some larger than a
    /// read-ahead chunk) in a few directories, compressed as asked.
    fn random_layer(seed: u64, files: usize, compression: Compression) -> Vec<u8> {
        let mut seed = seed | 1;
        let mut tar = tar::Builder::new(Vec::new());
        for i in 0..files {
            let size = match xorshift(&mut seed) % 4 {
                0 => 0,
                1 => xorshift(&mut seed) % 600,
                2 => xorshift(&mut seed) % 20_000,
                _ => xorshift(&mut seed) % (3 * AHEAD_CHUNK as u64),
            } as usize;
            let data: Vec<u8> = (0..size).map(|_| xorshift(&mut seed) as u8 % 7).collect();
            let mut h = tar::Header::new_ustar();
            h.set_path(format!("d{}/f{i}", i % 5)).expect("path");
            h.set_size(size as u64);
            h.set_mode(0o640);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000 + i as u64);
            h.set_cksum();
            tar.append(&h, &data[..]).expect("append");
        }
        let raw = tar.into_inner().expect("tar");
        let mut enc = crate::compress::Encoder::new(Vec::new(), crate::Encoding::new(compression))
            .expect("encoder");
        enc.write_all(&raw).expect("compress");
        enc.finish().expect("finish")
    }

    /// The layer of round `round` of a test over many layers: each
    /// compression in turn, up to 40 files (`step` more each round).
    fn round_layer(seed: &mut u64, round: u64, step: usize) -> (Compression, Vec<u8>) {
        let compression =
            [Compression::Gzip, Compression::Zstd, Compression::None][(round % 3) as usize];
        let files = 1 + (round as usize * step) % 40;
        (
            compression,
            random_layer(xorshift(seed), files, compression),
        )
    }

    /// A source that gives its bytes in short reads of random lengths,
    /// counts them and notes the threads that read it; it fails with
    /// `fail` once `fail_at` bytes were given.
    struct Source {
        data: Vec<u8>,
        pos: usize,
        seed: u64,
        readers: Arc<Mutex<HashSet<std::thread::ThreadId>>>,
        given: Arc<std::sync::atomic::AtomicU64>,
        fail_at: Option<(usize, fn() -> io::Error)>,
        dropped: Option<mpsc::Sender<()>>,
    }

    impl Source {
        fn new(data: Vec<u8>, seed: u64) -> Self {
            Source {
                data,
                pos: 0,
                seed: seed | 1,
                readers: Arc::default(),
                given: Arc::default(),
                fail_at: None,
                dropped: None,
            }
        }
    }

    impl Read for Source {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Ok(mut r) = self.readers.lock() {
                r.insert(std::thread::current().id());
            }
            if let Some((at, fail)) = self.fail_at {
                if self.pos >= at {
                    return Err(fail());
                }
            }
            let limit = self
                .fail_at
                .map_or(self.data.len(), |(at, _)| at.min(self.data.len()));
            let short = 1 + (xorshift(&mut self.seed) % 70_000) as usize;
            let n = buf.len().min(short).min(limit - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            self.given
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(n)
        }
    }

    impl Drop for Source {
        fn drop(&mut self) {
            if let Some(tx) = self.dropped.take() {
                let _ = tx.send(());
            }
        }
    }

    fn tree(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
        use std::os::unix::fs::PermissionsExt;
        let mut out = Vec::new();
        for d in list_sorted(dir) {
            for f in list_sorted(&d) {
                let mode = std::fs::metadata(&f).expect("stat").permissions().mode();
                let rel = f.strip_prefix(dir).expect("under").to_path_buf();
                out.push((rel, mode, std::fs::read(&f).expect("read")));
            }
        }
        out
    }

    fn list_sorted(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        v.sort();
        v
    }

    /// A plain tar of `entries` (path, type, data, mode), each owned by
    /// root with one mtime.
    fn tar_of<'a>(
        entries: impl IntoIterator<Item = (String, tar::EntryType, &'a [u8], u32)>,
    ) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, kind, data, mode) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_path(path).expect("path");
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_mtime(1_700_000_000);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            tar.append(&h, data).expect("append");
        }
        tar.into_inner().expect("tar")
    }

    /// A whiteout that removes a directory the cache holds open (or one of
    /// its ancestors) leaves no stale parent behind: the entries after it
    /// make the path anew, where the layer says, not in the unlinked
    /// directory nor through a link the whiteout removed.
    #[test]
    fn a_whiteout_forgets_the_parent_it_removes() {
        let (dir_entry, file) = (tar::EntryType::Directory, tar::EntryType::Regular);
        let layer = tar_of([
            ("a/b/".to_owned(), dir_entry, &b""[..], 0o755),
            (".wh.a".to_owned(), file, b"", 0o644),
            ("a/b/x".to_owned(), file, b"new", 0o644),
            ("l/b/".to_owned(), dir_entry, b"", 0o755),
            (".wh.l".to_owned(), file, b"", 0o644),
            ("l/b/y".to_owned(), file, b"new", 0o644),
        ]);
        let dir = tempfile::tempdir().expect("tempdir");
        // The lower layers: a directory `a` with a file, and `l` a link
        // to the directory `c`.
        std::fs::create_dir_all(dir.path().join("a")).expect("a");
        std::fs::write(dir.path().join("a/old"), b"old").expect("old");
        std::fs::create_dir(dir.path().join("c")).expect("c");
        std::os::unix::fs::symlink("c", dir.path().join("l")).expect("l");
        unpack(&layer[..], dir.path(), &UnpackOptions::default()).expect("unpack");
        assert_eq!(
            std::fs::read(dir.path().join("a/b/x")).expect("a/b/x"),
            b"new"
        );
        assert!(!dir.path().join("a/old").exists(), "a was whited out");
        let l = std::fs::symlink_metadata(dir.path().join("l")).expect("l");
        assert!(l.is_dir(), "l made anew as a directory");
        assert_eq!(
            std::fs::read(dir.path().join("l/b/y")).expect("l/b/y"),
            b"new"
        );
        assert!(
            !dir.path().join("c/b/y").exists(),
            "nothing written through the removed link"
        );
    }

    /// A directory's entries that follow it find it open: no parent
    /// resolved from the root for them (it was one per directory), and
    /// the tree is the same (files in their directories, the directories'
    /// modes set at the end).
    #[test]
    fn a_new_directory_is_the_parent_of_the_entries_that_follow() {
        let mut entries = Vec::new();
        let (mut dirs, mut files) = (0u64, 0u64);
        for d in ["a", "a/b", "a/b/c", "e", "e/f"] {
            entries.push((format!("{d}/"), tar::EntryType::Directory, &b""[..], 0o751));
            dirs += 1;
            for i in 0..4 {
                entries.push((format!("{d}/f{i}"), tar::EntryType::Regular, b"abc", 0o640));
                files += 1;
            }
        }
        let layer = tar_of(entries);
        let dir = tempfile::tempdir().expect("tempdir");
        PARENT_OPENS.with(|c| c.set(0));
        let report = unpack(&layer[..], dir.path(), &UnpackOptions::default()).expect("unpack");
        let opens = PARENT_OPENS.with(|c| c.get());
        assert_eq!(report.entries, dirs + files);
        // The root, for "a" and again for "e": each other directory
        // follows its parent, each file its directory.
        assert_eq!(
            opens, 2,
            "parents resolved for {dirs} directories and {files} files"
        );
        use std::os::unix::fs::PermissionsExt;
        for d in ["a", "a/b", "a/b/c", "e", "e/f"] {
            let meta = std::fs::symlink_metadata(dir.path().join(d)).expect("dir");
            assert!(meta.is_dir());
            assert_eq!(meta.permissions().mode() & 0o7777, 0o751, "{d}");
            for i in 0..4 {
                let f = dir.path().join(d).join(format!("f{i}"));
                assert_eq!(std::fs::read(&f).expect("file"), b"abc", "{f:?}");
            }
        }
    }

    #[test]
    fn read_ahead_unpacks_what_unpack_does_off_the_callers_thread() {
        if !std::thread::available_parallelism().is_ok_and(|n| n.get() > 1) {
            eprintln!("SKIP: one CPU, where the read-ahead is the plain unpack");
            return;
        }
        let mut seed = 0x5eed_u64;
        for round in 0..12u64 {
            let (compression, layer) = round_layer(&mut seed, round, 7);
            let opts = UnpackOptions::default().with_compression(compression);
            let plain = tempfile::tempdir().expect("tempdir");
            let want = unpack(Source::new(layer.clone(), round), plain.path(), &opts)
                .expect("plain unpack");
            let ahead = tempfile::tempdir().expect("tempdir");
            let source = Source::new(layer.clone(), round + 100);
            let readers = Arc::clone(&source.readers);
            // With and without starting the writeback of the files.
            let got = unpack_read_ahead(Box::new(source), ahead.path(), &opts, round % 2 == 0)
                .expect("read-ahead unpack");
            assert_eq!(got, want, "round {round} ({compression:?})");
            assert_eq!(got.compressed_size, layer.len() as u64);
            assert_eq!(tree(ahead.path()), tree(plain.path()), "round {round}");
            let readers = readers.lock().expect("readers");
            assert!(
                !readers.contains(&std::thread::current().id()),
                "the source was read on the applying thread"
            );
        }
    }

    fn digest_of(bytes: &[u8]) -> Digest {
        let mut h = Algorithm::Sha256.hasher();
        h.update(bytes);
        h.finish()
    }

    /// A blob its store checked at ingest, with a diff ID to check: its
    /// compressed bytes are not hashed again, on either path (the report
    /// carries the digest given, here one that is not the bytes'); the
    /// size is still checked, a wrong diff ID still fails, and without a
    /// diff ID the bytes are hashed as ever.
    #[test]
    fn a_digest_the_store_checked_is_not_hashed_again() {
        let layer = random_layer(11, 25, Compression::Gzip);
        let scratch = tempfile::tempdir().expect("tempdir");
        let plain = UnpackOptions::default();
        let diff_id = unpack(&layer[..], scratch.path(), &plain)
            .expect("unpack")
            .diff_id;
        let given = digest_of(b"not the layer");
        let mut opts = UnpackOptions::default()
            .with_digest(given.clone())
            .with_diff_id(diff_id.clone());
        opts.size = Some(layer.len() as u64);
        opts.digest_checked_by_store = true;
        type Run = fn(&[u8], &Path, &UnpackOptions) -> Result<UnpackReport, UnpackError>;
        let paths: [(&str, Run); 2] = [
            ("plain", |l, t, o| unpack(l, t, o)),
            ("read-ahead", |l, t, o| {
                unpack_read_ahead(Box::new(Source::new(l.to_vec(), 5)), t, o, true)
            }),
        ];
        for (name, run) in paths {
            let target = tempfile::tempdir().expect("tempdir");
            let r = run(&layer, target.path(), &opts).expect(name);
            assert_eq!((&r.digest, &r.diff_id), (&given, &diff_id), "{name}");
            assert_eq!(tree(target.path()), tree(scratch.path()), "{name}");
            let mut wrong_size = opts.clone();
            wrong_size.size = Some(1);
            let mut wrong_diff_id = opts.clone();
            wrong_diff_id.diff_id = Some(digest_of(b"another tar"));
            let mut no_diff_id = opts.clone();
            no_diff_id.diff_id = None;
            for (case, o) in [(1, wrong_size), (2, wrong_diff_id), (3, no_diff_id)] {
                let target = tempfile::tempdir().expect("tempdir");
                match (case, run(&layer, target.path(), &o)) {
                    (1, Err(UnpackError::SizeMismatch { .. }))
                    | (2, Err(UnpackError::DiffIdMismatch { .. }))
                    | (3, Err(UnpackError::DigestMismatch { .. })) => {}
                    (_, other) => panic!("{name}, case {case}: {other:?}"),
                }
            }
        }
    }

    /// Every file handed to a [`Writeback`] is closed once it is dropped,
    /// whether its thread took it or it was off: here pipes, whose read
    /// ends then see their end (and whose writeback cannot be started,
    /// which is no error).
    #[test]
    fn a_writeback_closes_every_file_it_is_handed() {
        for on in [true, false] {
            let mut writeback = Writeback::start(on);
            let mut readers = Vec::new();
            for _ in 0..WRITEBACK_BATCH * 2 + 5 {
                let (r, w) =
                    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).expect("pipe");
                writeback.hand_over(w, WRITEBACK_MIN);
                readers.push(File::from(r));
            }
            drop(writeback);
            for mut r in readers {
                let mut rest = Vec::new();
                // Non-blocking: a writer still open is an error, not a wait.
                r.read_to_end(&mut rest).expect("the writer is closed");
                assert!(rest.is_empty());
            }
        }
    }

    /// Files from [`WRITEBACK_MIN`] up, one of them written over more than
    /// a [`WRITEBACK_STEP`] (its writeback started while it is written),
    /// between small ones, unpack with the writeback thread as without it:
    /// the same tree.
    #[test]
    fn large_files_unpack_the_same_with_their_writeback_started() {
        let big: Vec<u8> = (0..WRITEBACK_STEP + 3 * AHEAD_CHUNK as u64)
            .map(|i| (i % 253) as u8)
            .collect();
        let min = vec![9u8; WRITEBACK_MIN as usize];
        let raw = tar_of([
            (
                "a/small".to_string(),
                tar::EntryType::Regular,
                &b"abc"[..],
                0o644,
            ),
            (
                "a/big".to_string(),
                tar::EntryType::Regular,
                &big[..],
                0o600,
            ),
            (
                "a/min".to_string(),
                tar::EntryType::Regular,
                &min[..],
                0o640,
            ),
            (
                "b/small".to_string(),
                tar::EntryType::Regular,
                &b"de"[..],
                0o644,
            ),
        ]);
        let plain = tempfile::tempdir().expect("tempdir");
        let want = unpack(&raw[..], plain.path(), &UnpackOptions::default()).expect("plain unpack");
        for early_writeback in [true, false] {
            let ahead = tempfile::tempdir().expect("tempdir");
            let got = unpack_read_ahead(
                Box::new(Source::new(raw.clone(), 3)),
                ahead.path(),
                &UnpackOptions::default(),
                early_writeback,
            )
            .expect("read-ahead unpack");
            assert_eq!(got, want);
            assert_eq!(tree(ahead.path()), tree(plain.path()));
            assert_eq!(
                std::fs::read(ahead.path().join("a/big")).expect("read"),
                big
            );
        }
    }

    /// A file smaller than [`WRITEBACK_MIN`] is closed when it is handed
    /// over, nothing held for the thread (its writeback is the kernel's,
    /// with the other small files'); one of that size is held for the
    /// thread (in the batch not sent yet) until the writeback is dropped.
    #[test]
    fn a_small_file_is_closed_at_once_and_left_to_the_kernel() {
        static BUDGET: FdBudget = FdBudget::new(4);
        let mut writeback = Writeback::with_budget(true, &BUDGET);
        if !writeback.started() {
            eprintln!("SKIP a_small_file_is_closed_at_once_and_left_to_the_kernel: one CPU, no writeback thread");
            return;
        }
        for size in [0, 1, 14 << 10, WRITEBACK_MIN - 1] {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).expect("pipe");
            writeback.hand_over(w, size);
            assert!(
                !writer_open(&File::from(r)),
                "a file of {size} bytes was held"
            );
            assert_eq!(BUDGET.held(), 0, "a file of {size} bytes was counted");
        }
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).expect("pipe");
        let r = File::from(r);
        writeback.hand_over(w, WRITEBACK_MIN);
        assert!(
            writer_open(&r),
            "a large file was not held for its writeback"
        );
        assert_eq!(BUDGET.held(), 1);
        drop(writeback);
        assert!(!writer_open(&r));
        assert_eq!(BUDGET.held(), 0);
    }

    /// Whether the writing end of the pipe read by `r` (non-blocking) is
    /// still open somewhere.
    fn writer_open(mut r: &File) -> bool {
        let mut byte = [0u8; 1];
        matches!(r.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// A [`Writeback`] holds at most its budget's cap of descriptors,
    /// counted as the write ends of pipes still open: a file beyond it is
    /// closed at once, and a large file's kicks (a descriptor of its own
    /// each) count too. Before, a batch of 64 was held whatever the
    /// process's descriptor limit (up to ~383 per unpack).
    #[test]
    fn a_writeback_holds_at_most_its_budget() {
        const CAP: usize = 8;
        static BUDGET: FdBudget = FdBudget::new(CAP);
        let mut writeback = Writeback::with_budget(true, &BUDGET);
        if !writeback.started() {
            eprintln!("SKIP a_writeback_holds_at_most_its_budget: one CPU, no writeback thread");
            return;
        }
        let mut readers = Vec::new();
        let big = tempfile::tempfile().expect("tempfile");
        (&big).write_all(&[1u8; 1 << 16]).expect("write");
        for i in 0..WRITEBACK_BATCH * 2 {
            let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK).expect("pipe");
            writeback.hand_over(w, WRITEBACK_MIN);
            readers.push(File::from(r));
            // Kicks after a whole batch, which alone must stay within the cap.
            if i >= WRITEBACK_BATCH && i % 5 == 0 {
                writeback.kick(&big, 0, 4096);
            }
            let open = readers.iter().filter(|r| writer_open(r)).count();
            assert!(open <= CAP, "{open} files held after {} handed over", i + 1);
            assert!(BUDGET.held() <= CAP);
        }
        drop(writeback);
        assert_eq!(BUDGET.held(), 0);
        assert!(readers.iter().all(|r| !writer_open(r)), "a file left open");
    }

    /// `source` unpacked with the read-ahead onto `target`, with the
    /// default options.
    fn unpack_ahead_default(source: Source, target: &Path) -> Result<UnpackReport, UnpackError> {
        unpack_read_ahead(Box::new(source), target, &UnpackOptions::default(), false)
    }

    #[test]
    fn read_ahead_source_errors_keep_their_class() {
        let layer = random_layer(7, 30, Compression::Gzip);
        let expected = digest_of(b"the blob");
        let found = digest_of(b"other bytes");
        let cases: [(usize, fn() -> io::Error); 3] = [
            (0, || io::Error::other("disk gone")),
            (layer.len() / 2, || io::Error::other("disk gone")),
            (layer.len(), || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    VerifyError::Digest {
                        expected: digest_of(b"the blob"),
                        found: digest_of(b"other bytes"),
                    },
                )
            }),
        ];
        for (i, (at, fail)) in cases.into_iter().enumerate() {
            let target = tempfile::tempdir().expect("tempdir");
            let mut source = Source::new(layer.clone(), 3);
            source.fail_at = Some((at, fail));
            let err = unpack_ahead_default(source, target.path())
                .expect_err("a failing source fails the unpack");
            match (i, &err) {
                (0 | 1, UnpackError::Source { source }) => {
                    assert_eq!(source.to_string(), "disk gone")
                }
                (
                    2,
                    UnpackError::DigestMismatch {
                        expected: e,
                        found: f,
                    },
                ) => {
                    assert_eq!((e, f), (&expected, &found))
                }
                _ => panic!("case {i}: unexpected {err:?}"),
            }
        }
    }

    #[test]
    fn read_ahead_holds_a_bounded_number_of_bytes() {
        // 8 MiB taken 4 KiB at a time, after a pause that lets the thread
        // read as far as it will: at no point has it read more than its
        // queue, the chunk in its hands and the reader's current one
        // ahead of what was taken.
        let layer: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
        let source = Source::new(layer.clone(), 9);
        let given = Arc::clone(&source.given);
        let Ok(mut ahead) =
            ReadAhead::start(Box::new(source), AheadDigest::Hash(Algorithm::Sha256))
        else {
            eprintln!("SKIP: one CPU, where nothing is read ahead");
            return;
        };
        let bound = ((AHEAD_CHUNKS + 2) * AHEAD_CHUNK) as u64;
        let lead = |taken: u64| given.load(std::sync::atomic::Ordering::SeqCst) - taken;
        let mut buf = [0u8; 4096];
        let mut taken = ahead.read(&mut buf).expect("read") as u64;
        // The pause (not a timing assertion: whatever its length, a
        // bounded thread stays within the bound; an unbounded one, given
        // the time, reads on).
        for _ in 0..300 {
            if lead(taken) > bound {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut most = lead(taken);
        assert!(most <= bound, "read {most} bytes ahead (bound {bound})");
        loop {
            let n = ahead.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            taken += n as u64;
            most = most.max(lead(taken));
            assert!(most <= bound, "read {most} bytes ahead (bound {bound})");
        }
        assert_eq!(taken, layer.len() as u64);
        let (digest, size) = ahead.finish().expect("finished");
        assert_eq!((digest, size), (digest_of(&layer), layer.len() as u64));
    }

    #[test]
    fn read_ahead_lets_go_of_its_source_after_a_failure() {
        // An uncompressed layer whose first header is corrupt, followed by
        // 64 MiB: the unpack fails at once, and the read-ahead thread
        // drops the source at its next chunk instead of reading the rest.
        let mut layer = vec![0u8; 64 << 20];
        layer[..512].copy_from_slice(&[b'x'; 512]);
        let (tx, rx) = mpsc::channel();
        let mut source = Source::new(layer, 9);
        source.dropped = Some(tx);
        let given = Arc::clone(&source.given);
        let target = tempfile::tempdir().expect("tempdir");
        let err = unpack_ahead_default(source, target.path()).expect_err("a corrupt header");
        assert!(matches!(err, UnpackError::Corrupt { .. }), "{err:?}");
        // A bound on a hang, not a timing assertion.
        rx.recv_timeout(std::time::Duration::from_secs(120))
            .expect("the read-ahead thread let go of its source");
        assert!(given.load(std::sync::atomic::Ordering::SeqCst) < 64 << 20);
    }

    // ---- layers decoded ahead (flatten's) -------------------------------

    /// The tests that start a [`LayersAhead`] run one at a time: they count
    /// its threads in this process.
    static LAYERS_AHEAD: Mutex<()> = Mutex::new(());

    /// The threads of this process named as a [`LayersAhead`]'s, once
    /// those joined have left `/proc` (a thread is joined as it exits,
    /// a moment before the kernel lists it no more: a bound on that
    /// moment, not a timing assertion).
    fn layers_ahead_threads() -> usize {
        let count = || {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|name| name.trim_end() == "layers-ahead")
                .count()
        };
        for _ in 0..500 {
            if count() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        count()
    }

    /// A started [`LayersAhead`], or `None` (the test skipped) on one CPU.
    fn layers_ahead() -> Option<LayersAhead> {
        let ahead = LayersAhead::start();
        if ahead.is_none() {
            eprintln!("SKIP: one CPU, where nothing is decoded ahead");
        }
        ahead
    }

    /// Layers queued one after the other unpack, each onto its own
    /// directory, as `unpack` unpacks each alone: the same reports and
    /// trees, with and without the writeback; the sources are read on the
    /// thread ahead, not on the applying one.
    #[test]
    fn layers_ahead_unpack_what_unpack_does() {
        let _one = LAYERS_AHEAD.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut ahead) = layers_ahead() else {
            return;
        };
        let mut seed = 0xa4ead_u64;
        let mut layers = Vec::new();
        for round in 0..9u64 {
            let (compression, layer) = round_layer(&mut seed, round, 11);
            let plain = tempfile::tempdir().expect("tempdir");
            let opts = UnpackOptions::default().with_compression(compression);
            let want = unpack(&layer[..], plain.path(), &opts).expect("plain unpack");
            // Checked as a flatten checks them.
            let mut opts = opts
                .with_digest(want.digest.clone())
                .with_diff_id(want.diff_id.clone());
            opts.size = Some(layer.len() as u64);
            let source = Source::new(layer, round);
            let readers = Arc::clone(&source.readers);
            ahead.queue(Box::new(source), &opts);
            layers.push((plain, want, opts, readers));
        }
        for (round, (plain, want, opts, readers)) in layers.into_iter().enumerate() {
            let target = tempfile::tempdir().expect("tempdir");
            let got = ahead
                .unpack_next(target.path(), &opts, round % 2 == 0)
                .expect("unpack ahead");
            assert_eq!(got, want, "layer {round}");
            assert_eq!(tree(target.path()), tree(plain.path()), "layer {round}");
            let readers = readers.lock().expect("readers");
            assert!(
                !readers.contains(&std::thread::current().id()),
                "layer {round} was read on the applying thread"
            );
        }
        drop(ahead);
        assert_eq!(
            layers_ahead_threads(),
            0,
            "a decoding thread outlived its flatten"
        );
    }

    /// A layer that fails (here its diff ID, found only once it is all
    /// applied) fails as itself while the next layer, decoded ahead,
    /// has failed already (cut in the middle of its gzip stream): the
    /// next layer's failure is not seen before its turn; once the
    /// `LayersAhead` is dropped, its thread has ended and let go of the
    /// next layer's source. With the first layer sound, the next one's cut
    /// is its own failure.
    #[test]
    fn a_layer_failing_is_reported_before_the_next_one_decoded_ahead() {
        let _one = LAYERS_AHEAD.lock().unwrap_or_else(|p| p.into_inner());
        for first_sound in [false, true] {
            let Some(mut ahead) = layers_ahead() else {
                return;
            };
            let first = random_layer(21, 30, Compression::Gzip);
            let scratch = tempfile::tempdir().expect("tempdir");
            let diff_id = unpack(&first[..], scratch.path(), &UnpackOptions::default())
                .expect("unpack")
                .diff_id;
            let first_opts = UnpackOptions::default()
                .with_compression(Compression::Gzip)
                .with_diff_id(if first_sound {
                    diff_id
                } else {
                    digest_of(b"another tar")
                });
            let mut cut = random_layer(22, 30, Compression::Gzip);
            cut.truncate(cut.len() / 2);
            let cut_opts = UnpackOptions::default().with_compression(Compression::Gzip);
            let mut cut_source = Source::new(cut.clone(), 4);
            let (dropped, was_dropped) = mpsc::channel();
            cut_source.dropped = Some(dropped);
            let cut_read = Arc::clone(&cut_source.given);
            ahead.queue(Box::new(Source::new(first, 3)), &first_opts);
            ahead.queue(Box::new(cut_source), &cut_opts);
            // The next layer is read to its cut, and fails, before the
            // first one is applied (a bound on a hang, not a timing
            // assertion).
            for _ in 0..6000 {
                if cut_read.load(std::sync::atomic::Ordering::SeqCst) == cut.len() as u64 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert_eq!(
                cut_read.load(std::sync::atomic::Ordering::SeqCst),
                cut.len() as u64,
                "the next layer was not decoded ahead"
            );
            let target = tempfile::tempdir().expect("tempdir");
            let first_got = ahead.unpack_next(target.path(), &first_opts, true);
            if first_sound {
                first_got.expect("the first layer is sound");
                let err = ahead
                    .unpack_next(target.path(), &cut_opts, true)
                    .expect_err("the next layer is cut");
                assert!(matches!(err, UnpackError::Truncated { .. }), "{err:?}");
            } else {
                let err = first_got.expect_err("the first layer's diff ID is wrong");
                assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err:?}");
            }
            drop(ahead);
            assert!(
                was_dropped.try_recv().is_ok(),
                "the next layer's source is held after the drop"
            );
            assert_eq!(
                layers_ahead_threads(),
                0,
                "a decoding thread outlived its flatten"
            );
        }
    }

    /// A flatten that fails early stops the thread ahead of it at once,
    /// wherever it is: a layer of 64 MiB decoded ahead, blocked on its
    /// full queue, lets go of its source when the `LayersAhead` is dropped
    /// without reading the rest; and the decoded bytes it held never
    /// exceeded its bound.
    #[test]
    fn layers_ahead_hold_a_bounded_lead_and_stop_when_dropped() {
        let _one = LAYERS_AHEAD.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut ahead) = layers_ahead() else {
            return;
        };
        // An uncompressed tar of one 64 MiB file (the decoded bytes are the
        // compressed ones: what was read is what was decoded).
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_path("big").expect("path");
        h.set_size(64 << 20);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &vec![5u8; 64 << 20][..]).expect("append");
        let layer = tar.into_inner().expect("tar");
        let mut source = Source::new(layer.clone(), 6);
        let (dropped, was_dropped) = mpsc::channel();
        source.dropped = Some(dropped);
        let given = Arc::clone(&source.given);
        ahead.queue(Box::new(source), &UnpackOptions::default());
        // Let it run ahead as far as it will (not a timing assertion:
        // whatever the pause, a bounded thread stays within its bound).
        let bound = (DECODED_AHEAD + 4 * AHEAD_CHUNK) as u64;
        let lead = || given.load(std::sync::atomic::Ordering::SeqCst);
        for i in 0..6000 {
            if lead() > bound || (i >= 300 && lead() > 0) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(lead() > 0, "nothing decoded ahead");
        assert!(
            lead() <= bound,
            "decoded {} bytes ahead (bound {bound})",
            lead()
        );
        drop(ahead);
        assert!(
            was_dropped.try_recv().is_ok(),
            "the source is held after the drop"
        );
        assert!(given.load(std::sync::atomic::Ordering::SeqCst) < layer.len() as u64);
        assert_eq!(
            layers_ahead_threads(),
            0,
            "a decoding thread outlived its drop"
        );
    }

    /// A source whose first read signals `entered` and waits until
    /// `release` is sent to or dropped; reads nothing after.
    struct Hanging {
        entered: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
        dropped: mpsc::Sender<()>,
    }

    impl Read for Hanging {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            Ok(0)
        }
    }

    impl Drop for Hanging {
        fn drop(&mut self) {
            let _ = self.dropped.send(());
        }
    }

    /// Dropped while its thread is blocked in a layer's source read (a
    /// registry that stalls, a FUSE mount), a `LayersAhead` does not wait
    /// for the read, as a `ReadAhead` does not: its thread ends, letting
    /// go of the source, once the read returns. Before, the drop joined
    /// the thread and returned only when the read did.
    #[test]
    fn layers_ahead_do_not_wait_for_a_source_blocked_in_a_read() {
        let _one = LAYERS_AHEAD.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut ahead) = layers_ahead() else {
            return;
        };
        let (entered, was_entered) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let (dropped, was_dropped) = mpsc::channel();
        let source = Hanging {
            entered,
            release: released,
            dropped,
        };
        ahead.queue(Box::new(source), &UnpackOptions::default());
        // Bounds on a hang, not timing assertions.
        let bound = std::time::Duration::from_secs(60);
        was_entered.recv_timeout(bound).expect("the source is read");
        let (gone, is_gone) = mpsc::channel();
        let dropping = std::thread::spawn(move || {
            drop(ahead);
            let _ = gone.send(());
        });
        let returned = is_gone.recv_timeout(bound);
        // The read returns now, whatever happened.
        drop(release);
        dropping.join().expect("drop");
        returned.expect("the drop waited for the source's read");
        was_dropped
            .recv_timeout(bound)
            .expect("the source is let go once its read returns");
        assert_eq!(
            layers_ahead_threads(),
            0,
            "a decoding thread outlived its source's read"
        );
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time(b"1700000000.123456789").expect("t");
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 123_456_789));
        let t = parse_pax_time(b"-1.5").expect("t");
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 500_000_000));
        let t = parse_pax_time(b"12").expect("t");
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_pax_time(b"x").is_none());
        assert!(parse_pax_time(b"1.2.3").is_none());
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        let mut big = [0u8; 8];
        big[0] = 0x80;
        big[3] = 1; // 1 << 32
        assert_eq!(parse_numeric(&big), Some(1 << 32));
    }

    #[test]
    fn normalised_paths() {
        let n = normalise(b"./a//b/./c/").expect("ok");
        assert_eq!(n.full, b"a/b/c");
        assert_eq!(n.parent(), b"a/b");
        assert_eq!(n.name(), b"c");
        let n = normalise(b"/etc").expect("ok");
        assert_eq!(n.full, b"etc");
        assert_eq!(n.parent(), b"");
        assert!(normalise(b"./").expect("ok").is_root());
        assert!(matches!(
            normalise(b"a/../../b"),
            Err(UnpackError::PathTraversal { .. })
        ));
    }
}
