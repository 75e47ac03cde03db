//! What a build outputs once its images are written: one image manifest
//! tagged, or, for several platforms, an OCI image index of their
//! manifests (each entry with its platform) tagged, as BuildKit's OCI
//! exporter makes it; the annotations of each level where they land.

use image_core::oci_spec::image::{ImageIndexBuilder, MediaType as OciMediaType};
use image_core::{Descriptor, ImageConfig, Index, Manifest, Platform};
use image_store::mutate::MutateError;
use image_store::{Ingester, TagStore};

use super::annotate::{as_map, Annotations, Level};
use super::BuildError;
use crate::builder::BuilderError;

/// One platform's image of a build.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlatformImage {
    /// The platform it was built for (as its index entry says).
    pub platform: Platform,
    /// Its manifest, as stored.
    pub manifest: Manifest,
    /// Its config, as stored.
    pub config: ImageConfig,
    /// The provenance referrer attached to it, with
    /// [`BuildOptions::provenance`](super::BuildOptions::provenance).
    pub provenance: Option<Descriptor>,
}

/// Writes the index of `images` when there are several (`index`), and
/// tags the result (the index, else the one manifest) as `tags` with the
/// descriptor annotations asked. Returns the index written.
///
/// # Errors
/// [`BuildError::Commit`]: the index could not be made or written, or
/// the tags set (then none is).
pub(super) fn tag_output<S: Ingester + TagStore + ?Sized>(
    store: &S,
    images: &[PlatformImage],
    annotations: &Annotations,
    tags: &[String],
    index: bool,
) -> Result<Option<Index>, BuildError> {
    let commit_err = |e| BuildError::Commit(Box::new(e));
    let (tagged, written) = if index {
        let entries = images.iter().map(|i| {
            let mut d = i.manifest.descriptor();
            d.set_platform(Some((&i.platform).into()));
            d.set_annotations(as_map(
                annotations.of(Level::ManifestDescriptor, Some(&i.platform)),
            ));
            d
        });
        let mutate_err = |e| commit_err(BuilderError::Mutate(MutateError::Build(e)));
        let mut inner = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(OciMediaType::ImageIndex)
            .manifests(entries.collect::<Vec<_>>())
            .build()
            .map_err(|source| {
                mutate_err(image_core::ParseError::Build {
                    what: "the image index",
                    source,
                })
            })?;
        inner.set_annotations(as_map(annotations.of(Level::Index, None)));
        let made = Index::new(inner).map_err(mutate_err)?;
        store
            .write_blob(made.raw())
            .map_err(|e| commit_err(BuilderError::Mutate(MutateError::from(e))))?;
        let mut d = made.descriptor();
        d.set_annotations(as_map(annotations.of(Level::IndexDescriptor, None)));
        (d, Some(made))
    } else {
        let one = images.first().expect("a build makes an image");
        let mut d = one.manifest.descriptor();
        d.set_annotations(as_map(
            annotations.of(Level::ManifestDescriptor, Some(&one.platform)),
        ));
        (d, None)
    };
    let batch: Vec<(&str, &Descriptor)> = tags.iter().map(|t| (t.as_str(), &tagged)).collect();
    store
        .set_tags(&batch)
        .map_err(|e| commit_err(BuilderError::Tag(e)))?;
    Ok(written)
}
