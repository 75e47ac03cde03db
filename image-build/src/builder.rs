//! Images without a Dockerfile (crane `append`, ko, jib): start from an
//! image in a store or from scratch, add layers made from directories, tar
//! streams or files given in memory, set any config field, then commit the
//! config and manifest and tag them. Nothing is run; the Dockerfile builder
//! assembles its final image with this too.
//!
//! Each layer is compressed (gzip) and hashed in the one pass that writes
//! it into the store ([`image_overlay::compare::store_layer`]), so its
//! digest and diff ID come out together and nothing is held in memory but
//! what the caller gave. The builder holds a lease of the store from its
//! creation until [`commit`](ImageBuilder::commit) has set the tags (or
//! until it is dropped): a `gc` running beside it removes neither the base
//! nor anything it added.
//!
//! What it writes is reproducible: the config and manifest are canonical
//! JSON; the image's `created` time, and that of every history entry
//! without one, is `SOURCE_DATE_EPOCH` when it is set (else now), and the
//! mtimes of the files packed by [`add_dir`](ImageBuilder::add_dir) and
//! [`add_files`](ImageBuilder::add_files) are clamped to it, as
//! [`PackOptions::with_source_date_epoch`] does.
//!
//! ```
//! use image_build::builder::{File, ImageBuilder};
//! use image_core::config::History;
//! use image_store::{resolve_image, OciDir};
//!
//! let tmp = tempfile::tempdir()?;
//! let store = OciDir::open_or_create(tmp.path().join("store"))?;
//! let mut image = ImageBuilder::scratch(&store, &"linux/amd64".parse()?)?;
//! let files = [
//!     File::regular("/etc/motd", b"hello\n".to_vec(), 0o644),
//!     File::symlink("/etc/issue", "motd"),
//! ];
//! let history = History { created_by: Some("motd".into()), ..History::default() };
//! let layer = image.add_files(&files, history)?;
//! image.config_mut().config.get_or_insert_with(Default::default).cmd =
//!     Some(vec!["/bin/cat".into(), "/etc/motd".into()]);
//! let built = image.commit(&["example/motd:1"])?;
//!
//! let read = resolve_image(&store, "example/motd:1", None)?;
//! assert_eq!(read.id(), built.config.image_id());
//! assert_eq!(read.diff_ids(), [layer.diff_id]);
//! assert_eq!(built.tags, ["docker.io/example/motd:1"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Files in memory
//!
//! [`add_files`](ImageBuilder::add_files) writes a tar stream directly (no
//! temporary directory) with pack's tar writer. Paths are cleaned as paths
//! inside the root (`/a/./b` and `a/b` are the same entry) and one that
//! climbs out (`../x`, `a/../../x`) or is longer than [`MAX_PATH_BYTES`]
//! is refused with [`BuilderError::InvalidPath`]. Entries come in pack's order: depth first,
//! names sorted bytewise within a directory, a directory before its
//! contents. A parent directory not given is written before its first child
//! as jib does: mode `0755`, owner `0:0`, mtime 0. A hard link is an entry of
//! the layer: of a file and its links, the first in that order carries the
//! data and the file's metadata, the others are tar links to it.
//!
//! # Security
//! [`add_dir`](ImageBuilder::add_dir) packs the tree without following any
//! symlink in it (a link pointing out of the directory is packed as a
//! link). [`add_tar`](ImageBuilder::add_tar) reads the stream through
//! unpack's stream rules and limits ([`image_overlay::list()`]) before the
//! layer is committed, so a stream that would not unpack is refused and
//! leaves no blob.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use image_core::config::{ConfigFile, History};
use image_core::manifest::{descriptor, descriptor_media_type};
use image_core::{
    Classify, Compression, DescriptorExt, Digest, ErrorKind, ImageConfig, Manifest, Platform,
    Tracker,
};
use image_overlay::compare::store_layer;
use image_overlay::compress::{decoder, sniff_unsupported};
use image_overlay::list::{list, ListOptions};
use image_overlay::pack::{
    pack_dir, LayerStream, LayerWriter, PackError, PackOptions, PackReport, TarEntry, TarKind,
};
use image_overlay::UnpackError;
use image_store::content::ContentError;
use image_store::image::ImageError;
use image_store::mutate::{append, MutateError, NewLayer};
use image_store::refs::MAX_DOCUMENT_SIZE;
use image_store::tags::normalize_name;
use image_store::{
    ContentStore, Image, LeaseError, LeaseGuard, Leases, Provider, TagError, TagStore,
};

use crate::Layer;

/// What an in-memory [`File`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target (kept as given).
    Symlink(String),
    /// A hard link to this path, a regular file among the same files.
    Hardlink(String),
}

/// A file given in memory to [`ImageBuilder::add_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Its path in the image (absolute or relative to the root).
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// Permission bits (with setuid, setgid and sticky): `mode & 0o7777`.
    pub mode: u32,
    /// The owner's user ID.
    pub uid: u32,
    /// The owner's group ID.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

impl File {
    fn new(path: impl Into<String>, kind: FileKind, mode: u32) -> File {
        File {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
        }
    }

    /// A regular file owned by `0:0`, mtime 0.
    pub fn regular(path: impl Into<String>, data: Vec<u8>, mode: u32) -> File {
        File::new(path, FileKind::File(data), mode)
    }

    /// A directory owned by `0:0`, mtime 0.
    pub fn dir(path: impl Into<String>, mode: u32) -> File {
        File::new(path, FileKind::Dir, mode)
    }

    /// A symbolic link (mode `0777`) owned by `0:0`, mtime 0.
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> File {
        File::new(path, FileKind::Symlink(target.into()), 0o777)
    }

    /// A hard link to the regular file `target`.
    pub fn hardlink(path: impl Into<String>, target: impl Into<String>) -> File {
        File::new(path, FileKind::Hardlink(target.into()), 0)
    }

    /// The same file owned by `uid:gid`.
    pub fn owner(mut self, uid: u32, gid: u32) -> File {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// The same file with this mtime.
    pub fn mtime(mut self, mtime: i64) -> File {
        self.mtime = mtime;
        self
    }
}

/// An image written by [`ImageBuilder::commit`]; its ID is the config's
/// digest.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Built {
    /// The manifest, as stored.
    pub manifest: Manifest,
    /// The config, as stored.
    pub config: ImageConfig,
    /// The tags set, normalised (`docker.io/library/x:1`).
    pub tags: Vec<String>,
}

/// A failure of the builder API. Nothing is tagged; what was written is
/// left to gc once the builder's lease ends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuilderError {
    /// The store's lease could not be taken or extended.
    #[error("holding a lease for the new image")]
    Lease(#[from] LeaseError),
    /// The image's config would be larger than a store reads back
    /// (`image_store::refs::MAX_DOCUMENT_SIZE`): nothing is tagged.
    #[error("the image config would take {size} bytes, more than the {limit} a store reads")]
    ConfigTooLarge {
        /// Its size in bytes.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The base image could not be resolved (the image error names it).
    #[error("resolving the base image")]
    Base(#[source] Box<ImageError>),
    /// A tag is not a valid name for an image (checked before anything
    /// is written).
    #[error("invalid tag {tag:?} for the new image")]
    InvalidTag {
        /// The tag.
        tag: String,
        /// Why.
        #[source]
        source: Box<TagError>,
    },
    /// A file's path (or a hard link's target) names the root itself or
    /// climbs out of it.
    #[error("path {path:?} {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Two files have the same path (once cleaned).
    #[error("two files at {path:?}")]
    DuplicatePath {
        /// The cleaned path.
        path: String,
    },
    /// A file's parent is given as something else than a directory.
    #[error("the parent {parent:?} of {path:?} is not a directory")]
    NotADirectory {
        /// The file's cleaned path.
        path: String,
        /// The parent's cleaned path.
        parent: String,
    },
    /// A hard link's target is not a regular file among the same files.
    #[error("hard link {path:?}: target {target:?} is not a regular file of the layer")]
    HardlinkTarget {
        /// The link's cleaned path.
        path: String,
        /// The target as given.
        target: String,
    },
    /// The tar stream is compressed in a format the codec does not read.
    #[error("the layer tarball is compressed with {format} (decompress it first)")]
    UnsupportedCompression {
        /// `xz` or `bzip2`.
        format: &'static str,
    },
    /// The directory of the builder's `layer`th new layer could not be
    /// packed.
    #[error("new layer {layer}: packing {}", path.display())]
    Pack {
        /// The layer's place among those the builder adds (from 1).
        layer: usize,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: PackError,
    },
    /// A new layer could not be written (files in memory, or a tar stream
    /// recompressed).
    #[error("new layer {layer}: writing it")]
    Write {
        /// The layer's place among those the builder adds (from 1).
        layer: usize,
        /// Why.
        #[source]
        source: PackError,
    },
    /// A tar stream was refused (corrupt, truncated, over a limit) or
    /// could not be read.
    #[error("new layer {layer}: reading its tar stream")]
    Tar {
        /// The layer's place among those the builder adds (from 1).
        layer: usize,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// The store failed: storing a new layer's blob, or looking for a
    /// layer given to [`ImageBuilder::add_layer`].
    #[error("new layer {layer}: in the store")]
    Content {
        /// The layer's place among those the builder adds (from 1).
        layer: usize,
        /// Why.
        #[source]
        source: ContentError,
    },
    /// A layer given to [`ImageBuilder::add_layer`] is not in the store.
    #[error("new layer {layer}: blob {digest} is not in the store")]
    MissingLayer {
        /// The layer's place among those the builder adds (from 1).
        layer: usize,
        /// The layer blob's digest.
        digest: Digest,
    },
    /// The config or manifest could not be written.
    #[error("writing the new image")]
    Mutate(#[source] MutateError),
    /// The new image could not be tagged.
    #[error("tagging the new image")]
    Tag(#[source] TagError),
    /// Manifest annotations were asked for an image whose manifest format
    /// has none (Docker's, kept from a Docker-format base).
    #[error("a {media_type} manifest has no annotations")]
    Annotations {
        /// The manifest's media type.
        media_type: String,
    },
}

impl Classify for BuilderError {
    fn kind(&self) -> ErrorKind {
        match self {
            BuilderError::Lease(e) => e.kind(),
            BuilderError::Base(source) => source.kind(),
            BuilderError::InvalidTag { source, .. } => source.kind(),
            BuilderError::InvalidPath { .. }
            | BuilderError::DuplicatePath { .. }
            | BuilderError::NotADirectory { .. }
            | BuilderError::HardlinkTarget { .. }
            | BuilderError::ConfigTooLarge { .. } => ErrorKind::InvalidInput,
            BuilderError::UnsupportedCompression { .. } => ErrorKind::Unsupported,
            BuilderError::Pack { source, .. } | BuilderError::Write { source, .. } => source.kind(),
            BuilderError::Tar { source, .. } => source.kind(),
            BuilderError::Content { source, .. } => source.kind(),
            BuilderError::MissingLayer { .. } => ErrorKind::NotFound,
            BuilderError::Mutate(e) => e.kind(),
            BuilderError::Tag(e) => e.kind(),
            BuilderError::Annotations { .. } => ErrorKind::Unsupported,
        }
    }
}

/// An image being built: a base (or scratch), the layers and history
/// entries added so far, and the config. See the [module docs](self).
pub struct ImageBuilder<'s, S: ?Sized> {
    store: &'s S,
    lease: LeaseGuard,
    base: Option<Image>,
    platform: Platform,
    config: ConfigFile,
    layers: Vec<Layer>,
    history: Vec<History>,
    created: String,
    epoch: Option<i64>,
    annotations: BTreeMap<String, String>,
    tracker: Tracker,
}

impl<S: ?Sized> std::fmt::Debug for ImageBuilder<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageBuilder")
            .field("base", &self.base.as_ref().map(|b| b.manifest_digest()))
            .field("layers", &self.layers)
            .field("history", &self.history.len())
            .finish_non_exhaustive()
    }
}

impl<'s, S> ImageBuilder<'s, S>
where
    S: ContentStore + TagStore + Leases + ?Sized,
{
    /// An image of no layers for `platform` (an OCI manifest).
    ///
    /// # Errors
    /// [`BuilderError::Lease`].
    pub fn scratch(store: &'s S, platform: &Platform) -> Result<Self, BuilderError> {
        let lease = store.begin_lease()?;
        Ok(Self::start(store, lease, None, platform.clone()))
    }

    /// An image on `name`, resolved in the store for `platform` (the
    /// host's when `None`); the result keeps its manifest format (Docker
    /// v2 or OCI). The lease is taken before the base is resolved.
    ///
    /// # Errors
    /// [`BuilderError::Lease`]; [`BuilderError::Base`] when the base is
    /// missing or unreadable.
    pub fn from_image(
        store: &'s S,
        name: &str,
        platform: Option<&Platform>,
    ) -> Result<Self, BuilderError> {
        let lease = store.begin_lease()?;
        let image = image_store::resolve_image(&lease.protect(store), name, platform)
            .map_err(|source| BuilderError::Base(Box::new(source)))?;
        Ok(Self::on(store, lease, image))
    }

    /// An image on `image`, resolved by the caller; its blobs are added to
    /// the builder's lease at once.
    ///
    /// # Errors
    /// [`BuilderError::Lease`].
    pub fn from_resolved(store: &'s S, image: Image) -> Result<Self, BuilderError> {
        let lease = store.begin_lease()?;
        let digests: Vec<Digest> = image.blobs().into_iter().map(|(d, _)| d).collect();
        lease.add(&digests)?;
        Ok(Self::on(store, lease, image))
    }

    fn on(store: &'s S, lease: LeaseGuard, image: Image) -> Self {
        let file = image.config.file();
        let platform = Platform {
            variant: file.variant.clone(),
            os_version: file.os_version.clone(),
            ..Platform::new(&file.os, &file.architecture)
        };
        Self::start(store, lease, Some(image), platform)
    }

    fn start(store: &'s S, lease: LeaseGuard, base: Option<Image>, platform: Platform) -> Self {
        let epoch = image_core::time::source_date_epoch();
        let created = image_core::time::created_now();
        let mut config = match &base {
            Some(b) => b.config.file().clone(),
            None => ConfigFile::for_platform(&platform),
        };
        config.created = Some(created.clone());
        ImageBuilder {
            store,
            lease,
            base,
            platform,
            config,
            layers: Vec::new(),
            history: Vec::new(),
            created,
            epoch,
            annotations: BTreeMap::new(),
            tracker: Tracker::default(),
        }
    }

    /// Reports the layers this builder packs to `tracker` (an item per
    /// layer, its bytes as they are written or read) and stops a long
    /// [`add_dir`](ImageBuilder::add_dir) or
    /// [`add_tar`](ImageBuilder::add_tar) when its interrupt is set: an
    /// error of class [`Cancelled`](ErrorKind::Cancelled), the layer's
    /// ingest aborted, nothing added.
    pub fn with_tracker(&mut self, tracker: Tracker) -> &mut Self {
        self.tracker = tracker;
        self
    }

    /// Makes the image reproducible for `epoch` (seconds since the Unix
    /// epoch), whatever the environment says: the config's `created` and
    /// that of each history entry added without one are `epoch`, and the
    /// mtimes of the files of each layer this builder packs are clamped to
    /// it.
    pub fn source_date_epoch(&mut self, epoch: i64) -> &mut Self {
        self.epoch = Some(epoch);
        self.created = image_core::time::rfc3339(epoch);
        self.config.created = Some(self.created.clone());
        self
    }

    /// The annotations of the new image's manifest (none by default), to
    /// change: an OCI manifest carries them (a Docker one cannot, and
    /// [`commit`](ImageBuilder::commit) then fails).
    pub fn annotations_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.annotations
    }

    /// The config as it will be written (its `rootfs` and `history` are
    /// replaced at commit by the builder's).
    pub fn config(&self) -> &ConfigFile {
        &self.config
    }

    /// The config, to change any field (environment, command, labels,
    /// user, `created`...); `rootfs` and `history` are the builder's.
    pub fn config_mut(&mut self) -> &mut ConfigFile {
        &mut self.config
    }

    /// Adds a layer already in the store (made by a build step, say) with
    /// the history entry that made it (`empty_layer` set false; `created`
    /// filled in when absent). No I/O: the layer is checked at commit.
    pub fn add_layer(&mut self, layer: Layer, history: History) -> &mut Self {
        self.push(history, false);
        self.layers.push(layer);
        self
    }

    /// Adds a history entry of a step that made no layer (`empty_layer`
    /// set true; `created` filled in when absent).
    pub fn add_history(&mut self, history: History) -> &mut Self {
        self.push(history, true);
        self
    }

    fn push(&mut self, mut history: History, empty_layer: bool) {
        history.empty_layer = empty_layer;
        history.created.get_or_insert_with(|| self.created.clone());
        self.history.push(history);
    }

    /// The layers added so far (not those of the base).
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    fn pack_options(&self) -> PackOptions {
        let options = PackOptions::default().with_tracker(self.tracker.clone());
        match self.epoch {
            Some(e) => options.with_source_date_epoch(e),
            None => options,
        }
    }

    /// Stores the layer `pack` makes (under the lease) and adds it with
    /// `history`.
    fn add_packed(
        &mut self,
        history: History,
        pack: impl FnOnce(&mut dyn Write, usize) -> Result<PackReport, BuilderError>,
    ) -> Result<Layer, BuilderError> {
        let layer = self.layers.len() + 1;
        let store = self.lease.protect(self.store);
        let content = |source| BuilderError::Content { layer, source };
        let report = store_layer(&store, content, |w| pack(w, layer))?;
        let layer = Layer {
            descriptor: descriptor(&report.media_type, &report.digest, report.size),
            diff_id: report.diff_id,
        };
        self.add_layer(layer.clone(), history);
        Ok(layer)
    }

    /// Packs the tree under `dir` as a new layer (gzip) into the store and
    /// adds it: pack's deterministic order and headers, no symlink in the
    /// tree followed, mtimes clamped to `SOURCE_DATE_EPOCH` when set.
    ///
    /// # Errors
    /// [`BuilderError::Pack`] naming the directory; [`BuilderError::Content`].
    pub fn add_dir(&mut self, dir: &Path, history: History) -> Result<Layer, BuilderError> {
        let options = self.pack_options();
        self.add_packed(history, |w, layer| {
            pack_dir(dir, w, &options).map_err(|source| BuilderError::Pack {
                layer,
                path: dir.to_owned(),
                source,
            })
        })
    }

    /// Adds a layer from a tar stream, plain or compressed (gzip, zstd:
    /// sniffed), recompressed to gzip. The tar bytes are kept as they are
    /// (the diff ID is the stream's own), after being read through
    /// unpack's stream rules and limits; a stream refused there leaves no
    /// blob.
    ///
    /// # Errors
    /// [`BuilderError::UnsupportedCompression`] (xz, bzip2);
    /// [`BuilderError::Tar`] for a stream that would not unpack;
    /// [`BuilderError::Content`].
    pub fn add_tar(&mut self, tar: impl Read, history: History) -> Result<Layer, BuilderError> {
        self.add_tar_dyn(&mut { tar }, history)
    }

    fn add_tar_dyn(&mut self, tar: &mut dyn Read, history: History) -> Result<Layer, BuilderError> {
        let layer = self.layers.len() + 1;
        let tracker = self.tracker.clone();
        let mut tar = tracker.reader("layer", None, tar);
        let read_err = |e| BuilderError::Tar {
            layer,
            source: UnpackError::Source { source: e },
        };
        let mut head = Vec::with_capacity(6);
        (&mut tar)
            .take(6)
            .read_to_end(&mut head)
            .map_err(read_err)?;
        if let Some(format) = sniff_unsupported(&head) {
            return Err(BuilderError::UnsupportedCompression { format });
        }
        let input = io::Cursor::new(&head[..]).chain(&mut tar);
        let plain = decoder(Compression::sniff(&head), input).map_err(read_err)?;
        let options = self.pack_options();
        self.add_packed(history, |w, layer| {
            let write_err = |source| BuilderError::Write { layer, source };
            let mut stream = LayerStream::new(w, &options).map_err(write_err)?;
            let listed = list(
                Tee {
                    reader: plain,
                    writer: &mut stream,
                },
                &ListOptions::default().with_compression(Compression::None),
                |_| {},
            )
            .map_err(|source| BuilderError::Tar { layer, source })?;
            stream.finish(listed.entries).map_err(write_err)
        })
    }

    /// Adds a layer of `files` given in memory, written as a tar stream
    /// directly (see [Files in memory](self#files-in-memory) for the order,
    /// the implied parents and hard links); mtimes are clamped to
    /// `SOURCE_DATE_EPOCH` when set.
    ///
    /// # Errors
    /// [`BuilderError::InvalidPath`], [`BuilderError::DuplicatePath`],
    /// [`BuilderError::NotADirectory`], [`BuilderError::HardlinkTarget`]
    /// before anything is written; [`BuilderError::Write`],
    /// [`BuilderError::Content`].
    pub fn add_files(&mut self, files: &[File], history: History) -> Result<Layer, BuilderError> {
        let tree = FileTree::new(files)?;
        let options = self.pack_options();
        let epoch = self.epoch;
        self.add_packed(history, |w, layer| {
            tree.write(w, &options, epoch)
                .map_err(|source| BuilderError::Write { layer, source })
        })
    }

    /// Writes the config (the base's, changed, with the new diff IDs and
    /// history) and the manifest (OCI from scratch, else the base's
    /// format), sets `tags` in one batch, and ends the lease. Every tag is
    /// checked before anything is written.
    ///
    /// # Errors
    /// [`BuilderError::InvalidTag`] before any write;
    /// [`BuilderError::MissingLayer`] for an added layer not in the store;
    /// [`BuilderError::ConfigTooLarge`] for a config no store reads back
    /// (nothing tagged); [`BuilderError::Mutate`], [`BuilderError::Tag`],
    /// [`BuilderError::Lease`].
    pub fn commit(self, tags: &[&str]) -> Result<Built, BuilderError> {
        let names = normalize_tags(tags)?;
        self.commit_with(names, None)
    }

    /// Writes the image as [`commit`](ImageBuilder::commit) does, but tags
    /// nothing: its manifest (and so, for gc, every blob the manifest
    /// names) is added to `keep`, a lease of the caller's, before the
    /// builder's own lease ends, so the image outlives the builder under it. For an image that is one of
    /// several the caller assembles, such as the manifests of an index.
    ///
    /// # Errors
    /// As [`commit`](ImageBuilder::commit), and [`BuilderError::Lease`]
    /// when `keep` cannot take the new blobs.
    pub fn commit_under(self, keep: &LeaseGuard) -> Result<Built, BuilderError> {
        self.commit_with(Vec::new(), Some(keep))
    }

    fn commit_with(
        self,
        names: Vec<String>,
        keep: Option<&LeaseGuard>,
    ) -> Result<Built, BuilderError> {
        let store = self.lease.protect(self.store);
        let mut new_layers = Vec::with_capacity(self.layers.len());
        let layer_history = self.history.iter().filter(|h| !h.empty_layer);
        for (i, (l, h)) in self.layers.iter().zip(layer_history).enumerate() {
            let layer = i + 1;
            let digest = l
                .descriptor
                .checked_digest()
                .map_err(|e| BuilderError::Mutate(MutateError::Build(e)))?;
            // Through the lease: present now, and kept until tagged.
            let present = store
                .exists(&digest)
                .map_err(|source| BuilderError::Content { layer, source })?;
            if !present {
                return Err(BuilderError::MissingLayer { layer, digest });
            }
            new_layers.push(NewLayer {
                media_type: descriptor_media_type(&l.descriptor),
                digest,
                size: l.descriptor.size(),
                diff_id: l.diff_id.clone(),
                history: h.clone(),
            });
        }
        let base_history = self.base.as_ref().map(|b| b.history().to_vec());
        let mut history = base_history.unwrap_or_default();
        history.extend(self.history.iter().cloned());
        let config = self.config;
        let appended = append(
            &store,
            self.base.as_ref(),
            &self.platform,
            &new_layers,
            |c| {
                let rootfs = std::mem::take(&mut c.rootfs);
                *c = config;
                c.rootfs = rootfs;
                c.history = (!history.is_empty()).then_some(history);
            },
        )
        .map_err(BuilderError::Mutate)?;
        // Written under the lease, which ends with the builder: a config no
        // store reads back is collectable, never tagged.
        let size = appended.config.raw().len() as u64;
        if size > MAX_DOCUMENT_SIZE {
            return Err(BuilderError::ConfigTooLarge {
                size,
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        let appended = annotate(&store, appended, &self.annotations)?;
        let manifest = appended.manifest.descriptor();
        let batch: Vec<(&str, &image_core::Descriptor)> =
            names.iter().map(|n| (n.as_str(), &manifest)).collect();
        store.set_tags(&batch).map_err(BuilderError::Tag)?;
        if let Some(keep) = keep {
            // gc marks from a leased manifest to its config and layers.
            keep.add(&[
                appended.manifest.digest().clone(),
                appended.config.digest().clone(),
            ])?;
        }
        self.lease.release()?;
        Ok(Built {
            manifest: appended.manifest,
            config: appended.config,
            tags: names,
        })
    }
}

/// `tags` normalised (`docker.io/library/x:1`), every one checked before
/// anything is written.
///
/// # Errors
/// [`BuilderError::InvalidTag`] for the first that is not a valid name.
pub fn normalize_tags<T: AsRef<str>>(tags: &[T]) -> Result<Vec<String>, BuilderError> {
    tags.iter()
        .map(|t| {
            normalize_name(t.as_ref()).map_err(|source| BuilderError::InvalidTag {
                tag: t.as_ref().to_owned(),
                source: Box::new(source),
            })
        })
        .collect()
}

/// `appended` with `annotations` on its manifest (written), or as it is
/// when there are none.
fn annotate<S: image_store::Ingester + ?Sized>(
    store: &S,
    appended: image_store::mutate::Appended,
    annotations: &BTreeMap<String, String>,
) -> Result<image_store::mutate::Appended, BuilderError> {
    if annotations.is_empty() {
        return Ok(appended);
    }
    let media_type = appended.manifest.media_type();
    if *media_type != image_core::MediaType::OciManifest {
        return Err(BuilderError::Annotations {
            media_type: media_type.to_string(),
        });
    }
    let map: HashMap<String, String> = annotations.clone().into_iter().collect();
    let manifest = appended
        .manifest
        .modify(|m| {
            m.set_annotations(Some(map));
        })
        .map_err(|e| BuilderError::Mutate(MutateError::Build(e)))?;
    store
        .write_blob(manifest.raw())
        .map_err(|e| BuilderError::Mutate(MutateError::from(e)))?;
    Ok(image_store::mutate::Appended {
        manifest,
        config: appended.config,
    })
}

/// Copies what is read into a writer (the layer being recompressed).
struct Tee<'a, 'w, R> {
    reader: R,
    writer: &'a mut LayerStream<'w>,
}

impl<R: Read> Read for Tee<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        self.writer.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// The longest path of a file given in memory, in bytes (Linux's
/// `PATH_MAX`: no unpack could make a longer one).
pub const MAX_PATH_BYTES: usize = 4096;

/// In-memory files checked and ordered for writing: cleaned paths as
/// component lists (their order is pack's), each a given file or an
/// implied parent directory.
struct FileTree<'f> {
    entries: BTreeMap<Vec<String>, Option<&'f File>>,
    /// Each hard link's (cleaned) target.
    links: HashMap<Vec<String>, Vec<String>>,
}

/// `path` cleaned as a path inside the root, as its components.
fn cleaned(path: &str) -> Result<Vec<String>, BuilderError> {
    let invalid = |reason| BuilderError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid("is longer than PATH_MAX (4096 bytes)"));
    }
    let c =
        image_core::path::clean_relative(path).ok_or_else(|| invalid("climbs out of the root"))?;
    if c.is_empty() {
        return Err(invalid("names the root"));
    }
    Ok(c.split('/').map(str::to_owned).collect())
}

impl<'f> FileTree<'f> {
    fn new(files: &'f [File]) -> Result<Self, BuilderError> {
        let mut entries: BTreeMap<Vec<String>, Option<&File>> = BTreeMap::new();
        for f in files {
            let key = cleaned(&f.path)?;
            if entries.insert(key.clone(), Some(f)).is_some() {
                return Err(BuilderError::DuplicatePath {
                    path: key.join("/"),
                });
            }
        }
        let mut links = HashMap::new();
        // Implied parents, each made once: a file's ancestors are walked
        // from the nearest up to the first one known (given, whose own
        // ancestors its own walk checks, or implied already, whose were),
        // so the work is linear in the paths' total length.
        let mut parents: BTreeSet<Vec<String>> = BTreeSet::new();
        for (key, f) in &entries {
            for n in (1..key.len()).rev() {
                match entries.get(&key[..n]) {
                    Some(Some(p)) if p.kind != FileKind::Dir => {
                        return Err(BuilderError::NotADirectory {
                            path: key.join("/"),
                            parent: key[..n].join("/"),
                        })
                    }
                    Some(_) => break,
                    None if !parents.insert(key[..n].to_vec()) => break,
                    None => {}
                }
            }
            if let Some(File {
                kind: FileKind::Hardlink(target),
                ..
            }) = f
            {
                let bad = || BuilderError::HardlinkTarget {
                    path: key.join("/"),
                    target: target.clone(),
                };
                let t = cleaned(target).map_err(|_| bad())?;
                match entries.get(&t) {
                    Some(Some(File {
                        kind: FileKind::File(_),
                        ..
                    })) => {}
                    _ => return Err(bad()),
                }
                links.insert(key.clone(), t);
            }
        }
        for p in parents {
            entries.entry(p).or_insert(None);
        }
        Ok(FileTree { entries, links })
    }

    fn write(
        &self,
        out: &mut dyn Write,
        options: &PackOptions,
        epoch: Option<i64>,
    ) -> Result<PackReport, PackError> {
        let clamp = |m: i64| epoch.map_or(m, |e| m.min(e));
        let implied = File::dir("", 0o755);
        let mut w = LayerWriter::new(out, options)?;
        // Of each regular file and its links, the path written first.
        let mut written: HashMap<&[String], String> = HashMap::new();
        for (key, f) in &self.entries {
            let f = f.unwrap_or(&implied);
            let mut path = key.join("/");
            let group = self.links.get(key).unwrap_or(key);
            let (kind, data, meta): (TarKind, &[u8], &File) = match &f.kind {
                FileKind::Dir => {
                    path.push('/');
                    (TarKind::Dir, &[], f)
                }
                FileKind::Symlink(t) => (TarKind::Symlink(t.clone().into_bytes()), &[], f),
                FileKind::File(_) | FileKind::Hardlink(_) => {
                    let target = self.entries.get(group).copied().flatten().unwrap_or(f);
                    match written.get(group.as_slice()) {
                        Some(first) => (TarKind::Hardlink(first.clone().into_bytes()), &[], target),
                        None => {
                            written.insert(group, path.clone());
                            let data = match &target.kind {
                                FileKind::File(d) => d.as_slice(),
                                _ => &[],
                            };
                            let size = data.len() as u64;
                            (TarKind::File { size }, data, target)
                        }
                    }
                }
            };
            let entry = TarEntry {
                path: path.as_bytes(),
                kind,
                mode: meta.mode & 0o7777,
                uid: u64::from(meta.uid),
                gid: u64::from(meta.gid),
                mtime: clamp(meta.mtime),
                xattrs: &[],
            };
            w.entry(&entry, data)?;
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use image_overlay::list::{list, ListOptions};
    use image_store::{MemoryStore, Provider};

    use super::*;

    /// `SOURCE_DATE_EPOCH` stamps the image and its history and clamps the
    /// mtimes of files and directories packed (none of this crate's other
    /// unit tests reads it).
    #[test]
    fn source_date_epoch_stamps_created_and_clamps_mtimes() {
        std::env::set_var("SOURCE_DATE_EPOCH", "1000");
        let store = MemoryStore::new();
        let platform = Platform::new("linux", "amd64");
        let built = ImageBuilder::scratch(&store, &platform).map(|mut b| {
            let files = [
                File::regular("late", b"x".to_vec(), 0o644).mtime(5000),
                File::regular("early", b"y".to_vec(), 0o644).mtime(10),
            ];
            let layer = b.add_files(&files, History::default());
            b.add_history(History::default());
            (layer, b.commit(&["example/epoch:1"]))
        });
        std::env::remove_var("SOURCE_DATE_EPOCH");
        let (layer, built) = built.expect("scratch");
        let (layer, built) = (layer.expect("files"), built.expect("commit"));
        let stamp = image_core::time::rfc3339(1000);
        let file = built.config.file();
        assert_eq!(file.created.as_deref(), Some(stamp.as_str()));
        let history = file.history.as_deref().unwrap_or_default();
        assert_eq!(history.len(), 2);
        assert!(history
            .iter()
            .all(|h| h.created.as_deref() == Some(stamp.as_str())));
        let digest = layer.descriptor.checked_digest().expect("digest");
        let mut mtimes = Vec::new();
        list(
            store.reader(&digest).expect("blob"),
            &ListOptions::default(),
            |e| mtimes.push((e.path_lossy(), e.mtime)),
        )
        .expect("list");
        assert_eq!(mtimes, [("early".into(), 10), ("late".into(), 1000)]);
    }
}
