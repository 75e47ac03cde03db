//! The build cache: which layer a build step made before, found by a key
//! that names everything the step depends on; and the snapshots of a stack
//! of cached layers, made present when a later step needs a root.
//!
//! # Keys
//!
//! A step's [`CacheKey`] is a sha256 over its parent's key, the step's
//! instruction after expansion (the build arguments it uses included) and
//! the digests of everything it reads (a COPY's sources by content, mode
//! and owner, never mtime), each field length-prefixed so that no two
//! different inputs hash the same bytes (`("ab", "c")` is not
//! `("a", "bc")`). The first key of a stage is [`CacheKey::base`]: the
//! base image's manifest digest (or scratch) and the platform.
//!
//! # Records
//!
//! A record is an OCI image manifest in the store, tagged
//! `image-build.local/cache:<key hex>` ([`CACHE_REPOSITORY`]), so gc keeps
//! it and its blobs like any tagged image and collects them once
//! [`prune`] drops the tags. Its config is a small canonical-JSON blob of
//! media type [`CACHE_CONFIG_MEDIA_TYPE`] (`key`, `diff_id`, `created_by`,
//! `media_type` of the layer), also its `artifactType`; its one layer is the
//! step's layer.
//!
//! The `index.json` entry of the tag carries the same facts as an
//! annotation ([`RECORD_ANNOTATION`]: the layer's descriptor, diff ID and,
//! when it is short, `created_by`). [`Cache::open`] reads `index.json` once
//! and keeps the records in a map; [`Cache::lookup`] is then a map look-up
//! and one stat of the layer blob, with no blob read (a `created_by` longer
//! than [`MAX_NOTE_CREATED_BY`] is read from the config blob, at most
//! [`MAX_CONFIG_SIZE`]). The annotation is trusted as the tag itself is:
//! both live in `index.json`, and the layer it names is verified by digest
//! (and by diff ID when unpacked) whenever it is read.
//!
//! A record that is not ours or is damaged (an entry of the repository
//! whose tag is not 64 hex digits, whose media type is not an OCI manifest,
//! whose annotation is missing, too long or unparsable, or names another
//! key) is a miss, never an error: it is counted in [`CacheStats::foreign`]
//! (this crate has no logging). A record whose layer blob is gone (pruned,
//! then collected) is a miss too, counted in [`CacheStats::gone`].
//!
//! # Writing and leases
//!
//! [`Cache::record`] writes the config and manifest blobs at once and
//! [`Cache::flush`] sets every tag made since in one `set_tags` batch (one
//! `index.json` write; none, and no fsync, when nothing was recorded). The
//! store a cache is opened on must be the build's lease-protected view
//! ([`image_store::LeaseGuard::protect`]) for as long as records may be
//! unflushed: the blobs written and the layers looked up are then in the
//! build's lease, and gc at any grace period leaves them until the tags
//! exist.
//!
//! # Beyond one machine
//!
//! A cache records which records a build used ([`Cache::used`]); the
//! [`export`] module writes them (`mode=min`: those of the final image's
//! layers; `mode=max`: every one) as one OCI index into another store (an
//! OCI layout, an archive, a registry through a layout), and imports such
//! an index into a store's cache. Keys name content, never the machine:
//! no absolute path, no mtime, no owner of a context file (a copy from the
//! context is owned by root whoever owns the files), no store location.
//!
//! # Snapshots
//!
//! [`ensure_snapshots`] makes the committed chain-ID snapshots of a stack
//! of layers present, reusing what is there and unpacking the rest through
//! [`image_overlay::image_unpack::unpack_layers`], as an image's unpack
//! does; [`chain_name`] is the name of the top one.

pub mod export;
pub mod mounts;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use image_core::manifest::{descriptor, descriptor_media_type};
use image_core::{
    chain_ids, Algorithm, Classify, Descriptor, DescriptorExt, Digest, ErrorKind, Manifest,
    MediaType, ParseError, Platform, Tracker,
};
use image_overlay::image_unpack::{
    unpack_layers, ImageUnpackError, ImageUnpackOptions, ImageUnpackReport,
};
use image_overlay::snapshot::Snapshotter;
use image_store::{ContentError, Ingester, Provider, TagError, TagStore};
use serde::{Deserialize, Serialize};

use crate::Layer;

/// The repository whose tags are the cache's records.
pub const CACHE_REPOSITORY: &str = "image-build.local/cache";

/// The media type of a record's config blob (and the record's `artifactType`).
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.image-build.cache.config.v1+json";

/// The annotation of a record's `index.json` entry that describes it, so a
/// lookup needs no blob read.
pub const RECORD_ANNOTATION: &str = "local.image-build.cache.record";

/// The longest `created_by` kept in a record's annotation; a longer one is
/// read from the record's config blob on a hit. Keeps `index.json`, which
/// every tag operation reads and rewrites, small.
pub const MAX_NOTE_CREATED_BY: usize = 4096;

/// The longest record annotation read; a longer one is foreign.
pub const MAX_NOTE_SIZE: usize = 2 * MAX_NOTE_CREATED_BY + 1024;

/// The largest record config blob read.
pub const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// Whether an image name is in the cache's repository
/// (`image-build.local/cache:<key>`): what `imagectl images` hides.
///
/// ```
/// use image_build::cache::is_cache_reference;
/// assert!(is_cache_reference("image-build.local/cache:0123"));
/// assert!(!is_cache_reference("image-build.local/cached:1"));
/// assert!(!is_cache_reference("docker.io/library/busybox:latest"));
/// ```
pub fn is_cache_reference(name: &str) -> bool {
    name.strip_prefix(CACHE_REPOSITORY)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '@']))
}

/// The cache key of a build step (see the [module docs](self#keys)).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(Digest);

/// Hashes one field: its length (8 bytes, big-endian), then its bytes.
fn field(h: &mut image_core::digest::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

impl CacheKey {
    /// The key a stage starts from: its base image's manifest digest
    /// (`None` for scratch) and the platform it is built for.
    pub fn base(image: Option<&Digest>, platform: &Platform) -> CacheKey {
        let mut h = Algorithm::Sha256.hasher();
        field(&mut h, b"image-build cache v1 base");
        match image {
            Some(d) => field(&mut h, d.to_string().as_bytes()),
            None => field(&mut h, b"scratch"),
        }
        field(&mut h, platform.normalize().to_string().as_bytes());
        CacheKey(h.finish())
    }

    /// The key of a layer step whose layer is packed for `epoch` (a
    /// reproducible build's `SOURCE_DATE_EPOCH`): a layer packed for
    /// another epoch, or none, is another layer. `None` keeps the key.
    pub fn packed_for(self, epoch: Option<i64>) -> CacheKey {
        match epoch {
            Some(e) => self.child(&format!("SOURCE_DATE_EPOCH={e}"), &[]),
            None => self,
        }
    }

    /// The key of the step after this one: `instruction` is its text after
    /// expansion, `inputs` the digests of what it reads, in order.
    pub fn child(&self, instruction: &str, inputs: &[Digest]) -> CacheKey {
        let mut h = Algorithm::Sha256.hasher();
        field(&mut h, b"image-build cache v1 step");
        field(&mut h, self.0.to_string().as_bytes());
        field(&mut h, instruction.as_bytes());
        h.update(&(inputs.len() as u64).to_be_bytes());
        for input in inputs {
            field(&mut h, input.to_string().as_bytes());
        }
        CacheKey(h.finish())
    }

    /// The key as a digest.
    pub fn digest(&self) -> &Digest {
        &self.0
    }

    /// The tag of this key's record: `image-build.local/cache:<hex>`.
    pub fn reference(&self) -> String {
        format!("{CACHE_REPOSITORY}:{}", self.0.hex())
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A layer a step made, as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLayer {
    /// The layer blob.
    pub layer: Layer,
    /// The history entry's `created_by` of the step.
    pub created_by: String,
    /// The history entry's `created` time (RFC 3339) of the step when it
    /// first ran: a cached rebuild reuses it, so that its config, and so
    /// the image, are the first build's, byte for byte.
    pub created: Option<String>,
}

/// What a cache saw: records read at open, what it skipped, and the
/// outcome of each lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Records found at open.
    pub records: usize,
    /// Entries of the cache's repository that are no record of ours, or
    /// damaged: skipped (each lookup of their key is a miss).
    pub foreign: usize,
    /// Lookups that found a layer.
    pub hits: usize,
    /// Lookups that found none (whatever the reason).
    pub misses: usize,
    /// Lookups of a record whose layer blob (or, for a long `created_by`,
    /// config blob) is gone or unreadable.
    pub gone: usize,
}

/// A failed cache operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The store's tags could not be read.
    #[error("reading the build cache's records")]
    Read {
        /// The store's error.
        #[source]
        source: TagError,
    },
    /// A record's blob could not be written.
    #[error("build cache record {key}: writing its {what}")]
    Write {
        /// The record's key.
        key: Digest,
        /// "config" or "manifest".
        what: &'static str,
        /// The store's error.
        #[source]
        source: Box<ContentError>,
    },
    /// A record's layer could not be looked up.
    #[error("build cache record {key}: looking up its layer")]
    Lookup {
        /// The record's key.
        key: Digest,
        /// The store's error.
        #[source]
        source: Box<ContentError>,
    },
    /// A record names a layer blob the store does not hold.
    #[error("build cache record {key}: layer {layer} is not in the store")]
    MissingLayer {
        /// The record's key.
        key: Digest,
        /// The layer blob's digest.
        layer: Digest,
    },
    /// A record's manifest could not be made (a layer descriptor with a bad digest).
    #[error("build cache record {key}: making its manifest")]
    Manifest {
        /// The record's key.
        key: Digest,
        /// The error.
        #[source]
        source: ParseError,
    },
    /// A record's config or annotation could not be serialised.
    #[error("build cache record {key}: serialising it")]
    Serialize {
        /// The record's key.
        key: Digest,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// The records could not be tagged (nothing of the batch is tagged; a
    /// later flush retries them).
    #[error("tagging {records} build cache records")]
    Flush {
        /// Records in the batch.
        records: usize,
        /// The store's error.
        #[source]
        source: TagError,
    },
    /// The records could not be removed.
    #[error("pruning the build cache")]
    Prune {
        /// The store's error.
        #[source]
        source: TagError,
    },
    /// The snapshots of cached layers could not be made.
    #[error("making the snapshots of {layers} layers")]
    Snapshots {
        /// The layers asked for.
        layers: usize,
        /// The unpack's error.
        #[source]
        source: ImageUnpackError,
    },
}

impl Classify for CacheError {
    fn kind(&self) -> ErrorKind {
        match self {
            CacheError::Read { source }
            | CacheError::Flush { source, .. }
            | CacheError::Prune { source } => source.kind(),
            CacheError::Write { source, .. } | CacheError::Lookup { source, .. } => source.kind(),
            CacheError::MissingLayer { .. } => ErrorKind::NotFound,
            CacheError::Manifest { source, .. } => source.kind(),
            CacheError::Serialize { .. } => ErrorKind::InvalidInput,
            CacheError::Snapshots { source, .. } => source.kind(),
        }
    }
}

/// A record's config blob.
#[derive(Serialize, Deserialize)]
struct RecordConfig {
    key: String,
    diff_id: String,
    created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    media_type: String,
}

/// A record's annotation in `index.json`.
#[derive(Serialize, Deserialize)]
struct RecordNote {
    key: String,
    layer: NoteDescriptor,
    diff_id: String,
    /// Absent when longer than [`MAX_NOTE_CREATED_BY`]: read from `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    /// The step's `created` time, when it is a time (RFC 3339, bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    config: NoteDescriptor,
}

#[derive(Serialize, Deserialize)]
struct NoteDescriptor {
    media_type: String,
    digest: String,
    size: u64,
}

impl NoteDescriptor {
    fn of(d: &Descriptor) -> NoteDescriptor {
        NoteDescriptor {
            media_type: d.media_type().to_string(),
            digest: d.digest().to_string(),
            size: d.size(),
        }
    }

    fn descriptor(&self) -> Option<Descriptor> {
        let digest: Digest = self.digest.parse().ok()?;
        Some(descriptor(
            &MediaType::from(self.media_type.as_str()),
            &digest,
            self.size,
        ))
    }
}

/// A record as a lookup needs it.
#[derive(Debug, Clone)]
struct Entry {
    layer: Layer,
    /// `None`: read it from the config blob.
    created_by: Option<String>,
    created: Option<String>,
    config: Descriptor,
    /// The record's manifest (the tag's descriptor, without its note).
    manifest: Descriptor,
}

/// A record a build used (found or made), as an export needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct UsedRecord {
    /// The step's key.
    pub key: CacheKey,
    /// The record's manifest.
    pub manifest: Descriptor,
    /// The step's layer.
    pub layer: Layer,
}

/// Whether `s` looks like the RFC 3339 time a history entry holds (short,
/// digits and the separators only): a record's time is copied into the
/// image's config, so anything else in it is dropped.
fn is_time(s: &str) -> bool {
    s.len() <= 40
        && s.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b':' | b'.' | b'T' | b'Z' | b'+'))
}

/// Parses the `index.json` entry of a record whose tag is `hex`: `None`
/// for anything that is not a record of ours.
fn parse_entry(hex: &str, d: &Descriptor) -> Option<(Digest, Entry)> {
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let key = Digest::from_hex(Algorithm::Sha256, hex).ok()?;
    if descriptor_media_type(d) != MediaType::OciManifest {
        return None;
    }
    let note = d.annotations().as_ref()?.get(RECORD_ANNOTATION)?;
    if note.len() > MAX_NOTE_SIZE {
        return None;
    }
    let note: RecordNote = serde_json::from_str(note).ok()?;
    if note.key != key.to_string() {
        return None;
    }
    let layer = note.layer.descriptor()?;
    descriptor_media_type(&layer)
        .require_layer_compression()
        .ok()?;
    let config = note.config.descriptor()?;
    if descriptor_media_type(&config).as_str() != CACHE_CONFIG_MEDIA_TYPE {
        return None;
    }
    let mut manifest = d.clone();
    manifest.set_annotations(None);
    let entry = Entry {
        layer: Layer {
            descriptor: layer,
            diff_id: note.diff_id.parse().ok()?,
        },
        created_by: note.created_by,
        created: note.created.filter(|c| is_time(c)),
        config,
        manifest,
    };
    Some((key, entry))
}

#[derive(Default)]
struct State {
    records: HashMap<Digest, Entry>,
    /// Records made and not yet tagged: (tag, manifest descriptor with its note).
    pending: Vec<(String, Descriptor)>,
    /// The keys this cache found or recorded, in order, each once.
    used: Vec<Digest>,
    used_set: HashSet<Digest>,
}

impl State {
    fn mark_used(&mut self, key: &Digest) {
        if self.used_set.insert(key.clone()) {
            self.used.push(key.clone());
        }
    }
}

/// The build cache of a store (see the [module docs](self)).
///
/// Open one per build on the build's lease-protected view of the store.
pub struct Cache<'s, S: ?Sized> {
    store: &'s S,
    state: Mutex<State>,
    records: usize,
    foreign: usize,
    hits: AtomicUsize,
    misses: AtomicUsize,
    gone: AtomicUsize,
}

impl<S: ?Sized> Cache<'_, S> {
    /// What this cache saw so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            records: self.records,
            foreign: self.foreign,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            gone: self.gone.load(Ordering::Relaxed),
        }
    }
}

impl<S: ?Sized> std::fmt::Debug for Cache<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl<'s, S> Cache<'s, S>
where
    S: Provider + Ingester + TagStore + ?Sized,
{
    /// Reads the store's records (one read of its tags).
    ///
    /// # Errors
    /// [`CacheError::Read`] when the tags cannot be read.
    pub fn open(store: &'s S) -> Result<Self, CacheError> {
        let tags = store.tags().map_err(|source| CacheError::Read { source })?;
        let mut records = HashMap::new();
        let mut foreign = 0;
        let prefix = format!("{CACHE_REPOSITORY}:");
        for t in tags {
            let Some(hex) = t.name.strip_prefix(&prefix) else {
                foreign += usize::from(is_cache_reference(&t.name));
                continue;
            };
            match parse_entry(hex, &t.descriptor) {
                Some((key, entry)) => {
                    records.insert(key, entry);
                }
                None => foreign += 1,
            }
        }
        Ok(Cache {
            store,
            records: records.len(),
            state: Mutex::new(State {
                records,
                ..State::default()
            }),
            foreign,
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
            gone: AtomicUsize::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change is complete before the guard drops.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The layer recorded under `key` (by this cache or found at open),
    /// if its blob is still in the store: one stat, no read.
    ///
    /// # Errors
    /// [`CacheError::Lookup`] for an I/O error of the store (a missing or
    /// unreadable blob is a miss).
    pub fn lookup(&self, key: &CacheKey) -> Result<Option<CachedLayer>, CacheError> {
        let found = self.state().records.get(&key.0).cloned();
        let hit = match found {
            None => None,
            Some(entry) => self.check(key, entry)?,
        };
        if hit.is_some() {
            self.state().mark_used(&key.0);
        }
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(hit)
    }

    fn check(&self, key: &CacheKey, entry: Entry) -> Result<Option<CachedLayer>, CacheError> {
        let gone = |this: &Self| {
            this.gone.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        };
        let lookup = |source| CacheError::Lookup {
            key: key.0.clone(),
            source: Box::new(source),
        };
        // Checked when the entry was made: never fails.
        let Ok(digest) = entry.layer.descriptor.checked_digest() else {
            return gone(self);
        };
        match self.store.try_info(&digest).map_err(lookup)? {
            Some(info) if info.size == entry.layer.descriptor.size() => {}
            _ => return gone(self),
        }
        let created_by = match entry.created_by {
            Some(c) => c,
            None => match self.read_created_by(&entry.config) {
                Some(c) => c,
                None => return gone(self),
            },
        };
        Ok(Some(CachedLayer {
            layer: entry.layer,
            created_by,
            created: entry.created,
        }))
    }

    /// The `created_by` of a record's config blob, when it is readable,
    /// small and ours.
    fn read_created_by(&self, config: &Descriptor) -> Option<String> {
        if config.size() > MAX_CONFIG_SIZE {
            return None;
        }
        let bytes = self
            .store
            .read_descriptor_to_vec(config, MAX_CONFIG_SIZE)
            .ok()?;
        serde_json::from_slice::<RecordConfig>(&bytes)
            .ok()
            .map(|c| c.created_by)
    }

    /// Records that `key` made `layer` (whose blob is in the store): writes
    /// the record's config and manifest now; [`flush`](Cache::flush) tags
    /// it. A later lookup of `key` on this cache finds it at once.
    ///
    /// # Errors
    /// [`CacheError::MissingLayer`] when the layer blob is not in the
    /// store (or has another size); [`CacheError::Write`] when a blob
    /// cannot be written; [`CacheError::Manifest`] for a layer descriptor
    /// with a bad digest.
    pub fn record(&self, key: &CacheKey, layer: &CachedLayer) -> Result<(), CacheError> {
        let k = &key.0;
        let serialize = |source| CacheError::Serialize {
            key: k.clone(),
            source,
        };
        let l = &layer.layer;
        let manifest_err = |source| CacheError::Manifest {
            key: k.clone(),
            source,
        };
        // Checked here, so that one record cannot fail the whole batch of
        // `flush` (whose tagging checks every blob again, under the lock).
        let layer_digest = l.descriptor.checked_digest().map_err(manifest_err)?;
        let present = self
            .store
            .try_info(&layer_digest)
            .map_err(|source| CacheError::Lookup {
                key: k.clone(),
                source: Box::new(source),
            })?;
        if present.is_none_or(|info| info.size != l.descriptor.size()) {
            return Err(CacheError::MissingLayer {
                key: k.clone(),
                layer: layer_digest,
            });
        }
        // Only a time is copied into a later image's config.
        let created = layer.created.clone().filter(|c| is_time(c));
        let config = RecordConfig {
            key: k.to_string(),
            diff_id: l.diff_id.to_string(),
            created_by: layer.created_by.clone(),
            created: created.clone(),
            media_type: l.descriptor.media_type().to_string(),
        };
        let config = image_core::json::to_canonical_vec(&config).map_err(serialize)?;
        let write = |what, source| CacheError::Write {
            key: k.clone(),
            what,
            source: Box::new(source),
        };
        let config_digest = self
            .store
            .write_blob(&config)
            .map_err(|e| write("config", e))?;
        let config_type = MediaType::from(CACHE_CONFIG_MEDIA_TYPE);
        let config_desc = descriptor(&config_type, &config_digest, config.len() as u64);
        let manifest = Manifest::build(
            &MediaType::OciManifest,
            config_desc.clone(),
            vec![l.descriptor.clone()],
            None,
        )
        .and_then(|m| {
            m.modify(|i| {
                i.set_artifact_type(Some(config_type.as_str().into()));
            })
        })
        .map_err(manifest_err)?;
        self.store
            .write_blob(manifest.raw())
            .map_err(|e| write("manifest", e))?;
        let (tag, entry) = tag_entry(key, layer, config_desc, manifest.descriptor())?;
        let mut state = self.state();
        state.records.insert(k.clone(), entry);
        state.pending.push(tag);
        state.mark_used(k);
        Ok(())
    }

    /// The records this cache found or recorded so far, in the order first
    /// used, each once: what a build's cache export writes.
    pub fn used(&self) -> Vec<UsedRecord> {
        let state = self.state();
        state
            .used
            .iter()
            .filter_map(|k| {
                let e = state.records.get(k)?;
                Some(UsedRecord {
                    key: CacheKey(k.clone()),
                    manifest: e.manifest.clone(),
                    layer: e.layer.clone(),
                })
            })
            .collect()
    }

    /// Tags every record made since the last flush, in one batch (one
    /// `index.json` write). With nothing recorded it does nothing: no
    /// read, no write, no fsync.
    ///
    /// # Errors
    /// [`CacheError::Flush`]; the records stay pending for a later flush.
    pub fn flush(&self) -> Result<(), CacheError> {
        let mut state = self.state();
        if state.pending.is_empty() {
            return Ok(());
        }
        let batch: Vec<(&str, &Descriptor)> = state
            .pending
            .iter()
            .map(|(name, d)| (name.as_str(), d))
            .collect();
        self.store
            .set_tags(&batch)
            .map_err(|source| CacheError::Flush {
                records: batch.len(),
                source,
            })?;
        state.pending.clear();
        Ok(())
    }
}

/// The tag of a record (name, `index.json` descriptor with its note) and
/// its entry: the record of `key` whose config blob is `config` and
/// manifest `manifest` (both written), for `layer`.
fn tag_entry(
    key: &CacheKey,
    layer: &CachedLayer,
    config: Descriptor,
    manifest: Descriptor,
) -> Result<((String, Descriptor), Entry), CacheError> {
    let k = &key.0;
    let serialize = |source| CacheError::Serialize {
        key: k.clone(),
        source,
    };
    let l = &layer.layer;
    let created = layer.created.clone().filter(|c| is_time(c));
    let short = layer.created_by.len() <= MAX_NOTE_CREATED_BY;
    let note = RecordNote {
        key: k.to_string(),
        layer: NoteDescriptor::of(&l.descriptor),
        diff_id: l.diff_id.to_string(),
        created_by: short.then(|| layer.created_by.clone()),
        created: created.clone(),
        config: NoteDescriptor::of(&config),
    };
    let note = image_core::json::to_canonical_vec(&note).map_err(serialize)?;
    let note = String::from_utf8(note).map_err(|e| {
        serialize(serde::ser::Error::custom(format!(
            "canonical JSON is not UTF-8: {e}"
        )))
    })?;
    let mut entry_desc = manifest.clone();
    entry_desc.set_annotations(Some(HashMap::from([(RECORD_ANNOTATION.to_owned(), note)])));
    let entry = Entry {
        layer: l.clone(),
        created_by: short.then(|| layer.created_by.clone()),
        created,
        config,
        manifest,
    };
    Ok(((key.reference(), entry_desc), entry))
}

/// Drops every record of the store's build cache (every tag of
/// [`CACHE_REPOSITORY`], ours or not) in one `index.json` write; returns
/// how many. Their blobs stay until gc collects them (those a real image
/// still needs stay).
///
/// # Errors
/// [`CacheError::Prune`] when the tags cannot be read or written.
pub fn prune<S: TagStore + ?Sized>(store: &S) -> Result<usize, CacheError> {
    let prune = |source| CacheError::Prune { source };
    let tags = store.tags().map_err(prune)?;
    let names: Vec<&str> = tags
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| is_cache_reference(n))
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    store.remove_tags(&names).map_err(prune)
}

/// The name of the committed snapshot holding the stack `layers`: the chain
/// ID of their diff IDs (`None` for no layer).
pub fn chain_name(layers: &[Layer]) -> Option<String> {
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
    chain_ids(&diff_ids).last().map(ToString::to_string)
}

/// Makes the committed chain-ID snapshots of `layers` (bottom first)
/// present in `snapshotter`, unpacking from `store` what is missing and
/// reusing what is there; returns the top snapshot's name (`None` for no
/// layer). See [`ensure_snapshots_with`] for the report.
///
/// # Errors
/// [`CacheError::Snapshots`]; no snapshot of a failed layer is left.
pub fn ensure_snapshots<P, Sn>(
    store: &P,
    snapshotter: &Sn,
    layers: &[Layer],
    tracker: Option<&Tracker>,
) -> Result<Option<String>, CacheError>
where
    P: Provider + Sync + ?Sized,
    Sn: Snapshotter + ?Sized,
{
    let mut options = ImageUnpackOptions::default();
    if let Some(t) = tracker {
        options = options.with_tracker(t.clone());
    }
    ensure_snapshots_with(store, snapshotter, layers, &options).map(|r| r.top())
}

/// [`ensure_snapshots`] with the unpack's options, returning its report:
/// which chain IDs were present and which this call unpacked.
///
/// # Errors
/// [`CacheError::Snapshots`]; no snapshot of a failed layer is left.
pub fn ensure_snapshots_with<P, Sn>(
    store: &P,
    snapshotter: &Sn,
    layers: &[Layer],
    options: &ImageUnpackOptions,
) -> Result<ImageUnpackReport, CacheError>
where
    P: Provider + Sync + ?Sized,
    Sn: Snapshotter + ?Sized,
{
    let pairs: Vec<(Descriptor, Digest)> = layers
        .iter()
        .map(|l| (l.descriptor.clone(), l.diff_id.clone()))
        .collect();
    unpack_layers(store, &pairs, snapshotter, options).map_err(|source| CacheError::Snapshots {
        layers: layers.len(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_references() {
        let key = CacheKey::base(None, &Platform::new("linux", "amd64"));
        assert!(is_cache_reference(&key.reference()));
        assert!(is_cache_reference(CACHE_REPOSITORY));
        assert!(!is_cache_reference("image-build.local/cache2:x"));
        assert!(!is_cache_reference("x/image-build.local/cache:x"));
    }
}
