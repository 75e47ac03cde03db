//! Image surgery: new images from old ones without a rebuild, as crane's
//! `flatten`, `rebase`, `mutate` and `export` do, and nothing unpacked to
//! disk.
//!
//! - [`squash`](squash::squash): all layers, or those above a base, merged
//!   into one (whiteouts resolved, history kept with the squashed entries
//!   marked empty), and the bytes it freed;
//! - [`rebase`](rebase::rebase): an image's base layers swapped for another
//!   base's, the upper layers kept byte for byte;
//! - [`mutate`](mutate::mutate): config fields, annotations, the created
//!   time, a layer appended from a directory or a tar, a path removed;
//! - [`export`](export::export): the final filesystem as one plain tar
//!   stream.
//!
//! Squash and export share one merge (`merge`): each layer is read twice
//! through unpack's stream path (a plan of its headers, then its data),
//! newest wins, with every count bounded ([`MergeLimits`]).
//!
//! Each new image is written with the store's canonical JSON (config and
//! manifest), under a lease of the store from before its inputs are
//! resolved until its tag is set; the old image is never changed. The
//! assembly of the new documents is kept small here (`write_image`)
//! rather than shared with image-build's `ImageBuilder`, which sits above
//! this crate.
//!
//! # Security
//! Layers are hostile: unpack's [`Limits`](crate::unpack::Limits) bound
//! each layer, [`MergeLimits`] the paths and entries the merge remembers;
//! a path with `..`, an invalid whiteout name, a hard link to a directory
//! or to a path no earlier entry of its layer nor a lower layer holds, or a
//! file whose data is not its declared size is refused with
//! [`SurgeryError::Entry`]. A hard link group is resolved once per layer
//! (keyed by path), so links across layers keep the merge linear. A directory appended by
//! [`mutate`](mutate::mutate) is packed by [`pack_dir`](crate::pack_dir),
//! which follows no symlink inside it.

use std::collections::HashMap;
use std::path::PathBuf;

use image_core::config::ConfigFile;
use image_core::error::unless_named;
use image_core::manifest::descriptor;
use image_core::{
    Classify, Descriptor, Digest, ErrorKind, ImageConfig, Manifest, MediaType, MediaTypeError,
    ParseError, Platform,
};
use image_store::content::ContentError;
use image_store::image::{resolve_image, Image, ImageError};
use image_store::lease::LeaseError;
use image_store::tags::TagError;
use image_store::{Ingester, Provider, TagStore};

use crate::append::AppendError;
use crate::pack::PackError;
use crate::unpack::UnpackError;

pub mod export;
pub(crate) mod merge;
pub mod mutate;
pub mod rebase;
pub mod squash;

pub use export::{export, export_image, ExportReport};
pub use merge::MergeLimits;
pub use mutate::{mutate, Mutated, Mutation, NewLayer};
pub use rebase::{rebase, Rebased, ANNOTATION_BASE_DIGEST, ANNOTATION_BASE_NAME};
pub use squash::{squash, LayerSizes, SquashFrom, SquashOptions, SquashReport};

/// A failed surgery. Nothing is tagged; blobs already written are left to
/// gc (the lease ends with the call).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SurgeryError {
    /// The new tag is not a valid image name (checked before any work).
    #[error("invalid tag for the new image")]
    InvalidTag(#[source] Box<TagError>),
    /// The store's lease could not be taken.
    #[error("taking a lease for the new image")]
    Lease(#[from] LeaseError),
    /// An image named could not be resolved.
    #[error("resolving {reference:?}")]
    Resolve {
        /// The reference as given.
        reference: String,
        /// Why.
        #[source]
        source: Box<ImageError>,
    },
    /// The config lists another number of diff IDs than the manifest has layers.
    #[error("the manifest has {layers} layers but the config lists {diff_ids} diff IDs")]
    LayerCount {
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// A layer of a type this crate cannot read (`+encrypted`, foreign).
    #[error("layer {index} cannot be read")]
    MediaType {
        /// The layer's position, base first.
        index: usize,
        /// The media type error.
        #[source]
        source: MediaTypeError,
    },
    /// A layer descriptor's digest is invalid.
    #[error("layer {index} has an invalid descriptor")]
    BadLayer {
        /// The layer's position, base first.
        index: usize,
        /// Why.
        #[source]
        source: Box<ParseError>,
    },
    /// A layer blob could not be opened in the store.
    #[error("layer {index}{}", unless_named(.digest, &**.source))]
    Content {
        /// The layer's position.
        index: usize,
        /// Its digest.
        digest: Digest,
        /// The store's error.
        #[source]
        source: Box<ContentError>,
    },
    /// A layer's stream was refused (corrupt, over a limit, not its digest).
    #[error("layer {index}{}", unless_named(.digest, &**.source))]
    Layer {
        /// The layer's position.
        index: usize,
        /// Its digest.
        digest: Digest,
        /// The stream's error.
        #[source]
        source: Box<UnpackError>,
    },
    /// An entry of a layer the merge refuses.
    #[error("layer {index}: {path}: {reason}")]
    Entry {
        /// The layer's position.
        index: usize,
        /// The entry's path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Squash above a base: a hard link to a file of the base that a
    /// squashed layer above the link removes. No longer returned: the
    /// squash now reads the base for that file and the squashed layer
    /// carries it (kept so that code matching it still builds).
    #[error("layer {index}: {path}: a hard link to a file of the base that a squashed layer above it removes")]
    LinkIntoBase {
        /// The link's layer.
        index: usize,
        /// The link's path.
        path: PathBuf,
    },
    /// More distinct paths than [`MergeLimits::max_paths`].
    #[error("the layers name more than {limit} paths")]
    TooManyPaths {
        /// The limit.
        limit: usize,
    },
    /// More entries than [`MergeLimits::max_entries`].
    #[error("the layers hold more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// Writing the output stream failed.
    #[error("writing the merged tar stream")]
    Write {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The new layer could not be compressed or written.
    #[error("writing the new layer")]
    Pack(#[source] PackError),
    /// The new layer could not be made from what was given.
    #[error("making the new layer")]
    Append(#[source] Box<AppendError>),
    /// A blob could not be stored.
    #[error("storing the new image")]
    Store(#[source] ContentError),
    /// The config or manifest could not be built.
    #[error("building the new image")]
    Build(#[source] ParseError),
    /// The new image could not be tagged.
    #[error("tagging the new image {tag:?}")]
    Tag {
        /// The tag.
        tag: String,
        /// Why.
        #[source]
        source: Box<TagError>,
    },
    /// Squash: the base is not below the image's top layer.
    #[error("cannot squash above layer {from}: the image has {layers} layers")]
    NothingToSquash {
        /// The first layer asked to squash.
        from: usize,
        /// The image's layer count.
        layers: usize,
    },
    /// Squash or rebase: the base's diff IDs are not a prefix of the image's.
    #[error("{base:?} is not a base of {image:?}: its {base_layers} layers are not the image's first ones")]
    NotABase {
        /// The image.
        image: String,
        /// The base named.
        base: String,
        /// The base's layer count.
        base_layers: usize,
    },
    /// A value given for the new image is not valid (an `--env` without
    /// `=`, a port, a relative volume, a path to remove).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What the value is for.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
}

impl Classify for SurgeryError {
    fn kind(&self) -> ErrorKind {
        use SurgeryError as E;
        match self {
            E::InvalidTag(e) | E::Tag { source: e, .. } => e.kind(),
            E::Lease(e) => e.kind(),
            E::Resolve { source, .. } => source.kind(),
            E::MediaType { source, .. } => source.kind(),
            E::BadLayer { source, .. } => source.kind(),
            E::Content { source, .. } => source.kind(),
            E::Layer { source, .. } => source.kind(),
            E::Write { source } => Classify::kind(source),
            E::Pack(e) => e.kind(),
            E::Append(e) => e.kind(),
            E::Store(e) => e.kind(),
            E::Build(e) => e.kind(),
            E::TooManyPaths { .. } | E::TooManyEntries { .. } => ErrorKind::Unsafe,
            E::NotABase { .. } | E::NothingToSquash { .. } => ErrorKind::FailedPrecondition,
            E::LinkIntoBase { .. } => ErrorKind::Unsupported,
            E::LayerCount { .. } | E::Entry { .. } | E::Invalid { .. } => ErrorKind::InvalidInput,
        }
    }
}

/// Resolves `reference` in `store` (for `platform` when it is an index).
pub(crate) fn resolve<S: Provider + TagStore + ?Sized>(
    store: &S,
    reference: &str,
    platform: Option<&Platform>,
) -> Result<Image, SurgeryError> {
    resolve_image(store, reference, platform).map_err(|source| SurgeryError::Resolve {
        reference: reference.to_owned(),
        source: Box::new(source),
    })
}

/// The image's layers paired with their diff IDs, refused when the counts differ.
pub(crate) fn layers_of(image: &Image) -> Result<Vec<(&Descriptor, &Digest)>, SurgeryError> {
    let (layers, diff_ids) = (image.layers(), image.diff_ids());
    if layers.len() != diff_ids.len() {
        return Err(SurgeryError::LayerCount {
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    Ok(layers.iter().zip(diff_ids).collect())
}

/// Whether `base`'s diff IDs are the first ones of `image`'s.
pub(crate) fn is_base_of(base: &Image, image: &Image) -> bool {
    image.diff_ids().starts_with(base.diff_ids())
}

/// A descriptor for a new layer in a manifest of `manifest_type` (a
/// Docker manifest gets Docker's layer types).
pub(crate) fn layer_descriptor(
    manifest_type: &MediaType,
    media_type: &MediaType,
    digest: &Digest,
    size: u64,
) -> Descriptor {
    let media_type = match manifest_type {
        MediaType::DockerManifest => media_type
            .to_docker()
            .unwrap_or_else(|_| media_type.clone()),
        _ => media_type.clone(),
    };
    descriptor(&media_type, digest, size)
}

/// Writes a new config and manifest (canonical JSON) into `store`.
pub(crate) fn write_image<S: Ingester + ?Sized>(
    store: &S,
    manifest_type: &MediaType,
    file: ConfigFile,
    layers: Vec<Descriptor>,
    annotations: Option<HashMap<String, String>>,
) -> Result<(Manifest, ImageConfig), SurgeryError> {
    let config = ImageConfig::new(file).map_err(SurgeryError::Build)?;
    store
        .write_blob(config.raw())
        .map_err(SurgeryError::Store)?;
    let config_type = match manifest_type {
        MediaType::DockerManifest => MediaType::DockerConfig,
        _ => MediaType::OciConfig,
    };
    let manifest = Manifest::build(
        manifest_type,
        config.descriptor(&config_type),
        layers,
        annotations,
    )
    .map_err(SurgeryError::Build)?;
    store
        .write_blob(manifest.raw())
        .map_err(SurgeryError::Store)?;
    Ok((manifest, config))
}

/// Tags `manifest` as `tag`.
pub(crate) fn set_tag<S: TagStore + ?Sized>(
    store: &S,
    tag: &str,
    manifest: &Manifest,
) -> Result<(), SurgeryError> {
    store
        .set_tag(tag, &manifest.descriptor())
        .map_err(|source| SurgeryError::Tag {
            tag: tag.to_owned(),
            source: Box::new(source),
        })
}

/// Refuses an invalid tag before any work.
pub(crate) fn check_tag(tag: &str) -> Result<(), SurgeryError> {
    image_store::tags::normalize_name(tag)
        .map(drop)
        .map_err(|e| SurgeryError::InvalidTag(Box::new(e)))
}
