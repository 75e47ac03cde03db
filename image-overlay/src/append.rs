//! One call for the common job: a new image from a base plus a directory
//! (or a layer tarball), with config changes, tagged (crane's `append`).
//!
//! [`append_dir`] packs a directory straight into the store (digest and
//! diff ID from one pass), writes the new config and manifest with
//! [`image_store::mutate::append`] and tags the result. A lease of the
//! store is held from before the base is resolved until the tag is set, so
//! a `gc` running beside it cannot remove the base's blobs, the new layer,
//! the config or the manifest in between. [`append_source`] does the same
//! for a layer tarball read from any reader, or for config changes alone.
//!
//! The calls block (they read and write files); from async code run them
//! on a blocking thread (`tokio::task::spawn_blocking`). None needs root.
//!
//! ```
//! use image_core::Platform;
//! use image_overlay::append::{append_dir, ConfigChanges};
//! use image_store::{image::resolve_image, OciDir};
//!
//! let tmp = tempfile::tempdir()?;
//! let store = OciDir::open_or_create(tmp.path().join("store"))?;
//! let dir = tmp.path().join("rootfs");
//! std::fs::create_dir_all(dir.join("etc"))?;
//! std::fs::write(dir.join("etc/motd"), b"hello\n")?;
//!
//! let changes = ConfigChanges::new().cmd(["/bin/sh"]).env("GREETING=hello");
//! let platform: Platform = "linux/amd64".parse()?;
//! let made = append_dir(&store, None, &dir, &platform, &changes, "example/motd:1")?;
//!
//! let image = resolve_image(&store, "example/motd:1", None)?;
//! assert_eq!(image.manifest.digest(), made.manifest.digest());
//! assert_eq!(image.layers().len(), 1);
//! let run = image.config.file().config.clone().unwrap_or_default();
//! assert_eq!(run.cmd, Some(vec!["/bin/sh".to_string()]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use image_core::config::{ConfigFile, History};
use image_core::{Classify, Digest, ErrorKind, MediaType, Platform};
use image_store::content::{unique_reference, ContentError, ContentWriter};
use image_store::image::{resolve_image, ImageError};
use image_store::lease::LeaseError;
use image_store::mutate::{append, Appended, MutateError, NewLayer};
use image_store::tags::{normalize_name, TagError};
use image_store::{Ingester, Leases, Provider, TagStore};

use crate::list::{list, ListOptions};
use crate::pack::{pack_dir, PackError, PackOptions};
use crate::unpack::UnpackError;

/// Setters of `Option<String>` fields, one per field name.
macro_rules! string_setters {
    ($($(#[$doc:meta])* $field:ident,)*) => {$(
        $(#[$doc])*
        pub fn $field(mut self, value: impl Into<String>) -> Self {
            self.$field = Some(value.into());
            self
        }
    )*};
}

/// Changes to the config of the new image, applied after the base's
/// config is copied (Docker's `commit --change`, crane's `mutate`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ConfigChanges {
    /// Replaces the command.
    pub cmd: Option<Vec<String>>,
    /// Replaces the entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value` entries, each replacing the base's entry of that key.
    pub env: Vec<String>,
    /// Replaces the working directory.
    pub working_dir: Option<String>,
    /// Replaces the user.
    pub user: Option<String>,
    /// The creation time (RFC 3339) of the image and of its history entry;
    /// `None`: now, or `SOURCE_DATE_EPOCH` when it is set (reproducible
    /// images).
    pub created: Option<String>,
    /// The history entry's `created_by`; `None`: `append` plus what was
    /// appended.
    pub created_by: Option<String>,
}

impl ConfigChanges {
    /// No change: the base's config as it is.
    pub fn new() -> ConfigChanges {
        ConfigChanges::default()
    }

    /// Replaces the command.
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, cmd: I) -> Self {
        self.cmd = Some(cmd.into_iter().map(Into::into).collect());
        self
    }

    /// Replaces the entrypoint.
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ep: I) -> Self {
        self.entrypoint = Some(ep.into_iter().map(Into::into).collect());
        self
    }

    /// Adds or replaces `KEY=value` in the environment.
    pub fn env(mut self, entry: impl Into<String>) -> Self {
        self.env.push(entry.into());
        self
    }

    string_setters! {
        /// Replaces the working directory.
        working_dir,
        /// Replaces the user.
        user,
        /// Sets the creation time (RFC 3339).
        created,
        /// Sets the history entry's `created_by`.
        created_by,
    }

    pub(crate) fn apply(&self, c: &mut ConfigFile) {
        let run = c.config.get_or_insert_with(Default::default);
        if let Some(cmd) = &self.cmd {
            run.cmd = Some(cmd.clone());
        }
        if let Some(ep) = &self.entrypoint {
            run.entrypoint = Some(ep.clone());
        }
        if let Some(w) = &self.working_dir {
            run.working_dir = Some(w.clone());
        }
        if let Some(u) = &self.user {
            run.user = Some(u.clone());
        }
        if !self.env.is_empty() {
            let env = run.env.get_or_insert_with(Vec::new);
            for kv in &self.env {
                let key = kv.split('=').next().unwrap_or_default();
                env.retain(|e| e.split('=').next() != Some(key));
                env.push(kv.clone());
            }
        }
    }
}

/// What a new image's layer is made from.
#[non_exhaustive]
pub enum AppendSource<'a> {
    /// A directory, packed as a layer with these options.
    Dir(&'a Path, &'a PackOptions),
    /// A layer tarball (plain, gzip or zstd: sniffed), stored as it is
    /// after it is read through unpack's stream path (limits, tar rules).
    Tarball(&'a mut dyn Read),
    /// No layer: the config changes only (an empty-layer history entry).
    ConfigOnly,
}

impl std::fmt::Debug for AppendSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendSource::Dir(p, _) => f.debug_tuple("Dir").field(p).finish(),
            AppendSource::Tarball(_) => f.write_str("Tarball"),
            AppendSource::ConfigOnly => f.write_str("ConfigOnly"),
        }
    }
}

/// A failure to append to an image; nothing is tagged, and what was
/// written is left to gc (the lease ends with the call).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The tag is not a valid name for an image (checked before anything
    /// is read or written).
    #[error("invalid tag for the new image")]
    InvalidTag(#[source] Box<TagError>),
    /// The store's lease could not be taken.
    #[error("taking a lease for the new image")]
    Lease(#[from] LeaseError),
    /// The base image could not be resolved.
    #[error("resolving the base image {reference:?}")]
    Base {
        /// The base as named.
        reference: String,
        /// Why (boxed: an image error is large).
        #[source]
        source: Box<ImageError>,
    },
    /// The directory could not be packed.
    #[error("packing {}", path.display())]
    Pack {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: PackError,
    },
    /// The layer tarball was refused (corrupt, truncated, over a limit) or
    /// could not be read.
    #[error("reading the layer tarball")]
    Layer(#[source] UnpackError),
    /// The layer blob could not be stored.
    #[error("storing the new layer")]
    Content(#[source] ContentError),
    /// The config or manifest could not be written.
    #[error("writing the new image")]
    Mutate(#[source] MutateError),
    /// The new image could not be tagged.
    #[error("tagging the new image {tag:?}")]
    Tag {
        /// The tag.
        tag: String,
        /// Why (boxed: a tag error is large).
        #[source]
        source: Box<TagError>,
    },
}

impl Classify for AppendError {
    fn kind(&self) -> ErrorKind {
        match self {
            AppendError::InvalidTag(e) | AppendError::Tag { source: e, .. } => e.kind(),
            AppendError::Lease(e) => e.kind(),
            AppendError::Base { source, .. } => source.kind(),
            AppendError::Pack { source, .. } => source.kind(),
            AppendError::Layer(e) => e.kind(),
            AppendError::Content(e) => e.kind(),
            AppendError::Mutate(e) => e.kind(),
        }
    }
}

/// Makes the image `base` (a reference in `store`; `None`: an empty image
/// for `platform`) plus the directory `dir` packed as one gzip layer, with
/// `changes` applied to the config, and tags it `tag`.
///
/// See [`append_source`] for the details; this is
/// `append_source(store, base, AppendSource::Dir(dir, &gzip), ..)`.
///
/// # Errors
/// As [`append_source`].
pub fn append_dir<S>(
    store: &S,
    base: Option<&str>,
    dir: &Path,
    platform: &Platform,
    changes: &ConfigChanges,
    tag: &str,
) -> Result<Appended, AppendError>
where
    S: Provider + Ingester + TagStore + Leases + ?Sized,
{
    let options = PackOptions::default().with_source_date_epoch_from_env();
    append_source(
        store,
        base,
        AppendSource::Dir(dir, &options),
        platform,
        changes,
        tag,
    )
}

/// Makes the image `base` (`None`: an empty image for `platform`) plus a
/// layer made from `source`, with `changes` applied to the config, and
/// tags it `tag`; returns the new manifest and config.
///
/// The base is resolved for `platform` (an index picks that platform's
/// manifest); the new config keeps `platform`'s variant. The manifest keeps
/// the base's format (Docker v2 or OCI). The store holds a lease from
/// before the base is resolved until the tag is set.
///
/// # Errors
/// [`AppendError`]: `InvalidTag` before anything is read; `Base` when the
/// base is missing; `Pack` or `Layer` when the layer cannot be made or is
/// refused; `Content`, `Mutate`, `Tag` when the store fails.
pub fn append_source<S>(
    store: &S,
    base: Option<&str>,
    source: AppendSource<'_>,
    platform: &Platform,
    changes: &ConfigChanges,
    tag: &str,
) -> Result<Appended, AppendError>
where
    S: Provider + Ingester + TagStore + Leases + ?Sized,
{
    // The tag is checked before any layer is packed (a digest is refused).
    normalize_name(tag).map_err(|e| AppendError::InvalidTag(Box::new(e)))?;
    let lease = store.begin_lease()?;
    let s = lease.protect(store);
    let base_image = base
        .map(|b| {
            resolve_image(&s, b, Some(platform)).map_err(|source| AppendError::Base {
                reference: b.to_owned(),
                source: Box::new(source),
            })
        })
        .transpose()?;
    let created = changes
        .created
        .clone()
        .unwrap_or_else(image_core::time::created_now);
    let (layer, what) = store_layer(&s, source)?;
    let history = History {
        created: Some(created.clone()),
        created_by: Some(changes.created_by.clone().unwrap_or(what)),
        empty_layer: layer.is_none(),
        ..History::default()
    };
    let layers: Vec<NewLayer> = layer
        .into_iter()
        .map(|(media_type, digest, size, diff_id)| NewLayer {
            media_type,
            digest,
            size,
            diff_id,
            history: history.clone(),
        })
        .collect();
    let appended = append(&s, base_image.as_ref(), platform, &layers, |c| {
        c.created = Some(created.clone());
        if let Some(v) = &platform.variant {
            c.variant = Some(v.clone());
        }
        changes.apply(c);
        if layers.is_empty() {
            c.history.get_or_insert_with(Vec::new).push(history.clone());
        }
    })
    .map_err(AppendError::Mutate)?;
    s.set_tag(tag, &appended.manifest.descriptor())
        .map_err(|source| AppendError::Tag {
            tag: tag.to_owned(),
            source: Box::new(source),
        })?;
    drop(lease);
    Ok(appended)
}

/// A new layer's media type, digest, size and diff ID.
pub(crate) type StoredLayer = (MediaType, Digest, u64, Digest);

/// Stores the layer `source` makes (none for [`AppendSource::ConfigOnly`])
/// and says what it was made from.
pub(crate) fn store_layer<S: Ingester + ?Sized>(
    s: &S,
    source: AppendSource<'_>,
) -> Result<(Option<StoredLayer>, String), AppendError> {
    Ok(match source {
        AppendSource::Dir(dir, options) => {
            let mut w = s
                .writer(&unique_reference())
                .map_err(AppendError::Content)?;
            let r = pack_dir(dir, &mut w, options).map_err(|source| AppendError::Pack {
                path: dir.to_owned(),
                source,
            })?;
            w.commit(Some(r.size), Some(&r.digest))
                .map_err(AppendError::Content)?;
            let what = format!("append {}", dir.display());
            (Some((r.media_type, r.digest, r.size, r.diff_id)), what)
        }
        AppendSource::Tarball(reader) => {
            let mut w = s
                .writer(&unique_reference())
                .map_err(AppendError::Content)?;
            let r = list(
                Tee {
                    reader,
                    writer: &mut w,
                },
                &ListOptions::default(),
                |_| {},
            )
            .map_err(AppendError::Layer)?;
            w.commit(Some(r.compressed_size), Some(&r.digest))
                .map_err(AppendError::Content)?;
            let media_type = MediaType::oci_layer(r.compression);
            let layer = (media_type, r.digest, r.compressed_size, r.diff_id);
            (Some(layer), "append (layer tarball)".to_owned())
        }
        AppendSource::ConfigOnly => (None, "append (config only)".to_owned()),
    })
}

/// Copies what is read into a writer (the layer blob being ingested).
struct Tee<'a> {
    reader: &'a mut dyn Read,
    writer: &'a mut Box<dyn ContentWriter>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.reader.read(buf)?;
        self.writer.write_all(&buf[..n])?;
        Ok(n)
    }
}
