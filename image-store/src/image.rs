//! Images: a reference resolved to its manifest, config and layers.
//!
//! [`resolve_image`] looks the name up with
//! [`resolve_reference`] (a tag, or by
//! content for a digest reference), follows an index
//! to the manifest of the wanted platform (nested indexes too), then reads
//! and parses the manifest and the config, verified.

use image_core::platform::{select_manifest, Platform, PlatformError};
use image_core::{
    Classify, Descriptor, DescriptorExt, Digest, Document, ErrorKind, ImageConfig, Index, Manifest,
    ParseError,
};

use crate::content::{ContentError, Provider};
use crate::refs::MAX_DOCUMENT_SIZE;
use crate::tags::{resolve_reference, TagError, TagStore};

/// Errors of image resolution.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The tag lookup failed (not found, bad name, unreadable index).
    #[error(transparent)]
    Tag(#[from] TagError),
    /// A blob could not be read.
    #[error("image {name:?}")]
    Content {
        /// The name resolved.
        name: String,
        /// The error.
        source: ContentError,
    },
    /// A manifest, index or config is not valid.
    #[error("image {name:?}: blob {digest}")]
    Parse {
        /// The name resolved.
        name: String,
        /// The blob.
        digest: Digest,
        /// The error.
        source: Box<ParseError>,
    },
    /// A descriptor on the way has an invalid digest.
    #[error("image {name:?}")]
    BadDescriptor {
        /// The name resolved.
        name: String,
        /// The error, naming the field and the value.
        source: Box<ParseError>,
    },
    /// No manifest of the index fits the platform.
    #[error("image {name:?}")]
    Platform {
        /// The name resolved.
        name: String,
        /// The error, listing the platforms offered.
        source: Box<PlatformError>,
    },
    /// Indexes nested too deep (or in a cycle).
    #[error("image {name:?}: indexes nested more than 8 deep")]
    TooDeep {
        /// The name resolved.
        name: String,
    },
}

impl Classify for ImageError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImageError::Tag(e) => e.kind(),
            ImageError::Content { source, .. } => source.kind(),
            ImageError::Parse { source, .. } | ImageError::BadDescriptor { source, .. } => {
                source.kind()
            }
            ImageError::Platform { source, .. } => source.kind(),
            ImageError::TooDeep { .. } => ErrorKind::InvalidInput,
        }
    }
}

/// A resolved image.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Image {
    /// The name it was resolved from.
    pub name: String,
    /// The descriptor the tag points at (a manifest or an index).
    pub root: Descriptor,
    /// The indexes followed to reach the manifest, outermost first.
    pub indexes: Vec<Index>,
    /// The manifest.
    pub manifest: Manifest,
    /// The config.
    pub config: ImageConfig,
}

impl Image {
    /// The image ID: the digest of the config.
    pub fn id(&self) -> &Digest {
        self.config.image_id()
    }

    /// The digest of the manifest.
    pub fn manifest_digest(&self) -> &Digest {
        self.manifest.digest()
    }

    /// The layer descriptors, base first.
    pub fn layers(&self) -> &[Descriptor] {
        self.manifest.layers()
    }

    /// The history entries of the config.
    pub fn history(&self) -> &[image_core::config::History] {
        self.config.history()
    }

    /// The diff IDs of the layers.
    pub fn diff_ids(&self) -> &[Digest] {
        self.config.diff_ids()
    }

    /// Every blob of the image (indexes, manifest, config, layers) with the
    /// size its descriptor declares.
    pub fn blobs(&self) -> Vec<(Digest, u64)> {
        let mut out: Vec<(Digest, u64)> = self
            .indexes
            .iter()
            .map(|i| (i.digest().clone(), i.raw().len() as u64))
            .collect();
        out.push((
            self.manifest.digest().clone(),
            self.manifest.raw().len() as u64,
        ));
        out.push((self.config.digest().clone(), self.config.raw().len() as u64));
        for l in self.layers() {
            if let Ok(d) = l.checked_digest() {
                out.push((d, l.size()));
            }
        }
        out
    }

    /// The bytes the image's blobs take in `store` (blobs absent from it,
    /// such as foreign layers, count nothing; a shared blob counts once).
    ///
    /// # Errors
    /// I/O errors of the store.
    pub fn size_on_disk<P: Provider + ?Sized>(&self, store: &P) -> Result<u64, ContentError> {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for (d, _) in self.blobs() {
            if seen.insert(d.clone()) {
                total += store.try_info(&d)?.map_or(0, |i| i.size);
            }
        }
        Ok(total)
    }
}

/// Resolves `name` to an image for `platform` (the host's when `None`).
/// `name` is a tag, or a digest reference resolved by content (see
/// [`resolve_reference`]).
///
/// # Errors
/// [`ImageError`]: tag or digest not found, blob missing or corrupt, JSON
/// that is not a manifest, no manifest for the platform.
pub fn resolve_image<S: Provider + TagStore + ?Sized>(
    store: &S,
    name: &str,
    platform: Option<&Platform>,
) -> Result<Image, ImageError> {
    let root = resolve_reference(store, name)?;
    resolve_descriptor(store, name, &root, platform)
}

/// Resolves a descriptor (of a manifest or an index) to an image.
///
/// # Errors
/// As [`resolve_image`].
pub fn resolve_descriptor<P: Provider + ?Sized>(
    store: &P,
    name: &str,
    root: &Descriptor,
    platform: Option<&Platform>,
) -> Result<Image, ImageError> {
    let host = Platform::host();
    let wanted = platform.unwrap_or(&host);
    let mut indexes = Vec::new();
    let mut current = root.clone();
    for _ in 0..8 {
        let digest = digest_of(name, &current)?;
        let bytes = read(store, name, &current)?;
        let hint = image_core::manifest::descriptor_media_type(&current);
        let doc = Document::from_bytes(bytes, Some(&hint))
            .map_err(|source| ImageError::Parse {
                name: name.to_owned(),
                digest: digest.clone(),
                source: Box::new(source),
            })?
            .with_algorithm(digest.algorithm());
        match doc {
            Document::Index(index) => {
                let next = select_manifest(&index, wanted)
                    .map_err(|source| ImageError::Platform {
                        name: name.to_owned(),
                        source: Box::new(source),
                    })?
                    .clone();
                indexes.push(*index);
                current = next;
            }
            Document::Manifest(manifest) => {
                let config_digest = digest_of(name, manifest.config())?;
                let bytes = read(store, name, manifest.config())?;
                let algorithm = config_digest.algorithm();
                let config = ImageConfig::from_bytes(bytes)
                    .map_err(|source| ImageError::Parse {
                        name: name.to_owned(),
                        digest: config_digest,
                        source: Box::new(source),
                    })?
                    .with_algorithm(algorithm);
                return Ok(Image {
                    name: name.to_owned(),
                    root: root.clone(),
                    indexes,
                    manifest: *manifest,
                    config,
                });
            }
        }
    }
    Err(ImageError::TooDeep {
        name: name.to_owned(),
    })
}

fn digest_of(name: &str, d: &Descriptor) -> Result<Digest, ImageError> {
    d.checked_digest()
        .map_err(|source| ImageError::BadDescriptor {
            name: name.to_owned(),
            source: Box::new(source),
        })
}

/// The document or config `d` names, read by its descriptor: a blob whose
/// size is not the descriptor's is refused.
fn read<P: Provider + ?Sized>(
    store: &P,
    name: &str,
    d: &Descriptor,
) -> Result<Vec<u8>, ImageError> {
    store
        .read_descriptor_to_vec(d, MAX_DOCUMENT_SIZE)
        .map_err(|source| ImageError::Content {
            name: name.to_owned(),
            source,
        })
}
