//! Rebase: an image's base layers swapped for another base's, as `crane
//! rebase` does.
//!
//! The old base must really be the image's base: its diff IDs the image's
//! first ones (refused with [`SurgeryError::NotABase`] otherwise). The
//! result is the new base's layers, then the image's upper layers as the
//! very same blobs; its config is the image's (its own `Env`, `Cmd`,
//! labels and every other field, as the image set them), with the diff IDs
//! and history of the new base followed by the image's own, and its
//! manifest's `org.opencontainers.image.base.name` and `.base.digest`
//! annotations name the new base.

use image_core::config::History;
use image_core::{ImageConfig, Manifest, MediaType, Platform};
use image_store::{Ingester, Leases, Provider, TagStore};

use super::{check_tag, is_base_of, layers_of, resolve, set_tag, write_image, SurgeryError};

/// The annotation naming an image's base (OCI image spec).
pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
/// The annotation giving the digest of an image's base manifest (OCI image spec).
pub const ANNOTATION_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// What a rebase made.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Rebased {
    /// The new manifest.
    pub manifest: Manifest,
    /// The new config.
    pub config: ImageConfig,
    /// The image's own layers kept above the new base.
    pub upper_layers: usize,
}

/// Makes the image `reference` rebased from `old_base` onto `new_base`
/// (all in `store`, resolved for `platform`, default the host's) and tags
/// it `tag`; the original is unchanged.
///
/// # Errors
/// [`SurgeryError`]: `InvalidTag` first; `Resolve` when an image is
/// missing; `NotABase` when `old_base` is not the image's base;
/// `Store`, `Build`, `Tag` when writing fails.
pub fn rebase<S>(
    store: &S,
    reference: &str,
    old_base: &str,
    new_base: &str,
    tag: &str,
    platform: Option<&Platform>,
) -> Result<Rebased, SurgeryError>
where
    S: Provider + Ingester + TagStore + Leases + ?Sized,
{
    check_tag(tag)?;
    let lease = store.begin_lease()?;
    let s = lease.protect(store);
    let host = Platform::host();
    let platform = Some(platform.unwrap_or(&host));
    let image = resolve(&s, reference, platform)?;
    let old = resolve(&s, old_base, platform)?;
    let new = resolve(&s, new_base, platform)?;
    let layers = layers_of(&image)?;
    layers_of(&new)?;
    if !is_base_of(&old, &image) {
        return Err(SurgeryError::NotABase {
            image: reference.to_owned(),
            base: old_base.to_owned(),
            base_layers: old.diff_ids().len(),
        });
    }
    let cut = old.diff_ids().len();
    let upper = &layers[cut..];

    let mut file = image.config.file().clone();
    file.rootfs.diff_ids = new.diff_ids().to_vec();
    file.rootfs
        .diff_ids
        .extend(upper.iter().map(|(_, d)| (*d).clone()));
    // History: the new base's, then the image's entries after the old
    // base's (the image's own steps, config-only ones included).
    let own: Vec<History> = image
        .config
        .history()
        .iter()
        .skip(old.config.history().len())
        .cloned()
        .collect();
    let mut history = new.config.history().to_vec();
    history.extend(own);
    file.history = (!history.is_empty()).then_some(history);

    let manifest_type = image.manifest.media_type().clone();
    let mut descriptors: Vec<_> = new
        .layers()
        .iter()
        .map(|d| convert(&manifest_type, d))
        .collect();
    descriptors.extend(upper.iter().map(|(d, _)| (*d).clone()));
    let mut annotations = image
        .manifest
        .inner()
        .annotations()
        .clone()
        .unwrap_or_default();
    annotations.insert(ANNOTATION_BASE_NAME.to_owned(), base_name(new_base));
    annotations.insert(
        ANNOTATION_BASE_DIGEST.to_owned(),
        new.manifest_digest().to_string(),
    );
    let (manifest, config) = write_image(&s, &manifest_type, file, descriptors, Some(annotations))?;
    set_tag(&s, tag, &manifest)?;
    drop(lease);
    Ok(Rebased {
        manifest,
        config,
        upper_layers: upper.len(),
    })
}

/// The new base's name as the annotation gives it: the normalised
/// reference when it parses as one, else as given.
fn base_name(reference: &str) -> String {
    image_store::tags::normalize_name(reference).unwrap_or_else(|_| reference.to_owned())
}

/// A base layer's descriptor in the image's manifest format (the blob is
/// the same; only the media type's spelling changes).
fn convert(manifest_type: &MediaType, d: &image_core::Descriptor) -> image_core::Descriptor {
    let media_type = image_core::manifest::descriptor_media_type(d);
    let converted = match manifest_type {
        MediaType::DockerManifest => media_type.to_docker(),
        _ => media_type.to_oci(),
    };
    match converted {
        Ok(t) if t != media_type => {
            let mut d = d.clone();
            d.set_media_type((&t).into());
            d
        }
        _ => d.clone(),
    }
}
