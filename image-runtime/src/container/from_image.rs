//! Containers from images in a store: the image is resolved, its layers
//! unpacked into committed snapshots named by chain ID (present ones are
//! reused), and [`ContainerBuilder::create`] prepares the container's own
//! writable snapshot on top, keyed by the container ID, whose mounts become
//! the root filesystem ([`Rootfs::Mounts`]). Deleting the container
//! unmounts and removes that snapshot; the layer snapshots stay for the
//! next container.

use image_core::{Descriptor, Digest, ErrorKind, Platform};
use image_overlay::image_unpack::{unpack_image, ImageUnpackOptions};
use image_store::image::{resolve_descriptor, resolve_image, ImageError};
use image_store::{Image, Ingester, Provider, TagError, TagStore};
use serde::{Deserialize, Serialize};

use crate::container::builder::{ContainerBuilder, PendingSnapshot};
use crate::error::ContainerError;
use crate::rootfs::Rootfs;
use crate::Runtime;

/// What a store of images must do for containers: read blobs and tags
/// (resolve, unpack) and write blobs and tags (commit). Every
/// [`image_store::OciDir`] and [`image_store::MemoryStore`] is one.
pub trait ImageStore: Provider + Ingester + TagStore + Sync {}

impl<T: Provider + Ingester + TagStore + Sync + ?Sized> ImageStore for T {}

/// The image a container was made from, as resolved when it was created,
/// so that commit finds exactly that image again (even if the name moved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The name it was resolved from.
    pub name: String,
    /// The image ID (config digest).
    pub id: Digest,
    /// The descriptor of its manifest (the platform's, below any index).
    pub manifest: Descriptor,
}

impl ImageRef {
    /// Of a resolved image.
    pub fn of(image: &Image) -> ImageRef {
        ImageRef {
            name: image.name.clone(),
            id: image.id().clone(),
            manifest: image.manifest.descriptor(),
        }
    }

    /// The image again, from `store`.
    ///
    /// # Errors
    /// [`ImageError`] when its blobs are gone or corrupt.
    pub fn resolve<P: Provider + ?Sized>(&self, store: &P) -> Result<Image, ImageError> {
        resolve_descriptor(store, &self.name, &self.manifest, None)
    }
}

/// Resolves `name` in `store` for `platform` (the host's when `None`).
///
/// # Errors
/// [`ContainerError::NoSuchImage`] when no tag has this name,
/// [`ContainerError::Image`] otherwise.
pub fn find_image<S: Provider + TagStore + ?Sized>(
    store: &S,
    name: &str,
    platform: Option<&Platform>,
) -> Result<Image, ContainerError> {
    resolve_image(store, name, platform).map_err(|source| match source {
        ImageError::Tag(TagError::NotFound { .. }) => ContainerError::NoSuchImage {
            name: name.to_owned(),
        },
        ImageError::Tag(ref e) if image_core::Classify::kind(e) == ErrorKind::NotFound => {
            ContainerError::NoSuchImage {
                name: name.to_owned(),
            }
        }
        source => ContainerError::Image {
            name: name.to_owned(),
            source: Box::new(source),
        },
    })
}

impl Runtime {
    /// Starts building a container from the image `name` in `store` for
    /// the host's platform: see [`Runtime::container_from_image_for`].
    ///
    /// # Errors
    /// As [`Runtime::container_from_image_for`].
    pub fn container_from_image<S: ImageStore + ?Sized>(
        &self,
        store: &S,
        name: &str,
    ) -> Result<ContainerBuilder, ContainerError> {
        self.container_from_image_for(store, name, None)
    }

    /// Starts building a container from the image `name` in `store`: the
    /// image is resolved (for `platform`, the host's when `None`) and its
    /// layers unpacked into this runtime's snapshots (layers present
    /// already are reused); the builder runs the image's config, and its
    /// [`create`](ContainerBuilder::create) prepares the container's
    /// writable snapshot.
    ///
    /// # Errors
    /// [`ContainerError::NoSnapshots`] when the runtime has none (see
    /// [`Runtime::with_snapshots`]); [`ContainerError::NoSuchImage`];
    /// [`ContainerError::Image`] (blobs missing or corrupt, no manifest for
    /// the platform); [`ContainerError::Unpack`].
    pub fn container_from_image_for<S: ImageStore + ?Sized>(
        &self,
        store: &S,
        name: &str,
        platform: Option<&Platform>,
    ) -> Result<ContainerBuilder, ContainerError> {
        let snapshots = self.snapshots().ok_or(ContainerError::NoSnapshots)?.clone();
        let image = find_image(store, name, platform)?;
        let report = unpack_image(
            store,
            &image,
            snapshots.snapshotter(),
            &ImageUnpackOptions::default(),
        )
        .map_err(|source| ContainerError::Unpack {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
        let builder = self
            .container(Rootfs::Mounts(Vec::new()))
            .image_config(&image.config)
            .image_name(name)
            .snapshot(PendingSnapshot {
                snapshots,
                parent: report.top(),
                image: ImageRef::of(&image),
            });
        Ok(builder)
    }
}
