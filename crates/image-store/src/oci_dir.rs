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

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image_core::{Algorithm, Classify, Digest, ErrorKind, VerifyingReader};

use crate::content::{ContentError, Info, Manager, Provider, Result};
use crate::fs::{self as seam, Fs, RealFs, Target};

/// The content of `oci-layout` this store writes.
pub const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

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
    /// `oci-layout` is not the JSON it should be.
    #[error("{}: invalid oci-layout: {source}", path.display())]
    Invalid {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
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

impl Classify for LayoutError {
    fn kind(&self) -> ErrorKind {
        match self {
            LayoutError::NotALayout { .. } => ErrorKind::NotFound,
            LayoutError::UnsupportedVersion { .. } => ErrorKind::Unsupported,
            LayoutError::Invalid { .. } => ErrorKind::InvalidInput,
            LayoutError::Io { source, .. } => Classify::kind(source),
        }
    }
}

/// A content store (and tag store) in an OCI image layout directory.
///
/// Cheap to clone; clones share the file-system seam. Several handles,
/// threads and processes may use one directory at once.
#[derive(Debug, Clone)]
pub struct OciDir {
    pub(crate) root: PathBuf,
    pub(crate) fs: Arc<dyn Fs>,
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
    /// # Errors
    /// [`LayoutError`].
    pub fn open_or_create_with(
        root: impl AsRef<Path>,
        fs: Arc<dyn Fs>,
    ) -> Result<OciDir, LayoutError> {
        let root = root.as_ref().to_path_buf();
        let dir = OciDir { root, fs };
        if !dir.root.join("oci-layout").exists() {
            dir.init()?;
        }
        dir.check_layout()?;
        Ok(dir)
    }

    /// Opens an existing layout.
    ///
    /// # Errors
    /// [`LayoutError::NotALayout`] when `root` has no `oci-layout`; others.
    pub fn open(root: impl AsRef<Path>) -> Result<OciDir, LayoutError> {
        OciDir::open_with(root, Arc::new(RealFs))
    }

    /// Like [`open`](OciDir::open), mutating files through `fs`.
    ///
    /// # Errors
    /// As [`open`](OciDir::open).
    pub fn open_with(root: impl AsRef<Path>, fs: Arc<dyn Fs>) -> Result<OciDir, LayoutError> {
        let dir = OciDir {
            root: root.as_ref().to_path_buf(),
            fs,
        };
        dir.check_layout()?;
        Ok(dir)
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file-system seam.
    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    fn check_layout(&self) -> Result<(), LayoutError> {
        let path = self.root.join("oci-layout");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::NotALayout {
                    path: self.root.clone(),
                })
            }
            Err(source) => {
                return Err(LayoutError::Io {
                    op: "read",
                    path,
                    source,
                })
            }
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
        if !layout.version.starts_with("1.") {
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
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| LayoutError::Io { op, path, source }
        };
        let fs = &*self.fs;
        fs.create_dir_all(Target::Layout, &self.root)
            .map_err(io("create directory", &self.root))?;
        // Under the index lock, so that two processes creating the same
        // store at once cannot overwrite an index.json the other wrote.
        let _lock = self.lock_index().map_err(|e| LayoutError::Io {
            op: "lock",
            path: self.lock_path(),
            source: io::Error::other(e.to_string()),
        })?;
        if self.root.join("oci-layout").exists() {
            return Ok(());
        }
        let blobs = self.root.join("blobs").join("sha256");
        fs.create_dir_all(Target::Layout, &blobs)
            .map_err(io("create directory", &blobs))?;
        let index = self.root.join("index.json");
        if !index.exists() {
            let empty = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
            write_file_atomic(fs, Target::Layout, &index, empty).map_err(io("write", &index))?;
        }
        let layout = self.root.join("oci-layout");
        write_file_atomic(fs, Target::Layout, &layout, OCI_LAYOUT.as_bytes())
            .map_err(io("write", &layout))?;
        let blobs_parent = self.root.join("blobs");
        fs.sync_dir(Target::Layout, &blobs_parent)
            .map_err(io("fsync", &blobs_parent))?;
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

/// Writes `path` atomically and durably: temp file, fsync, rename, fsync dir.
pub(crate) fn write_file_atomic(
    fs: &dyn Fs,
    target: Target,
    path: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs.open_temp(target, &tmp, true)?;
        seam::write_all(fs, target, &mut f, bytes)?;
        fs.sync_file(target, &f)?;
        drop(f);
        fs.rename(target, &tmp, path)?;
        fs.sync_dir(target, dir)
    })();
    if result.is_err() && tmp.exists() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Provider for OciDir {
    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => Ok(Box::new(VerifyingReader::new(f, digest.clone(), None))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound {
                digest: digest.clone(),
            }),
            Err(source) => Err(ContentError::io("open", path, source)),
        }
    }

    fn try_info(&self, digest: &Digest) -> Result<Option<Info>> {
        let path = self.blob_path(digest);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(Info::new(digest.clone(), m.len(), m.modified().ok()))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ContentError::io("stat", path, source)),
        }
    }
}

impl OciDir {
    /// Every file under `blobs/` whose name is not a valid digest, for fsck.
    pub(crate) fn walk_blobs(&self) -> Result<(Vec<Info>, Vec<PathBuf>)> {
        let mut infos = Vec::new();
        let mut strays = Vec::new();
        let blobs = self.root.join("blobs");
        let algs = match std::fs::read_dir(&blobs) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((infos, strays)),
            Err(source) => return Err(ContentError::io("read directory", blobs, source)),
        };
        for alg in algs {
            let alg = alg.map_err(|source| ContentError::io("read directory", &blobs, source))?;
            let alg_path = alg.path();
            let Some(algorithm) = alg
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<Algorithm>().ok())
            else {
                strays.push(alg_path);
                continue;
            };
            let entries = match std::fs::read_dir(&alg_path) {
                Ok(r) => r,
                Err(source) => return Err(ContentError::io("read directory", alg_path, source)),
            };
            for entry in entries {
                let entry = entry
                    .map_err(|source| ContentError::io("read directory", &alg_path, source))?;
                let path = entry.path();
                let digest = entry
                    .file_name()
                    .to_str()
                    .and_then(|h| Digest::from_hex(algorithm, h).ok());
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(ContentError::io("stat", path, source)),
                };
                match digest {
                    Some(d) if meta.is_file() => {
                        infos.push(Info::new(d, meta.len(), meta.modified().ok()))
                    }
                    _ => strays.push(path),
                }
            }
        }
        infos.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok((infos, strays))
    }
}

impl Manager for OciDir {
    fn list(&self) -> Result<Vec<Info>> {
        Ok(self.walk_blobs()?.0)
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        match self.fs.remove_file(Target::Blob, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound {
                digest: digest.clone(),
            }),
            Err(source) => Err(ContentError::io("remove", path, source)),
        }
    }
}
