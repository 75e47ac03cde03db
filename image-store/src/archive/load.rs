//! Import: `docker save` tarballs (both layouts) and OCI archives, streamed
//! into a store.
//!
//! The archive is read once, entry by entry, in stream order. Every file
//! that looks like a blob goes straight into an ingest writer of the store
//! as it streams past, hashed while written (a `blobs/<alg>/<hex>` entry is
//! verified against its name; a small unnamed `.json` entry, a config,
//! is hashed first, and bytes the load already committed are not stored
//! again); the few metadata files (`manifest.json`,
//! `index.json`, `oci-layout`, `repositories`) are kept in memory (at most
//! 8 MiB each); the legacy `<id>/json` and `<id>/VERSION` files are
//! skipped. Links (skopeo writes `<id>/layer.tar` as a symlink) become
//! aliases. Nothing is extracted to disk outside the store's own ingest.
//!
//! The tar stream may end where Go's `archive/tar` (so `docker load`)
//! lets it: at an entry boundary with the end-of-archive marker, one zero
//! block of it or none, or right after the last entry's data without its
//! padding; a header or data cut short is [`ArchiveError::Truncated`].
//!
//! An archive that starts with the magic of gzip or zstd is decompressed
//! as it streams (and read to the end of its compressed stream, so a
//! cut-off one is [`ArchiveError::Truncated`]); xz and bzip2 are refused
//! with [`ArchiveError::CompressedArchive`].
//!
//! Only then, because `manifest.json` may come after the layers, are the
//! images assembled: each layer is checked against the diff ID its config
//! declares (uncompressed layers by their digest, compressed ones by
//! decompressing the stored blob once, up to
//! [`LoadOptions::max_expanded_bytes`]; a blob named by many entries is
//! verified once, as is a config), manifests are written (OCI
//! manifests with `application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]`
//! layers, as sniffed; a Docker 25+ archive's own manifest is reused when
//! it matches), and, when every image of the archive is valid, the tags
//! are set. A failure before that point tags nothing. The documents an OCI
//! archive's `index.json` reaches are checked once each (a visited set
//! across all its entries), with nesting and count bounded
//! ([`MAX_DOCUMENT_DEPTH`], [`MAX_DOCUMENTS`]).

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader, Read};

use image_core::codec;
use image_core::manifest::{descriptor, descriptor_media_type};
use image_core::progress::is_cancelled;
use image_core::DescriptorExt;
use image_core::{
    Algorithm, Compression, Descriptor, Digest, Document, ImageConfig, Index, Manifest, MediaType,
    MediaTypeError, ParseError, Tracker,
};
use serde::Deserialize;

use super::tarstream::{normalize, resolve_link};
use super::{ArchiveError, BlobStore};
use crate::content::read_full;
use crate::content::{unique_reference, ContentError};
use crate::lease::Leases;
use crate::refs::MAX_DOCUMENT_SIZE;
use crate::tags::{normalize_name, ref_name, TagStore};
use crate::tar_ending::{EndState, Ending};

/// The kind of archive [`load`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchiveFormat {
    /// `docker save` before Docker 25 (and skopeo's `docker-archive:`):
    /// `manifest.json`, `<id>.json` configs, `<id>/layer.tar`.
    DockerLegacy,
    /// `docker save` of Docker 25 and later: `manifest.json` plus an OCI
    /// layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`).
    DockerOci,
    /// A tar of an OCI image layout (`oci-archive:`).
    Oci,
}

/// Options of [`load`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadOptions {
    /// The repository for OCI archives whose ref names are bare tags (as
    /// skopeo writes `oci-archive:X:latest`): with `Some("busybox")` the
    /// ref name `latest` is tagged `docker.io/library/busybox:latest`.
    /// Without it such a name is normalised like any other (`latest` ->
    /// `docker.io/library/latest:latest`).
    pub repository: Option<String>,
    /// The most bytes a compressed layer may expand to while its diff ID
    /// is checked; past it the load fails with
    /// [`ArchiveError::LayerTooLarge`] without decompressing the rest.
    /// The default, 64 GiB, is image-overlay's unpack limit
    /// (`Limits::max_expanded_bytes`), so a layer that loads also unpacks.
    pub max_expanded_bytes: u64,
    /// Reports each blob entry of the archive as it streams into the store
    /// (an item named by its path in the archive, with the entry's size),
    /// and stops the load once its interrupt is set: between entries, per
    /// chunk of an entry and of a layer's diff-ID check. A blob stopped
    /// mid-way is not committed and its ingest is removed; no tag is set.
    pub tracker: Tracker,
}

/// The default of [`LoadOptions::max_expanded_bytes`]: image-overlay's
/// default unpack limit.
pub const DEFAULT_MAX_EXPANDED_BYTES: u64 = 64 << 30;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            repository: None,
            max_expanded_bytes: DEFAULT_MAX_EXPANDED_BYTES,
            tracker: Tracker::default(),
        }
    }
}

impl LoadOptions {
    /// Sets [`max_expanded_bytes`](LoadOptions::max_expanded_bytes).
    pub fn max_expanded_bytes(mut self, limit: u64) -> Self {
        self.max_expanded_bytes = limit;
        self
    }

    /// Sets [`tracker`](LoadOptions::tracker), under the setter name every
    /// options type of the family uses.
    pub fn with_tracker(mut self, tracker: Tracker) -> Self {
        self.tracker = tracker;
        self
    }

    /// Sets [`repository`](LoadOptions::repository).
    pub fn repository(mut self, repository: impl Into<String>) -> Self {
        self.repository = Some(repository.into());
        self
    }
}

/// One image found in an archive and stored.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoadedImage {
    /// The descriptor of its manifest (or index, for OCI archives).
    pub descriptor: Descriptor,
    /// The config digest (the image ID), for single-manifest images.
    pub config: Option<Digest>,
    /// The tags set for it, normalised; empty for an untagged image (which
    /// nothing references: tag it, or gc removes it).
    pub tags: Vec<String>,
}

/// What [`load`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoadReport {
    /// The archive's format.
    pub format: ArchiveFormat,
    /// The images, in archive order.
    pub images: Vec<LoadedImage>,
    /// Blobs streamed from the archive into the store (present ones included).
    pub blobs: usize,
    /// Bytes of those blobs.
    pub bytes: u64,
}

/// Imports a `docker save` tarball (either layout) or an OCI archive from
/// `reader` into `store`, tagging its images, in one streaming pass.
///
/// See the [module documentation](self) for how.
///
/// # Errors
/// [`ArchiveError`]: truncated or malformed tar, missing files, layers that
/// do not match their config's diff IDs, JSON that is not a manifest,
/// index or config, unknown media types, store and tag errors. On error no
/// tag has been set.
pub fn load<S, R>(
    store: &S,
    mut reader: R,
    options: &LoadOptions,
) -> Result<LoadReport, ArchiveError>
where
    S: BlobStore + TagStore + Leases,
    R: Read,
{
    // Held from the first blob until the tags are set: every blob is added
    // before it is checked or committed, so gc cannot remove one between.
    let lease = store.begin_lease()?;
    let report = load_dyn(&lease.protect(store), store, &mut reader, options)?;
    drop(lease);
    Ok(report)
}

/// A blob as stored.
#[derive(Debug, Clone)]
struct Blob {
    digest: Digest,
    size: u64,
    compression: Compression,
}

/// What the streaming pass found.
#[derive(Default)]
struct Scan {
    files: HashMap<String, Blob>,
    links: HashMap<String, String>,
    meta: HashMap<&'static str, Vec<u8>>,
    has_blobs_dir: bool,
    blobs: usize,
    bytes: u64,
}

const META: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];

impl Scan {
    /// The blob at `path`, following links.
    fn lookup(&self, path: &str, referenced_by: &str) -> Result<&Blob, ArchiveError> {
        let missing = || ArchiveError::MissingEntry {
            path: path.to_owned(),
            referenced_by: referenced_by.to_owned(),
        };
        let mut p = normalize(path)?;
        for _ in 0..32 {
            if let Some(b) = self.files.get(&p) {
                return Ok(b);
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => return Err(missing()),
            }
        }
        Err(missing())
    }
}

fn tar_error(e: io::Error, last: &str, hit_eof: bool) -> ArchiveError {
    if is_cancelled(&e) {
        ArchiveError::Cancelled(image_core::Cancelled)
    } else if hit_eof || e.kind() == io::ErrorKind::UnexpectedEof {
        ArchiveError::Truncated {
            what: format!("after entry {last:?}: {e}"),
        }
    } else {
        ArchiveError::Tar {
            entry: last.to_owned(),
            source: e,
        }
    }
}

/// The non-generic core of [`load`].
fn load_dyn(
    store: &dyn BlobStore,
    tags: &dyn TagStore,
    reader: &mut dyn Read,
    options: &LoadOptions,
) -> Result<LoadReport, ArchiveError> {
    let scan = scan(store, reader, &options.tracker)?;
    if scan.meta.contains_key("manifest.json") {
        let format = if scan.has_blobs_dir {
            ArchiveFormat::DockerOci
        } else {
            ArchiveFormat::DockerLegacy
        };
        let images = docker_images(store, &scan, options)?;
        options.tracker.check()?;
        finish(store, tags, &scan, format, images)
    } else if scan.meta.contains_key("index.json") {
        let images = oci_images(store, &scan, options)?;
        options.tracker.check()?;
        finish(store, tags, &scan, ArchiveFormat::Oci, images)
    } else {
        Err(ArchiveError::NotAnArchive)
    }
}

/// An image ready to be written and tagged.
struct Pending {
    /// Manifest bytes to store, when this import built the manifest.
    manifest: Option<Manifest>,
    loaded: LoadedImage,
}

/// Writes the manifests built, then sets every tag.
fn finish(
    store: &dyn BlobStore,
    tags: &dyn TagStore,
    scan: &Scan,
    format: ArchiveFormat,
    pending: Vec<Pending>,
) -> Result<LoadReport, ArchiveError> {
    let mut written = HashSet::new();
    for p in &pending {
        if let Some(m) = p.manifest.as_ref().filter(|m| written.insert(m.digest())) {
            store
                .write_blob(m.raw())
                .map_err(|e| ArchiveError::content(m.digest(), e))?;
        }
    }
    // One batch: index.json is written once, however many names.
    let batch: Vec<(&str, &Descriptor)> = pending
        .iter()
        .flat_map(|p| {
            p.loaded
                .tags
                .iter()
                .map(|n| (n.as_str(), &p.loaded.descriptor))
        })
        .collect();
    tags.set_tags(&batch)?;
    Ok(LoadReport {
        format,
        images: pending.into_iter().map(|p| p.loaded).collect(),
        blobs: scan.blobs,
        bytes: scan.bytes,
    })
}

/// The archive stream, decompressed when its first bytes are the magic of
/// gzip or zstd (as `docker load` accepts compressed tarballs); streamed,
/// never held whole.
///
/// # Errors
/// [`ArchiveError::CompressedArchive`] for xz and bzip2, which are not
/// decoded; a read error of the first bytes.
fn decompressed<'a>(
    reader: &'a mut dyn Read,
) -> Result<(Box<dyn Read + 'a>, Compression), ArchiveError> {
    let mut head = [0u8; 6];
    let n = read_full(reader, &mut head).map_err(|e| tar_error(e, "<start>", false))?;
    let head = &head[..n];
    if let Some(compression) = codec::sniff_unsupported(head) {
        return Err(ArchiveError::CompressedArchive { compression });
    }
    let stream = io::Cursor::new(head.to_vec()).chain(reader);
    let compression = Compression::sniff(head);
    let decoded: Box<dyn Read + 'a> =
        Box::new(codec::decoder(compression, stream).map_err(|e| tar_error(e, "<start>", false))?);
    Ok((decoded, compression))
}

/// The most bytes read after the end-of-archive marker of a compressed
/// archive, to reach the end of its compressed stream (tar pads to 10 KiB).
const MAX_COMPRESSED_TAIL: u64 = 1 << 20;

/// The streaming pass.
fn scan(
    store: &dyn BlobStore,
    reader: &mut dyn Read,
    tracker: &Tracker,
) -> Result<Scan, ArchiveError> {
    let end = EndState::default();
    let (decoded, compression) = decompressed(reader)?;
    let src = Ending::new(BufReader::with_capacity(256 * 1024, decoded), &end);
    let mut archive = tar::Archive::new(src);
    let mut out = Scan::default();
    // The blobs of unnamed entries committed so far, by digest.
    let mut stored: HashMap<Digest, Blob> = HashMap::new();
    let mut last = String::from("<start>");
    let entries = archive
        .entries()
        .map_err(|e| tar_error(e, &last, end.hit_eof()))?;
    for entry in entries {
        tracker.check()?;
        let mut entry = entry.map_err(|e| tar_error(e, &last, end.hit_eof()))?;
        end.entry(&entry);
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = normalize(&raw)?;
        last.clone_from(&raw);
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name_bytes() {
                let target = String::from_utf8_lossy(&target).into_owned();
                out.links.insert(
                    path.clone(),
                    resolve_link(&path, &target, kind.is_symlink())?,
                );
            }
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let size = entry.size();
        if let Some(name) = META.iter().find(|m| **m == path) {
            if size > MAX_DOCUMENT_SIZE {
                return Err(ArchiveError::TooLarge {
                    path,
                    size,
                    limit: MAX_DOCUMENT_SIZE,
                });
            }
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry
                .read_to_end(&mut data)
                .map_err(|e| tar_error(e, &last, end.hit_eof()))?;
            if (data.len() as u64) < size {
                return Err(truncated(&path, data.len() as u64, size));
            }
            out.meta.insert(name, data);
            continue;
        }
        if path.ends_with("/json")
            || path.ends_with("/VERSION")
            || path == "json"
            || path == "VERSION"
        {
            // Legacy v1 metadata: not needed, skipped by the parser.
            continue;
        }
        let expected = blob_name(&path);
        if expected.is_some() {
            out.has_blobs_dir = true;
        }
        let mut src = tracker.reader(&path, Some(size), &mut entry);
        let blob = match expected {
            None if size <= SMALL_DOCUMENT && path.ends_with(".json") => {
                small_document(store, &mut src, size, &path, &mut stored)?
            }
            _ => ingest_entry(store, &mut src, size, expected.as_ref(), &path, &mut stored)?,
        };
        // A blob already stored was only sniffed: it is done all the same.
        tracker
            .progress()
            .item_progress(&path, size.max(src.done()));
        src.finish();
        out.blobs += 1;
        out.bytes += size;
        out.files.insert(path, blob);
    }
    // Ending at an entry boundary without the end-of-archive marker (or
    // with one zero block of it), or right after the last data without its
    // padding, is a complete archive, as for `docker load` (see [`EndState`]).
    if compression != Compression::None {
        // Read on to the end of the compressed stream (bounded), so that
        // a cut-off stream or a bad checksum is an error.
        io::copy(
            &mut archive.into_inner().take(MAX_COMPRESSED_TAIL),
            &mut io::sink(),
        )
        .map_err(|e| tar_error(e, "<end-of-archive marker>", false))?;
    }
    Ok(out)
}

fn truncated(path: &str, got: u64, size: u64) -> ArchiveError {
    ArchiveError::Truncated {
        what: format!("entry {path:?} ends after {got} of {size} bytes"),
    }
}

/// The digest named by a `blobs/<alg>/<hex>` path.
fn blob_name(path: &str) -> Option<Digest> {
    let rest = path.strip_prefix("blobs/")?;
    let (alg, hex) = rest.split_once('/')?;
    let alg: Algorithm = alg.parse().ok()?;
    Digest::from_hex(alg, hex).ok()
}

/// The largest `.json` entry not named by a digest (a docker-save
/// config) that is read whole and hashed before it reaches the store.
const SMALL_DOCUMENT: u64 = 1 << 20;

/// Stores a small `.json` entry (a docker-save config), read whole and
/// hashed first: a repeat of bytes this load already committed (an
/// archive may carry its config once per image) opens no ingest at all.
fn small_document(
    store: &dyn BlobStore,
    src: &mut dyn Read,
    size: u64,
    path: &str,
    stored: &mut HashMap<Digest, Blob>,
) -> Result<Blob, ArchiveError> {
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    src.take(size)
        .read_to_end(&mut data)
        .map_err(|e| tar_error(e, path, false))?;
    if (data.len() as u64) < size {
        return Err(truncated(path, data.len() as u64, size));
    }
    match stored.get(&Digest::sha256(&data)) {
        Some(blob) => Ok(blob.clone()),
        None => ingest_entry(store, &mut &data[..], size, None, path, stored),
    }
}

/// Streams one entry into the store, sniffing its compression from the
/// first bytes, and commits it (against `expected` when the entry's name is
/// a digest; such a blob already in the store is not written again). A
/// failed ingest is aborted. An unnamed entry whose bytes this load
/// already committed (`stored`, by digest) is aborted rather than
/// committed again: a docker-save archive may carry a config once per
/// image, and each commit of a present blob still synced (three fsyncs).
fn ingest_entry(
    store: &dyn BlobStore,
    src: &mut dyn Read,
    size: u64,
    expected: Option<&Digest>,
    path: &str,
    stored: &mut HashMap<Digest, Blob>,
) -> Result<Blob, ArchiveError> {
    if let Some(digest) = expected {
        let present = store
            .try_info(digest)
            .map_err(|e| ArchiveError::content(digest, e))?;
        if present.is_some_and(|i| i.size == size) {
            // Already stored (and verified when it was): only the first
            // bytes are read, to tell the compression; the parser skips
            // the rest.
            let mut head = [0u8; 8];
            let n = read_full(src, &mut head).map_err(|e| tar_error(e, path, false))?;
            if (n as u64) < size.min(head.len() as u64) {
                return Err(truncated(path, n as u64, size));
            }
            return Ok(Blob {
                digest: digest.clone(),
                size,
                compression: Compression::sniff(&head[..n]),
            });
        }
    }
    let algorithm = expected.map_or(Algorithm::Sha256, Digest::algorithm);
    let reference = unique_reference();
    let mut w = store
        .writer_with(&reference, algorithm)
        .map_err(|e| ArchiveError::content(path, e))?;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut head = [0u8; 8];
    let mut head_len = 0usize;
    let mut got = 0u64;
    let result = loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(tar_error(e, path, false)),
        };
        if head_len < head.len() {
            let k = (head.len() - head_len).min(n);
            head[head_len..head_len + k].copy_from_slice(&buf[..k]);
            head_len += k;
        }
        if let Err(e) = w.write_all(&buf[..n]) {
            break Err(ArchiveError::content(
                path,
                ContentError::Read {
                    what: format!("writing ingest of {path}"),
                    source: e,
                },
            ));
        }
        got += n as u64;
    };
    let result = result.and_then(|()| {
        if got < size {
            Err(truncated(path, got, size))
        } else {
            Ok(())
        }
    });
    if let Err(e) = result {
        drop(w);
        let _ = store.abort(&reference);
        return Err(e);
    }
    if expected.is_none() {
        if let Some(blob) = stored.get(&w.digest()) {
            drop(w);
            let _ = store.abort(&reference);
            return Ok(blob.clone());
        }
    }
    match w.commit(Some(size), expected) {
        Ok(digest) => {
            let blob = Blob {
                digest,
                size,
                compression: Compression::sniff(&head[..head_len]),
            };
            if expected.is_none() {
                stored.insert(blob.digest.clone(), blob.clone());
            }
            Ok(blob)
        }
        Err(e) => {
            let _ = store.abort(&reference);
            Err(match e {
                e @ ContentError::Verify { .. } => ArchiveError::BlobMismatch {
                    path: path.to_owned(),
                    source: e,
                },
                e => ArchiveError::content(path, e),
            })
        }
    }
}

/// One entry of a docker-save `manifest.json`.
#[derive(Debug, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Reads and checks an image config blob.
fn read_config(
    store: &dyn BlobStore,
    digest: &Digest,
    what: &str,
) -> Result<ImageConfig, ArchiveError> {
    let bytes = store
        .read_blob_to_vec(digest, MAX_DOCUMENT_SIZE)
        .map_err(|e| ArchiveError::content(digest, e))?;
    let config = ImageConfig::from_bytes(bytes).map_err(|source| ArchiveError::Parse {
        what: what.to_owned(),
        source,
    })?;
    if config.file().rootfs.fs_type != "layers" {
        return Err(ArchiveError::Parse {
            what: what.to_owned(),
            source: ParseError::WrongKind {
                expected: "an image config (rootfs.type \"layers\")",
                found: "JSON without rootfs.type \"layers\"".into(),
            },
        });
    }
    Ok(config)
}

/// The diff ID of a stored layer in `algorithm` (the expected diff ID's):
/// its digest when uncompressed and of that algorithm, else the digest of
/// its decompressed stream, which may not expand past `limit` bytes (the
/// decoder is stopped there, not run to the end).
fn diff_id(
    store: &dyn BlobStore,
    blob: &Blob,
    algorithm: Algorithm,
    limit: u64,
    tracker: &Tracker,
) -> Result<Digest, ArchiveError> {
    let too_large = || ArchiveError::LayerTooLarge {
        digest: blob.digest.clone(),
        limit,
    };
    if blob.compression == Compression::None && blob.digest.algorithm() == algorithm {
        if blob.size > limit {
            return Err(too_large());
        }
        return Ok(blob.digest.clone());
    }
    let r = store
        .reader(&blob.digest)
        .map_err(|e| ArchiveError::content(&blob.digest, e))?;
    let d = codec::decoder(blob.compression, r).map_err(|source| ArchiveError::Decompress {
        digest: blob.digest.clone(),
        source,
    })?;
    let d = tracker.checked(d.take(limit.saturating_add(1)));
    let (digest, expanded) =
        Digest::of_reader(algorithm, d).map_err(|source| ArchiveError::Decompress {
            digest: blob.digest.clone(),
            source,
        })?;
    if expanded > limit {
        return Err(too_large());
    }
    Ok(digest)
}

fn check_names(names: &[String]) -> Result<Vec<String>, ArchiveError> {
    names
        .iter()
        .map(|n| normalize_name(n).map_err(ArchiveError::from))
        .collect()
}

/// The manifests of a Docker 25+ archive's `index.json`, by config and layers.
fn archive_manifests(
    store: &dyn BlobStore,
    scan: &Scan,
) -> HashMap<(Digest, Vec<Digest>), Manifest> {
    let mut out = HashMap::new();
    let Some(bytes) = scan.meta.get("index.json") else {
        return out;
    };
    let Ok(index) = Index::from_bytes(bytes.clone()) else {
        return out;
    };
    let mut read = HashSet::new();
    for d in index.manifests() {
        if !descriptor_media_type(d).is_manifest() {
            continue;
        }
        let Ok(digest) = d.checked_digest() else {
            continue;
        };
        if !read.insert(digest.clone()) {
            continue;
        }
        let Ok(bytes) = store.read_blob_to_vec(&digest, MAX_DOCUMENT_SIZE) else {
            continue;
        };
        if let Ok(m) = Manifest::from_bytes(bytes) {
            out.insert((m.config_digest(), m.layer_digests()), m);
        }
    }
    out
}

/// Assembles the images of a docker-save archive.
fn docker_images(
    store: &dyn BlobStore,
    scan: &Scan,
    options: &LoadOptions,
) -> Result<Vec<Pending>, ArchiveError> {
    let bytes = scan
        .meta
        .get("manifest.json")
        .map(Vec::as_slice)
        .unwrap_or_default();
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(bytes).map_err(|source| ArchiveError::Json {
            path: "manifest.json".into(),
            source,
        })?;
    let known = archive_manifests(store, scan);
    // Entries may name the same config and layers any number of times:
    // each blob is read and verified once.
    let mut configs: HashMap<Digest, ImageConfig> = HashMap::new();
    let mut verified: HashMap<(Digest, Algorithm), Digest> = HashMap::new();
    let mut out = Vec::new();
    for entry in &entries {
        let image = &entry.config;
        let config_blob = scan.lookup(&entry.config, "manifest.json")?;
        if !configs.contains_key(&config_blob.digest) {
            let config = read_config(store, &config_blob.digest, image)?;
            configs.insert(config_blob.digest.clone(), config);
        }
        let config = &configs[&config_blob.digest];
        let diff_ids = config.diff_ids();
        if diff_ids.len() != entry.layers.len() {
            return Err(ArchiveError::LayerCount {
                image: image.clone(),
                layers: entry.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::with_capacity(entry.layers.len());
        for (path, expected) in entry.layers.iter().zip(diff_ids) {
            let blob = scan.lookup(path, "manifest.json")?;
            let key = (blob.digest.clone(), expected.algorithm());
            let found = match verified.get(&key) {
                Some(found) => found.clone(),
                None => {
                    let found = diff_id(
                        store,
                        blob,
                        expected.algorithm(),
                        options.max_expanded_bytes,
                        &options.tracker,
                    )?;
                    verified.insert(key, found.clone());
                    found
                }
            };
            if &found != expected {
                return Err(ArchiveError::LayerMismatch {
                    image: image.clone(),
                    path: path.clone(),
                    expected: expected.clone(),
                    found,
                });
            }
            layers.push(descriptor(
                &MediaType::oci_layer(blob.compression),
                &blob.digest,
                blob.size,
            ));
        }
        let tags = check_names(entry.repo_tags.as_deref().unwrap_or_default())?;
        let layer_digests: Vec<Digest> = layers
            .iter()
            .filter_map(|l| l.checked_digest().ok())
            .collect();
        let manifest = match known.get(&(config_blob.digest.clone(), layer_digests)) {
            Some(m) => m.clone(),
            None => build_manifest(&config_blob.digest, config_blob.size, layers, image)?,
        };
        out.push(Pending {
            loaded: LoadedImage {
                descriptor: manifest.descriptor(),
                config: Some(config_blob.digest.clone()),
                tags,
            },
            manifest: Some(manifest),
        });
    }
    Ok(out)
}

/// An OCI manifest for a config and layers ([`Manifest::build`]), its
/// failure named by `what`.
pub(crate) fn build_manifest(
    config: &Digest,
    config_size: u64,
    layers: Vec<Descriptor>,
    what: &str,
) -> Result<Manifest, ArchiveError> {
    let config = descriptor(&MediaType::OciConfig, config, config_size);
    Manifest::build(&MediaType::OciManifest, config, layers, None).map_err(|source| {
        ArchiveError::Parse {
            what: what.to_owned(),
            source,
        }
    })
}

/// Whether `name` is a bare tag (no repository).
fn is_bare_tag(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', ':', '@'])
}

/// Assembles the images of an OCI archive from its `index.json`.
fn oci_images(
    store: &dyn BlobStore,
    scan: &Scan,
    options: &LoadOptions,
) -> Result<Vec<Pending>, ArchiveError> {
    let bytes = scan.meta.get("index.json").cloned().unwrap_or_default();
    let index = Index::from_bytes(bytes).map_err(|source| ArchiveError::Parse {
        what: "index.json".into(),
        source,
    })?;
    let mut out: Vec<Pending> = Vec::new();
    let mut documents = DocumentCheck::new(store);
    // The position in `out` of each manifest's image (no scan per entry).
    let mut position: HashMap<String, usize> = HashMap::new();
    for (i, d) in index.manifests().iter().enumerate() {
        let field = format!("index.json manifests[{i}]");
        let digest = d.checked_digest().map_err(|source| ArchiveError::Parse {
            what: field.clone(),
            source,
        })?;
        let config = documents.check(d, &digest, &field)?;
        let tags = match ref_name(d) {
            Some(name) => {
                let name = match &options.repository {
                    Some(repo) if is_bare_tag(name) => format!("{repo}:{name}"),
                    _ => name.to_owned(),
                };
                check_names(&[name])?
            }
            None => Vec::new(),
        };
        let mut plain = d.clone();
        if let Some(mut a) = plain.annotations().clone() {
            a.remove(crate::tags::REF_NAME);
            plain.set_annotations(if a.is_empty() { None } else { Some(a) });
        }
        // Several entries for one manifest (several names): one image.
        if let Some(&at) = position.get(plain.digest().as_ref()) {
            out[at].loaded.tags.extend(tags);
            continue;
        }
        position.insert(plain.digest().to_string(), out.len());
        out.push(Pending {
            manifest: None,
            loaded: LoadedImage {
                descriptor: plain,
                config,
                tags,
            },
        });
    }
    Ok(out)
}

/// The most nested manifests and indexes an archive's image may have (an
/// index of indexes of manifests is three).
pub const MAX_DOCUMENT_DEPTH: usize = 32;

/// The most distinct manifests and indexes an archive's images may reach.
pub const MAX_DOCUMENTS: usize = 65_536;

/// The check of the documents behind an OCI archive's `index.json`: every
/// blob they reach is present with the size its descriptors give, every
/// manifest and index parses. Each blob is looked up once and each
/// document read and parsed once, however many descriptors name it (a DAG
/// of indexes each listing the next twice is linear, not exponential);
/// nesting and the number of documents are bounded.
struct DocumentCheck<'a> {
    store: &'a dyn BlobStore,
    /// Blobs looked up, with their stored size.
    sizes: HashMap<Digest, u64>,
    /// Documents read, with the config digest of those that are manifests.
    documents: HashMap<Digest, Option<Digest>>,
}

impl<'a> DocumentCheck<'a> {
    fn new(store: &'a dyn BlobStore) -> Self {
        DocumentCheck {
            store,
            sizes: HashMap::new(),
            documents: HashMap::new(),
        }
    }

    /// Checks the manifest or index behind `root` and everything it
    /// references; returns the config digest of a manifest.
    fn check(
        &mut self,
        root: &Descriptor,
        digest: &Digest,
        field: &str,
    ) -> Result<Option<Digest>, ArchiveError> {
        let mut stack = vec![(root.clone(), digest.clone(), field.to_owned(), 1usize)];
        while let Some((d, digest, referenced_by, depth)) = stack.pop() {
            self.check_size(&d, &digest, &referenced_by)?;
            let media_type = descriptor_media_type(&d);
            if !(media_type.is_manifest() || media_type.is_index()) {
                if depth == 1 {
                    return Err(ArchiveError::MediaType {
                        what: referenced_by,
                        source: MediaTypeError::Unknown(media_type.as_str().to_owned()),
                    });
                }
                continue;
            }
            if self.documents.contains_key(&digest) {
                continue;
            }
            if depth > MAX_DOCUMENT_DEPTH {
                return Err(ArchiveError::TooDeep {
                    digest,
                    limit: MAX_DOCUMENT_DEPTH,
                });
            }
            if self.documents.len() >= MAX_DOCUMENTS {
                return Err(ArchiveError::TooManyDocuments {
                    limit: MAX_DOCUMENTS,
                });
            }
            let bytes = self
                .store
                .read_blob_to_vec(&digest, MAX_DOCUMENT_SIZE)
                .map_err(|e| ArchiveError::content(&digest, e))?;
            let doc = Document::from_bytes(bytes, Some(&media_type))
                .map_err(|source| ArchiveError::Parse {
                    what: digest.to_string(),
                    source,
                })?
                .with_algorithm(digest.algorithm());
            let config = match &doc {
                Document::Manifest(m) => Some(m.config_digest()),
                Document::Index(_) => None,
            };
            self.documents.insert(digest.clone(), config);
            for child in crate::refs::children(&doc) {
                let cd = child
                    .checked_digest()
                    .map_err(|source| ArchiveError::Parse {
                        what: digest.to_string(),
                        source,
                    })?;
                stack.push((child, cd, digest.to_string(), depth + 1));
            }
        }
        Ok(self.documents.get(digest).cloned().flatten())
    }

    /// Checks that the blob `d` names is present with `d`'s size (looked
    /// up once per blob, compared for every descriptor).
    fn check_size(
        &mut self,
        d: &Descriptor,
        digest: &Digest,
        referenced_by: &str,
    ) -> Result<(), ArchiveError> {
        let size = match self.sizes.get(digest) {
            Some(size) => *size,
            None => {
                let info = self
                    .store
                    .try_info(digest)
                    .map_err(|e| ArchiveError::content(digest, e))?
                    .ok_or_else(|| ArchiveError::MissingBlob {
                        digest: digest.clone(),
                        referenced_by: referenced_by.to_owned(),
                    })?;
                self.sizes.insert(digest.clone(), info.size);
                info.size
            }
        };
        if size != d.size() {
            return Err(ArchiveError::BlobMismatch {
                path: referenced_by.to_owned(),
                source: ContentError::Verify {
                    reference: referenced_by.to_owned(),
                    source: image_core::VerifyError::Size {
                        digest: digest.clone(),
                        expected: d.size(),
                        found: size,
                        truncated: false,
                    },
                },
            });
        }
        Ok(())
    }
}
