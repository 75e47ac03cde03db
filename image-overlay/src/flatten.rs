//! Flatten an image from a store onto one directory: every layer in order,
//! OCI whiteouts applied, each layer's digest and diff ID verified (as
//! `umoci unpack` or `crane export` do).
//!
//! Layers are applied one after the other (a later layer may remove or
//! replace what an earlier one made); each is a single streaming pass of
//! [`unpack()`](crate::unpack::unpack), with the same checks, errors and
//! limits. Their blobs are read and decoded (decompressed, the diff ID
//! hashed) on threads of their own, ahead of the thread that applies them
//! and across layer boundaries: the next layer is decoding while the end
//! of the current one is applied, at most 32 MiB of decoded tar ahead in
//! all (`unpack::LayersAhead`). A layer's failure found ahead is reported
//! only in that layer's turn, after the layers below it are applied; a
//! flatten that fails stops the decoding and waits for its thread before
//! it returns, unless that thread is blocked in a source's read (which
//! may never return): it then ends on its own once the read does, reading
//! nothing more. Progress of a layer's bytes is reported as they are read,
//! so a layer's progress may end before the layer below it is all
//! applied. A store's blob is not hashed
//! again: the store checked its digest when it took it in, and the diff ID,
//! checked here, covers all that is unpacked; a provider that is not
//! [`verified_at_ingest`](image_store::Provider::verified_at_ingest) (a
//! registry, an archive) has its blobs hashed as they are read. Nothing syncs the target
//! after a flatten, so the writeback of each large file (1 MiB or more) is
//! started (not waited for) as it is written, on a helper thread: its data
//! goes to the disk while the layers are still being unpacked. Small files
//! are left to the kernel's writeback, which writes many in one pass and
//! merges them into large disk requests: started one by one, each made a
//! request of its own and the whole cost more CPU than the unpack could
//! spare (see `unpack::WRITEBACK_MIN`). For one
//! directory per layer, unpacked in parallel, use the snapshotters and
//! [`unpack_image`](crate::unpack_image).

use image_core::error::unless_named;
use std::path::{Path, PathBuf};

use image_core::manifest::descriptor_media_type;
use image_core::DescriptorExt;
use image_core::{Classify, Compression, Digest, ErrorKind, MediaTypeError, ParseError};
use image_store::image::Image;
use image_store::{ContentError, Provider};

use crate::unpack::{unpack_read_ahead, LayersAhead, UnpackError, UnpackOptions, UnpackReport};
use crate::whiteout::WhiteoutMode;

/// A failure to flatten an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlattenError {
    /// The config lists another number of diff IDs than the manifest has layers.
    #[error(
        "image {image}: the manifest has {layers} layers but the config lists {diff_ids} diff IDs"
    )]
    LayerCount {
        /// The image name.
        image: String,
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// A layer whose media type is not a layer this crate can read (an
    /// `+encrypted` layer, a foreign type): refused before anything is
    /// unpacked, with the error `run` (snapshot unpack) and `save` give
    /// ([`MediaTypeError::Unknown`], class `Unsupported`).
    #[error("image {image}: layer {index} cannot be unpacked")]
    MediaType {
        /// The image name.
        image: String,
        /// The layer's position, base first.
        index: usize,
        /// The media type error.
        #[source]
        source: MediaTypeError,
    },
    /// A layer descriptor is unusable (bad digest).
    #[error("image {image}: layer {index} ({media_type}) cannot be unpacked")]
    BadLayer {
        /// The image name.
        image: String,
        /// The layer's position, base first.
        index: usize,
        /// Its media type.
        media_type: String,
        /// Why: the descriptor's digest is invalid.
        #[source]
        source: Box<ParseError>,
    },
    /// A layer blob could not be read from the store.
    #[error("image {image}: layer {index}{}", unless_named(.digest, &**.source))]
    Content {
        /// The image name.
        image: String,
        /// The layer's position.
        index: usize,
        /// The layer digest.
        digest: Digest,
        /// The store's error.
        source: Box<ContentError>,
    },
    /// Unpacking a layer failed.
    #[error("image {image}: layer {index}{}", unless_named(.digest, &**.source))]
    Unpack {
        /// The image name.
        image: String,
        /// The layer's position.
        index: usize,
        /// The layer digest.
        digest: Digest,
        /// The unpack error.
        source: Box<UnpackError>,
    },
    /// The target directory could not be created.
    #[error("creating {path}")]
    Target {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Classify for FlattenError {
    fn kind(&self) -> ErrorKind {
        match self {
            FlattenError::LayerCount { .. } | FlattenError::BadLayer { .. } => {
                ErrorKind::InvalidInput
            }
            FlattenError::MediaType { source, .. } => source.kind(),
            FlattenError::Content { source, .. } => source.kind(),
            FlattenError::Unpack { source, .. } => source.kind(),
            FlattenError::Target { source, .. } => Classify::kind(source),
        }
    }
}

/// Flattens `image` onto `target` (created when missing), applying
/// `options` (limits, device and xattr policy) to every layer; the digests,
/// compression and whiteout mode of each layer come from the image.
///
/// # Errors
/// [`FlattenError`]: a layer missing or corrupt in the store, a digest or
/// diff ID mismatch, hostile content. Layers before the failing one stay
/// applied: flatten into a fresh directory and remove it on error.
pub fn flatten_image<P: Provider + ?Sized>(
    store: &P,
    image: &Image,
    target: &Path,
    options: &UnpackOptions,
) -> Result<Vec<UnpackReport>, FlattenError> {
    let layers = image.layers();
    let diff_ids = image.diff_ids();
    let compressions = layer_compressions(image)?;
    std::fs::create_dir_all(target).map_err(|source| FlattenError::Target {
        path: target.to_path_buf(),
        source,
    })?;
    // The layers are decoded ahead of the applier, on a thread of their
    // own, the next one queued before the current one is applied
    // (`LayersAhead`); on one CPU each is unpacked in turn.
    let mut ahead = LayersAhead::start();
    let open = |index: usize, ahead: &mut Option<LayersAhead>| {
        let layer = &layers[index];
        let (digest, reader) = open_layer(store, image, index, layer)?;
        let mut layer_options = options.clone();
        layer_options.compression = Some(compressions[index]);
        layer_options.digest = Some(digest.clone());
        layer_options.size = Some(layer.size());
        layer_options.diff_id = Some(diff_ids[index].clone());
        // Taken as given only from a store that checked it at ingest.
        layer_options.digest_checked_by_store = store.verified_at_ingest();
        layer_options.whiteouts = WhiteoutMode::Apply;
        let reader = match ahead {
            Some(ahead) => {
                ahead.queue(reader, &layer_options);
                None
            }
            None => Some(reader),
        };
        Ok::<_, FlattenError>((digest, layer_options, reader))
    };
    let mut reports = Vec::with_capacity(layers.len());
    let mut next = (!layers.is_empty()).then(|| open(0, &mut ahead));
    for index in 0..layers.len() {
        let Some(current) = next.take() else { break };
        // A layer that could not be opened fails in its turn.
        let (digest, layer_options, reader) = current?;
        if index + 1 < layers.len() {
            next = Some(open(index + 1, &mut ahead));
        }
        // Nothing syncs the target after a flatten: its large files'
        // writeback is started as they are written, to overlap the unpack.
        let unpacked = match (reader, &mut ahead) {
            (None, Some(ahead)) => ahead.unpack_next(target, &layer_options, true),
            (Some(reader), _) => unpack_read_ahead(reader, target, &layer_options, true),
            (None, None) => unreachable!("a layer is queued only with a thread ahead"),
        };
        let e = match unpacked {
            Ok(report) => {
                reports.push(report);
                continue;
            }
            Err(e) => e,
        };
        // The layers ahead are stopped (and their thread joined, unless it
        // is blocked in a source read) before the blob is read again.
        drop(ahead);
        return Err(FlattenError::Unpack {
            image: image.name.clone(),
            index,
            source: Box::new(crate::unpack::blame_the_blob(store, &digest, e)),
            digest,
        });
    }
    Ok(reports)
}

/// The compression of each of `image`'s layers, decided by its media type
/// (never by sniffing) and for every layer before the first is read: an
/// encrypted layer (`...tar+gzip+encrypted`) must not be read as a plain
/// tar, nor leave the layers below it behind. Checks first that the config
/// has a diff ID per layer.
pub(crate) fn layer_compressions(image: &Image) -> Result<Vec<Compression>, FlattenError> {
    let layers = image.layers();
    let diff_ids = image.diff_ids();
    if layers.len() != diff_ids.len() {
        return Err(FlattenError::LayerCount {
            image: image.name.clone(),
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    layers
        .iter()
        .enumerate()
        .map(|(index, layer)| {
            descriptor_media_type(layer)
                .require_layer_compression()
                .map_err(|source| FlattenError::MediaType {
                    image: image.name.clone(),
                    index,
                    source,
                })
        })
        .collect()
}

/// Why [`open_layer_with`] could not open a layer blob, for the caller to
/// wrap in its own error with its own context (image name, position).
#[derive(Debug)]
pub(crate) enum OpenFailure {
    /// The descriptor's digest is invalid.
    BadDigest(ParseError),
    /// The store holds the blob with another size than the descriptor's:
    /// the stream error an unpack of it would give.
    Stream(Digest, UnpackError),
    /// The store could not open the blob.
    Content(Digest, ContentError),
}

/// Opens the blob of the layer descriptor `layer`: its digest checked, its
/// blob opened unverified (a size that is not the descriptor's refused
/// before any byte is read), for a caller that hashes what it reads and
/// compares digest, size and diff ID itself. A failure is handed to `map`,
/// which makes the caller's own error of it.
pub(crate) fn open_layer_with<P: Provider + ?Sized, E>(
    store: &P,
    layer: &image_core::Descriptor,
    map: impl FnOnce(OpenFailure) -> E,
) -> Result<(Digest, Box<dyn std::io::Read + Send>), E> {
    let digest = match layer.checked_digest() {
        Ok(d) => d,
        Err(e) => return Err(map(OpenFailure::BadDigest(e))),
    };
    match store.reader_for_unverified(layer) {
        Ok(reader) => Ok((digest, reader)),
        Err(e) => Err(map(match crate::unpack::descriptor_mismatch(e) {
            Ok(unpack) => OpenFailure::Stream(digest, unpack),
            Err(e) => OpenFailure::Content(digest, e),
        })),
    }
}

/// Opens layer `index` of `image` (its descriptor `layer`) as
/// [`open_layer_with`] does, its failures as [`FlattenError`]s.
pub(crate) fn open_layer<P: Provider + ?Sized>(
    store: &P,
    image: &Image,
    index: usize,
    layer: &image_core::Descriptor,
) -> Result<(Digest, Box<dyn std::io::Read + Send>), FlattenError> {
    let name = || image.name.clone();
    open_layer_with(store, layer, |failure| match failure {
        OpenFailure::BadDigest(source) => FlattenError::BadLayer {
            image: name(),
            index,
            media_type: descriptor_media_type(layer).to_string(),
            source: Box::new(source),
        },
        OpenFailure::Stream(digest, source) => FlattenError::Unpack {
            image: name(),
            index,
            digest,
            source: Box::new(source),
        },
        OpenFailure::Content(digest, source) => FlattenError::Content {
            image: name(),
            index,
            digest,
            source: Box::new(source),
        },
    })
}
