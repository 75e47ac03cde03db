//! The build cache beyond one machine: records exported as one OCI index
//! into another store (an OCI layout directory, an archive made from one,
//! a registry repository pushed from one), and imported from such an
//! index into a store's cache.
//!
//! # The form
//!
//! An OCI image index whose `artifactType` is
//! [`CACHE_INDEX_ARTIFACT_TYPE`]; each entry is a record's manifest (as
//! [`Cache::record`](super::Cache::record) writes it: a config of media
//! type [`CACHE_CONFIG_MEDIA_TYPE`] and the step's layer) annotated with
//! its key ([`KEY_ANNOTATION`]). The index is tagged in the destination
//! (by default [`DEFAULT_NAME`]). Everything is content-addressed, so the
//! same records export to the same blobs on any machine, and an importing
//! store verifies every blob by digest as it copies it. Cache mount
//! directories ([`super::mounts`]) are entries of the same index,
//! annotated with their names instead of a key.
//!
//! # Modes
//!
//! [`CacheMode::Min`] (BuildKit's default) exports the records of the
//! final image's layers; [`CacheMode::Max`] every record the build used,
//! intermediate stages included.
//!
//! # Security
//!
//! An imported index is input: its size is bounded (the store's document
//! limit), so is its entry count ([`MAX_RECORDS`]); each record's manifest
//! and config are read bounded and checked (our artifact and config types,
//! one layer, a config naming the same key and the layer's media type)
//! before any of its blobs is copied, and an entry that is not such a
//! record is skipped and counted, never an error. A record is copied as
//! soon as it is checked, so one record's documents are held at a time.
//! Copies go through the destination's lease, blob by blob verified, and
//! the records are tagged in one batch at the end: a failed import tags
//! nothing, and what it copied is collectable once its lease ends.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use image_core::manifest::descriptor_media_type;
use image_core::oci_spec::image::{ImageIndexBuilder, MediaType as OciMediaType};
use image_core::{Algorithm, MediaType, ParseError};
use image_core::{Classify, Descriptor, DescriptorExt, Digest, ErrorKind, Index, Manifest};
use image_store::archive::BlobStore;
use image_store::refs::MAX_DOCUMENT_SIZE;
use image_store::{
    copy_image, resolve_reference, ContentError, CopyError, LeaseError, Leases, Provider, TagError,
    TagStore,
};

use super::mounts::{export_mounts, import_mounts, mount_entry_name, MountCacheError, MountImport};
use super::{
    tag_entry, CacheError, CacheKey, CachedLayer, RecordConfig, UsedRecord,
    CACHE_CONFIG_MEDIA_TYPE, MAX_CONFIG_SIZE,
};
use crate::Layer;

/// The `artifactType` of an exported cache's index.
pub const CACHE_INDEX_ARTIFACT_TYPE: &str = "application/vnd.image-build.cache.v1+json";

/// The annotation of an index entry naming its record's key (a sha256
/// digest).
pub const KEY_ANNOTATION: &str = "local.image-build.cache.key";

/// The tag an export sets and an import reads when none is given.
pub const DEFAULT_NAME: &str = "image-build.local/buildcache:latest";

/// The most entries an imported index may list.
pub const MAX_RECORDS: usize = 65536;

/// Which records a build's export writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// The records of the final image's layers (BuildKit's `mode=min`).
    #[default]
    Min,
    /// Every record the build used, of every stage (`mode=max`).
    Max,
}

impl std::str::FromStr for CacheMode {
    type Err = String;

    fn from_str(s: &str) -> Result<CacheMode, String> {
        match s {
            "min" => Ok(CacheMode::Min),
            "max" => Ok(CacheMode::Max),
            _ => Err(format!("cache mode {s:?}: expected min or max")),
        }
    }
}

/// The records of `used` that `mode` exports for a build whose result is
/// `image`: all for [`CacheMode::Max`]; for [`CacheMode::Min`] those whose
/// layer is one of the image's. A multi-platform build has an image per
/// platform: see [`select_for`].
pub fn select(used: &[UsedRecord], mode: CacheMode, image: &Manifest) -> Vec<UsedRecord> {
    select_for(used, mode, [image])
}

/// The records of `used` that `mode` exports for a build whose result is
/// `images` (each platform's of a multi-platform build, as BuildKit
/// exports the cache of every platform built): all for [`CacheMode::Max`];
/// for [`CacheMode::Min`] those whose layer is one of any image's.
pub fn select_for<'m>(
    used: &[UsedRecord],
    mode: CacheMode,
    images: impl IntoIterator<Item = &'m Manifest>,
) -> Vec<UsedRecord> {
    match mode {
        CacheMode::Max => used.to_vec(),
        CacheMode::Min => {
            let layers: HashSet<&str> = images
                .into_iter()
                .flat_map(|image| image.layers().iter().map(|l| l.digest().as_ref()))
                .collect();
            used.iter()
                .filter(|r| layers.contains(r.layer.descriptor.digest().as_ref()))
                .cloned()
                .collect()
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ExportReport {
    /// The index, as tagged in the destination.
    pub descriptor: Descriptor,
    /// The records it lists.
    pub records: usize,
    /// The cache mounts it lists.
    pub mounts: usize,
    /// Blobs copied (those the destination had are not counted).
    pub copied: usize,
}

/// A failed export. The destination may hold some blobs (verified,
/// harmless) but its tag is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// A record could not be copied.
    #[error("exporting build cache record {key}")]
    Copy {
        /// The record's key.
        key: Digest,
        /// The copy's error.
        #[source]
        source: Box<CopyError>,
    },
    /// The index could not be made.
    #[error("making the build cache index")]
    Index {
        /// Why.
        #[source]
        source: ParseError,
    },
    /// The index could not be written.
    #[error("writing the build cache index")]
    Write {
        /// The store's error.
        #[source]
        source: Box<ContentError>,
    },
    /// The cache mounts could not be exported.
    #[error("exporting the cache mounts")]
    Mounts {
        /// Why.
        #[source]
        source: Box<MountCacheError>,
    },
    /// The index could not be tagged.
    #[error("tagging the build cache index as {name}")]
    Tag {
        /// The name.
        name: String,
        /// The store's error.
        #[source]
        source: Box<TagError>,
    },
}

impl Classify for ExportError {
    fn kind(&self) -> ErrorKind {
        match self {
            ExportError::Copy { source, .. } => source.kind(),
            ExportError::Index { source } => source.kind(),
            ExportError::Write { source } => source.kind(),
            ExportError::Tag { source, .. } => source.kind(),
            ExportError::Mounts { source } => source.kind(),
        }
    }
}

/// Writes `records` (of `src`) into `dst` as one cache index tagged
/// `name` (see the [module docs](self)). The index lists the records in
/// the order given, each key once.
///
/// With `mounts`, the cache mounts of that directory too (see
/// [`super::mounts`]), each an entry of the same index.
///
/// # Errors
/// [`ExportError`]; the tag is set last, so a failed export leaves the
/// destination's tag as it was.
pub fn export<S, D>(
    src: &S,
    records: &[UsedRecord],
    mounts: Option<&Path>,
    dst: &D,
    name: &str,
) -> Result<ExportReport, ExportError>
where
    S: Provider + ?Sized,
    D: BlobStore + TagStore + ?Sized,
{
    let mut seen = HashSet::new();
    let mut entries = Vec::with_capacity(records.len());
    let mut copied = 0;
    for r in records {
        if !seen.insert(r.key.digest().clone()) {
            continue;
        }
        let report = copy_image(src, dst, &r.manifest).map_err(|source| ExportError::Copy {
            key: r.key.digest().clone(),
            source: Box::new(source),
        })?;
        copied += report.copied;
        let mut entry = r.manifest.clone();
        entry.set_annotations(Some(HashMap::from([(
            KEY_ANNOTATION.to_owned(),
            r.key.digest().to_string(),
        )])));
        entries.push(entry);
    }
    let mut mount_count = 0;
    if let Some(root) = mounts {
        let found = export_mounts(root, dst).map_err(|source| ExportError::Mounts {
            source: Box::new(source),
        })?;
        mount_count = found.len();
        entries.extend(found);
    }
    let index_err = |source| ExportError::Index { source };
    let inner = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(OciMediaType::ImageIndex)
        .artifact_type(OciMediaType::from(CACHE_INDEX_ARTIFACT_TYPE))
        .manifests(entries)
        .build()
        .map_err(|source| {
            index_err(ParseError::Build {
                what: "the build cache index",
                source,
            })
        })?;
    let index = Index::new(inner).map_err(index_err)?;
    dst.write_blob(index.raw())
        .map_err(|source| ExportError::Write {
            source: Box::new(source),
        })?;
    copied += 1;
    let descriptor = index.descriptor();
    dst.set_tag(name, &descriptor)
        .map_err(|source| ExportError::Tag {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    Ok(ExportReport {
        descriptor,
        records: seen.len(),
        mounts: mount_count,
        copied,
    })
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Records tagged in the store's cache.
    pub records: usize,
    /// Entries of the index that are no record of ours: skipped.
    pub foreign: usize,
    /// Blobs copied (those the store had are not counted).
    pub copied: usize,
    /// The cache mounts made (with a mount directory).
    pub mounts: MountImport,
}

/// A failed import: no record of it is tagged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The name names nothing in the source.
    #[error("finding the build cache {name}")]
    Resolve {
        /// The name.
        name: String,
        /// The source's error.
        #[source]
        source: Box<TagError>,
    },
    /// The name names something that is not a cache index.
    #[error("{name} is not a build cache index ({found})")]
    NotCache {
        /// The name.
        name: String,
        /// What it is instead (a media or artifact type).
        found: String,
    },
    /// The index or a record could not be read.
    #[error("reading the build cache {what}")]
    Read {
        /// The index, or which record.
        what: String,
        /// The source's error.
        #[source]
        source: Box<ContentError>,
    },
    /// The index does not parse.
    #[error("parsing the build cache index")]
    Parse {
        /// Why.
        #[source]
        source: ParseError,
    },
    /// The index lists more entries than [`MAX_RECORDS`].
    #[error("the build cache index lists {found} entries, more than {limit}")]
    TooMany {
        /// Entries listed.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// A record could not be copied into the store.
    #[error("importing build cache record {key}")]
    Copy {
        /// The record's key.
        key: Digest,
        /// The copy's error.
        #[source]
        source: Box<CopyError>,
    },
    /// A record's tag could not be made.
    #[error("importing a build cache record")]
    Record {
        /// The cache's error.
        #[source]
        source: Box<CacheError>,
    },
    /// The store's lease could not be taken or released.
    #[error("holding the import's lease")]
    Lease {
        /// The store's error.
        #[source]
        source: Box<LeaseError>,
    },
    /// The cache mounts could not be imported.
    #[error("importing the cache mounts")]
    Mounts {
        /// Why.
        #[source]
        source: Box<MountCacheError>,
    },
    /// The records could not be tagged.
    #[error("tagging {records} imported build cache records")]
    Tag {
        /// Records in the batch.
        records: usize,
        /// The store's error.
        #[source]
        source: Box<TagError>,
    },
}

impl Classify for ImportError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImportError::Resolve { source, .. } | ImportError::Tag { source, .. } => source.kind(),
            ImportError::NotCache { .. } => ErrorKind::InvalidInput,
            ImportError::Read { source, .. } => source.kind(),
            ImportError::Parse { source } => source.kind(),
            ImportError::TooMany { .. } => ErrorKind::Unsafe,
            ImportError::Copy { source, .. } => source.kind(),
            ImportError::Record { source } => source.kind(),
            ImportError::Lease { source } => source.kind(),
            ImportError::Mounts { source } => source.kind(),
        }
    }
}

/// A record of the index, checked from its documents in the source, which
/// it keeps: they are written into the destination from these bytes, not
/// read again.
struct Found {
    key: CacheKey,
    manifest: Descriptor,
    manifest_bytes: Vec<u8>,
    config: Descriptor,
    config_bytes: Vec<u8>,
    layer: CachedLayer,
}

/// Reads and checks the entry `d` of an index: `None` for anything that
/// is not a record of ours (whose documents are ours and agree).
fn check_entry<P: Provider + ?Sized>(
    src: &P,
    d: &Descriptor,
) -> Result<Option<Found>, ImportError> {
    let Some(hex) = d
        .annotations()
        .as_ref()
        .and_then(|a| a.get(KEY_ANNOTATION))
        .and_then(|k| k.strip_prefix("sha256:"))
    else {
        return Ok(None);
    };
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Ok(None);
    }
    let Ok(key) = Digest::from_hex(Algorithm::Sha256, hex) else {
        return Ok(None);
    };
    if descriptor_media_type(d) != MediaType::OciManifest || d.size() > MAX_DOCUMENT_SIZE {
        return Ok(None);
    }
    let read = |what: &str, desc: &Descriptor, limit| {
        src.read_descriptor_to_vec(desc, limit)
            .map_err(|source| ImportError::Read {
                what: format!("record {key}'s {what}"),
                source: Box::new(source),
            })
    };
    let manifest_bytes = read("manifest", d, MAX_DOCUMENT_SIZE)?;
    let Ok(manifest) = Manifest::from_bytes(manifest_bytes.clone()) else {
        return Ok(None);
    };
    let config = manifest.config().clone();
    let ours = manifest.artifact_type().as_ref().map(MediaType::as_str)
        == Some(CACHE_CONFIG_MEDIA_TYPE)
        && descriptor_media_type(&config).as_str() == CACHE_CONFIG_MEDIA_TYPE
        && manifest.layers().len() == 1
        && config.size() <= MAX_CONFIG_SIZE;
    if !ours {
        return Ok(None);
    }
    let layer = manifest.layers()[0].clone();
    if descriptor_media_type(&layer)
        .require_layer_compression()
        .is_err()
    {
        return Ok(None);
    }
    let config_bytes = read("config", &config, MAX_CONFIG_SIZE)?;
    let Ok(rc) = serde_json::from_slice::<RecordConfig>(&config_bytes) else {
        return Ok(None);
    };
    let Ok(diff_id) = rc.diff_id.parse::<Digest>() else {
        return Ok(None);
    };
    if rc.key != key.to_string() || rc.media_type != layer.media_type().to_string() {
        return Ok(None);
    }
    let mut manifest_desc = d.clone();
    manifest_desc.set_annotations(None);
    Ok(Some(Found {
        key: CacheKey(key),
        manifest: manifest_desc,
        manifest_bytes,
        config,
        config_bytes,
        layer: CachedLayer {
            layer: Layer {
                descriptor: layer,
                diff_id,
            },
            created_by: rc.created_by,
            created: rc.created,
        },
    }))
}

/// Copies the record `f` into `dst`, children first (its layer, its
/// config, its manifest), skipping what `dst` has; returns how many blobs
/// it wrote. The config and manifest are written from the bytes
/// [`check_entry`] read and verified; only the layer is read from `src`,
/// at most its descriptor's size, and verified as it is written.
fn copy_record<P, D>(src: &P, dst: &D, f: &Found) -> Result<usize, CopyError>
where
    P: Provider + ?Sized,
    D: BlobStore + ?Sized,
{
    let layer = &f.layer.layer.descriptor;
    let blobs: [(&Descriptor, Option<&[u8]>); 3] = [
        (layer, None),
        (&f.config, Some(&f.config_bytes)),
        (&f.manifest, Some(&f.manifest_bytes)),
    ];
    let mut copied = 0;
    for (d, bytes) in blobs {
        let digest = d.checked_digest().map_err(|source| CopyError::Parse {
            what: format!("record {}", f.key),
            source,
        })?;
        let content = |source| CopyError::Content {
            digest: digest.clone(),
            source,
        };
        if dst.exists(&digest).map_err(content)? {
            continue;
        }
        let written = match bytes {
            Some(b) => dst.ingest_reader(&mut &b[..], Some(d.size()), Some(&digest)),
            None => src
                .reader_for(d)
                .and_then(|mut r| dst.ingest_reader(&mut r, Some(d.size()), Some(&digest))),
        };
        written.map_err(content)?;
        copied += 1;
    }
    Ok(copied)
}

/// Imports the cache index tagged `name` in `src` into `dst`'s build
/// cache: each record's blobs are copied (verified) under a lease of
/// `dst` as soon as the record is checked, then every record is tagged in
/// one batch (see the [module docs](self)). A record `dst` has already is replaced by the
/// same one.
///
/// With `mounts`, the cache mounts the index lists are made in that
/// directory (see [`super::mounts`]) after the records are tagged;
/// without it they are skipped.
///
/// # Errors
/// [`ImportError`]; nothing is tagged then.
pub fn import<P, S>(
    src: &P,
    name: &str,
    dst: &S,
    mounts: Option<&Path>,
) -> Result<ImportReport, ImportError>
where
    P: Provider + TagStore + ?Sized,
    S: BlobStore + TagStore + Leases + ?Sized,
{
    let root = resolve_reference(src, name).map_err(|source| ImportError::Resolve {
        name: name.to_owned(),
        source: Box::new(source),
    })?;
    let not_cache = |found: String| ImportError::NotCache {
        name: name.to_owned(),
        found,
    };
    if descriptor_media_type(&root) != MediaType::OciIndex {
        return Err(not_cache(root.media_type().to_string()));
    }
    let bytes = src
        .read_descriptor_to_vec(&root, MAX_DOCUMENT_SIZE)
        .map_err(|source| ImportError::Read {
            what: "index".into(),
            source: Box::new(source),
        })?;
    let index = Index::from_bytes(bytes).map_err(|source| ImportError::Parse { source })?;
    let artifact = index
        .inner()
        .artifact_type()
        .as_ref()
        .map(|t| t.to_string());
    if artifact.as_deref() != Some(CACHE_INDEX_ARTIFACT_TYPE) {
        return Err(not_cache(
            artifact.unwrap_or_else(|| "no artifactType".into()),
        ));
    }
    if index.manifests().len() > MAX_RECORDS {
        return Err(ImportError::TooMany {
            found: index.manifests().len(),
            limit: MAX_RECORDS,
        });
    }
    let mut report = ImportReport::default();
    let mut keys = HashSet::new();
    let mut mount_entries = Vec::new();
    let lease = dst.begin_lease().map_err(|source| ImportError::Lease {
        source: Box::new(source),
    })?;
    let leased = lease.protect(dst);
    let mut tags = Vec::new();
    // Each record copied as soon as it is checked: one record's documents
    // are held at a time, not every record's. A failure leaves what was
    // copied under the lease, which ends with it: collectable, untagged.
    for d in index.manifests() {
        if mount_entry_name(d).is_some() {
            mount_entries.push(d.clone());
            continue;
        }
        let f = match check_entry(src, d)? {
            Some(f) if keys.insert(f.key.digest().clone()) => f,
            _ => {
                report.foreign += 1;
                continue;
            }
        };
        report.copied += copy_record(src, &leased, &f).map_err(|source| ImportError::Copy {
            key: f.key.digest().clone(),
            source: Box::new(source),
        })?;
        let (tag, _) =
            tag_entry(&f.key, &f.layer, f.config, f.manifest).map_err(|e| ImportError::Record {
                source: Box::new(e),
            })?;
        tags.push(tag);
    }
    let batch: Vec<(&str, &Descriptor)> = tags.iter().map(|(n, d)| (n.as_str(), d)).collect();
    if !batch.is_empty() {
        dst.set_tags(&batch).map_err(|source| ImportError::Tag {
            records: batch.len(),
            source: Box::new(source),
        })?;
    }
    report.records = batch.len();
    lease.release().map_err(|source| ImportError::Lease {
        source: Box::new(source),
    })?;
    if let Some(root) = mounts {
        report.mounts =
            import_mounts(src, &mount_entries, root).map_err(|source| ImportError::Mounts {
                source: Box::new(source),
            })?;
    }
    Ok(report)
}
