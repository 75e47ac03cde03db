//! New images from old ones: append layers, change the config, write the
//! config and manifest blobs (as go-containerregistry's `mutate` does).
//!
//! Layer blobs are ingested by the caller first (the layer packer writes
//! straight into an [`Ingester`] writer, so digest and diff ID come out of
//! one pass); [`append`] then writes the new config (diff IDs and history
//! extended, the caller's changes applied) and manifest, canonically, and
//! returns them. Tagging is the caller's choice.

use image_core::config::{ConfigFile, History};
use image_core::manifest::descriptor;
use image_core::{
    Classify, Digest, ErrorKind, ImageConfig, Manifest, MediaType, ParseError, Platform,
};

use crate::content::{ContentError, Ingester};
use crate::image::Image;

/// A failure to write a new image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MutateError {
    /// A config or manifest could not be built.
    #[error("building the new image")]
    Build(#[from] ParseError),
    /// oci-spec refused the manifest.
    #[error("building the manifest")]
    Manifest(#[source] image_core::oci_spec::OciSpecError),
    /// Writing a blob failed.
    #[error("writing the new image")]
    Content(#[from] ContentError),
    /// The base image's manifest is not of a kind layers can be appended to.
    #[error("cannot append {layer} layers to a {base} image")]
    MixedFormats {
        /// The media type of the base manifest.
        base: String,
        /// The media type of the new layer.
        layer: String,
    },
}

impl Classify for MutateError {
    fn kind(&self) -> ErrorKind {
        match self {
            MutateError::Build(e) => e.kind(),
            MutateError::Content(e) => e.kind(),
            MutateError::Manifest(_) | MutateError::MixedFormats { .. } => ErrorKind::InvalidInput,
        }
    }
}

/// A layer already in the store, to be appended to an image.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLayer {
    /// Its media type (OCI; for a Docker base, gzip layers are converted to Docker's type).
    pub media_type: MediaType,
    /// The digest of the blob as stored.
    pub digest: Digest,
    /// The size of the blob as stored.
    pub size: u64,
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
    /// The history entry that made it.
    pub history: History,
}

/// What [`append`] wrote.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The new manifest, as stored.
    pub manifest: Manifest,
    /// The new config, as stored; its digest is the image ID.
    pub config: ImageConfig,
}

/// Writes a new image: `base` (or an empty image for `platform`, its
/// variant, OS version and features included, when `None`) plus `layers`,
/// with the config changed by `change`.
///
/// History entries of the layers are appended in order; `change` may add
/// more (for steps that make no layer, with `empty_layer: true`). The
/// manifest keeps the base's format (Docker v2 or OCI); without a base it
/// is OCI.
///
/// A caller that tags the result holds a lease until the tag is set and
/// passes the store seen through it ([`LeaseGuard::protect`](crate::LeaseGuard::protect)),
/// from the resolution of `base` on, so gc cannot remove the base's blobs,
/// the layers, the config or the manifest in between.
///
/// # Errors
/// [`MutateError`] when a blob cannot be written or the result is not a
/// valid manifest.
pub fn append<S: Ingester + ?Sized>(
    store: &S,
    base: Option<&Image>,
    platform: &Platform,
    layers: &[NewLayer],
    change: impl FnOnce(&mut ConfigFile),
) -> Result<Appended, MutateError> {
    let mut file = match base {
        Some(b) => b.config.file().clone(),
        None => ConfigFile::for_platform(platform),
    };
    let docker = base.is_some_and(|b| *b.manifest.media_type() == MediaType::DockerManifest);
    for l in layers {
        file.rootfs.diff_ids.push(l.diff_id.clone());
        file.history
            .get_or_insert_with(Vec::new)
            .push(l.history.clone());
    }
    change(&mut file);
    let config = ImageConfig::new(file)?;
    store.write_blob(config.raw())?;

    let (manifest_type, config_type) = if docker {
        (MediaType::DockerManifest, MediaType::DockerConfig)
    } else {
        (MediaType::OciManifest, MediaType::OciConfig)
    };
    let mut descriptors = base.map(|b| b.layers().to_vec()).unwrap_or_default();
    for l in layers {
        let media_type = if docker {
            l.media_type
                .to_docker()
                .map_err(|_| MutateError::MixedFormats {
                    base: manifest_type.to_string(),
                    layer: l.media_type.to_string(),
                })?
        } else {
            l.media_type.clone()
        };
        descriptors.push(descriptor(&media_type, &l.digest, l.size));
    }
    let annotations = base.and_then(|b| b.manifest.inner().annotations().clone());
    let manifest = Manifest::build(
        &manifest_type,
        config.descriptor(&config_type),
        descriptors,
        annotations,
    )?;
    store.write_blob(manifest.raw())?;
    Ok(Appended { manifest, config })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::resolve_image;
    use crate::tags::TagStore;
    use crate::{MemoryStore, Provider};

    #[test]
    fn append_twice_builds_a_two_layer_image() {
        let store = MemoryStore::new();
        let blob = |data: &[u8]| {
            let digest = store.write_blob(data).expect("write");
            NewLayer {
                media_type: MediaType::OciLayer,
                size: data.len() as u64,
                diff_id: digest.clone(),
                digest,
                history: History {
                    created_by: Some(format!("layer of {} bytes", data.len())),
                    ..History::default()
                },
            }
        };
        let amd64 = Platform::new("linux", "amd64");
        let first = append(&store, None, &amd64, &[blob(b"one")], |c| {
            c.config.get_or_insert_with(Default::default).cmd = Some(vec!["sh".into()]);
        })
        .expect("first");
        store
            .set_tag("example/a:1", &first.manifest.descriptor())
            .expect("tag");
        let base = resolve_image(&store, "example/a:1", None).expect("resolve");
        let second = append(&store, Some(&base), &amd64, &[blob(b"two!")], |_| {}).expect("second");
        assert_eq!(second.config.diff_ids().len(), 2);
        assert_eq!(second.manifest.layers().len(), 2);
        assert_eq!(second.config.history().len(), 2);
        assert_eq!(
            second
                .config
                .file()
                .config
                .as_ref()
                .and_then(|c| c.cmd.clone()),
            Some(vec!["sh".to_string()])
        );
        assert!(store.exists(second.manifest.digest()).expect("exists"));
        assert!(store.exists(second.config.digest()).expect("exists"));
        assert_eq!(second.manifest.config_digest(), *second.config.digest());
    }

    #[test]
    fn a_new_image_keeps_the_platform_variant() {
        let store = MemoryStore::new();
        let arm = "linux/arm/v7".parse::<Platform>().expect("platform");
        let image = append(&store, None, &arm, &[], |_| {}).expect("append");
        let file = image.config.file();
        assert_eq!(
            (
                file.os.as_str(),
                file.architecture.as_str(),
                file.variant.as_deref()
            ),
            ("linux", "arm", Some("v7"))
        );
    }
}
