//! Cache mount directories (`RUN --mount=type=cache`) exported and
//! imported with the build cache, each as a blob of its own, so that a
//! build on a fresh machine starts with a warm package cache (BuildKit
//! cannot: moby/buildkit#1474).
//!
//! # The directories
//!
//! The cache mounts of a builder live in one root directory, one
//! directory per mount named by its escaped id (ASCII letters, digits,
//! `-`, `_`, and `%XX` for every other byte: [`is_mount_name`]); other
//! entries of the root (lock files, directories being made, whose names
//! hold a `.`) are not mounts.
//!
//! # The form
//!
//! Each mount is a manifest of `artifactType` [`MOUNT_ARTIFACT_TYPE`]
//! (config: the OCI empty descriptor) whose one layer is its directory
//! packed by image-overlay's pack (deterministic: sorted, no time but the
//! files' own, clamped by `SOURCE_DATE_EPOCH`), listed in the cache index
//! with its name as [`MOUNT_ANNOTATION`].
//!
//! # Security
//!
//! Export: the root's entries are read without following links (a link
//! named like a mount is skipped), their count is bounded
//! ([`MAX_MOUNTS`]); pack follows no link inside. Import: a name is
//! checked before any path is made of it; each layer is read verified by
//! digest and unpacked in-root with unpack's limits into a new directory
//! in a locked directory of the root (`.import-*/mount`), renamed to the
//! mount's name only when that name is free (a mount the machine has
//! already is kept), removed on failure: nothing half-written under a
//! mount's name. What a killed import or build left half-made is removed
//! by the next import (`crate::mounts` describes the root).

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use image_core::manifest::{descriptor, descriptor_media_type};
use image_core::oci_spec::image::MediaType as OciMediaType;
use image_core::{Classify, Descriptor, DescriptorExt, ErrorKind, Manifest, MediaType, ParseError};
use image_overlay::compare::store_layer;
use image_overlay::pack::{pack_dir, PackError, PackOptions};
use image_overlay::unpack::{unpack, UnpackError, UnpackOptions};
use image_store::archive::BlobStore;
use image_store::refs::MAX_DOCUMENT_SIZE;
use image_store::{ContentError, Provider};

/// The `artifactType` of a cache mount's manifest.
pub const MOUNT_ARTIFACT_TYPE: &str = "application/vnd.image-build.cache.mount.v1+json";

/// The annotation of a cache index entry naming a cache mount (its
/// directory's name).
pub const MOUNT_ANNOTATION: &str = "local.image-build.cache.mount";

/// The most cache mounts exported or imported at once.
pub const MAX_MOUNTS: usize = 1024;

const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// Whether `name` is a cache mount directory's name: the escaped form of
/// a cache mount id (`crate::mounts::CacheMountId::from_escaped`, the
/// one rule the RUN step names them by).
pub fn is_mount_name(name: &str) -> bool {
    crate::mounts::CacheMountId::from_escaped(name).is_some()
}

/// A failed export or import of cache mounts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountCacheError {
    /// The root could not be listed or a directory made or renamed in it.
    #[error("cache mount root {path}")]
    Root {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The root holds more mounts than [`MAX_MOUNTS`].
    #[error("more than {limit} cache mounts")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// A mount could not be packed.
    #[error("packing cache mount {name}")]
    Pack {
        /// The mount's name.
        name: String,
        /// The pack's error.
        #[source]
        source: Box<PackError>,
    },
    /// A blob could not be written or read.
    #[error("cache mount {name}: its blobs")]
    Content {
        /// The mount's name.
        name: String,
        /// The store's error.
        #[source]
        source: Box<ContentError>,
    },
    /// A manifest could not be made.
    #[error("cache mount {name}: its manifest")]
    Manifest {
        /// The mount's name.
        name: String,
        /// Why.
        #[source]
        source: ParseError,
    },
    /// A mount's layer could not be unpacked.
    #[error("unpacking cache mount {name}")]
    Unpack {
        /// The mount's name.
        name: String,
        /// The unpack's error.
        #[source]
        source: Box<UnpackError>,
    },
}

impl Classify for MountCacheError {
    fn kind(&self) -> ErrorKind {
        match self {
            MountCacheError::Root { source, .. } => ErrorKind::from_io(source),
            MountCacheError::TooMany { .. } => ErrorKind::Unsafe,
            MountCacheError::Pack { source, .. } => source.kind(),
            MountCacheError::Content { source, .. } => source.kind(),
            MountCacheError::Manifest { source, .. } => source.kind(),
            MountCacheError::Unpack { source, .. } => source.kind(),
        }
    }
}

fn root_err(path: &Path) -> impl Fn(std::io::Error) -> MountCacheError + '_ {
    move |source| MountCacheError::Root {
        path: path.display().to_string(),
        source,
    }
}

/// The names of the cache mount directories of `root` (none when it does
/// not exist), sorted; links and other entries skipped.
///
/// # Errors
/// [`MountCacheError::Root`]; [`MountCacheError::TooMany`].
pub fn mount_names(root: &Path) -> Result<Vec<String>, MountCacheError> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(root_err(root)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(root_err(root))?;
        // The entry's own type (lstat): a link is not a mount.
        let is_dir = entry.file_type().map_err(root_err(root))?.is_dir();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if is_dir && is_mount_name(&name) {
            if names.len() == MAX_MOUNTS {
                return Err(MountCacheError::TooMany { limit: MAX_MOUNTS });
            }
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Packs every cache mount of `root` into `dst` (a layer and a manifest
/// each) and returns their cache index entries (annotated with their
/// names), in name order.
///
/// # Errors
/// [`MountCacheError`].
pub fn export_mounts<D: BlobStore + ?Sized>(
    root: &Path,
    dst: &D,
) -> Result<Vec<Descriptor>, MountCacheError> {
    let mut out = Vec::new();
    let options = PackOptions::default().with_source_date_epoch_from_env();
    for name in mount_names(root)? {
        let content = |source| MountCacheError::Content {
            name: name.clone(),
            source: Box::new(source),
        };
        let dir = root.join(&name);
        let report = store_layer(dst, content, |w| {
            pack_dir(&dir, w, &options).map_err(|source| MountCacheError::Pack {
                name: name.clone(),
                source: Box::new(source),
            })
        })?;
        let layer = descriptor(&report.media_type, &report.digest, report.size);
        let empty = dst.write_blob(b"{}").map_err(content)?;
        let config = descriptor(&MediaType::from(EMPTY_MEDIA_TYPE), &empty, 2);
        let note = HashMap::from([(MOUNT_ANNOTATION.to_owned(), name.clone())]);
        let manifest = Manifest::build(&MediaType::OciManifest, config, vec![layer], None)
            .and_then(|m| {
                m.modify(|i| {
                    i.set_artifact_type(Some(OciMediaType::from(MOUNT_ARTIFACT_TYPE)));
                    i.set_annotations(Some(note.clone()));
                })
            })
            .map_err(|source| MountCacheError::Manifest {
                name: name.clone(),
                source,
            })?;
        dst.write_blob(manifest.raw()).map_err(content)?;
        let mut entry = manifest.descriptor();
        entry.set_annotations(Some(note));
        out.push(entry);
    }
    Ok(out)
}

/// The mount name of a cache index entry, when it is one.
pub fn mount_entry_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(MOUNT_ANNOTATION))
        .map(String::as_str)
}

/// What an import of cache mounts did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MountImport {
    /// Mounts made.
    pub imported: usize,
    /// Mounts the root had already (kept as they were).
    pub kept: usize,
    /// Entries that are no cache mount of ours (skipped).
    pub foreign: usize,
    /// Staging directories a killed build or import left that could not
    /// be removed (skipped; the next import tries again).
    pub left: Vec<std::path::PathBuf>,
}

/// Makes the cache mounts that `entries` (cache index entries of `src`
/// with [`MOUNT_ANNOTATION`]) name in `root` (made if missing), each from
/// its layer, unless `root` has that mount already.
///
/// # Errors
/// [`MountCacheError`]; a mount that failed leaves nothing under its name.
pub fn import_mounts<P: Provider + ?Sized>(
    src: &P,
    entries: &[Descriptor],
    root: &Path,
) -> Result<MountImport, MountCacheError> {
    let mut report = MountImport::default();
    if entries.len() > MAX_MOUNTS {
        return Err(MountCacheError::TooMany { limit: MAX_MOUNTS });
    }
    std::fs::create_dir_all(root).map_err(root_err(root))?;
    // What an import or a build killed half-way left.
    report.left = crate::mounts::sweep_staging(root)
        .map_err(root_err(root))?
        .left
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    for d in entries {
        let Some(name) = mount_entry_name(d).filter(|n| is_mount_name(n)) else {
            report.foreign += 1;
            continue;
        };
        let Some(layer) = mount_layer(src, d, name)? else {
            report.foreign += 1;
            continue;
        };
        let target = root.join(name);
        if std::fs::symlink_metadata(&target).is_ok() {
            report.kept += 1;
            continue;
        }
        // Held (flock) while it is made, so that a sweep of another
        // process leaves it alone; removed with what it holds unless its
        // mount was renamed out.
        let (staging, _lock) =
            crate::mounts::locked_dir(root, crate::mounts::IMPORT).map_err(root_err(root))?;
        let fresh = staging.path().join("mount");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&fresh)
            .map_err(root_err(root))?;
        let reader = src
            .reader_for(&layer)
            .map_err(|source| MountCacheError::Content {
                name: name.to_owned(),
                source: Box::new(source),
            })?;
        let mut options = UnpackOptions::default();
        options.size = Some(layer.size());
        options.digest = layer.checked_digest().ok();
        unpack(reader, &fresh, &options).map_err(|source| MountCacheError::Unpack {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
        // Renamed only onto a free name: a mount made meanwhile is kept.
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &fresh,
            rustix::fs::CWD,
            &target,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => report.imported += 1,
            Err(rustix::io::Errno::EXIST) => report.kept += 1,
            Err(e) => return Err(root_err(root)(e.into())),
        }
    }
    Ok(report)
}

/// The layer of a mount's manifest, when the manifest is one of ours.
fn mount_layer<P: Provider + ?Sized>(
    src: &P,
    d: &Descriptor,
    name: &str,
) -> Result<Option<Descriptor>, MountCacheError> {
    if descriptor_media_type(d) != MediaType::OciManifest || d.size() > MAX_DOCUMENT_SIZE {
        return Ok(None);
    }
    let bytes = src
        .read_descriptor_to_vec(d, MAX_DOCUMENT_SIZE)
        .map_err(|source| MountCacheError::Content {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    let Ok(manifest) = Manifest::from_bytes(bytes) else {
        return Ok(None);
    };
    let ours = manifest.artifact_type().as_ref().map(MediaType::as_str)
        == Some(MOUNT_ARTIFACT_TYPE)
        && manifest.layers().len() == 1
        && descriptor_media_type(&manifest.layers()[0])
            .require_layer_compression()
            .is_ok();
    Ok(ours.then(|| manifest.layers()[0].clone()))
}
