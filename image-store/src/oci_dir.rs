//! The on-disk store: an OCI image layout directory.
//!
//! ```text
//! DIR/
//!   oci-layout                 {"imageLayoutVersion": "1.0.0"}
//!   index.json                 the roots: tagged (org.opencontainers.image.ref.name) and untagged
//!   blobs/<alg>/<hex>          committed blobs, named by their digest
//!   ingest/<sha256(ref)>/      one directory per uncommitted ingest:
//!       ref                    the ingest reference
//!       data                   the bytes so far (flock'ed by its writer)
//!   leases/<id>.json           explicit leases protecting blobs from gc (see `lease`)
//!   leases/<id>.held           a writer's held lease, flock'ed while it lives
//!   index.json.lock            flock'ed around every index.json update and gc
//! ```
//!
//! Peers (skopeo, umoci, oci-image-tool) ignore `ingest/`, `leases/` and
//! the lock file.
//!
//! # Security
//! A layout is input: a user names a directory someone else may have
//! prepared. The directory is opened once ([`Root`]); every path inside it
//! is resolved from that descriptor with no symlink followed, for reads
//! and for every mutation of the [`Fs`] seam, so `blobs/sha256 ->
//! /elsewhere` is refused, never written through. Files are read only when
//! they are regular (a FIFO is opened without blocking and refused), blobs
//! no further than their size at open, `index.json` up to 8 MiB and
//! `oci-layout` up to 64 KiB. Refusals are [`RefusedFile`]s
//! (`ErrorKind::Unsafe`). The directory itself may be reached through a
//! symlink: naming it is the user's choice. [`OciDir::open`] refuses a
//! directory without `oci-layout` (as umoci does) and a major layout
//! version other than 1; [`OciDir::open_or_create`] creates a missing one.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType};

use image_core::digest::VerifyError;
use image_core::{
    Algorithm, Classify, Descriptor, DescriptorExt, Digest, ErrorKind, VerifyingReader,
};

use crate::content::{check_labels, ContentError, Info, Labels, Manager, Provider, Result};
pub(crate) use crate::fs::write_file_atomic;
use crate::fs::{self as seam, io_kind, Fs, RealFs, RefusedFile, Root, Target};

/// The content of `oci-layout` this store writes.
pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// The largest `oci-layout` file read (it holds one short JSON object).
const MAX_LAYOUT_FILE: u64 = 64 << 10;

/// Why a directory cannot be opened or created as a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The directory has no `oci-layout` file.
    #[error("{} is not an OCI image layout (no oci-layout file)", path.display())]
    NotALayout {
        /// The directory.
        path: PathBuf,
    },
    /// `oci-layout` names a version this store does not read.
    #[error("{}: unsupported imageLayoutVersion {version:?}", path.display())]
    UnsupportedVersion {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The version found.
        version: String,
    },
    /// A file of the layout is a symlink, is reached through one, is not a
    /// regular file, or is too large.
    #[error(transparent)]
    Refused(RefusedFile),
    /// `oci-layout` is not the JSON it should be.
    #[error("{}: invalid oci-layout", path.display())]
    Invalid {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The index lock could not be taken to create the layout.
    #[error("taking the index lock")]
    Lock {
        /// The lock's error, naming its file.
        #[source]
        source: Box<crate::tags::TagError>,
    },
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

impl Classify for LayoutError {
    fn kind(&self) -> ErrorKind {
        match self {
            LayoutError::NotALayout { .. } => ErrorKind::NotFound,
            LayoutError::UnsupportedVersion { .. } => ErrorKind::Unsupported,
            LayoutError::Invalid { .. } => ErrorKind::InvalidInput,
            LayoutError::Refused(e) => e.kind(),
            LayoutError::Lock { source } => source.kind(),
            LayoutError::Io { source, .. } => io_kind(source),
        }
    }
}

/// A content store (and tag store) in an OCI image layout directory.
///
/// Cheap to clone; clones share the file-system seam. Several handles,
/// threads and processes may use one directory at once.
///
/// A blob's reader ([`Provider::reader`], and the reader of a descriptor)
/// reads a large blob (16 MiB or more) that is not in the page cache with
/// direct I/O instead of through the cache: a blob is read once, start to
/// end, and the cache's copy of it would only push other files out. Such
/// a reader starts a thread of its own at its first read, which reads
/// ahead into two 1 MiB buffers. A blob cached in part or whole, or on a
/// filesystem without direct I/O, is read through the cache.
#[derive(Debug, Clone)]
pub struct OciDir {
    pub(crate) root: PathBuf,
    /// `root`, opened once; every path inside is resolved from it.
    pub(crate) dir: Arc<Root>,
    pub(crate) fs: Arc<dyn Fs>,
    /// Blobs published unsynced by deferring handles, shared by clones
    /// (see the `durability` module).
    pub(crate) pending: Arc<crate::pending::Pending>,
    /// Whether this handle's ingests defer their syncs.
    pub(crate) defer_sync: bool,
}

/// The [`LayoutError`] for an I/O error: a [`RefusedFile`] it carries is
/// reported as itself.
fn layout_io(op: &'static str, path: &Path, source: io::Error) -> LayoutError {
    match seam::split_refused(source) {
        Ok(r) => LayoutError::Refused(r),
        Err(source) => LayoutError::Io {
            op,
            path: path.to_path_buf(),
            source,
        },
    }
}

/// The [`ContentError`] for an I/O error: a [`RefusedFile`] it carries is
/// reported as itself.
pub(crate) fn content_io(op: &'static str, path: &Path, source: io::Error) -> ContentError {
    match seam::split_refused(source) {
        Ok(r) => ContentError::Refused(r),
        Err(source) => ContentError::io(op, path, source),
    }
}

impl OciDir {
    /// Opens the layout at `root`, creating it (and `root`) when it does not exist.
    ///
    /// # Errors
    /// [`LayoutError`].
    pub fn open_or_create(root: impl AsRef<Path>) -> Result<OciDir, LayoutError> {
        OciDir::open_or_create_with(root, Arc::new(RealFs))
    }

    /// Like [`open_or_create`](OciDir::open_or_create), mutating files through `fs`.
    ///
    /// `root` itself may be reached through a symlink; nothing inside it
    /// is (see [`Root`]).
    ///
    /// # Errors
    /// [`LayoutError`].
    pub fn open_or_create_with(
        root: impl AsRef<Path>,
        fs: Arc<dyn Fs>,
    ) -> Result<OciDir, LayoutError> {
        let root = root.as_ref().to_path_buf();
        let dir = match Root::open(&root) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The directory the caller names is created as named.
                std::fs::create_dir_all(&root)
                    .map_err(|e| layout_io("create directory", &root, e))?;
                Root::open(&root)
            }
            r => r,
        }
        .map_err(|e| layout_io("open", &root, e))?;
        let dir = OciDir {
            root,
            dir: Arc::new(dir),
            fs,
            pending: Arc::default(),
            defer_sync: false,
        };
        if dir.layout_file_missing()? {
            dir.init()?;
        }
        dir.check_layout()?;
        Ok(dir)
    }

    /// Opens an existing layout, as a source or a destination. Like umoci
    /// (and as the image-layout spec says), a directory without an
    /// `oci-layout` file is not a layout, and is left untouched.
    ///
    /// # Errors
    /// [`LayoutError::NotALayout`] when `root` or its `oci-layout` does
    /// not exist; [`LayoutError::UnsupportedVersion`] for a major version
    /// other than 1; [`LayoutError::Refused`] when `oci-layout` is a
    /// symlink or not a regular file; others.
    pub fn open(root: impl AsRef<Path>) -> Result<OciDir, LayoutError> {
        OciDir::open_with(root, Arc::new(RealFs))
    }

    /// Like [`open`](OciDir::open), mutating files through `fs`.
    ///
    /// # Errors
    /// As [`open`](OciDir::open).
    pub fn open_with(root: impl AsRef<Path>, fs: Arc<dyn Fs>) -> Result<OciDir, LayoutError> {
        let root = root.as_ref().to_path_buf();
        let dir = match Root::open(&root) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::NotALayout { path: root })
            }
            Err(e) => return Err(layout_io("open", &root, e)),
        };
        let dir = OciDir {
            root,
            dir: Arc::new(dir),
            fs,
            pending: Arc::default(),
            defer_sync: false,
        };
        dir.check_layout()?;
        Ok(dir)
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layout directory, opened; paths inside it resolve without
    /// following symlinks.
    pub fn dir(&self) -> &Root {
        &self.dir
    }

    /// The file-system seam.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    /// Whether `oci-layout` is absent (a symlink there is an error).
    fn layout_file_missing(&self) -> Result<bool, LayoutError> {
        let path = self.root.join("oci-layout");
        match self.dir.stat(&path) {
            Ok(st) => Ok(st.is_none()),
            Err(e) => Err(layout_io("stat", &path, e)),
        }
    }

    fn check_layout(&self) -> Result<(), LayoutError> {
        let path = self.root.join("oci-layout");
        let bytes = match self.dir.read_regular(&path, MAX_LAYOUT_FILE) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::NotALayout {
                    path: self.root.clone(),
                })
            }
            Err(e) => return Err(layout_io("read", &path, e)),
        };
        #[derive(serde::Deserialize)]
        struct Layout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let layout: Layout =
            serde_json::from_slice(&bytes).map_err(|source| LayoutError::Invalid {
                path: path.clone(),
                source,
            })?;
        // Semantic versioning: any 1.x is read; another major is not.
        if layout.version.split('.').next() != Some("1") {
            return Err(LayoutError::UnsupportedVersion {
                path,
                version: layout.version,
            });
        }
        Ok(())
    }

    /// Creates the skeleton durably: `blobs/sha256`, `index.json`, then
    /// `oci-layout` last, so a directory with `oci-layout` is complete.
    fn init(&self) -> Result<(), LayoutError> {
        let fs = &*self.fs;
        let root = &*self.dir;
        // Under the index lock, so that two processes creating the same
        // store at once cannot overwrite an index.json the other wrote.
        let _lock = self.lock_index().map_err(|e| LayoutError::Lock {
            source: Box::new(e),
        })?;
        if !self.layout_file_missing()? {
            return Ok(());
        }
        let blobs = self.root.join("blobs").join("sha256");
        fs.create_dir_all(Target::Layout, root, &blobs)
            .map_err(|e| layout_io("create directory", &blobs, e))?;
        let index = self.root.join("index.json");
        let has_index = root
            .stat(&index)
            .map_err(|e| layout_io("stat", &index, e))?
            .is_some();
        if !has_index {
            let empty = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
            write_file_atomic(fs, root, Target::Layout, &index, empty)
                .map_err(|e| layout_io("write", &index, e))?;
        }
        let layout = self.root.join("oci-layout");
        write_file_atomic(fs, root, Target::Layout, &layout, OCI_LAYOUT.as_bytes())
            .map_err(|e| layout_io("write", &layout, e))?;
        let blobs_parent = self.root.join("blobs");
        fs.sync_dir(Target::Layout, root, &blobs_parent)
            .map_err(|e| layout_io("fsync", &blobs_parent, e))?;
        Ok(())
    }

    /// The directory of blobs of one algorithm.
    pub(crate) fn alg_dir(&self, algorithm: Algorithm) -> PathBuf {
        self.root.join("blobs").join(algorithm.as_str())
    }

    /// The path of a blob. Digests are validated when parsed, so the hex
    /// part is always a safe file name.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.alg_dir(digest.algorithm()).join(digest.hex())
    }

    /// The directory of uncommitted ingests.
    pub(crate) fn ingest_root(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// The path of the lock file serialising index.json updates and gc.
    pub(crate) fn lock_path(&self) -> PathBuf {
        self.root.join("index.json.lock")
    }
}

impl Provider for OciDir {
    /// A store: its blobs are committed through the ingest's digest and
    /// size check (a directory opened as a store is one; `fsck` finds a
    /// blob changed since).
    fn verified_at_ingest(&self) -> bool {
        true
    }

    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let path = self.blob_path(digest);
        match self.dir.open_regular(&path) {
            // The size at open is a hard limit: a file that grows while it
            // is read fails verification instead of being read on and on.
            Ok((f, size)) => Ok(Box::new(VerifyingReader::new(
                crate::cold::sequential(f, size),
                digest.clone(),
                Some(size),
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(content_io("open", &path, e)),
        }
    }

    /// The file as it is, at most the descriptor's size of it: the caller
    /// hashes it. A blob whose size at open is not the descriptor's is
    /// refused before any byte is read, as `reader_for` refuses it.
    fn reader_for_unverified(&self, descriptor: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let digest = descriptor
            .checked_digest()
            .map_err(|source| ContentError::InvalidDescriptor { source })?;
        let path = self.blob_path(&digest);
        match self.dir.open_regular(&path) {
            Ok((f, size)) if size == descriptor.size() => {
                Ok(Box::new(crate::cold::sequential(f, size).take(size)))
            }
            Ok((_, size)) => Err(ContentError::DescriptorMismatch {
                source: VerifyError::Size {
                    digest,
                    expected: descriptor.size(),
                    found: size,
                    truncated: false,
                },
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound { digest }),
            Err(e) => Err(content_io("open", &path, e)),
        }
    }

    fn try_info(&self, digest: &Digest) -> Result<Option<Info>> {
        let path = self.blob_path(digest);
        let st = match self.dir.stat(&path) {
            Ok(Some(st)) => st,
            Ok(None) => return Ok(None),
            Err(e) => return Err(content_io("stat", &path, e)),
        };
        let file_type = FileType::from_raw_mode(st.st_mode);
        if file_type != FileType::RegularFile {
            return Err(ContentError::Refused(RefusedFile::NotRegular {
                path,
                found: seam::type_name(file_type),
            }));
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let labels = self.read_labels(digest)?;
        Ok(Some(
            Info::new(digest.clone(), size, mtime(&st)).with_labels(labels),
        ))
    }
}

/// The most bytes of a stored labels file: the limits of [`Labels`] with
/// room for JSON escapes.
const MAX_LABELS_FILE: u64 = 4 << 20;

impl OciDir {
    /// `labels/<alg>/<hex>`: a blob's labels, a JSON object of strings.
    fn labels_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("labels")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// The labels stored for `digest` (none when it has no labels file).
    fn read_labels(&self, digest: &Digest) -> Result<Labels> {
        let path = self.labels_path(digest);
        let bytes = match self.dir.read_regular(&path, MAX_LABELS_FILE) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Labels::new()),
            Err(e) => return Err(content_io("read", &path, e)),
        };
        let labels: Labels =
            serde_json::from_slice(&bytes).map_err(|e| ContentError::InvalidLabels {
                reason: format!("{}: {e}", path.display()),
            })?;
        check_labels(&labels)?;
        Ok(labels)
    }

    /// Removes the labels file of `digest`, if any.
    fn remove_labels(&self, digest: &Digest) -> Result<()> {
        let path = self.labels_path(digest);
        match self.fs.remove_file(Target::Layout, &self.dir, &path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(content_io("remove", &path, e)),
            _ => Ok(()),
        }
    }
}

impl OciDir {
    /// Every blob, and every entry under `blobs/` that is not a regular
    /// file named by a valid digest (for fsck). Nothing is followed: a
    /// symlink there is a stray.
    pub(crate) fn walk_blobs(&self) -> Result<(Vec<Info>, Vec<PathBuf>)> {
        let mut infos = Vec::new();
        let mut strays = Vec::new();
        let blobs = self.root.join("blobs");
        let Some(blobs_fd) = self.open_listing(&blobs)? else {
            return Ok((infos, strays));
        };
        for (name, alg_path) in list_dir(&blobs_fd, &blobs)? {
            let Some(algorithm) = name.to_str().and_then(|s| s.parse::<Algorithm>().ok()) else {
                strays.push(alg_path);
                continue;
            };
            let alg_fd = match self.open_listing(&alg_path) {
                Ok(Some(fd)) => fd,
                Ok(None) => continue,
                Err(ContentError::Refused(_)) => {
                    strays.push(alg_path);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (name, path) in list_dir(&alg_fd, &alg_path)? {
                let st = match rustix::fs::statat(&alg_fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(rustix::io::Errno::NOENT) => continue,
                    Err(e) => return Err(ContentError::io("stat", path, e.into())),
                };
                let digest = name
                    .to_str()
                    .and_then(|h| Digest::from_hex(algorithm, h).ok());
                match digest {
                    Some(d) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                        infos.push(Info::new(
                            d,
                            u64::try_from(st.st_size).unwrap_or(0),
                            mtime(&st),
                        ))
                    }
                    _ => strays.push(path),
                }
            }
        }
        infos.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok((infos, strays))
    }

    /// Opens a directory inside the store for listing: `None` when absent;
    /// a symlink or a file there is [`ContentError::Refused`].
    pub(crate) fn open_listing(&self, path: &Path) -> Result<Option<std::os::fd::OwnedFd>> {
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY;
        match self.dir.open_at(path, flags, rustix::fs::Mode::empty()) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(content_io("open", path, e)),
        }
    }
}

/// The entries of the open directory `fd` (named `path`), without `.` and
/// `..`, with their paths.
pub(crate) fn list_dir(
    fd: &std::os::fd::OwnedFd,
    path: &Path,
) -> Result<Vec<(std::ffi::OsString, PathBuf)>> {
    use std::os::unix::ffi::OsStrExt;
    let err = |e: rustix::io::Errno| ContentError::io("read directory", path, e.into());
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(name).to_owned();
        out.push((name.clone(), path.join(name)));
    }
    Ok(out)
}

/// The modification time of a stat result.
pub(crate) fn mtime(st: &rustix::fs::Stat) -> Option<std::time::SystemTime> {
    let secs = u64::try_from(st.st_mtime).ok()?;
    let nanos = u32::try_from(st.st_mtime_nsec).unwrap_or(0);
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

impl Manager for OciDir {
    fn list(&self) -> Result<Vec<Info>> {
        Ok(self.walk_blobs()?.0)
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        // Labels first: a crash in between leaves a blob without labels,
        // never labels that a later blob of the same digest would inherit.
        self.remove_labels(digest)?;
        let path = self.blob_path(digest);
        match self.fs.remove_file(Target::Blob, &self.dir, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound {
                digest: digest.clone(),
            }),
            Err(source) => Err(content_io("remove", &path, source)),
        }
    }

    fn set_labels(&self, digest: &Digest, labels: Labels) -> Result<Info> {
        check_labels(&labels)?;
        // Under the index lock, as gc deletes: labels are never written
        // for a blob gc is removing.
        let _lock = self.lock_index().map_err(|source| ContentError::Lock {
            source: Box::new(source),
        })?;
        let info = self
            .try_info(digest)?
            .ok_or_else(|| ContentError::NotFound {
                digest: digest.clone(),
            })?;
        if labels.is_empty() {
            self.remove_labels(digest)?;
        } else {
            let path = self.labels_path(digest);
            let dir = path.parent().unwrap_or(&self.root).to_path_buf();
            let bytes = serde_json::to_vec(&labels).map_err(|e| ContentError::InvalidLabels {
                reason: e.to_string(),
            })?;
            self.fs
                .create_dir_all(Target::Layout, &self.dir, &dir)
                .map_err(|e| content_io("create", &dir, e))?;
            write_file_atomic(&*self.fs, &self.dir, Target::Layout, &path, &bytes)
                .map_err(|e| content_io("write", &path, e))?;
        }
        Ok(info.with_labels(labels))
    }
}
