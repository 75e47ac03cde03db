//! Containers from images in a store: the image is resolved, its layers
//! unpacked into committed snapshots named by chain ID (present ones are
//! reused), and [`ContainerBuilder::create`] prepares the container's own
//! writable snapshot on top, keyed by the container ID, whose mounts become
//! the root filesystem ([`Rootfs::Mounts`]). Deleting the container
//! unmounts and removes that snapshot; the layer snapshots stay for the
//! next container.

use image_core::Platform;
use image_overlay::image_unpack::{unpack_image, ImageUnpackOptions};

use crate::container::builder::{ContainerBuilder, PendingSnapshot};
use crate::error::ContainerError;
use crate::image::{find_image, ImageStore};
use crate::model::ImageRef;
use crate::rootfs::Rootfs;
use crate::runtime::Runtime;

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
    /// [`Runtime::with_snapshots`]); [`ContainerError::NeedsRoot`] before
    /// anything is unpacked; [`ContainerError::NoSuchImage`];
    /// [`ContainerError::Image`] (blobs missing or corrupt, no manifest for
    /// the platform); [`ContainerError::Unpack`].
    pub fn container_from_image_for<S: ImageStore + ?Sized>(
        &self,
        store: &S,
        name: &str,
        platform: Option<&Platform>,
    ) -> Result<ContainerBuilder, ContainerError> {
        self.container_from_image_with(store, name, platform, &ImageUnpackOptions::default())
    }

    /// As [`Runtime::container_from_image_for`], preparing the image with
    /// `unpack`: its tracker ([`ImageUnpackOptions::with_tracker`]) sees
    /// each layer unpacked (bytes of the compressed blob), and its interrupt
    /// stops the preparation between chunks with an error of class
    /// `Cancelled`; the layer being unpacked leaves no snapshot, the
    /// layers done stay for the next container, and no container is made.
    ///
    /// # Errors
    /// As [`Runtime::container_from_image_for`].
    pub fn container_from_image_with<S: ImageStore + ?Sized>(
        &self,
        store: &S,
        name: &str,
        platform: Option<&Platform>,
        unpack: &ImageUnpackOptions,
    ) -> Result<ContainerBuilder, ContainerError> {
        let snapshots = self.snapshots().ok_or(ContainerError::NoSnapshots)?.clone();
        super::builder::require_root("creating a container")?;
        let image = find_image(store, name, platform)?;
        let report =
            unpack_image(store, &image, snapshots.snapshotter(), unpack).map_err(|source| {
                ContainerError::Unpack {
                    name: name.to_owned(),
                    source: Box::new(source),
                }
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
